"""Atomic, verifiable checkpoints of a training run.

A checkpoint is ``accelerator.save_state`` (model, optimiser, RNG states of every
process) plus the manifest ``textvae_state.json``, which holds the loop's own state (the
counters, the LR schedule, the aggressive-training switch) as JSON, written into
``checkpoints/.tmp-step-N`` and renamed to ``checkpoints/step-N`` only when complete. A run killed at any moment therefore leaves either the previous
checkpoint or the new one, never half of one.

What happens to a checkpoint after it is written (a disk error, a truncated copy, a file
deleted by hand) is found by :func:`inspect_checkpoint` before Accelerate reads a byte of
it: ``textvae_state.json`` is the checkpoint's manifest, recording the size and SHA256 of
every file beside the loop counters, the resolved recipe, the number of processes and a
fingerprint of the training data, so that a resume can also tell whether it would continue
exactly (:mod:`textvae.training.resume`).

Nothing in a checkpoint is unpickled. Accelerate reads the weights as safetensors and the
optimiser, scaler and RNG files with ``torch.load(weights_only=True)``, which builds
tensors and plain containers only; but it would unpickle objects registered for
checkpointing with ``weights_only=False`` (a crafted ``custom_checkpoint_N.pkl`` would
run code), so none is registered: their states live in the manifest. Checkpoints written
before that kept them in those files; :func:`saved_states` converts them with
``weights_only=True`` or names them as not loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import struct
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import load
from safetensors import SafetensorError

from textvae.atomic import staged_directory
from textvae.errors import TextVAEError

PREFIX = "step-"
STATE_FILE = "textvae_state.json"
MODEL_FILE = "model.safetensors"
# Without these a checkpoint cannot be resumed at all; every other file only makes the
# resume exact (:data:`CARRIES` says what each holds).
REQUIRED = (MODEL_FILE, STATE_FILE)
CARRIES = {
    "model": "model weights",
    "optimizer": "optimiser state",
    "random_states": "RNG state",
    "scaler": "fp16 loss-scaler state",
    "custom_checkpoint_0": "loop counters",
    "custom_checkpoint_1": "LR schedule state",
    "custom_checkpoint_2": "aggressive-training state",
    "textvae_state": "manifest and loop counters",
    "train_state": "loop counters",
}
# The loop's state objects kept in the manifest, with their file in checkpoints written
# before (Accelerate's ``custom_checkpoint_N.pkl``; N = 0 was the counters, always in the manifest too).
SAVED_STATES = {"lr_schedule": "custom_checkpoint_1.pkl", "aggressive": "custom_checkpoint_2.pkl"}
LEGACY_STATE = re.compile(r"^custom_checkpoint_\d+\.pkl$")


class Stateful(Protocol):
    """What the manifest can keep: an object whose state is plain JSON data."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainState:
    """Loop counters, kept in every checkpoint's manifest."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_elbo: float = float("-inf")
    """The best validation score: the ELBO at the objective's final KL weight (the ELBO itself at 1)."""
    bad_validations: int = 0
    tokens_seen: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Counters from a manifest, checked: a crafted or garbled one is refused, not half applied."""
        names = {f.name for f in fields(self)}
        if unknown := sorted(set(state) - names):
            raise ValueError(f"unknown counters {unknown}")
        values = {**self.state_dict(), **state}
        for key in ("step", "epoch", "batch_in_epoch"):  # the position: never defaulted
            if key not in state:
                raise KeyError(key)
        for key, value in values.items():
            fits = isinstance(value, (int, float)) if key == "best_elbo" else isinstance(value, int) and value >= 0
            if isinstance(value, bool) or not fits:
                raise TypeError(f"{key} = {value!r} is not a count")
        for key, value in values.items():
            setattr(self, key, value)


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (renamed into place), oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def carries(name: str) -> str:
    """What the checkpoint file (or manifest state) ``name`` holds, for messages."""
    if name in SAVED_STATES:
        return carries(SAVED_STATES[name])
    stem = name.split(".")[0]
    key = stem if stem in CARRIES else stem.rstrip("0123456789").rstrip("_")
    process = f" of process {stem.rsplit('_', 1)[1]}" if key == "random_states" else ""
    return CARRIES.get(key, "state") + process


# --------------------------------------------------------------------------- writing


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainState, keep_last: int,
                    identity: dict[str, Any], saved: dict[str, Stateful]) -> Path:
    """Write a checkpoint atomically and keep only the newest ``keep_last``; all processes call this.

    ``identity``: what the run was (``recipe``, ``data`` fingerprint), recorded in the
    manifest so a resume can compare itself with it. ``saved``: the state objects (names
    from :data:`SAVED_STATES`) whose ``state_dict`` the manifest keeps as JSON.
    """
    root = checkpoint_dir(run_dir)
    final = root / f"{PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{PREFIX}{state.step:08d}"
    with written_or_named(final, "earlier checkpoints are untouched", cleanup=tmp):
        save_state_into(accelerator, tmp)
        if accelerator.is_main_process:
            files = {path.name: file_record(path) for path in sorted(tmp.iterdir()) if path.is_file()}
            manifest = {"train_state": state.state_dict(), "processes": accelerator.num_processes, **identity,
                        "states": {name: obj.state_dict() for name, obj in saved.items()}, "files": files}
            with open(tmp / STATE_FILE, "w", encoding="utf-8") as handle:
                json.dump(manifest, handle, indent=1)
            _fsync_tree(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_state_into(accelerator: Accelerator, directory: Path) -> None:
    """``accelerator.save_state`` into a new empty ``directory``; all processes call this."""
    if accelerator.is_main_process:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(directory))
    accelerator.wait_for_everyone()


def file_record(path: Path) -> dict[str, Any]:
    """Size and SHA256 of a file (the manifest's entry for it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def clean_partial(run_dir: Path) -> None:
    """Remove what an interrupted save (or resume) left behind."""
    root = checkpoint_dir(run_dir)
    for tmp in root.glob(".tmp-*") if root.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)


