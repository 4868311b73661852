"""Checkpoints that survive damage: every file of a checkpoint damaged in every way is found before
Accelerate reads it, a damaged newest checkpoint falls back to the newest intact one, and a
resume that would not be exact is refused unless ``train.resume_inexact`` accepts it."""

from __future__ import annotations

import fcntl
import json
import random
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.training.conftest import TINY, assert_same_weights
from textvae.errors import TextVAEError
from textvae.training.checkpointing import file_record, inspect_checkpoint, list_checkpoints
from textvae.training.loop import train
from textvae.training.recipe import load_recipe

STEPS = ["train.max_steps=8", "train.save_every=2", "train.keep_last=4", "train.eval_every=4",
         "objective.word_dropout=0.2", "model.dropout_input=0.1"]  # dropout: the RNG state matters


def run(corpus: Path, output_dir: Path, *extra: str) -> Path:
    return train(load_recipe("quickstart", [f"data.corpus={corpus}", f"output_dir={output_dir}", *TINY, *STEPS, *extra]))


@pytest.fixture(scope="module")
def reference(corpus_dir, tmp_path_factory) -> Path:
    """An uninterrupted 8-step run with checkpoints at steps 2, 4, 6 and 8."""
    return run(corpus_dir, tmp_path_factory.mktemp("reference") / "run")


def copy_run(reference: Path, target: Path, keep: tuple[int, ...]) -> Path:
    shutil.copytree(reference, target)
    for checkpoint in list_checkpoints(target):
        if int(checkpoint.name.split("-")[1]) not in keep:
            shutil.rmtree(checkpoint)
    return target


def checkpoint(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "extended":
        path.write_bytes(data + b"\0" * 16)
    elif how == "one byte changed":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])


DAMAGE = ["missing", "truncated", "emptied", "extended", "one byte changed"]


@pytest.mark.parametrize("how", DAMAGE)
def test_every_damage_to_every_checkpoint_file_is_found(reference, tmp_path, how):
    files = sorted(p.name for p in checkpoint(reference, 8).iterdir())
    assert set(files) == {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "textvae_state.json"}
    assert inspect_checkpoint(checkpoint(reference, 8)).intact
    for name in files:
        copy = tmp_path / name
        shutil.copytree(checkpoint(reference, 8), copy)
        damage(copy / name, how)
        check = inspect_checkpoint(copy)
        assert not check.intact and name in check.problems, (name, check.problems)
        assert check.usable == (name not in ("model.safetensors", "textvae_state.json"))


def test_checkpoints_without_a_manifest_are_still_checked_by_format(reference, tmp_path):
    copy = shutil.copytree(checkpoint(reference, 8), tmp_path / "old")
    manifest = json.loads((copy / "textvae_state.json").read_text())
    (copy / "textvae_state.json").write_text(json.dumps(manifest["train_state"]))  # as written before manifests
    assert inspect_checkpoint(copy).intact
    for name, how in (("model.safetensors", "truncated"), ("optimizer.bin", "truncated"), ("random_states_0.pkl", "emptied"),
                      ("model.safetensors", "missing")):
        broken = shutil.copytree(copy, tmp_path / f"{name}-{how}")
        damage(broken / name, how)
        assert name in inspect_checkpoint(broken).problems, (name, how)


def test_a_damaged_newest_checkpoint_is_named_and_the_newest_intact_one_resumes_exactly(
        reference, corpus_dir, tmp_path, capsys):
    resumed = copy_run(reference, tmp_path / "resumed", keep=(4, 6))
    (resumed / "checkpoints" / "step-00000006" / "model.safetensors").write_bytes(b"\0" * 1000)
    run(corpus_dir, resumed, "train.resume=auto")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "damaged" in line]
    assert len(lines) == 1 and "step-00000006" in lines[0] and "model.safetensors" in lines[0]
    assert "resuming from the newest intact one" in lines[0] and lines[0].endswith("step-00000004")
    assert_same_weights(reference, resumed, 8)
    kept = resumed / "checkpoints" / "damaged-step-00000006" / "model.safetensors"
    assert kept.read_bytes() == b"\0" * 1000  # set aside, not deleted


def test_missing_rng_state_is_refused_unless_resume_inexact_and_then_named(reference, corpus_dir, tmp_path, capsys):
    resumed = copy_run(reference, tmp_path / "resumed", keep=(4,))
    (checkpoint(resumed, 4) / "random_states_0.pkl").unlink()
    before = sorted(p.name for p in resumed.rglob("*"))
    with pytest.raises(TextVAEError, match=r"no intact checkpoint .*random_states_0.pkl \(RNG state of process 0\): "
                                           r"missing.*train.resume_inexact=true"):
        run(corpus_dir, resumed, "train.resume=auto")
    assert sorted(p.name for p in resumed.rglob("*")) == before
    run(corpus_dir, resumed, "train.resume=auto", "train.resume_inexact=true")
    assert "inexact resume from step-00000004: random_states_0.pkl (RNG state of process 0) is missing" \
        in capsys.readouterr().err
    assert (checkpoint(resumed, 8) / "model.safetensors").is_file()


