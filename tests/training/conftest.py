import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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


def copy_with_one_checkpoint(run_dir: Path, copy: Path, step: int) -> Path:
    """A copy of a finished run whose only checkpoint is ``step``: resuming it replays the rest."""
    shutil.copytree(run_dir, copy)
    for checkpoint in (copy / "checkpoints").iterdir():
        if checkpoint.name != f"step-{step:08d}":
            shutil.rmtree(checkpoint)
    return copy


def assert_same_weights(run_a: Path, run_b: Path, step: int) -> None:
    """Both runs' checkpoints at ``step`` hold bit-identical weights."""
    want = load_file(run_a / "checkpoints" / f"step-{step:08d}" / "model.safetensors")
    got = load_file(run_b / "checkpoints" / f"step-{step:08d}" / "model.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
