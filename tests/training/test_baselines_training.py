"""The strong baselines inside the trainer: aggressive encoder training (He et al. 2019) and the
pretrained-encoder phase (Li et al. 2019), each resumable mid-phase."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import textvae.training.loop as training
from tests.training.conftest import REPO, assert_same_weights, copy_with_one_checkpoint
from textvae.errors import TextVAEError
from textvae.training.aggressive import encoder_parameters
from textvae.training.loop import train
from textvae.training.recipe import load_recipe

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
AGGRESSIVE = ["train.aggressive=true", "train.aggressive_max_inner_steps=4", "train.aggressive_check_every=2"]
PRETRAIN = ["objective.pretrain_steps=6", "objective.kl_schedule=linear", "objective.kl_warmup_steps=4",
            "objective.free_bits=1.0", "objective.free_bits_mode=sentence", "objective.target_rate=null"]


def run(overrides: list[str]) -> Path:
    return train(load_recipe(QUICKSTART, overrides))


def records(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def encoder_names(model: torch.nn.Module) -> set[str]:
    encoder = {id(p) for p in encoder_parameters(model)}
    return {name for name, p in model.named_parameters() if id(p) in encoder}


@pytest.mark.parametrize("latent_path", ["invlip", "concat"])
def test_inner_loop_of_the_trainer_changes_only_the_encoder(tiny_overrides, monkeypatch, latent_path):
    calls = []
    original = training.encoder_updates

    def watched(model, *args, **kwargs):
        before = snapshot(model)
        steps = original(model, *args, **kwargs)
        calls.append((before, snapshot(model), encoder_names(model), steps))
        return steps

    monkeypatch.setattr(training, "encoder_updates", watched)
    run([*tiny_overrides, *AGGRESSIVE, f"model.latent_path={latent_path}", "train.max_steps=3", "train.eval_every=100"])
    assert len(calls) == 3
    for before, after, encoder, steps in calls:
        assert 2 <= steps <= 4
        for name in before:
            assert torch.equal(before[name], after[name]) != (name in encoder), name


def test_aggressive_phase_switches_off_when_the_validation_mi_falls(tiny_overrides, monkeypatch):
    stubbed = iter([0.5, 0.8, 0.6, 0.9])
    real = training.validate
    monkeypatch.setattr(training, "validate", lambda *args: {**real(*args), "mi": next(stubbed)})
    run_dir = run([*tiny_overrides, *AGGRESSIVE, "train.max_steps=8", "train.eval_every=2", "train.log_every=1"])
    train_records = records(run_dir, "train")
    assert [r["aggressive"] for r in train_records] == [1.0] * 6 + [0.0] * 2  # off after the validation at 6
    assert all(r["encoder_steps"] >= 2 for r in train_records[:6])
    assert [r["encoder_steps"] for r in train_records[6:]] == [0, 0]


def test_phase_two_starts_from_the_autoencoders_encoder_and_a_fresh_decoder(tiny_overrides, monkeypatch):
    seen = {}
    original = training.restart_decoder

    def watched(model, optimizer, schedule, state):
        seen["before"], seen["step"] = snapshot(model), state.step
        original(model, optimizer, schedule, state)
        seen["after"], seen["encoder"] = snapshot(model), encoder_names(model)
        seen["optimizer_state"] = len(optimizer.state)

    monkeypatch.setattr(training, "restart_decoder", watched)
    run_dir = run([*tiny_overrides, *PRETRAIN, "train.max_steps=9", "train.save_every=3", "train.eval_every=3",
                   "train.keep_last=5", "train.log_every=1"])
    assert seen["step"] == 6
    phase_one = load_file(run_dir / "checkpoints" / "step-00000006" / "model.safetensors")
    for name, after in seen["after"].items():
        if name in seen["encoder"]:
            assert torch.equal(after, phase_one[name]), name  # the autoencoder's encoder, as phase 1 left it
        else:
            assert torch.equal(seen["before"][name], phase_one[name]), name
            assert not torch.equal(after, phase_one[name]), name  # re-initialised
    assert seen["optimizer_state"] == 0
    summary = json.loads((run_dir / "final" / "train_summary.json").read_text())
    assert summary["best_step"] == 9  # the autoencoder is never exported as the best model
    assert [r["kl_weight"] for r in records(run_dir, "train") if r["step"] in (6, 7, 9)] == [0.0, 0.0, 0.5]


def test_phase_one_keeps_validating_without_early_stopping(tiny_overrides):
    # lr = 0: every validation equals the first, which would stop a plain run after 2 more.
    run_dir = run([*tiny_overrides, *PRETRAIN, "optim.lr=0.0", "train.max_steps=10", "train.eval_every=1",
                   "train.early_stopping=2"])
    assert [r["step"] for r in records(run_dir, "valid")] == [1, 2, 3, 4, 5, 6, 7, 8, 9]


RESUME = ["train.max_steps=24", "train.eval_every=6", "objective.word_dropout=0.2", "model.dropout_input=0.1",
          "train.save_every=3", "train.keep_last=10", "train.log_every=1"]


@pytest.mark.parametrize(("method", "aggressive_at_resume"), [("aggressive", 1.0), ("aggressive", 0.0),
                                                           ("pretrain", None), ("pretrain", None)],
                         ids=["mid-aggressive", "after-the-switch-off", "mid-autoencoder", "at-the-phase-switch"])
def test_resume_inside_a_phase_matches_the_uninterrupted_run(tiny_overrides, tmp_path, request, method,
                                                             aggressive_at_resume):
    # Mid-aggressive: validating only at the end keeps the phase on at step 15. After the
    # switch-off: the validation at step 6 ended it, so a resume that forgot the switch
    # would train aggressively again (He et al. train without BN). The pretrain runs switch phase at step 6.
    resume_step = {"mid-autoencoder": 3, "at-the-phase-switch": 6}.get(request.node.callspec.id, 15)
    extra = {"aggressive": [*AGGRESSIVE, "model.latent_path=concat", "model.posterior_bn_gamma=null"],
             "pretrain": PRETRAIN}[method]
    if aggressive_at_resume == 1.0:
        extra = [*extra, "train.eval_every=100"]
    common = [*tiny_overrides[:1], *tiny_overrides[2:], *RESUME, *extra]
    reference = run([*common, f"output_dir={tmp_path / 'reference'}"])
    if aggressive_at_resume is not None:
        flags = [r["aggressive"] for r in records(reference, "train")]
        assert flags[0] == 1.0 and flags[resume_step] == aggressive_at_resume
    resumed = copy_with_one_checkpoint(reference, tmp_path / "resumed", resume_step)
    run([*common, f"output_dir={resumed}", "train.resume=auto"])
    assert_same_weights(reference, resumed, 24)
    assert records(resumed, "valid") == records(reference, "valid")


@pytest.mark.parametrize("key", ["train.aggressive=true", "objective.pretrain_steps=3"])
def test_methods_that_train_an_encoder_refuse_a_model_without_one(tiny_overrides, key):
    with pytest.raises(TextVAEError, match=f"recipe key '{key.split('=')[0]}': needs an encoder"):
        run([*tiny_overrides, "model.latent_path=none", "train.max_steps=4", key])
