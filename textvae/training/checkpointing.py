"""Atomic, resumable checkpoints of a training run.

A checkpoint is ``accelerator.save_state`` (model, optimiser, RNG states of every
process, and the objects registered for checkpointing: the loop counters and the LR
schedule) written into ``checkpoints/.tmp-step-N`` and renamed to ``checkpoints/step-N``
only when complete. A run killed at any moment therefore leaves either the previous
checkpoint or the new one, never half of one; resuming picks the newest complete one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import Accelerator

from textvae.atomic import staged_directory
from textvae.errors import TextVAEError

PREFIX = "step-"


@dataclass
class TrainState:
    """Loop counters saved with every checkpoint (registered with Accelerate)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_elbo: float = float("-inf")
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
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


# What a run leaves in its directory; a fresh run must not mix with an earlier one.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "final", "tokenizer", "recipe.yaml")


def resolve_resume(run_dir: Path, resume: str, overwrite: bool = False) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run.

    ``resume``: ``no`` -> fresh, ``auto`` -> the newest checkpoint (fresh if there is
    none: nothing is resumable), else a checkpoint path that must exist. With ``no``, a
    directory that already holds a run is refused unless ``overwrite``: the new run's
    checkpoints would be pruned by step number against the old run's, and its tokenizer
    and metrics mixed with them. The caller clears the directory for a fresh run.
    """
    if resume == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    if resume != "no":
        path = Path(resume)
        if not (path / "textvae_state.json").is_file():
            raise TextVAEError(f"train.resume={resume}: not a complete textvae checkpoint")
        return path
    existing = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if existing and not overwrite:
        raise TextVAEError(
            f"output_dir {run_dir} already holds a run ({', '.join(existing)}): continue it with train.resume=auto, "
            "start afresh with train.overwrite=true (deletes it), or choose another output_dir"
        )
    return None


def clear_run(run_dir: Path) -> None:
    """Delete what an earlier run left in ``run_dir`` (``train.overwrite``)."""
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainState, keep_last: int) -> Path:
    """Write a checkpoint atomically and keep only the newest ``keep_last``; all processes call this."""
    root = checkpoint_dir(run_dir)
    final = root / f"{PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{PREFIX}{state.step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "textvae_state.json").write_text(json.dumps(state.state_dict()))
        _fsync_tree(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def clean_partial(run_dir: Path) -> None:
    """Remove what an interrupted save left behind."""
    root = checkpoint_dir(run_dir)
    for tmp in root.glob(f".tmp-{PREFIX}*") if root.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def write_atomic_export(model, directory: Path, extra_files: dict[str, str], state_dict: dict | None = None) -> None:
    """``save_pretrained`` (of ``state_dict`` when given) into a temporary sibling, add
    ``extra_files``, then swap it in."""
    with staged_directory(directory) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        for name, text in extra_files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        _fsync_tree(tmp)