@pytest.mark.parametrize("change, named", [
    (["optim.lr=0.01"], "optim.lr: 0.002 -> 0.01"),
    (["data.max_train_lines=352"], "the training data differ"),
    (["seed=1"], "seed: 0 -> 1"),
], ids=["optimiser", "data", "seed"])
def test_a_resume_with_other_values_is_refused_naming_them(reference, corpus_dir, tmp_path, change, named):
    resumed = copy_run(reference, tmp_path / "resumed", keep=(4,))
    with pytest.raises(TextVAEError, match=r"would not continue the run exactly: .*" + re.escape(named)):
        run(corpus_dir, resumed, "train.resume=auto", *change)


def test_other_process_counts_and_old_checkpoints_are_inexact(reference, corpus_dir, tmp_path):
    resumed = copy_run(reference, tmp_path / "resumed", keep=(4,))
    manifest_path = checkpoint(resumed, 4) / "textvae_state.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "processes": 2}))
    with pytest.raises(TextVAEError, match=r"1 process\(es\) instead of 2"):
        run(corpus_dir, resumed, "train.resume=auto")
    manifest_path.write_text(json.dumps(manifest["train_state"]))
    with pytest.raises(TextVAEError, match="records no recipe or data"):
        run(corpus_dir, resumed, "train.resume=auto")


def test_no_intact_checkpoint_is_refused_naming_the_newest_damage(reference, corpus_dir, tmp_path):
    resumed = copy_run(reference, tmp_path / "resumed", keep=(6, 8))
    for step in (6, 8):
        damage(checkpoint(resumed, step) / "model.safetensors", "truncated")
    with pytest.raises(TextVAEError, match=r"no intact checkpoint .*step-00000008: model.safetensors .*truncated.*"
                                           r"train.overwrite=true"):
        run(corpus_dir, resumed, "train.resume=auto", "train.resume_inexact=true")
    assert [p.name for p in list_checkpoints(resumed)] == ["step-00000006", "step-00000008"]


def test_a_second_training_in_the_same_output_dir_is_refused(corpus_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / ".textvae.lock", "a+") as held:  # what a running training holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        with pytest.raises(TextVAEError, match=r"in use by another training \(process 4242\)"):
            run(corpus_dir, run_dir, "train.max_steps=1")
    assert sorted(p.name for p in run_dir.iterdir()) == [".textvae.lock"]


def test_a_fresh_run_that_fails_in_set_up_leaves_nothing_behind(tmp_path):
    corpus = tmp_path / "tiny"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("a b\nb a\n")
    with pytest.raises(TextVAEError, match=r"recipe keys 'model.latent_size', 'model.invlip_state_size': the invlip "
                                           r"lift needs a vocabulary of at least .* = 13 tokens, .* has 6"):
        run(corpus, tmp_path / "run", "train.max_steps=1")
    assert not (tmp_path / "run").exists()  # so the corrected recipe can run there without overwrite



class Killed(BaseException):
    """Stands for the process dying mid-save: no ``except Exception`` catches it."""


def test_a_save_killed_midway_leaves_the_previous_checkpoint_and_resumes_exactly(reference, corpus_dir, tmp_path,
                                                                                 monkeypatch):
    from accelerate import Accelerator

    save_state, calls = Accelerator.save_state, []

    def dying(self, output_dir, **kwargs):
        calls.append(output_dir)
        save_state(self, output_dir, **kwargs)
        if len(calls) == 3:  # the step-6 checkpoint is on disk, its manifest and rename are not
            raise Killed

    monkeypatch.setattr(Accelerator, "save_state", dying)
    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        run(corpus_dir, killed)
    monkeypatch.setattr(Accelerator, "save_state", save_state)
    assert [p.name for p in list_checkpoints(killed)] == ["step-00000002", "step-00000004"]
    assert all(inspect_checkpoint(p).intact for p in list_checkpoints(killed))
    run(corpus_dir, killed, "train.resume=auto")  # the half-written .tmp-step-00000006 is cleared first
    assert not list((killed / "checkpoints").glob(".tmp-*"))
    assert_same_weights(reference, killed, 8)


def test_a_run_killed_before_its_first_checkpoint_continues_by_the_command_its_message_gives(
        reference, corpus_dir, tmp_path, monkeypatch, capsys):
    from accelerate import Accelerator

    def dying(self, output_dir, **kwargs):
        raise Killed  # SIGKILL during the first save: tokenizer and recipe are there, nothing trained is

    monkeypatch.setattr(Accelerator, "save_state", dying)
    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        run(corpus_dir, killed)
    monkeypatch.undo()
    with pytest.raises(TextVAEError, match=r"already holds a run \(.*tokenizer.*\): continue it with train.resume=auto"):
        run(corpus_dir, killed)
    run(corpus_dir, killed, "train.resume=auto")
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    assert_same_weights(reference, killed, 8)


