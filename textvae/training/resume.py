"""The run directory's rules: one training at a time, nothing lost, and resumes that are exact or say why not.

* A training holds ``output_dir/.textvae.lock`` (an OS file lock, released even by
  SIGKILL) while it runs; a second one in the same directory is refused, naming the first.
* A fresh run refuses a directory that holds a run unless ``train.overwrite``; ``resume``
  refuses one that holds a run but no checkpoint. Nothing a user trained is deleted
  except by ``train.overwrite``; a fresh run that fails before its first step removes what
  it wrote itself, so fixing the recipe and running again just works.
* Resuming (:func:`choose_checkpoint`) checks every checkpoint file before Accelerate
  reads any. A damaged newest checkpoint is named in one line, moved aside to
  ``checkpoints/damaged-step-N`` (kept, not deleted), and the newest intact one is used.
* A resume that would not continue exactly as the uninterrupted run (:func:`differences`:
  a file of RNG, optimiser or schedule state missing or damaged, another number of
  processes, other training data, other recipe values) is refused unless
  ``train.resume_inexact``; then the log says what differs, and :func:`load_checkpoint`
  takes the fresh run's own state for what the checkpoint cannot give.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from textvae.atomic import (
    LockHeld,
    failures_named,
    os_error_line,
    os_lock,
    remove_path,
    remove_staged,
)
from textvae.data.tokenized import as_token_rows
from textvae.errors import TextVAEError
from textvae.training.checkpointing import (
    LEGACY_STATE,
    STATE_FILE,
    CheckpointCheck,
    Stateful,
    TrainState,
    carries,
    check_applied,
    checkpoint_dir,
    clean_partial,
    inspect_checkpoint,
    list_checkpoints,
    read_state_file,
    restore_states,
    save_state_into,
    saved_states,
    state_files,
)
from textvae.training.recipe import Recipe

# What a run leaves in its directory; a fresh run must not mix with an earlier one.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "final", "tokenizer", "recipe.yaml")
LOCK_FILE = ".textvae.lock"
# Recipe keys that change nothing a resumed run computes.
NO_EFFECT = {"output_dir", "train.resume", "train.resume_inexact", "train.overwrite", "train.progress",
             "train.log_every", "train.tensorboard", "train.keep_last", "train.save_every",
             # where the data come from: the data fingerprint compares the data themselves
             "data.corpus", "data.data_dir", "data.hf_dataset", "data.tokenizer", "data.text_column"}
# Keys that continue the run on other terms (train longer or shorter): reported, never refused.
CONTINUATION = {"train.max_steps", "train.epochs"}


def warn(accelerator: Accelerator, message: str) -> None:
    """One line on stderr from the main process."""
    if accelerator.is_main_process:
        print(f"warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the directory


def run_outputs(run_dir: Path) -> list[str]:
    """The :data:`RUN_OUTPUTS` present in ``run_dir``."""
    return [name for name in RUN_OUTPUTS if (run_dir / name).exists()]


@contextmanager
def claim_run_directory(run_dir: Path, accelerator: Accelerator) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (main process); a held lock is refused on every process."""
    with ExitStack() as held:
        error = None
        if accelerator.is_main_process:
            try:
                _claim(run_dir, held)
            except TextVAEError as exc:
                error = str(exc)
        error = broadcast_object_list([error])[0]
        if error:
            raise TextVAEError(error)
        yield


def _claim(run_dir: Path, held: ExitStack) -> None:
    """Take ``run_dir``'s lock into ``held`` and write this process's id in its file, which a second
    training reads to name the first. Where the file system has no locks, two trainings go undetected."""
    path = run_dir / LOCK_FILE
    try:
        held.enter_context(os_lock(path, wait=False))
    except LockHeld:
        holder = path.read_text(encoding="utf-8").strip() or "?"
        raise TextVAEError(f"output_dir {run_dir} is in use by another training (process {holder}): wait for it "
                           "to end, or choose another output_dir") from None
    path.write_text(f"{os.getpid()}\n", encoding="utf-8")


def prepare_run_directory(run_dir: Path, fresh: bool, overwrite: bool) -> None:
    """Main process, under the lock: clear the old run (``overwrite``) and what killed writes left."""
    if fresh and overwrite:
        clear_run(run_dir)
    clean_partial(run_dir)
    for name in RUN_OUTPUTS:
        remove_staged(run_dir / name)


