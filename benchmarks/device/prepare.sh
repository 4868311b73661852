#!/usr/bin/env bash
# Build .device-site/, the one folder a device call carries beside the working tree, on a
# machine with PyPI (no device time). Run it in the checkout the device call is made from,
# right before the call (it records that checkout's commit).
#
#   benchmarks/device/prepare.sh          # then: the run call of benchmarks/device/README.md
#
# What the device image lacks for the benchmarks, and nothing more:
# * transformers >= 5.24 (the image has 5.17). 5.24.0 is the one carried: the lowest that
#   textvae allows (`make test-lowest` runs the suite on it) and the newest that works with
#   the image's huggingface_hub 1.33; 5.25 needs huggingface_hub >= 2.4 and `kernels`,
#   two more packages to carry and a hub that the image's other packages were not built with.
#   It travels as its wheel (13 MiB): installed it is 61 MiB without bytecode, which with
#   the working tree would pass the 64 MiB a call carries. run.sh installs it on the device
#   (pip --no-index --no-deps --target, a few seconds).
# * PTB: the working tree gets no ../shared beside it there, so its three files (5.7 MiB).
# * evaluate, datasets and gguf are not carried: textvae imports them only to load its
#   `evaluate` module, a Hugging Face dataset (data.hf_dataset) or a GGUF file, none of which
#   the benchmarks do (run.sh --dry-run blocks all three and passes).
# * textvae itself is the working tree, run from PYTHONPATH (textvae.resources finds the
#   checkout's recipes/ and data/synthetic/ without an install).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
SITE=.device-site
TRANSFORMERS=${TRANSFORMERS:-transformers==5.24.0}
PY=${PYTHON:-$(command -v python3)}
PTB=${TEXTVAE_DATA:-$(cd .. && pwd)/shared/data}/ptb
LIMIT_MIB=64

git check-ignore -q "$SITE/x" || { echo "prepare.sh: $SITE/ is not ignored by git (.gitignore)" >&2; exit 1; }
rm -rf "$SITE"
mkdir -p "$SITE/wheels" "$SITE/data/ptb"
# The device's python is 3.12 on x86-64: ask for wheels that install there (pure-python ones do anywhere).
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$SITE/wheels" "$TRANSFORMERS"
for split in train valid test; do
    cp "$PTB/$split.txt" "$SITE/data/ptb/"
done
if [ -f "$PTB/SHA256SUMS" ]; then cp "$PTB/SHA256SUMS" "$SITE/data/ptb/"; fi
# The device gets no .git: ptb/run.py reads the commit of its rows from here (TEXTVAE_CODE_VERSION).
echo "$(git rev-parse --short HEAD)$(git status --porcelain --untracked-files=no | grep -q . && echo -dirty)" \
    > "$SITE/COMMIT"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
carried=$(du -sb "$SITE" | cut -f1)
# What travels besides: tracked files and untracked ones git does not ignore (device README).
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
total=$((carried + tree))
echo "carried $SITE/: $(mib "$carried") MiB ($(ls "$SITE/wheels" | tr '\n' ' ')+ PTB, commit $(cat "$SITE/COMMIT"))"
echo "working tree: $(mib "$tree") MiB; together $(mib "$total") MiB of the $LIMIT_MIB MiB a call carries"
if [ "$total" -gt $((LIMIT_MIB * 1048576 - 4 * 1048576)) ]; then
    echo "prepare.sh: too close to the limit: untracked files in the tree? (git status)" >&2
    exit 1
fi
