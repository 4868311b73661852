#!/usr/bin/env bash
# A local stand-in for the device image's python, for run.sh --dry-run (no GPU, no device time).
#
#   benchmarks/device/image-venv.sh DIR [BASE_VENV]      # then: PYTHON=DIR/bin/python run.sh --dry-run
#
# Why: the dry run must show that the carried transformers wins over the image's own (5.17,
# beside huggingface_hub 1.33 and accelerate 1.15), that textvae runs from the bare
# checkout (the device installs nothing: no editable install maps textvae.recipes there),
# and that nothing imports what the image lacks (evaluate, datasets, gguf). DIR is a venv
# that sees BASE_VENV's packages (default: the repo's .venv, for torch) through DIR/base,
# a folder of links to them less those three and textvae, named in a .pth file as a plain
# path (so no .pth file of BASE_VENV runs: textvae's editable finder is one); the image's
# versions of the four packages above are installed into DIR itself, which comes first.
# What stays different from the device: the python (BASE_VENV's, 3.11 here; the image's
# is 3.12) and torch (CPU, BASE_VENV's version; the image's is 2.11 with CUDA).
set -euo pipefail
DIR=${1:?usage: image-venv.sh DIR [BASE_VENV]}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BASE=${2:-$REPO/.venv}
BASE_PY=$BASE/bin/python
base_site=$("$BASE_PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
base_home=$(sed -n 's/^home = //p' "$BASE/pyvenv.cfg")
"$base_home/python3" -m venv --system-site-packages "$DIR"
site=$("$DIR/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$DIR/base"
for entry in "$base_site"/*; do
    case $(basename "$entry") in
        evaluate|evaluate-*|datasets|datasets-*|gguf|gguf-*|textvae*|__editable__*textvae*|*.pth) ;;  # absent there
        transformers|transformers-*|huggingface_hub|huggingface_hub-*|accelerate|accelerate-*) ;;  # DIR's own
        tokenizers|tokenizers-*|kernels|kernels-*) ;;
        *) ln -s "$entry" "$DIR/base/" ;;
    esac
done
echo "$DIR/base" > "$site/base-venv.pth"
# The image's versions (KINDS.md's pip list), and what huggingface_hub 1.x needs beside them.
"$DIR/bin/python" -m pip install -q --no-deps --only-binary=:all: transformers==5.17.0 huggingface_hub==1.33.0 \
    accelerate==1.15.0 tokenizers==0.23.2 "httpx<1" httpcore h11 anyio
"$DIR/bin/python" - <<'PY'
import importlib.util, transformers, huggingface_hub, accelerate, torch
print(f"image stand-in: transformers {transformers.__version__}, huggingface_hub {huggingface_hub.__version__}, "
      f"accelerate {accelerate.__version__}, torch {torch.__version__}")
for name in ("textvae", "evaluate", "datasets", "gguf"):  # not on the device image
    assert importlib.util.find_spec(name) is None, f"{name} is importable: the stand-in is not the image"
PY