def clear_run(run_dir: Path) -> None:
    """Delete what an earlier run left in ``run_dir`` (``train.overwrite``): all of it, or
    nothing when some of it could not be deleted.

    No link is followed out of the run: an output that is a link is removed as a link,
    and so is every link inside a folder (``shutil.rmtree`` unlinks them), so what they
    point to is untouched. Everything is checked before anything is deleted: a folder
    whose entries cannot be removed (no permission, a read-only file system) or another
    file system mounted inside the run refuses the overwrite in one line.
    """
    doomed = [run_dir / name for name in RUN_OUTPUTS if os.path.lexists(run_dir / name)]
    for path in doomed:
        if problem := _undeletable(path):
            raise TextVAEError(f"train.overwrite: cannot delete the earlier run in {run_dir} ({problem}); "
                               "nothing was deleted")
    for path in doomed:
        with failures_named(path, "delete"):
            remove_path(path)


def _undeletable(path: Path) -> str | None:
    """Why ``path`` (not followed if a link) and all it holds could not be deleted, or None."""

    def stop(error: OSError) -> None:
        raise error

    try:
        device = os.lstat(path.parent).st_dev
        folders = [path.parent]
        if not path.is_symlink() and path.is_dir():  # os.walk lists links to folders but does not enter them
            folders += [Path(root) for root, _, _ in os.walk(path, onerror=stop)]
        for folder in folders:
            if os.lstat(folder).st_dev != device:
                return f"{folder} is another file system mounted inside the run"
            if not os.access(folder, os.W_OK | os.X_OK):  # what deleting an entry of a folder takes
                return f"{folder}: what it holds cannot be deleted (no write permission or a read-only file system)"
    except OSError as exc:
        return os_error_line(exc)
    return None


@contextmanager
def undone_on_failure(run_dir: Path, fresh: bool, created: bool, accelerator: Accelerator) -> Iterator[None]:
    """A fresh run that fails inside the block (its set-up) removes what it wrote (the tokenizer,
    the recipe), and the directory itself when it made it. Nothing else was there: a fresh
    run starts only in a directory without a run. A resume only removes a directory it made."""
    try:
        yield
    except BaseException:
        if (fresh or created) and accelerator.is_main_process:
            if fresh:
                with suppress(TextVAEError):  # what cannot go stays: the error that stopped the run is the one to see
                    clear_run(run_dir)
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
            if created:
                try:
                    run_dir.rmdir()
                except OSError:
                    pass
        raise


# --------------------------------------------------------------------------- choosing


@dataclass
class ResumePoint:
    """The checkpoint a run continues from, and the newer damaged ones passed over."""

    check: CheckpointCheck
    skipped: list[CheckpointCheck]

    @property
    def path(self) -> Path:
        return self.check.path

    @property
    def manifest(self) -> dict[str, Any]:
        return self.check.manifest or {}


def choose_checkpoint(run_dir: Path, resume: str, overwrite: bool, inexact: bool) -> ResumePoint | None:
    """The checkpoint to resume from, or None for a fresh run.

    ``resume``: ``no`` -> fresh (refused in a directory holding a run unless ``overwrite``),
    ``auto`` -> the newest intact checkpoint (fresh when the directory holds no run at all;
    refused when it holds a run but no checkpoint), else the checkpoint at that path. With
    ``inexact``, a damaged checkpoint whose weights and counters are intact may be chosen
    when no intact one is left.
    """
    if resume == "no":
        existing = run_outputs(run_dir)
        if existing and not overwrite:
            raise TextVAEError(
                f"output_dir {run_dir} already holds a run ({', '.join(existing)}): continue it with train.resume=auto, "
                "start afresh with train.overwrite=true (deletes it), or choose another output_dir")
        return None
    if resume == "auto":
        return _newest_resumable(run_dir, inexact)
    path = Path(resume)
    if not path.is_dir():
        raise TextVAEError(f"train.resume={resume}: no such checkpoint directory")
    check = inspect_checkpoint(path)
    if check.intact or (inexact and check.usable):
        return ResumePoint(check, [])
    hint = "; train.resume_inexact=true resumes without that state" if check.usable else ""
    raise TextVAEError(f"train.resume={resume}: damaged checkpoint: {check.describe()}{hint}")


