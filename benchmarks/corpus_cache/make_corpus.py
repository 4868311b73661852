"""Write a large corpus for the cache benchmark: PTB's train split repeated, PTB's valid and test.

    python benchmarks/corpus_cache/make_corpus.py --repeat 24 --out /tmp/ptb-x24   # 1,009,632 sentences

The text is streamed, never held in memory; nothing here is meant to be committed.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path


def write_corpus(ptb: Path, repeat: int, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    train = (ptb / "train.txt").read_bytes()  # 5 MB
    tmp = out / ".train.txt.partial"
    with tmp.open("wb") as handle:
        for _ in range(repeat):
            handle.write(train)
    os.replace(tmp, out / "train.txt")
    for split in ("valid", "test"):
        shutil.copyfile(ptb / f"{split}.txt", out / f"{split}.txt")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, required=True, help="copies of PTB's train split (24 -> 1.0M sentences)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ptb", type=Path, default=Path(os.environ.get("TEXTVAE_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "ptb")
    args = parser.parse_args()
    out = write_corpus(args.ptb, args.repeat, args.out)
    lines = 42068 * args.repeat
    print(f"{out}: train {lines:,} sentences ({(out / 'train.txt').stat().st_size / 1e6:,.0f} MB)")


if __name__ == "__main__":
    main()
