"""End-to-end behaviour of the trainer: learning, exports, resume, distributed runs."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import (
    REPO,
    assert_same_weights,
    copy_with_one_checkpoint,
    textvae_command,
)
from textvae.errors import TextVAEError
from textvae.training.loop import train
from textvae.training.recipe import load_recipe

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def run(overrides: list[str]) -> Path:
    return train(load_recipe(QUICKSTART, overrides))


def run_files(run_dir: Path) -> dict[Path, bytes]:
    """Every file a run holds (the lock file aside) and its content."""
    return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".textvae.lock"}


def read_metrics(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_export_holds_weights_tokenizer_recipe_and_metrics(tiny_overrides):
    run_dir = run([*tiny_overrides, "train.max_steps=6", "train.eval_every=3"])
    final = run_dir / "final"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "recipe.yaml", "train_summary.json", "metrics.jsonl"):
        assert (final / name).is_file(), name
    summary = json.loads((final / "train_summary.json").read_text())
    assert summary["best_step"] in (3, 6)
    assert [r["step"] for r in read_metrics(run_dir, "valid")] == [3, 6]
    from textvae.hub.loading import load_model

    model = load_model(final)
    assert model.tokenizer is not None and len(model.tokenizer) == model.config.vocab_size


def test_validation_elbo_falls(tiny_overrides):
    run_dir = run([*tiny_overrides, "train.max_steps=40", "train.eval_every=10", "train.eval_batches=4"])
    elbos = [r["elbo"] for r in read_metrics(run_dir, "valid")]
    assert len(elbos) == 4
    assert elbos[-1] > elbos[0] + 5.0  # nats per sentence


def test_checkpoints_are_pruned_to_keep_last(tiny_overrides):
    run_dir = run([*tiny_overrides, "train.max_steps=8", "train.save_every=2", "train.keep_last=2"])
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step-00000006", "step-00000008"]


def test_a_fresh_run_into_a_used_output_dir_is_refused(tiny_overrides):
    run([*tiny_overrides, "train.max_steps=2"])
    with pytest.raises(TextVAEError, match=r"already holds a run \(checkpoints, metrics.jsonl, final, tokenizer, "
                                           r"recipe.yaml\): continue it with train.resume=auto"):
        run([*tiny_overrides, "train.max_steps=2"])


def test_overwrite_starts_afresh_with_a_new_tokenizer_and_metrics(tiny_overrides):
    first = run([*tiny_overrides, "train.max_steps=6", "train.save_every=2", "train.keep_last=5"])
    second = run([*tiny_overrides, "train.max_steps=2", "data.tokenizer=bpe", "data.vocab_size=60",
                  "train.overwrite=true"])
    assert second == first
    assert sorted(p.name for p in (second / "checkpoints").iterdir()) == ["step-00000002"]
    assert [r["step"] for r in read_metrics(second, "valid")] == [2]
    from textvae.hub.loading import load_model

    model = load_model(second / "final")
    assert model.config.vocab_size == len(model.tokenizer) < 100  # BPE, not the first run's ~170 words


def test_resume_in_a_run_without_checkpoints_is_refused_and_deletes_nothing(tiny_overrides):
    run_dir = run([*tiny_overrides, "train.max_steps=2"])
    shutil.rmtree(run_dir / "checkpoints")  # deleted by hand, or the run died before its first save
    before = run_files(run_dir)
    with pytest.raises(TextVAEError, match=r"holds a run \(metrics.jsonl, final, tokenizer, recipe.yaml\) "
                                           r"but no checkpoint to resume from"):
        run([*tiny_overrides, "train.max_steps=2", "train.resume=auto"])
    assert run_files(run_dir) == before


def test_resume_in_an_empty_output_dir_starts_afresh(tiny_overrides, capsys):
    run_dir = run([*tiny_overrides, "train.max_steps=2", "train.resume=auto"])
    assert (run_dir / "final" / "model.safetensors").is_file()
    assert "nothing to resume in" in capsys.readouterr().err


def test_a_bad_recipe_value_fails_before_the_run_dir_is_touched(tiny_overrides):
    recipe = load_recipe(QUICKSTART, tiny_overrides)
    with pytest.raises(TextVAEError, match="objective.kl_schedule"):  # a key's own rule: when it is set
        recipe.objective.kl_schedule = "bogus"
    recipe.optim.min_lr = 1.0  # above optim.lr: a rule across keys, checked when the run starts
    with pytest.raises(TextVAEError, match="optim.min_lr"):
        train(recipe)
    assert not Path(recipe.output_dir).exists()


def test_resumed_metrics_log_each_step_once(tiny_overrides):
    overrides = [*tiny_overrides, "train.max_steps=8", "train.save_every=4", "train.log_every=1", "train.keep_last=5"]
    run_dir = run(overrides)
    shutil.rmtree(run_dir / "checkpoints" / "step-00000008")
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 9, "split": "tr')  # a line cut short by a kill
    run([*overrides, "train.resume=auto"])
    steps = [r["step"] for r in read_metrics(run_dir, "train")]
    assert steps == list(range(1, 9))


def test_tensorboard_without_the_package_is_a_clear_error(tiny_overrides, monkeypatch):
    monkeypatch.setattr("textvae.training.loop.is_tensorboard_available", lambda: False)
    with pytest.raises(TextVAEError, match="'train.tensorboard'.*pip install tensorboard"):
        run([*tiny_overrides, "train.max_steps=2", "train.tensorboard=true"])


def test_nan_loss_stops_with_the_step_named_and_keeps_last_checkpoint(tiny_overrides, monkeypatch):
    from textvae.models import TextVAEModel

    original = TextVAEModel.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 5:
                out.rec_log_likelihood = out.rec_log_likelihood * float("nan")
        return out

    monkeypatch.setattr(TextVAEModel, "forward", poisoned)
    with pytest.raises(TextVAEError, match="non-finite loss/gradient at step 5"):
        run([*tiny_overrides, "train.max_steps=8", "train.save_every=2", "train.eval_every=100"])
    run_dir = Path(tiny_overrides[1].split("=", 1)[1])
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints[-1] == "step-00000004"
    load_file(run_dir / "checkpoints" / "step-00000004" / "model.safetensors")  # intact


RESUME = ["train.max_steps=24", "train.eval_every=6", "objective.word_dropout=0.2", "model.dropout_input=0.1"]


@pytest.mark.parametrize("resume_step", [12, 15], ids=["epoch-boundary", "mid-epoch"])
def test_resume_from_a_checkpoint_matches_uninterrupted_run(tiny_overrides, tmp_path, resume_step):
    # 384 sentences in batches of 32: 12 batches an epoch, so step 12 ends epoch 0 and
    # step 15 stops inside epoch 1 (dropout and word dropout draw from the RNG).
    common = [*tiny_overrides[:1], *tiny_overrides[2:], *RESUME, "train.save_every=3", "train.keep_last=10"]
    reference = run([*common, f"output_dir={tmp_path / 'reference'}"])
    resumed = copy_with_one_checkpoint(reference, tmp_path / "resumed", resume_step)
    run([*common, f"output_dir={resumed}", "train.resume=auto"])
    assert_same_weights(reference, resumed, 24)


def test_sigkill_and_resume_matches_uninterrupted_run(tiny_overrides, tmp_path):
    # save_every=5 never lands on an epoch end (12 batches), so the resume is mid-epoch
    # whichever checkpoint the kill leaves newest.
    common = [*tiny_overrides[:1], *tiny_overrides[2:], *RESUME, "train.save_every=5"]
    reference = tmp_path / "reference"
    subprocess.run(textvae_command("train", str(QUICKSTART), *common, f"output_dir={reference}"),
                   check=True, cwd=REPO, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(textvae_command("train", str(QUICKSTART), *common, f"output_dir={killed}",
                                            "train.log_every=1"),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-00000010").exists():
        assert time.time() < deadline and proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "step-00000024").exists()

    subprocess.run(textvae_command("train", str(QUICKSTART), *common, f"output_dir={killed}", "--resume"),
                   check=True, cwd=REPO, capture_output=True)
    assert_same_weights(reference, killed, 24)
    assert read_metrics(killed, "valid")[-1] == read_metrics(reference, "valid")[-1]


TWO_PROCESS_SCRIPT = r'''
import json, sys, torch
from accelerate import PartialState
import textvae.training.loop as training
from textvae.training.recipe import load_recipe

from textvae.data import batching

samplers, seen = [], []
make_dataloader = training.make_dataloader
def making(*args, **kwargs):
    loader = make_dataloader(*args, **kwargs)
    samplers.append(loader.batch_sampler)  # the training loader is made first
    return loader
training.make_dataloader = making
original_iter = batching.BucketBatchSampler.__iter__
def recording(self):
    for batch in original_iter(self):
        if self is samplers[0]:
            seen.append([self.epoch, batch])
        yield batch
batching.BucketBatchSampler.__iter__ = recording

save = training.save_checkpoint
def saving(accelerator, run_dir, state, *args):
    path = save(accelerator, run_dir, state, *args)
    model = accelerator.unwrap_model(accelerator._models[0])
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
               f"{sys.argv[2]}/params-rank{accelerator.process_index}.pt")
    return path
training.save_checkpoint = saving

recipe = load_recipe(sys.argv[1], sys.argv[3:])
training.train(recipe)
rank = PartialState().process_index
json.dump(seen, open(f"{sys.argv[2]}/seen-rank{rank}.json", "w"))
'''


def test_two_processes_train_in_sync_and_share_each_epoch(tiny_overrides, tmp_path):
    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO)}
    overrides = [*tiny_overrides, "data.max_train_lines=200", "data.batch_size=16", "train.epochs=2",
                 "train.eval_every=0"]
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(QUICKSTART), str(tmp_path), *overrides]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "params-rank0.pt")
    rank1 = torch.load(tmp_path / "params-rank1.pt")
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    seen = [json.loads((tmp_path / f"seen-rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) > 0  # same number of steps on both ranks
    for epoch in (0, 1):
        indices = [i for rank in seen for e, batch in rank if e == epoch for i in batch]
        assert sorted(indices) == list(range(200)), f"epoch {epoch}"


FIXED_MODEL = ["optim.lr=0.0", "model.posterior_bn_gamma=null"]


def test_tensorboard_logging_and_early_stopping(tiny_overrides):
    # lr = 0 and no BN (whose running statistics move without the optimiser) keep the model
    # fixed, so validation never improves after the first one.
    run_dir = run([*tiny_overrides, *FIXED_MODEL, "train.max_steps=40", "train.eval_every=2",
                   "train.early_stopping=2", "train.tensorboard=true"])
    valid = read_metrics(run_dir, "valid")
    assert [r["step"] for r in valid] == [2, 4, 6]  # best at 2, two worse ones, stop
    assert list(run_dir.rglob("events.out.tfevents.*")), "no TensorBoard event file"


def test_an_early_stop_is_checkpointed_between_save_steps(tiny_overrides):
    run_dir = run([*tiny_overrides, *FIXED_MODEL, "train.max_steps=40", "train.eval_every=2",
                   "train.early_stopping=2", "train.save_every=5"])
    assert (run_dir / "checkpoints" / "step-00000006").is_dir()  # stopped at 6, not a multiple of 5


def test_gradient_accumulation_takes_one_step_per_grad_accum_batches(tiny_overrides):
    # 384 sentences in batches of 32: 12 batches, so 6 optimiser steps make one epoch.
    run_dir = run([*tiny_overrides, "train.grad_accum=2", "train.epochs=1", "train.log_every=1"])
    state = json.loads((run_dir / "checkpoints" / "step-00000006" / "textvae_state.json").read_text())["train_state"]
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 0)
    assert [r["step"] for r in read_metrics(run_dir, "train")] == [1, 2, 3, 4, 5, 6]
    assert state["tokens_seen"] == sum(len(line.split()) + 1 for line in
                                       (Path(tiny_overrides[0].split("=", 1)[1]) / "train.txt").read_text().splitlines()[:384])


def test_validation_logs_and_prints_a_warning_for_kl_without_mi(tiny_overrides, monkeypatch, capsys):
    """Posteriors narrow and identical for every sentence: KL is paid, nothing is said."""
    from textvae.models.encoders import GaussianPosterior

    def same_narrow_posterior(self, input_ids, attention_mask):
        mu, logvar = self.to_params(self.encoder(input_ids, attention_mask)).chunk(2, dim=-1)
        return mu * 0.0, logvar * 0.0 - 6.0

    monkeypatch.setattr(GaussianPosterior, "forward", same_narrow_posterior)
    run_dir = run([*tiny_overrides, "train.max_steps=4", "train.eval_every=2"])
    valid = read_metrics(run_dir, "valid")
    assert all(r["warning"].startswith("no active unit") for r in valid) and all(r["mi"] < 0.05 for r in valid)
    assert "warning: step 4: no active unit" in capsys.readouterr().out


def test_an_autoencoder_is_exported_at_its_best_reconstruction_not_its_elbo(tiny_overrides):
    """beta = 0: the ELBO at beta = 1 only falls as the KL grows, so judging by it would export the
    first validation's model; the reconstruction picks the best one."""
    run_dir = run([*tiny_overrides, "objective.beta=0", "train.max_steps=40", "train.eval_every=10",
                   "train.eval_batches=4"])
    valid = read_metrics(run_dir, "valid")
    best = min(valid, key=lambda r: r["rec"])
    assert json.loads((run_dir / "final" / "train_summary.json").read_text())["best_step"] == best["step"]
    assert best["step"] > valid[0]["step"]