class RunsCode:
    """A pickled object that, unpickled, creates ``marker`` (it could as well run a shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant(ckpt: Path, name: str, content) -> None:
    """Replace a checkpoint file as an attacker would: ``torch.save``d, its manifest entry made to match."""
    torch.save(content, ckpt / name)
    path = ckpt / "textvae_state.json"
    manifest = json.loads(path.read_text())
    manifest["files"][name] = file_record(ckpt / name)
    path.write_text(json.dumps(manifest))


def as_written_before_manifest_states(ckpt: Path) -> dict:
    """The checkpoint as textvae wrote it when Accelerate pickled the loop's states; returns the states."""
    path = ckpt / "textvae_state.json"
    manifest = json.loads(path.read_text())
    states = manifest.pop("states")
    path.write_text(json.dumps(manifest))
    plant(ckpt, "custom_checkpoint_0.pkl", manifest["train_state"])
    plant(ckpt, "custom_checkpoint_1.pkl", states["lr_schedule"])
    return states


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "optimizer.bin",
                                  "random_states_0.pkl"])
def test_a_crafted_pickle_in_a_checkpoint_runs_no_code(reference, corpus_dir, tmp_path, name):
    resumed = copy_run(reference, tmp_path / "resumed", keep=(4,))
    as_written_before_manifest_states(checkpoint(resumed, 4))
    marker = tmp_path / "owned"
    plant(checkpoint(resumed, 4), name, {"state": RunsCode(marker)})
    if name == "custom_checkpoint_0.pkl":  # the old layout's counters: the manifest holds them, the file is never read
        run(corpus_dir, resumed, "train.resume=auto")
        assert not marker.exists()
        return
    with pytest.raises(TextVAEError) as refused:
        run(corpus_dir, resumed, "train.resume=auto")
    assert not marker.exists()
    assert "\n" not in str(refused.value)
    if name == "custom_checkpoint_1.pkl":  # a state of the old layout: named, and an inexact resume goes on without it
        assert "LR schedule state is in custom_checkpoint_1.pkl, which is not plain data" in str(refused.value)
        run(corpus_dir, resumed, "train.resume=auto", "train.resume_inexact=true")
        assert not marker.exists()
    else:
        assert f"{name} (" in str(refused.value) and "holds objects other than tensors and plain data (io.open)" \
            in str(refused.value)


def test_checkpoints_of_the_pickled_layout_convert_safely_and_resume_exactly(reference, corpus_dir, tmp_path):
    resumed = copy_run(reference, tmp_path / "resumed", keep=(4,))
    as_written_before_manifest_states(checkpoint(resumed, 4))
    run(corpus_dir, resumed, "train.resume=auto")
    assert_same_weights(reference, resumed, 8)
    assert "states" in json.loads((checkpoint(resumed, 8) / "textvae_state.json").read_text())
    assert not list(checkpoint(resumed, 8).glob("custom_checkpoint_*"))


@pytest.mark.parametrize("content", [
    {},
    {"random_state": random.getstate(), "numpy_random_seed": ("MT19937", [1, 2], 0, 0, 0.0),
     "torch_manual_seed": torch.zeros(3, dtype=torch.uint8)},
    [1, 2, 3],
], ids=["empty", "wrong-sizes", "a-list"])
def test_an_rng_state_that_loads_but_does_not_apply_stops_the_resume(reference, corpus_dir, tmp_path, content):
    resumed = copy_run(reference, tmp_path / "resumed", keep=(4,))
    plant(checkpoint(resumed, 4), "random_states_0.pkl", content)
    with pytest.raises(TextVAEError, match=r"random_states_0.pkl \(RNG state of process 0\) was read but does not "
                                           r"apply .*train.resume_inexact=true"):
        run(corpus_dir, resumed, "train.resume=auto")


def test_an_optimiser_state_of_other_shapes_stops_the_resume(reference, corpus_dir, tmp_path):
    resumed = copy_run(reference, tmp_path / "resumed", keep=(4,))
    state = torch.load(checkpoint(resumed, 4) / "optimizer.bin", weights_only=True)
    first = next(iter(state["state"].values()))
    first["exp_avg"] = torch.zeros(first["exp_avg"].numel() + 1)
    plant(checkpoint(resumed, 4), "optimizer.bin", state)
    with pytest.raises(TextVAEError, match=r"optimizer.bin \(optimiser state\): its exp_avg has shape"):
        run(corpus_dir, resumed, "train.resume=auto")


@pytest.mark.parametrize("counters", [{"step": "4"}, {"step": -1}, {"epoch": 1.5}, {"surprise": 1}, {"step": True}],
                         ids=["text", "negative", "fraction", "unknown", "bool"])
def test_garbled_loop_counters_stop_the_resume(reference, corpus_dir, tmp_path, counters):
    resumed = copy_run(reference, tmp_path / "resumed", keep=(4,))
    path = checkpoint(resumed, 4) / "textvae_state.json"
    manifest = json.loads(path.read_text())
    manifest["train_state"].update(counters)
    path.write_text(json.dumps(manifest))
    with pytest.raises(TextVAEError, match=r"textvae_state.json: its loop counters does not apply"):
        run(corpus_dir, resumed, "train.resume=auto")