def saved_nothing(run_dir: Path) -> bool:
    """The run in ``run_dir`` stopped (was killed) before it saved anything trained: no export,
    no checkpoint, nothing set aside. What it left (tokenizer, recipe, metrics) is
    cleared by a resume, which then starts it afresh, without losing work."""
    root = checkpoint_dir(run_dir)
    kept = [path for path in root.iterdir() if not path.name.startswith(".tmp-")] if root.is_dir() else []
    return not kept and not (run_dir / "final").exists()


def _newest_resumable(run_dir: Path, inexact: bool) -> ResumePoint | None:
    found = list_checkpoints(run_dir)
    if not found:
        existing = run_outputs(run_dir)
        if existing and saved_nothing(run_dir):
            print(f"output_dir {run_dir} holds a run that stopped before its first checkpoint ({', '.join(existing)}): "
                  "nothing trained was saved, so it starts afresh", file=sys.stderr)
            return None
        if existing:
            raise TextVAEError(
                f"train.resume=auto: output_dir {run_dir} holds a run ({', '.join(existing)}) but no checkpoint to "
                "resume from; start afresh with train.overwrite=true (deletes it), or choose another output_dir")
        print(f"nothing to resume in {run_dir}: starting a fresh run", file=sys.stderr)
        return None
    damaged: list[CheckpointCheck] = []
    for path in reversed(found):
        check = inspect_checkpoint(path)
        if check.intact:
            return ResumePoint(check, damaged)
        damaged.append(check)
    usable = next((i for i, check in enumerate(damaged) if check.usable), None)
    if inexact and usable is not None:
        return ResumePoint(damaged[usable], damaged[:usable])
    newest = damaged[0]
    hint = (f"; train.resume_inexact=true resumes from {damaged[usable].path.name} without its damaged state"
            if usable is not None else "; train.overwrite=true starts afresh (deletes the run)")
    raise TextVAEError(f"train.resume=auto: no intact checkpoint in {checkpoint_dir(run_dir)} "
                       f"(newest, {newest.path.name}: {newest.describe()}){hint}")


def set_aside(point: ResumePoint, accelerator: Accelerator) -> None:
    """Report each damaged checkpoint passed over and move it to ``damaged-step-N`` (kept for the user)."""
    for check in point.skipped:
        target = check.path.with_name(f"damaged-{check.path.name}")
        if accelerator.is_main_process:
            while target.exists():
                target = target.with_name(target.name + "-again")
            os.replace(check.path, target)
        warn(accelerator, f"checkpoint {check.path} is damaged ({check.describe()}); moved to {target.name}, "
                          f"resuming from the newest intact one, {point.path}")


# --------------------------------------------------------------------------- exactness


def data_fingerprint(splits: dict[str, Any]) -> str:
    """SHA256 of every split's token ids (``splits``: name -> object with ``ids``): the data a run saw."""
    digest = hashlib.sha256()
    for name in sorted(splits):
        digest.update(name.encode())
        digest.update(as_token_rows(splits[name].ids).digest().encode())
    return digest.hexdigest()


def run_identity(recipe_values: dict[str, Any], data: str) -> dict[str, Any]:
    """What a checkpoint records about its run (JSON values, as they will be read back)."""
    return json.loads(json.dumps({"recipe": recipe_values, "data": data}))