def test_a_checkpoint_of_an_earlier_version_records_the_same_recipe():
    """Before model: was typed, a checkpoint recorded only the model keys a recipe set, and the
    retired objective keys at their defaults: resuming it is no different from resuming one written now."""
    from textvae.training.recipe import Recipe
    from textvae.training.resume import recorded_recipe, run_identity

    now = run_identity(Recipe().to_dict(), "")["recipe"]
    earlier = {**now, "model": {"latent_size": now["model"]["latent_size"]},
               "objective": {**now["objective"], "lipschitz_start": None, "lipschitz_warmup_steps": 0}}
    assert recorded_recipe(earlier) == recorded_recipe(now)
    assert recorded_recipe({**earlier, "model": {"latent_size": 7}})["model.latent_size"] == 7


def test_a_target_rate_is_logged_beside_the_rate_reached_and_mmd_trains(tiny_overrides):
    run_dir = run([*tiny_overrides, "train.max_steps=4", "train.log_every=1", "objective.target_rate=6.0",
                   "objective.mmd_weight=100.0"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert len(train_records) == 4 and all(r["rate_target"] == 6.0 and math.isfinite(r["kl"]) for r in train_records)
    assert all(r["kl_term"] == pytest.approx(abs(r["kl"] - 6.0), abs=1e-3) for r in train_records)


def test_bn_statistics_are_measured_before_validation_without_changing_training(tiny_overrides, tmp_path):
    """Precise BN: the running averages are replaced before each validation and export; under a
    schedule that does not read the validation, the weights train exactly as without it (the
    measurement reads training batches of its own)."""
    common = [*tiny_overrides[1:], "model.posterior_bn_gamma=1.0", "train.max_steps=6", "train.eval_every=3",
              "optim.lr=0.01"]
    runs = {n: run([*common, f"output_dir={tmp_path / str(n)}", f"train.bn_statistics_batches={n}"]) for n in (0, 8)}
    weights = {n: load_file(run_dir / "checkpoints" / "step-00000006" / "model.safetensors") for n, run_dir in runs.items()}
    running = [name for name in weights[0] if "mu_norm.running" in name]
    assert len(running) == 2
    for name in weights[0]:
        same = torch.equal(weights[0][name], weights[8][name])
        assert same != (name in running), name
