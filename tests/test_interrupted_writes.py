"""Every artefact textvae writes, interrupted while it is written: the earlier version stays whole.

In-process, the writer dies (an exception no handler catches) at the moment that matters:
mid-way through the content, or just before the new version is renamed into place. A real
SIGKILL in the middle of ``save_pretrained`` is tried in a subprocess, and what it leaves
behind is cleared by the next run.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import SafetensorError

from tests.helpers_models import offline_and_quiet, save_export, tiny_model, word_tokenizer  # noqa: F401
from textvae.errors import TextVAEError
from textvae.hub.loading import load_model

REPO = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """Stands for the process dying: no ``except Exception`` catches it."""


def die(*args, **kwargs):
    raise Killed


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or ``path`` itself) and its bytes."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def write_export(target: Path, version: int) -> None:
    from textvae.training.checkpointing import write_atomic_export

    write_atomic_export(tiny_model(word_tokenizer(), seed=version), target, {"recipe.yaml": f"version: {version}\n"})


def write_tokenizer(target: Path, version: int) -> None:
    from textvae.data.tokenization import save_tokenizer

    save_tokenizer(word_tokenizer(["a", "b", f"w{version}"]), target, {"corpus": f"c{version}"})


def write_evaluation(target: Path, version: int) -> None:
    from textvae.cli.evaluate import write_json_atomic

    write_json_atomic(target, {"nll_iw": float(version)})


def write_plot(target: Path, version: int) -> None:
    from textvae.evaluation.plots import plot_kl_per_dimension

    plot_kl_per_dimension([float(version), 1.0, 2.0], target)


def write_recipe(target: Path, version: int) -> None:
    from textvae.training.recipe import dump_recipe, load_recipe

    dump_recipe(load_recipe(None, [f"seed={version}"]), target)


def write_corpus(target: Path, version: int) -> None:
    from textvae.data.synthetic import write_corpus as generate

    generate(target, n_train=3, n_valid=2, n_test=2, seed=version)


def write_metrics(target: Path, version: int) -> None:
    from accelerate import Accelerator

    from textvae.training.loop import MetricsLog

    if version == 1:
        target.write_text("".join(json.dumps({"step": s, "split": "train"}) + "\n" for s in range(1, 5)))
    else:
        MetricsLog(target, Accelerator(cpu=True)).truncate_after(2)  # what a resume does to the log


ARTEFACTS = {"export (final/)": (write_export, "final"), "tokenizer/": (write_tokenizer, "tokenizer"),
             "evaluation.json": (write_evaluation, "evaluation.json"), "plot (PNG)": (write_plot, "kl.png"),
             "recipe.yaml": (write_recipe, "recipe.yaml"), "corpus files": (write_corpus, "corpus"),
             "metrics.jsonl (resume rewrite)": (write_metrics, "metrics.jsonl")}
def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def safetensors_disk_full(*args, **kwargs):  # what safetensors raises for it
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def at_every_write(failure) -> list[tuple[str, object]]:
    return [("textvae.atomic.os.fsync", failure),  # files: written, not yet synced or renamed
            ("transformers.PreTrainedModel.save_pretrained", failure),  # directories: while being filled
            ("transformers.TokenizersBackend.save_pretrained", failure)]


KILL_POINTS = {  # name -> (where it strikes, what the writer then raises)
    "killed mid-content": (at_every_write(die), Killed),
    "killed before the rename": ([("textvae.atomic.os.replace", die)], Killed),
    "disk full": (at_every_write(disk_full), TextVAEError),
    "disk full (safetensors)": ([("transformers.PreTrainedModel.save_pretrained", safetensors_disk_full),
                                 ("textvae.atomic.os.fsync", disk_full),
                                 ("transformers.TokenizersBackend.save_pretrained", disk_full)], TextVAEError),
}


def second_write_failing(artefact: str, tmp_path: Path, monkeypatch, patches, raised: type) -> tuple:
    """Write ``artefact`` once, then again under ``patches``, which must raise ``raised``; the first
    version is left whole with nothing beside it. Returns (the exception info, the target, its write)."""
    write, name = ARTEFACTS[artefact]
    target = tmp_path / name
    write(target, 1)
    before = snapshot(target)
    with monkeypatch.context() as patch:
        for where, replacement in patches:
            patch.setattr(where, replacement)
        with pytest.raises(raised) as failure:
            write(target, 2)
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing half-written beside it
    return failure, target, write


@pytest.mark.parametrize("kill", KILL_POINTS)
@pytest.mark.parametrize("artefact", ARTEFACTS)
def test_an_interrupted_write_leaves_the_earlier_version_whole(artefact, kill, tmp_path, monkeypatch):
    patches, raised = KILL_POINTS[kill]
    failure, target, write = second_write_failing(artefact, tmp_path, monkeypatch, patches, raised)
    if raised is TextVAEError:  # one line naming what could not be written
        assert "cannot write" in str(failure.value) and "No space left on device" in str(failure.value)
    before = snapshot(target)
    write(target, 2)  # and the next write goes through
    assert snapshot(target) != before


SLOW_SAVE = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.helpers_models import tiny_model, word_tokenizer
from textvae.training.checkpointing import write_atomic_export

final, ready = Path(sys.argv[1]), Path(sys.argv[2])
model = tiny_model(word_tokenizer(), seed=2)
save = type(model).save_pretrained
def slow(self, directory, **kwargs):
    save(self, directory, **kwargs)  # the weights are half-way to disk: killed here
    ready.touch()
    time.sleep(120)
model.save_pretrained = slow.__get__(model)
write_atomic_export(model, final, {"recipe.yaml": "version: 2\n"})
"""