def state_files(accelerator: Accelerator) -> list[str]:
    """The files ``accelerator.load_state`` reads for this run (Accelerate's names)."""
    return [MODEL_FILE, "optimizer.bin", *(f"random_states_{i}.pkl" for i in range(accelerator.num_processes)),
            *(["scaler.pt"] if accelerator.scaler is not None else [])]


# --------------------------------------------------------------------------- reading


def saved_states(path: Path, manifest: dict[str, Any], names: Iterable[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """The states ``names`` a checkpoint holds, and why each missing one is missing.

    A checkpoint written before the manifest kept them holds them in Accelerate's pickles;
    those are read with ``weights_only=True`` (tensors and plain containers, no code) and
    kept only when they are plain JSON data, as every state of the loop is.
    """
    stored = manifest.get("states")
    found, missing = {}, {}
    for name in names:
        legacy = path / SAVED_STATES[name]
        if isinstance(stored, dict) and isinstance(stored.get(name), dict):
            found[name] = stored[name]
        elif stored is None and legacy.is_file():
            try:
                found[name] = json.loads(json.dumps(torch.load(legacy, map_location="cpu", weights_only=True)))
            except Exception as exc:  # noqa: BLE001 -- whatever the file is, it is not loaded
                missing[name] = f"in {legacy.name}, which is not plain data ({type(exc).__name__}) and is not loaded"
        else:
            missing[name] = f"not in {STATE_FILE}"
    return found, missing


def restore_states(path: Path, saved: dict[str, Stateful], states: dict[str, dict]) -> None:
    """``load_state_dict`` of each state found; one that does not apply stops the resume, naming it."""
    for name, state in states.items():
        try:
            saved[name].load_state_dict(state)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TextVAEError(f"{path / STATE_FILE}: its {carries(name)} does not apply to this run "
                               f"({type(exc).__name__}: {str(exc)[:200]}); the resume is refused") from None


def read_state_file(path: Path) -> Any:
    """A pickled state file read as Accelerate reads it (``weights_only=True``: tensors and plain
    containers, never code); one that holds anything else is named in one line."""
    try:
        return load(path, map_location="cpu")
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise TextVAEError(f"{path} ({carries(path.name)}) holds objects other than tensors and plain data"
                           f"{f' ({found[1][:100]})' if found else ''}: it is not loaded, since loading it could run "
                           "code; the resume is refused") from None


def check_applied(accelerator: Accelerator, path: Path, optimizer: torch.optim.Optimizer, rng: Any | None) -> None:
    """Refuse a resume whose optimiser or RNG state was read but did not take.

    ``load_state`` logs an RNG state it could not set at INFO and goes on; an optimiser
    state of other shapes loads and fails only at the next step. ``rng``: this process's RNG
    file as :func:`read_state_file` read it, None when this run took it afresh on purpose.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                    raise TextVAEError(f"{path / 'optimizer.bin'} ({carries('optimizer')}): its {key} has shape "
                                       f"{tuple(value.shape)} for a parameter of shape {tuple(param.shape)}; "
                                       "the resume is refused")
    if rng is None:
        return
    name = f"random_states_{accelerator.process_index}.pkl"
    try:
        applied = (random.getstate() == rng["random_state"]
                   and _same_numpy_state(np.random.get_state(), rng["numpy_random_seed"])
                   and torch.equal(torch.get_rng_state(), rng["torch_manual_seed"])
                   and (not torch.cuda.is_available() or "torch_cuda_manual_seed" not in rng
                        or all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(),
                                                                 rng["torch_cuda_manual_seed"], strict=True))))
    except Exception as exc:  # noqa: BLE001 -- an archive of the wrong content is one line too
        applied, why = False, f"{type(exc).__name__}: {str(exc)[:120]}"
    else:
        why = "the generators' states differ from it after loading"
    if not applied:
        raise TextVAEError(f"{path / name} ({carries(name)}) was read but does not apply ({why}); the resume is "
                           "refused: delete that file and pass train.resume_inexact=true to draw new random numbers, "
                           "or train.overwrite=true to start afresh")


def _same_numpy_state(current: tuple, saved: tuple) -> bool:
    return len(current) == len(saved) and all(
        np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b for a, b in zip(current, saved, strict=True))


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def write_atomic_export(model, directory: Path, extra_files: dict[str, str], state_dict: dict | None = None) -> None:
    """``save_pretrained`` (of ``state_dict`` when given) into a temporary sibling, add
    ``extra_files``, then swap it in."""
    with written_or_named(directory, "an earlier export, if any, is untouched"), staged_directory(directory) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        for name, text in extra_files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        _fsync_tree(tmp)


@contextmanager
def written_or_named(target: Path, kept: str, cleanup: Path | None = None) -> Iterator[None]:
    """A failed write of ``target`` (a full disk: ``OSError``, or the ``RuntimeError``/
    ``SafetensorError`` torch and safetensors raise for it) as one line saying what was ``kept``."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as exc:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise TextVAEError(f"{target}: cannot write ({reason[:200]}); {kept}") from None


# --------------------------------------------------------------------------- checking


@dataclass
class CheckpointCheck:
    """What :func:`inspect_checkpoint` found: the manifest and every file's problem, if any."""

    path: Path
    manifest: dict[str, Any] | None
    problems: dict[str, str] = field(default_factory=dict)
    """file name -> what is wrong with it (``missing``, ``truncated: ...``, ...)."""

    @property
    def intact(self) -> bool:
        return not self.problems

    @property
    def usable(self) -> bool:
        """Weights and counters are intact: an inexact resume is possible."""
        return not any(name in self.problems for name in REQUIRED)

    @property
    def step(self) -> int:
        return int(self.path.name[len(PREFIX):])

    def describe(self) -> str:
        """``model.safetensors (model weights): truncated ...; optimizer.bin (...): missing``."""
        return "; ".join(f"{name} ({carries(name)}): {problem}" for name, problem in sorted(self.problems.items()))


def inspect_checkpoint(path: Path) -> CheckpointCheck:
    """Check every file of a checkpoint against its manifest and its format, reading no state.

    Files the manifest does not list (all of them in a checkpoint written before manifests
    existed, whose ``textvae_state.json`` holds only the counters) are checked by format alone.
    """
    manifest, problem = _read_manifest(path / STATE_FILE)
    check = CheckpointCheck(path, manifest)
    if problem:
        check.problems[STATE_FILE] = problem
    recorded = (manifest or {}).get("files") or {}
    present = {p.name for p in path.iterdir() if p.is_file() and p.name != STATE_FILE} if path.is_dir() else set()
    for name in sorted({*recorded, *present, MODEL_FILE}):
        problem = _file_problem(path / name, recorded.get(name))
        if problem:
            check.problems[name] = problem
    return check


def _read_manifest(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({type(exc).__name__})"
    if not isinstance(manifest, dict):
        return None, "not a JSON object"
    if "files" not in manifest:  # the counters alone, as checkpoints before manifests held them
        return {"train_state": manifest}, None
    if not isinstance(manifest.get("train_state"), dict) or not isinstance(manifest["files"], dict):
        return None, "not a textvae checkpoint manifest"
    return manifest, None


def _file_problem(path: Path, record: dict[str, Any] | None) -> str | None:
    """What is wrong with one checkpoint file (None when nothing is)."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if record is not None:
        if size != record.get("bytes"):
            return f"truncated or extended ({size:,} bytes, the manifest says {record.get('bytes'):,})"
        if file_record(path)["sha256"] != record.get("sha256"):
            return "content differs from its manifest checksum"
    return _format_problem(path, size)


def _format_problem(path: Path, size: int) -> str | None:
    """A structural check by format: a safetensors header that accounts for every byte, a
    torch archive whose members pass their CRCs, JSON that parses."""
    try:
        if path.suffix == ".safetensors":
            with open(path, "rb") as handle:
                head = handle.read(8)
                if len(head) < 8:
                    return f"truncated ({size:,} bytes)"
                (length,) = struct.unpack("<Q", head)
                if length > size - 8:
                    return f"truncated ({size:,} bytes, its header alone needs {length + 8:,})"
                header = json.loads(handle.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            if 8 + length + end != size:
                return f"truncated or extended ({size:,} bytes, its header accounts for {8 + length + end:,})"
        elif path.suffix in (".bin", ".pkl", ".pt"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"damaged (member {bad} fails its CRC)"
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
        return f"damaged ({type(exc).__name__})"
    return None
