# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
# Both create .venv when it is missing and install textvae with its dev extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.textvae-installed
# torch is installed only when none is importable: a user's own (CUDA) torch is left alone.
TORCH_SPEC ?= torch==2.13.0
# Registered corpora (PTB) are read from here unless the caller set TEXTVAE_DATA.
export TEXTVAE_DATA ?= $(abspath ../shared/data)

.PHONY: install demo test test-lowest lint bench-speed bench-ptb clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,plots]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/textvae train recipes/quickstart.yaml train.overwrite=true
	$(BIN)/textvae evaluate runs/quickstart/final --iw-samples 50 --plots runs/quickstart/plots
	$(BIN)/textvae interpolate runs/quickstart/final \
		"the old dog saw a small cat ." "she will not find the red boxes ." --steps 6

test: $(STAMP)
	OMP_NUM_THREADS=1 HF_HUB_DISABLE_PROGRESS_BARS=1 $(BIN)/python -m pytest -q -n 2 tests

# The lower bounds pyproject.toml claims for transformers and accelerate, installed over the
# venv's copies (in .lowest/, first on the path) for one run of the suite.
LOWEST = $(shell $(BIN)/python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(' '.join(d.replace('>=', '==') for d in deps if d.split('>=')[0] in ('transformers', 'accelerate')))")

test-lowest: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps --target .lowest $(LOWEST)
	PYTHONPATH=.lowest OMP_NUM_THREADS=1 HF_HUB_DISABLE_PROGRESS_BARS=1 $(BIN)/python -m pytest -q -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check textvae tests benchmarks

bench-speed: $(STAMP)
	$(BIN)/python benchmarks/speed.py

bench-ptb: $(STAMP)
	$(BIN)/python benchmarks/ptb/run.py $(PTB_ARGS)

clean:
	rm -rf $(VENV) runs .lowest
