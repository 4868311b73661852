"""Logged train records cover the whole optimiser step: micro-batches and processes alike.

Every run here is a language model (``latent_path=none``: no posterior sample) without
dropout on 64 training sentences, so a step's loss is a deterministic function of its
sentences and the weights, and an epoch is exactly one optimiser step whatever the split
of its 64 sentences into micro-batches or processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from tests.training.conftest import REPO
from textvae.training.loop import train
from textvae.training.recipe import load_recipe

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
LOGGED = ("loss", "rec", "kl", "elbo", "neg_elbo", "neg_elbo_per_token", "elbo_ppl", "num_sentences", "num_tokens")


@pytest.fixture
def exact_overrides(tiny_overrides) -> list[str]:
    return [*tiny_overrides, "data.max_train_lines=64", "model.latent_path=none", "train.max_steps=3",
            "train.log_every=1", "train.eval_batches=1"]


def train_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "train"]


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3]
    for a, b in zip(got, want, strict=True):
        for key in LOGGED:
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
    assert got[0]["num_sentences"] == 64  # the whole step, not its last micro-batch


def test_grad_accum_logs_what_one_batch_of_twice_the_size_logs(exact_overrides, tmp_path):
    accumulated = train(load_recipe(QUICKSTART, [*exact_overrides, "data.batch_size=32", "train.grad_accum=2",
                                                 f"output_dir={tmp_path / 'accum'}"]))
    whole = train(load_recipe(QUICKSTART, [*exact_overrides, "data.batch_size=64", f"output_dir={tmp_path / 'whole'}"]))
    assert_same_records(train_records(accumulated), train_records(whole))


TWO_PROCESS_SCRIPT = '''
import sys
from textvae.training.loop import train
from textvae.training.recipe import load_recipe
train(load_recipe(sys.argv[1], sys.argv[2:]))
'''


def test_two_processes_log_and_export_what_one_process_with_twice_the_batch_does(exact_overrides, tmp_path):
    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO)}
    two = tmp_path / "two"
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
               str(QUICKSTART), *exact_overrides, "data.batch_size=32", f"output_dir={two}"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one = train(load_recipe(QUICKSTART, [*exact_overrides, "data.batch_size=64", f"output_dir={tmp_path / 'one'}"]))
    assert_same_records(train_records(two), train_records(one))

    # final/ is written from accelerator.get_state_dict: every weight, those of the best step.
    best = json.loads((two / "final" / "train_summary.json").read_text())["best_step"]
    exported = load_file(two / "final" / "model.safetensors")
    saved = load_file(two / "checkpoints" / f"step-{best:08d}" / "model.safetensors")
    assert exported.keys() == saved.keys() and len(exported) > 0
    for name, tensor in saved.items():
        assert torch.equal(exported[name], tensor), name


def test_a_skipped_optimiser_step_does_not_step_the_lr_schedule(exact_overrides, monkeypatch):
    overrides = [*exact_overrides, "optim.warmup_steps=10"]
    rising = [r["lr"] for r in train_records(train(load_recipe(QUICKSTART, [*overrides, "train.overwrite=true"])))]
    assert rising[0] < rising[1] < rising[2]  # the warm-up raises the LR at every step ...
    monkeypatch.setattr(Accelerator, "optimizer_step_was_skipped", property(lambda self: True))
    held = [r["lr"] for r in train_records(train(load_recipe(QUICKSTART, [*overrides, "train.overwrite=true"])))]
    assert held == [held[0]] * 3 and held[0] < rising[0]  # ... unless every step was skipped (fp16 overflow)
