"""Arrow through ``datasets`` or flat memory-mapped arrays: which storage for the tokenised corpus?

Both variants tokenise the same train split (PTB's train repeated, from ``make_corpus.py``)
with the same tokenizer (a word tokenizer trained on PTB's train split) and are then read
the way training reads them. Each phase runs in its own process, so peak RSS is its own.

* ``memmap``: textvae's cache (``textvae.data.pipeline.tokenize_split``): the text streamed
  in 4 MiB chunks, the Rust batch encoder, flat ``ids``/``offsets``/``lengths`` arrays.
* ``datasets``: ``load_dataset("text")`` into Arrow, then ``Dataset.map(batched=True,
  num_proc=2)`` with the same Rust batch encoder, writing an ``ids`` list column and a
  ``length`` column (no length policy: it only makes this variant cheaper).

Build: wall time and peak RSS of the building process (and of its ``num_proc`` workers).
Access: the time to open the result and get the lengths array the sampler sorts, then
the time to gather 2,000 random batches of 32 sentences as id lists (what the DataLoader
does per step) and how much RSS that gathering added, and the peak RSS of that process.
The memmap store is gathered two ways: by positioned reads (``Entry.rows``, what textvae
does) and by slicing the memory mapping.

    python benchmarks/corpus_cache/formats.py --repeat 24 --work /tmp/cf
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCHES, BATCH_SIZE = 2000, 32


def tokenizer(work: Path):
    from textvae.data.config import DataConfig
    from textvae.data.pipeline import prepare_data

    ptb = Path(os.environ.get("TEXTVAE_DATA", HERE.parents[2] / "shared" / "data")) / "ptb"
    cfg = DataConfig(corpus=str(ptb), max_length=100, cache_dir=str(work / "tok-cache"))
    return prepare_data(cfg, splits=("valid",), progress=False).tokenizer


def build(variant: str, corpus: Path, out: Path, work: Path) -> dict:
    from textvae.data.tokenized import encoder_of

    tok = tokenizer(work)
    started = time.perf_counter()
    if variant == "memmap":
        from textvae.data.config import DataConfig
        from textvae.data.pipeline import split_sources, tokenize_split

        cfg = DataConfig(corpus=str(corpus), max_length=100, cache_dir=str(out))
        _, sources = split_sources(cfg, ["train"])
        split = tokenize_split(tok, sources["train"], cfg, progress=False)
        rows = len(split.ids)
    else:
        import datasets

        datasets.disable_progress_bars()
        encoder = encoder_of(tok.backend_tokenizer)

        def encode(batch: dict) -> dict:
            encodings = encoder.encode_batch_fast(batch["text"])
            return {"ids": [e.ids for e in encodings], "length": [len(e) for e in encodings]}

        text = datasets.load_dataset("text", data_files={"train": str(corpus / "train.txt")}, cache_dir=str(out))
        features = datasets.Features({"ids": datasets.Sequence(datasets.Value("uint16")), "length": datasets.Value("int32")})
        encoded = text["train"].filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True, num_proc=2)
        encoded = encoded.map(encode, batched=True, batch_size=10_000, num_proc=2, remove_columns=["text"],
                              features=features)
        encoded.save_to_disk(str(out / "saved"))
        rows = len(encoded)
    wall = time.perf_counter() - started
    return {"rows": rows, "build_s": round(wall, 1)}


def vm_rss_mb() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024


def access(variant: str, out: Path) -> dict:
    """Open, get the lengths, then gather random batches; ``memmap`` is read two ways: with
    positioned reads (``Entry.rows``, what textvae does) and by slicing the mapping."""
    import numpy as np

    if variant == "memmap":
        from textvae.data.cache import open_entry
        from textvae.data.tokenized import TokenRows

        started = time.perf_counter()  # after the imports: both variants' are paid by any run
        entry = open_entry(next(p for p in (out / "tokenized").iterdir() if not p.name.startswith(".")))
        lengths = entry.array("lengths")
        lengths.max()  # the sampler reads every length
        opened = time.perf_counter() - started
        ways = {"pread": TokenRows(entry.rows("ids"), entry.rows("offsets"), lengths).gather,
                "mapped": TokenRows(entry.array("ids"), entry.array("offsets"), lengths).gather}
    else:
        import datasets

        started = time.perf_counter()
        dataset = datasets.load_from_disk(str(out / "saved"))
        lengths = dataset.data.column("length").to_numpy()
        opened = time.perf_counter() - started
        ways = {"rows": lambda batch: dataset[batch]["ids"]}
    result = {"open_and_lengths_s": round(opened, 2)}
    rng = np.random.default_rng(0)
    for way, gather in ways.items():
        batches = [rng.integers(0, len(lengths), BATCH_SIZE).tolist() for _ in range(BATCHES)]
        before, started = vm_rss_mb(), time.perf_counter()
        tokens = sum(len(row) for batch in batches for row in gather(batch))
        result[way] = {"gather_ms_per_batch": round(1000 * (time.perf_counter() - started) / BATCHES, 3),
                       "rss_growth_mb": round(vm_rss_mb() - before, 1), "tokens": tokens}
    return result


def child(args: argparse.Namespace) -> None:
    result = (build(args.variant, args.corpus, args.out, args.work) if args.phase == "build"
              else access(args.variant, args.out))
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    result["workers_peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=24)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=HERE / "formats.jsonl")
    parser.add_argument("--phase", choices=["build", "access"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=["memmap", "datasets"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        return child(args)
    work = args.work.resolve()
    corpus = work / f"ptb-x{args.repeat}"
    if not (corpus / "train.txt").is_file():
        subprocess.run([sys.executable, str(HERE / "make_corpus.py"), "--repeat", str(args.repeat), "--out", str(corpus)],
                       check=True)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    for variant in ("memmap", "datasets"):
        out = work / f"store-{variant}"
        shutil.rmtree(out, ignore_errors=True)
        row = {"variant": variant, "sentences": 42068 * args.repeat}
        for phase in ("build", "access"):
            command = [sys.executable, __file__, "--work", str(work), "--phase", phase, "--variant", variant,
                       "--corpus", str(corpus), "--out", str(out)]
            result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=work)
            if result.returncode:
                sys.exit(result.stderr[-3000:])
            row[phase] = json.loads(result.stdout.strip().splitlines()[-1])
        if variant == "datasets":  # only the saved dataset is what training would read
            row["disk_mb"] = round(sum(p.stat().st_size for p in (out / "saved").rglob("*") if p.is_file()) / 1e6)
            row["hf_cache_mb"] = round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6) - row["disk_mb"]
        else:
            row["disk_mb"] = round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6)
        print(json.dumps(row))
        with args.results.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
