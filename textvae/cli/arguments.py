"""Argument types and the checkpoint argument that several commands share.

Values are checked by argparse (``type=``/``choices=``), so a bad flag is one line,
``textvae: error: argument --flag: why``, with exit status 2, before anything loads.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def positive_int(text: str) -> int:
    """An ``int`` of at least 1."""
    return _at_least(int, text, 1)


def positive_float(text: str) -> float:
    """A finite ``float`` above 0."""
    value = _number(float, text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def at_least(minimum: int):
    """An ``int`` type of at least ``minimum`` (``type=at_least(2)``)."""

    def parse(text: str) -> int:
        return _at_least(int, text, minimum)

    parse.__name__ = f"int >= {minimum}"
    return parse


def device(name: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, the last two only where CUDA is available."""
    import torch

    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise argparse.ArgumentTypeError(f"must be cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{name}: no CUDA device is available")
    return name


def export_directory(checkpoint: str) -> Path | None:
    """The local export directory a checkpoint argument points to (None for a Hub id)."""
    from textvae.hub.loading import resolve_export

    path = Path(resolve_export(checkpoint))
    return path if path.is_dir() else None


def _number(kind: type, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def _at_least(kind: type, text: str, minimum: int):
    value = _number(kind, text)
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value
