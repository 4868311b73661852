import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "data.max_train_lines=384",
    "data.batch_size=32",
    "model.embedding_size=16",
    "model.hidden_size=32",
    "model.latent_size=4",
    "model.invlip_state_size=8",
    "model.icnn_hidden_size=16",
    "train.eval_batches=2",
    "train.progress=false",
]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A small copy of the embedded corpus (fast tokenizer training and epochs)."""
    from textvae.data.synthetic import write_corpus

    out = tmp_path_factory.mktemp("synthetic")
    write_corpus(out, n_train=1000, n_valid=200, n_test=200, seed=0)
    return out


@pytest.fixture
def tiny_overrides(corpus_dir, tmp_path) -> list[str]:
    return [f"data.corpus={corpus_dir}", f"output_dir={tmp_path / 'run'}", *TINY]


def textvae_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "textvae", *args]
