"""Atomic, verifiable checkpoints of a training run.

A checkpoint is ``accelerator.save_state`` (model, optimiser, RNG states of every
process, and the objects registered for checkpointing: the loop counters and the LR
schedule) written into ``checkpoints/.tmp-step-N`` and renamed to ``checkpoints/step-N``
only when complete. A run killed at any moment therefore leaves either the previous
checkpoint or the new one, never half of one.

What happens to a checkpoint after it is written (a disk error, a truncated copy, a file
deleted by hand) is found by :func:`inspect_checkpoint` before Accelerate reads a byte of
it: ``textvae_state.json`` is the checkpoint's manifest, recording the size and SHA256 of
every file beside the loop counters, the resolved recipe, the number of processes and a
fingerprint of the training data, so that a resume can also tell whether it would continue
exactly (:mod:`textvae.training.resume`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator
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
}


@dataclass
class TrainState:
    """Loop counters saved with every checkpoint (registered with Accelerate)."""

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
        for key, value in state.items():
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
    """What the checkpoint file ``name`` holds, for messages."""
    stem = name.split(".")[0]
    key = stem if stem in CARRIES else stem.rstrip("0123456789").rstrip("_")
    process = f" of process {stem.rsplit('_', 1)[1]}" if key == "random_states" else ""
    return CARRIES.get(key, "state") + process


# --------------------------------------------------------------------------- writing


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainState, keep_last: int,
                    identity: dict[str, Any]) -> Path:
    """Write a checkpoint atomically and keep only the newest ``keep_last``; all processes call this.

    ``identity``: what the run was (``recipe``, ``data`` fingerprint), recorded in the
    manifest so a resume can compare itself with it.
    """
    root = checkpoint_dir(run_dir)
    final = root / f"{PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{PREFIX}{state.step:08d}"
    with written_or_named(final, "earlier checkpoints are untouched", cleanup=tmp):
        save_state_into(accelerator, tmp)
        if accelerator.is_main_process:
            files = {path.name: file_record(path) for path in sorted(tmp.iterdir()) if path.is_file()}
            manifest = {"train_state": state.state_dict(), "processes": accelerator.num_processes, **identity,
                        "files": files}
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


def state_files(accelerator: Accelerator, registered: int) -> list[str]:
    """The files ``accelerator.load_state`` reads for this run (Accelerate's names), with
    ``registered`` objects registered for checkpointing."""
    return [MODEL_FILE, "optimizer.bin", *(f"random_states_{i}.pkl" for i in range(accelerator.num_processes)),
            *(f"custom_checkpoint_{i}.pkl" for i in range(registered)),
            *(["scaler.pt"] if accelerator.scaler is not None else [])]


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
