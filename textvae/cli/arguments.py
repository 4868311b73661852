"""Argument types and the checkpoint argument that several commands share.

Values are checked by argparse (``type=``/``choices=``), so a bad flag is one line,
``textvae: error: argument --flag: why``, with exit status 2, before anything loads.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from textvae.schema import SEED_MAX

# Fixed caps of the flags' counts (beside textvae.schema's MAX_TOKENS, MAX_BATCH and MAX_COUNT,
# which the recipe's keys share); each flag's help states its cap. The counts that allocate by
# their value are also held to the machine's memory once the model is loaded, and decoding
# splits its rows to fit.
MAX_BEAMS = 64
MAX_SAMPLES = 1_000_000
"""``sample -n``: written as they are decoded, a block at a time."""
MAX_POINTS = 10_000
"""``interpolate --steps``: points on one path."""
MAX_IW_SAMPLES = 100_000
"""``evaluate --iw-samples``: 200 times He et al.'s K = 500, hours per thousand sentences."""
MAX_GENERATED = 1_000_000
"""``data generate --train/--valid/--test``: a split is held in memory while written (~2.5 KB a sentence)."""
MAX_SCALE = 1000.0
"""``--temperature`` (and 1 / its least), ``--repetition-penalty``, ``--strength``: further out, the
scores or codes they scale overflow float32 (a temperature of 1e-300 divides logits into infinities,
a strength of 1e308 moves codes to them)."""


def integer(low: int, high: int) -> Callable[[str], int]:
    """An ``int`` type in [``low``, ``high``], written in digits: ``1e9`` and ``1.5`` are refused
    (a float would round large counts), and so is any value past the cap, before an overflow can."""

    def parse(text: str) -> int:
        return _within(_number(int, text), text, low, high)

    parse.__name__ = f"int in [{low}, {high}]"
    return parse


seed = integer(0, SEED_MAX)
"""A seed (``--seed``): in [0, :data:`SEED_MAX`]."""


def positive_float(text: str) -> float:
    """A finite ``float`` above 0."""
    value = _number(float, text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {_cut(text)}")
    return value


def positive_float_in(low: float, high: float) -> Callable[[str], float]:
    """A positive finite ``float`` type in [``low``, ``high``]."""

    def parse(text: str) -> float:
        return _within(positive_float(text), text, low, high)

    parse.__name__ = f"float in [{low:g}, {high:g}]"
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
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {_cut(text)!r}") from None


def _within(value: float, text: str, low: float, high: float) -> float:
    """``value`` (read from ``text``), refused in the words of the end it passes."""
    if not low <= value <= high:
        end, bound = ("least", low) if value < low else ("most", high)
        shown = bound if isinstance(bound, int) else f"{bound:g}"  # a seed's end in full, not 4.29497e+09
        raise argparse.ArgumentTypeError(f"must be at {end} {shown}, got {_cut(text)}")
    return value


def _cut(text: str) -> str:
    """``text`` as an error shows it: a 5,000-digit number would bury the message."""
    return text if len(text) <= 40 else f"{text[:37]}..."
