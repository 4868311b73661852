"""The built wheel works outside the checkout: recipes, the embedded corpus and PTB by name.

One test, as cheap as it can be: the wheel is built without build isolation or
dependencies (seconds), installed with ``--target`` into a temporary folder (the test
environment already has torch and the rest), and every command runs from an empty
directory that is not the checkout, with a fresh HOME, so nothing is found by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.max_train_lines=64", "data.batch_size=16", "model.embedding_size=8", "model.hidden_size=8",
        "model.latent_size=2", "model.invlip_state_size=4", "model.icnn_hidden_size=8", "train.max_steps=1",
        "train.eval_batches=1", "train.progress=false", "output_dir=run"]


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--no-deps", "--disable-pip-version-check"],
                   check=True, capture_output=True)


def test_wheel_installs_and_trains_from_an_empty_directory(tmp_path):
    ptb = Path(os.environ["TEXTVAE_DATA"]) / "ptb"
    if not (ptb / "train.txt").is_file():
        pytest.skip(f"PTB not present at {ptb}")
    _pip("wheel", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(REPO))
    (wheel,) = (tmp_path / "dist").glob("textvae-*.whl")
    _pip("install", "--target", str(tmp_path / "site"), str(wheel))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HOME": str(tmp_path / "home"),
           "HF_HUB_OFFLINE": "1"}

    def textvae(*args: str) -> str:
        done = subprocess.run([str(tmp_path / "site" / "bin" / "textvae"), *args], cwd=work, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    listing = textvae("recipes")
    assert str(tmp_path / "site" / "textvae" / "recipes") in listing and "ptb/lstm-invlip" in listing
    textvae("train", "quickstart", *TINY)
    assert (work / "run" / "final" / "model.safetensors").is_file()
    textvae("train", "ptb/lstm-invlip", *TINY, "output_dir=ptb-run")  # PTB found through $TEXTVAE_DATA
    assert (work / "ptb-run" / "final" / "model.safetensors").is_file()
    textvae("data", "generate", "--train", "5", "--valid", "2", "--test", "2")
    assert len((work / "data" / "synthetic" / "train.txt").read_text().splitlines()) == 5
    assert not any(work.glob("**/recipes"))  # nothing was copied out of the checkout
