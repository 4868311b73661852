"""Reading one-sentence-per-line text into memory, with a count of what was skipped.

Every corpus enters the library through :func:`read_lines` (files) or :func:`clean_lines`
(sentences that came from elsewhere, such as a ``datasets`` column), so blank lines are
treated the same everywhere and bad input is reported once, with its file and line.
Over-long sentences are *not* handled here: length is measured in tokens, so the length
policy is applied after tokenisation (see :mod:`textvae.data.pipeline`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textvae.data.corpora import SPLITS
from textvae.errors import TextVAEError


@dataclass(frozen=True)
class ReadReport:
    """What happened while reading one source."""

    source: str
    """The file path (or a description such as ``dir[train]`` for a dataset split)."""
    lines_read: int
    """Sentences kept."""
    blank_skipped: int
    """Empty or whitespace-only lines dropped."""


def clean_lines(raw: Iterable[str | None], source: str) -> tuple[list[str], ReadReport]:
    """Strip surrounding whitespace and drop blank entries (``None`` counts as blank).

    Raises :class:`TextVAEError` naming ``source`` when nothing is left, because an empty
    split would otherwise surface much later as a division by zero in training.
    """
    stripped = [line.strip() if line is not None else "" for line in raw]
    if stripped and stripped[0].startswith("\ufeff"):  # a byte-order mark, whichever channel kept it
        stripped[0] = stripped[0][1:].strip()
    lines = [line for line in stripped if line]
    if not lines:
        raise TextVAEError(f"{source}: no sentences (empty or only blank lines)")
    return lines, ReadReport(source, len(lines), len(stripped) - len(lines))


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def decode_lines(data: bytes, source: str) -> list[str]:
    """UTF-8 bytes as lines, whichever channel they came through (a file, standard input).

    The whole text is decoded in one call (PTB's 5 MB train split takes milliseconds);
    only when decoding fails is the offending line number worked out from the byte offset.
    A leading byte-order mark is dropped; ``\n``, ``\r\n`` and a lone ``\r`` (old Mac
    files, which would otherwise read as one sentence) each end a line.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = len(re.findall(rb"\r\n|\r|\n", data[: exc.start])) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise TextVAEError(f"{source}:{line_no}: not valid UTF-8 (byte {bad}); re-encode it as UTF-8") from None
    pieces = _LINE_BREAK.split(text.removeprefix("\ufeff"))
    if pieces and pieces[-1] == "":  # the break that ends the last line opens no new line
        pieces.pop()
    return pieces


def read_lines(path: str | Path) -> tuple[list[str], ReadReport]:
    """Read a UTF-8 file with one sentence per line (blank lines dropped and counted)."""
    return clean_lines(read_raw_lines(path), str(path))


def read_raw_lines(path: str | Path) -> list[str]:
    """Every line of a UTF-8 text file, blank ones included, without line endings
    (see :func:`decode_lines`)."""
    return decode_lines(_read_bytes(path), str(path))


def _read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TextVAEError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TextVAEError(f"{path}: is a directory, expected a text file") from None
    except OSError as exc:
        raise TextVAEError(f"{path}: cannot read ({exc.strerror})") from None


def read_json_lines(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file of objects.

    A last line that does not end in a newline and does not parse is the record a kill cut
    short while it was appended (``metrics.jsonl``): it is left out.
    """
    data = _read_bytes(path)
    lines = decode_lines(data, str(path))
    rows = []
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if line_no == len(lines) and not data.endswith((b"\n", b"\r")):
                break
            raise TextVAEError(f"{path}:{line_no}: not a JSON object ({exc.msg})") from None
        if not isinstance(row, dict):
            raise TextVAEError(f"{path}:{line_no}: not a JSON object (a JSON {type(row).__name__})")
        rows.append((line_no, row))
    return rows


HF_SPLIT_NAMES = {"train": ("train",), "valid": ("validation", "valid", "dev"), "test": ("test",)}


def _load_hf(path: Path) -> Any:
    """A ``DatasetDict`` from a ``save_to_disk`` directory or a folder of data files, offline."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # read at import by datasets; set before it
    import datasets

    datasets.config.HF_HUB_OFFLINE = True  # in case datasets was imported earlier
    datasets.disable_progress_bars()
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        else:
            if all(f.stat().st_size == 0 for f in path.iterdir() if f.is_file()):  # datasets' own message is cryptic
                raise TextVAEError(f"data.hf_dataset: {path}: no sentences (its data files are empty)")
            # Converted in memory through a throw-away cache: only one column is kept
            # anyway, and nothing accumulates in ~/.cache/huggingface.
            with tempfile.TemporaryDirectory() as cache:
                loaded = datasets.load_dataset(str(path), cache_dir=cache, keep_in_memory=True)
    except TextVAEError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs the first line, and its cause
        first = "; ".join(dict.fromkeys((str(e).strip().splitlines() or [type(e).__name__])[0]
                                        for e in (exc, exc.__cause__ or exc.__context__) if e is not None))
        raise TextVAEError(f"data.hf_dataset: cannot load {path} ({first})") from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise TextVAEError(f"data.hf_dataset: {path} holds a single split; save a DatasetDict with train/validation/test")
    return loaded


def read_hf_splits(path: str | Path, text_column: str,
                   splits: Sequence[str] = SPLITS) -> dict[str, tuple[list[str], ReadReport]]:
    """Sentences of ``text_column`` for each split of a local Hugging Face dataset.

    ``valid`` is taken from a split called ``validation``, ``valid`` or ``dev``. Nothing
    here goes to the network: the dataset must already be on disk.
    """
    path = Path(path)
    if not path.is_dir():
        raise TextVAEError(f"data.hf_dataset: directory not found: {path}")
    dataset = _load_hf(path)
    out = {}
    for split in splits:
        name = next((n for n in HF_SPLIT_NAMES[split] if n in dataset), None)
        if name is None:
            raise TextVAEError(f"data.hf_dataset: {path} has no {'/'.join(HF_SPLIT_NAMES[split])} split "
                               f"(has: {', '.join(dataset)})")
        columns = dataset[name].column_names
        if text_column not in columns:
            raise TextVAEError(f"data.text_column: no column '{text_column}' in {path} (columns: {', '.join(columns)})")
        values = list(dataset[name][text_column])
        if not all(v is None or isinstance(v, str) for v in values):
            raise TextVAEError(f"data.text_column: column '{text_column}' of {path} does not hold text")
        out[split] = clean_lines(values, f"{path}[{name}]")
    return out