def test_sigkill_during_save_pretrained_keeps_the_export_and_the_next_run_clears_the_rest(tmp_path):
    from textvae.training.resume import prepare_run_directory

    run_dir = tmp_path / "run"
    write_export(run_dir / "final", 1)
    before = snapshot(run_dir / "final")
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(run_dir / "final"), str(ready), str(REPO)],
                            cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not ready.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert snapshot(run_dir / "final") == before
    assert load_model(run_dir / "final") is not None
    leftovers = [p.name for p in run_dir.iterdir() if p.name != "final"]
    assert leftovers and all(name.startswith(".final.") for name in leftovers)  # the staged copy, hidden
    prepare_run_directory(run_dir, fresh=False, overwrite=False)  # what the next training does first
    assert sorted(p.name for p in run_dir.iterdir()) == ["final"]


# --------------------------------------------------------------------------- every OS error, real long names

OS_ERRORS = [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
             errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR]


def os_error(code: int, rust: bool = False):
    """A write failing with ``code``, as Python raises it or as a Rust library (tokenizers,
    safetensors) words it in an exception of its own."""

    def fail(*args, **kwargs):
        if rust:
            raise Exception(f"I/O error: {os.strerror(code)} (os error {code})")
        raise OSError(code, os.strerror(code))

    return fail


FAILURES = {**{errno.errorcode[code]: (code, False) for code in OS_ERRORS},
            "EFBIG (Rust wording)": (errno.EFBIG, True), "ENOSPC (Rust wording)": (errno.ENOSPC, True)}


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("artefact", ARTEFACTS)
def test_every_os_error_while_writing_is_one_line_naming_the_path(artefact, failure, tmp_path, monkeypatch):
    code, rust = FAILURES[failure]
    info, target, _ = second_write_failing(artefact, tmp_path, monkeypatch, at_every_write(os_error(code, rust)),
                                           TextVAEError)
    message = str(info.value)
    assert "\n" not in message and str(target) in message and f"({os.strerror(code)})" in message, message


NAME_MAX = os.pathconf("/tmp", "PC_NAME_MAX")
PATH_MAX = os.pathconf("/tmp", "PC_PATH_MAX")
TOO_LONG = {  # where the name is too long -> the target under tmp_path, and the part the error names
    "the name": lambda name: ("x" * (NAME_MAX + 1), "x" * (NAME_MAX + 1)),
    "a folder above": lambda name: (f"{'x' * (NAME_MAX + 1)}/{name}", "x" * (NAME_MAX + 1)),
    "the whole path": lambda name: ("/".join(["y" * 200] * (PATH_MAX // 200 + 1) + [name]), "y" * 200),
}
WRITTEN_FRESH = [a for a in ARTEFACTS if "metrics" not in a]  # the metrics rewrite only rewrites a log that exists


@pytest.mark.parametrize("where", TOO_LONG)
@pytest.mark.parametrize("artefact", WRITTEN_FRESH)
def test_a_name_longer_than_the_file_system_takes_is_one_line_naming_it(artefact, where, tmp_path):
    write, name = ARTEFACTS[artefact]
    relative, named = TOO_LONG[where](name)
    with pytest.raises(TextVAEError) as info:
        write(tmp_path / relative, 1)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / named) in message and "(File name too long)" in message, message
    assert list(tmp_path.iterdir()) == []  # nothing written on the way


@pytest.mark.parametrize("artefact", WRITTEN_FRESH)
def test_a_name_as_long_as_the_file_system_takes_is_written(artefact, tmp_path):
    """Its hidden staged sibling (``.NAME.random``) would be longer: the name in it is cut."""
    write, _ = ARTEFACTS[artefact]
    target = tmp_path / ("z" * NAME_MAX)
    write(target, 1)
    write(target, 2)
    assert snapshot(target) and sorted(p.name for p in tmp_path.iterdir()) == [target.name]
