"""What the corpus key costs: a SHA256 of every byte, and reading back the one remembered.

    python benchmarks/corpus_cache/fingerprint.py --repeat 240 --work /tmp/fp   # the 10.1M-sentence corpus

The cache keys a split by its source file's fingerprint (``textvae.data.cache.file_fingerprint``):
the SHA256 of all its bytes, remembered under the cache root for as long as the file's
status (device, inode, size, mtime, ctime) is unchanged. A run therefore pays either

* a full hash: the first run after the file was written, edited or touched, measured here
  with the file in the page cache (warm) and with its pages evicted first (cold:
  ``posix_fadvise(DONTNEED)`` on that file alone, so the read comes from the disk), or
* a remembered one: ``stat`` and a read of one small JSON file, every run after that.

Results are appended as JSON lines to ``--results``; the corpus is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache, so that the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def seconds(call, repeat: int, before=None) -> float:
    """The median wall time of ``call()`` over ``repeat`` runs (``before()`` untimed ahead of each)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def costs(path: Path, root: Path) -> dict[str, float]:
    """Seconds for a full hash (warm, cold) and milliseconds for a remembered fingerprint of ``path``."""
    from textvae.data import cache

    wait = (path.stat().st_ctime_ns + cache.SETTLED_NS) / 1e9 - time.time()
    time.sleep(max(wait, 0) + 0.5)  # a file written just now is hashed every time, never remembered
    shutil.rmtree(root / cache.FINGERPRINTS, ignore_errors=True)
    warm_full = seconds(lambda: cache.sha256_file(path), 3)
    cold_full = seconds(lambda: cache.sha256_file(path), 2, before=lambda: evict(path))
    cache.file_fingerprint(path, root)  # hashes and remembers
    remembered = seconds(lambda: cache.file_fingerprint(path, root), 50)
    return {"full_sha256_warm_s": round(warm_full, 2), "full_sha256_cold_s": round(cold_full, 2),
            "remembered_ms": round(remembered * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, required=True, help="copies of PTB train (240 -> 10.1M sentences)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (corpus, cache)")
    parser.add_argument("--results", type=Path, default=HERE / "fingerprint.jsonl")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE.parents[1]))
    from make_corpus import write_corpus

    work = args.work.resolve()
    corpus = write_corpus(Path(os.environ.get("TEXTVAE_DATA", HERE.parents[2] / "shared" / "data")) / "ptb",
                          args.repeat, work / f"ptb-x{args.repeat}")
    try:
        train = corpus / "train.txt"
        row = {"sentences": 42068 * args.repeat, "corpus_mb": round(train.stat().st_size / 1e6),
               **costs(train, work / "cache"), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "load_avg_1m": round(os.getloadavg()[0], 2)}
    finally:
        shutil.rmtree(corpus, ignore_errors=True)
        shutil.rmtree(work / "cache", ignore_errors=True)
    print(json.dumps(row))
    with args.results.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
