"""``train.overwrite=true`` deletes the earlier run: all of it, or nothing when some of it
cannot go, and never what a link inside the run points to."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from tests.training.conftest import TINY
from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.training.resume import LOCK_FILE, RUN_OUTPUTS, clear_run


def fake_run(run_dir: Path) -> Path:
    """A directory shaped like a finished run (no training needed to delete one), plus a
    file of the user's that is no run output and stays."""
    for name, text in {"checkpoints/step-00000002/model.safetensors": "weights", "metrics.jsonl": "{}\n",
                       "final/config.json": "{}", "tokenizer/tokenizer.json": "{}", "recipe.yaml": "seed: 0\n",
                       "notes.txt": "mine\n"}.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(text)
    return run_dir


def outside(tmp_path: Path) -> Path:
    """What links in the run point to: a folder with a file in it, and a file."""
    root = tmp_path / "outside"
    (root / "folder").mkdir(parents=True)
    (root / "folder" / "precious.txt").write_text("keep me\n")
    (root / "file.txt").write_text("keep me too\n")
    return root


def snapshot(path: Path) -> dict[str, str]:
    """Every entry under ``path``, links not followed: a file's text, a link's target, ``dir``."""
    entries = {}
    for entry in sorted(path.rglob("*")):
        if entry.is_symlink():
            entries[str(entry.relative_to(path))] = f"-> {os.readlink(entry)}"
        elif entry.is_dir():
            entries[str(entry.relative_to(path))] = "dir"
        else:
            entries[str(entry.relative_to(path))] = entry.read_text()
    return entries


def link(run_dir: Path, where: str, target: Path) -> None:
    """Replace ``run_dir/where`` by a link to ``target``."""
    path = run_dir / where
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


LINKS = {  # where in the run -> what it points to
    **{name: "folder" if "." not in name else "file.txt" for name in RUN_OUTPUTS},
    "checkpoints/step-00000004": "folder",  # a link inside a folder of the run
    "final/extra.json": "file.txt",
    "tokenizer/dangling": "nowhere",
}


@pytest.mark.parametrize("where", LINKS)
def test_overwrite_removes_links_as_links_and_touches_nothing_they_point_to(where, tmp_path):
    run_dir, targets = fake_run(tmp_path / "run"), outside(tmp_path)
    link(run_dir, where, targets / LINKS[where])
    before = snapshot(targets)
    clear_run(run_dir)
    assert [name for name in RUN_OUTPUTS if os.path.lexists(run_dir / name)] == []
    assert snapshot(run_dir) == {"notes.txt": "mine\n"}
    assert snapshot(targets) == before


def test_train_overwrite_over_a_run_with_links_trains_afresh_and_leaves_their_targets(corpus_dir, tmp_path,
                                                                                   capsys):
    run_dir, targets = fake_run(tmp_path / "run"), outside(tmp_path)
    link(run_dir, "tokenizer", targets / "folder")
    link(run_dir, "checkpoints/step-00000004", targets / "folder")
    before = snapshot(targets)
    status = main(["train", "quickstart", f"data.corpus={corpus_dir}", f"output_dir={run_dir}", *TINY,
                   "train.max_steps=1", "train.overwrite=true"])
    assert status == 0, capsys.readouterr().err
    assert snapshot(targets) == before
    assert not (run_dir / "tokenizer").is_symlink() and (run_dir / "tokenizer" / "tokenizer.json").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000001"]


def undeletable_folder(monkeypatch, folder: Path) -> None:
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != folder and real(path, mode, **kw))


def mounted_folder(monkeypatch, folder: Path) -> None:
    real = os.lstat

    def lstat(path, *args, **kwargs):
        found = real(path, *args, **kwargs)
        if Path(path) != folder:
            return found
        fields = list(found)
        fields[2] += 1  # st_dev: another file system
        return os.stat_result(fields)

    monkeypatch.setattr(os, "lstat", lstat)


def unreadable_folder(monkeypatch, folder: Path) -> None:
    real = os.scandir

    def scandir(path="."):
        if Path(path) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


OBSTACLES = {  # what stands in the way, the folder it is put on, the words naming it
    "unwritable folder": (undeletable_folder, "checkpoints/step-00000002", "cannot be deleted"),
    "another file system mounted": (mounted_folder, "final", "another file system mounted inside the run"),
    "unreadable folder": (unreadable_folder, "tokenizer", "Permission denied"),
}


@pytest.mark.parametrize("obstacle", OBSTACLES)
def test_an_overwrite_that_cannot_delete_everything_deletes_nothing(obstacle, corpus_dir, tmp_path, monkeypatch,
                                                                   capsys):
    run_dir = fake_run(tmp_path / "run")
    put, where, words = OBSTACLES[obstacle]
    before = snapshot(run_dir)
    put(monkeypatch, run_dir / where)
    status = main(["train", "quickstart", f"data.corpus={corpus_dir}", f"output_dir={run_dir}", *TINY,
                   "train.max_steps=1", "train.overwrite=true"])
    err = capsys.readouterr().err.strip().splitlines()
    monkeypatch.undo()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"textvae: error: train.overwrite: cannot delete the earlier run in {run_dir} (")
    assert str(run_dir / where) in err[0] and words in err[0] and err[0].endswith("; nothing was deleted")
    assert {k: v for k, v in snapshot(run_dir).items() if k != LOCK_FILE} == before


def test_a_failure_while_deleting_is_one_line_naming_the_path(tmp_path, monkeypatch):
    """What the checks cannot foresee (a disk error, a file made immutable meanwhile)."""
    run_dir = fake_run(tmp_path / "run")

    def failing(path, *args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(shutil, "rmtree", failing)
    with pytest.raises(TextVAEError) as info:
        clear_run(run_dir)
    assert str(info.value) == f"{run_dir / 'checkpoints'}: cannot delete (Input/output error)"


def test_a_failed_fresh_run_whose_leftovers_cannot_go_still_reports_its_own_error(tmp_path, monkeypatch):
    from accelerate import Accelerator

    from textvae.training.resume import undone_on_failure

    run_dir = fake_run(tmp_path / "run")
    undeletable_folder(monkeypatch, run_dir / "final")
    with pytest.raises(TextVAEError, match="^data.corpus: the train split is empty$"):
        with undone_on_failure(run_dir, fresh=True, created=False, accelerator=Accelerator(cpu=True)):
            raise TextVAEError("data.corpus: the train split is empty")
    assert (run_dir / "final").is_dir()  # refused as a whole: nothing went
