"""``textvae evaluate`` gives the numbers it gave before the evaluation path was rebuilt.

``reference/quickstart-tiny/`` is an export of ``recipes/quickstart.yaml`` at small sizes
(``data.max_train_lines=2000 model.embedding_size=16 model.hidden_size=32
model.latent_size=8 model.invlip_state_size=8 model.icnn_hidden_size=16
train.max_steps=150``). ``quickstart-tiny.evaluation.json`` is what ``textvae evaluate
EXPORT --iw-samples 8 --max-sentences 120`` wrote for it at commit 8c0f67b, the last one
with the old, separately assembled evaluation (its local paths removed). The interpolation,
diversity and fluency numbers came later and are switched off here (``GENERATION_OFF``);
tests/cli/test_evaluate_generation.py checks them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from textvae.cli import main

REFERENCE = Path(__file__).parent / "reference"
GENERATION_OFF = ["--interpolation-pairs", "0", "--samples", "0"]
# Numbers added after the reference (issue 32's honest estimators), and the protocol texts they changed:
# the reference's own numbers must still reproduce, and nothing else may appear.
ADDED = {"mi_ceiling", "mi_saturated", "own_code_gain", "kl_minus_mi"}
PROTOCOL_CHANGED = {"mi_split", "own_code_gain", "kl_minus_mi"}


def numeric_leaves(node, prefix=""):
    """``{"a.b[0]": number}`` for every number (and bool) of a JSON document."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in numeric_leaves(value, f"{prefix}{key}.").items()}
    if isinstance(node, list):
        return {k: v for i, value in enumerate(node) for k, v in numeric_leaves(value, f"{prefix}[{i}].").items()}
    return {prefix.rstrip("."): node} if isinstance(node, (int, float)) else {}


def reference_json() -> dict:
    return json.loads((REFERENCE / "quickstart-tiny.evaluation.json").read_text(encoding="utf-8"))


def assert_reproduces_the_reference(out: Path) -> dict:
    """The results written to ``out`` hold the reference's protocol, warnings and numbers (to float
    noise), and besides them only what came later (:data:`ADDED`)."""
    got, want = json.loads(out.read_text(encoding="utf-8")), reference_json()
    unchanged = set(want["protocol"]) - PROTOCOL_CHANGED
    assert {k: got["protocol"][k] for k in unchanged} == {k: want["protocol"][k] for k in unchanged}
    assert set(got["protocol"]) == set(want["protocol"]) | PROTOCOL_CHANGED and got["warnings"] == want["warnings"]
    got_numbers, want_numbers = numeric_leaves(got), numeric_leaves(want)
    assert set(got_numbers) == set(want_numbers) | ADDED
    for key, value in want_numbers.items():
        assert got_numbers[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    return got


def test_evaluate_reproduces_the_stored_reference_to_float_noise(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    export = shutil.copytree(REFERENCE / "quickstart-tiny", tmp_path / "export")
    out = tmp_path / "evaluation.json"
    assert main(["evaluate", str(export), "--iw-samples", "8", "--max-sentences", "120", "--output", str(out),
                 "--no-progress", *GENERATION_OFF]) == 0
    capsys.readouterr()
    got = assert_reproduces_the_reference(out)
    assert {k: v for k, v in got["data"].items() if k != "source"} == reference_json()["data"]


def test_two_processes_give_the_one_process_reference(tmp_path):
    """``accelerate launch --num_processes 2 -m textvae evaluate``: each sentence evaluated once,
    on one of the two processes, with the samples it gets on one process."""
    export = shutil.copytree(REFERENCE / "quickstart-tiny", tmp_path / "export")
    out = tmp_path / "evaluation.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "textvae",
               "evaluate", str(export), "--iw-samples", "8", "--max-sentences", "120", "--output", str(out),
               "--no-progress", *GENERATION_OFF]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| Metric | Value | Notes |") == 1  # the main process alone reports
    assert_reproduces_the_reference(out)  # the same sentences and predicted tokens: none twice, none lost