def differences(point: ResumePoint, identity: dict[str, Any], processes: int,
                needed: Iterable[str], saved: Iterable[str]) -> tuple[list[str], list[str], set[str]]:
    """How resuming ``point`` would differ from continuing the run uninterrupted.

    Returns (what makes it inexact, notes that do not, the checkpoint files and manifest
    states this run must take from its own fresh start). ``needed``: the files this run's
    ``load_state`` reads; ``saved``: the states it keeps in the manifest.
    """
    manifest = point.manifest
    recorded = set(manifest.get("files") or ())
    fresh = {name for name in point.check.problems if name != STATE_FILE}
    fresh |= {name for name in needed if name not in recorded and not (point.path / name).is_file()}
    inexact = [f"{name} ({carries(name)}) is {point.check.problems.get(name, 'not in the checkpoint')}: "
               "this run starts it afresh" for name in sorted(fresh)]
    _, missing = saved_states(point.path, manifest, saved)
    fresh |= set(missing)
    inexact += [f"the {carries(name)} is {why}: this run starts it afresh" for name, why in sorted(missing.items())]
    if "recipe" not in manifest:
        inexact.append(f"{STATE_FILE} records no recipe or data (written by an older textvae): they cannot be compared")
        return inexact, [], fresh
    if manifest.get("processes", processes) != processes:
        inexact.append(f"{processes} process(es) instead of {manifest['processes']}: each takes other batches")
    if manifest.get("data") != identity["data"]:
        inexact.append("the training data differ from the checkpoint's (other corpus files, tokenizer or length "
                       "policy)")
    notes = []
    old, new = recorded_recipe(manifest["recipe"]), _flatten(identity["recipe"])
    for key in sorted(set(old) | set(new)):
        if key in NO_EFFECT or old.get(key) == new.get(key):
            continue
        change = f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        (notes if key in CONTINUATION else inexact).append(change)
    return inexact, notes, fresh


def recorded_recipe(recorded: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's recipe, flattened and keyed as this version's: an earlier version recorded only
    the ``model:`` keys a recipe set (the others were, as now, the defaults) and keys since retired
    (a recipe that still sets one is refused, or at its neutral value dropped, at load)."""
    today = _flatten(run_identity(Recipe().to_dict(), "")["recipe"])
    return {**today, **{key: value for key, value in _flatten(recorded).items() if key in today}}


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def accept_differences(point: ResumePoint, inexact: Sequence[str], notes: Sequence[str], allowed: bool,
                       accelerator: Accelerator) -> None:
    """Refuse an inexact resume unless ``allowed`` (``train.resume_inexact``); log what differs."""
    if inexact and not allowed:
        raise TextVAEError(f"resuming {point.path} would not continue the run exactly: {'; '.join(inexact)}. "
                           "Pass train.resume_inexact=true to accept that, or train.overwrite=true to start afresh")
    for line in inexact:
        warn(accelerator, f"inexact resume from {point.path.name}: {line}")
    for line in notes:
        warn(accelerator, f"resuming {point.path.name} with {line} (schedules that span the run are stretched)")


def load_checkpoint(accelerator: Accelerator, run_dir: Path, point: ResumePoint, fresh: set[str],
                    state: TrainState, saved: dict[str, Stateful], optimizer: torch.optim.Optimizer) -> None:
    """Load ``point`` into this run; names in ``fresh`` keep this run's own current state.

    Every process calls this. Accelerate reads a staging copy when some files must not be
    read: this run's state is saved, the checkpoint's good files are copied over it (never
    the pickled states of checkpoints written before the manifest held them), and that is
    loaded. Every piece of state that was read but did not take stops the resume.
    """
    source = point.path
    skipped = (fresh - set(saved)) | {path.name for path in source.iterdir() if LEGACY_STATE.match(path.name)}
    rng_file = f"random_states_{accelerator.process_index}.pkl"
    pickled = {"optimizer.bin", "scaler.pt", rng_file}  # what this process reads
    # Each read first, so that one holding more than plain data is named before Accelerate reads it.
    read = {name: read_state_file(source / name) for name in sorted(pickled & set(state_files(accelerator)) - skipped)}
    staging = checkpoint_dir(run_dir) / ".tmp-resume" if skipped else None
    try:
        if staging is not None:
            save_state_into(accelerator, staging)
            if accelerator.is_main_process:
                for path in source.iterdir():
                    if path.is_file() and path.name not in skipped:
                        shutil.copy2(path, staging / path.name)
            accelerator.wait_for_everyone()
            source = staging
        accelerator.load_state(str(source))
    except Exception as exc:  # noqa: BLE001 -- a mismatching or unreadable state is one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TextVAEError(f"{point.path}: cannot be resumed ({type(exc).__name__}: {first[:300]})") from None
    finally:
        accelerator.wait_for_everyone()
        if staging is not None and accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
    check_applied(accelerator, point.path, optimizer, read.get(rng_file))
    states, _ = saved_states(point.path, point.manifest, [name for name in saved if name not in fresh])
    restore_states(point.path, {"train_state": state, **saved}, {"train_state": point.manifest["train_state"], **states})
