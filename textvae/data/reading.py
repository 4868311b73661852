"""Reading one-sentence-per-line text, streamed in chunks, with a count of what was skipped.

Every corpus enters the library through :class:`SentenceStream`: a file read in chunks of
a few megabytes (never whole, so a corpus may be larger than memory) or a column of a
Hugging Face dataset read in batches. Blank lines are treated the same everywhere, and
bad input is reported once, with its file and line. :func:`read_lines` and
:func:`clean_lines` collect a stream into a list for the callers that want one.
Over-long sentences are *not* handled here: length is measured in tokens, so the length
policy is applied after tokenisation (see :mod:`textvae.data.pipeline`).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from textvae.atomic import failures_named
from textvae.errors import TextVAEError

SPLITS = ("train", "valid", "test")
"""A corpus's splits, in the order they are read. Defined here, the lowest module of the data
layer that names them, so :mod:`~textvae.data.corpora` (which writes the embedded corpus through
:mod:`~textvae.data.synthetic`, which reads through this module) imports it without a circle."""

CHUNK_BYTES = 1 << 22
"""Bytes read from a file at a time (4 MiB, about 35,000 PTB sentences)."""
_BOM = "\ufeff".encode()


@dataclass(frozen=True)
class ReadReport:
    """What happened while reading one source."""

    source: str
    """The file path (or a description such as ``dir[train]`` for a dataset split)."""
    lines_read: int
    """Sentences kept."""
    blank_skipped: int
    """Empty or whitespace-only lines dropped."""


def _last_break(data: bytes) -> int:
    """The length of the longest prefix of ``data`` that ends with a whole line break.

    A CR at the very end may be the first half of a CRLF whose LF is not read yet, so the
    cut goes before it.
    """
    end = len(data) - 1 if data.endswith(b"\r") else len(data)
    return max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end)) + 1


def open_text_file(path: str | Path) -> BinaryIO:
    """``path`` opened for reading bytes; why it cannot be is one line naming it."""
    path = Path(path)
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise TextVAEError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TextVAEError(f"{path}: is a directory, expected a text file") from None
    except OSError as exc:
        raise TextVAEError(f"{path}: cannot read ({exc.strerror})") from None


def file_chunks(path: str | Path, chunk_bytes: int | None = None) -> Iterator[list[str]]:
    """The lines of a UTF-8 file, a list per chunk of about ``chunk_bytes`` (:data:`CHUNK_BYTES`), in order.

    Lines end at LF, CRLF or a lone CR (old Mac files must not read as one sentence); a
    leading byte-order mark is dropped. Undecodable bytes raise :class:`TextVAEError`
    naming the file and line.
    """
    handle = open_text_file(path)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    with handle:
        carry, line_no = b"", 1
        while True:
            with failures_named(path, "read"):  # a disk error mid-file: one line naming it
                block = handle.read(chunk_bytes)
            data = carry + block
            cut = _last_break(data) if block else len(data)
            if block and cut == 0:  # one line longer than a chunk: read on
                carry = data
                continue
            piece, carry = data[:cut], data[cut:]
            if line_no == 1:
                piece = piece.removeprefix(_BOM)
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            try:
                text = piece.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = line_no + piece.count(b"\n", 0, exc.start)
                bad = piece[exc.start : exc.end].hex(" ")
                raise TextVAEError(f"{path}:{line}: not valid UTF-8 (byte {bad}); re-encode it as UTF-8") from None
            lines = text.split("\n")
            if lines[-1] == "":  # the break that ends the last line opens no new line
                lines.pop()
            line_no += len(lines)
            if lines:
                yield lines
            if not block:
                return


class SentenceStream:
    """The sentences of one source, chunk by chunk, with the blank lines counted.

    Iterating yields ``(sentences, line_numbers)``: the stripped, non-blank lines of a chunk
    and their 1-based line numbers (an int64 array). With ``limit``, only the first
    ``limit`` sentences are yielded, but the rest of the source is still read, so that the
    counts and any undecodable byte are the whole source's. After a full pass,
    :meth:`report` says what was read; a source without a sentence is an error then.

    Every iteration reads the source again from its start.

    Args:
        source: The file path or a description, for reports and errors.
        chunks: Opens the source: returns its raw lines (``None`` counts as blank), a list
            per chunk, in order.
        limit: Yield at most this many sentences.
    """

    def __init__(self, source: str, chunks: Callable[[], Iterable[Sequence[str | None]]],
                 limit: int | None = None) -> None:
        self.source, self.chunks, self.limit = source, chunks, limit
        self.lines_read = self.blank_skipped = 0

    @classmethod
    def from_file(cls, path: str | Path, limit: int | None = None) -> SentenceStream:
        return cls(str(path), lambda: file_chunks(path), limit)

    def limited(self, limit: int | None) -> SentenceStream:
        """The same source, yielding at most ``limit`` sentences."""
        return SentenceStream(self.source, self.chunks, limit)

    def __iter__(self) -> Iterator[tuple[list[str], np.ndarray]]:
        self.lines_read = self.blank_skipped = 0
        first = 1
        for raw in self.chunks():
            stripped = [line.strip() if line is not None else "" for line in raw]
            if first == 1 and stripped and stripped[0].startswith("\ufeff"):  # a byte-order mark, whichever channel
                stripped[0] = stripped[0][1:].strip()
            sentences = [line for line in stripped if line]
            if len(sentences) == len(stripped):
                numbers = np.arange(first, first + len(stripped), dtype=np.int64)
            else:
                numbers = first + np.flatnonzero([bool(line) for line in stripped])
            first += len(stripped)
            room = len(sentences) if self.limit is None else max(self.limit - self.lines_read, 0)
            self.lines_read += len(sentences)
            self.blank_skipped += len(stripped) - len(sentences)
            if room:
                yield sentences[:room], numbers[:room]
        if not self.lines_read:
            raise TextVAEError(f"{self.source}: no sentences (empty or only blank lines)")

    def sentences(self) -> Iterator[str]:
        """The sentences alone, one by one."""
        return itertools.chain.from_iterable(sentences for sentences, _ in self)

    def report(self) -> ReadReport:
        return ReadReport(self.source, self.lines_read, self.blank_skipped)


def head(stream: SentenceStream, n: int) -> list[str]:
    """The first ``n`` sentences of ``stream``, reading no further than needed."""
    return list(itertools.islice(stream.sentences(), n))


def clean_lines(raw: Iterable[str | None], source: str) -> tuple[list[str], ReadReport]:
    """Strip surrounding whitespace and drop blank entries (``None`` counts as blank).

    Raises :class:`TextVAEError` naming ``source`` when nothing is left, because an empty
    split would otherwise surface much later as a division by zero in training.
    """
    raw = list(raw)
    stream = SentenceStream(source, lambda: [raw])
    return list(stream.sentences()), stream.report()


def read_lines(path: str | Path) -> tuple[list[str], ReadReport]:
    """All sentences of a UTF-8 file with one sentence per line (see :func:`file_chunks`)."""
    stream = SentenceStream.from_file(path)
    return list(stream.sentences()), stream.report()


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


def read_raw_lines(path: str | Path) -> list[str]:
    """Every line of a UTF-8 text file, blank ones included, without line endings
    (see :func:`decode_lines`)."""
    return decode_lines(_read_bytes(path), str(path))


def _read_bytes(path: str | Path) -> bytes:
    with open_text_file(path) as handle:
        return handle.read()


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


HF_BATCH = 10_000
"""Rows read from a dataset column at a time."""


def _column_batches(dataset: Any, column: str) -> Iterator[list[str | None]]:
    return (batch[column] for batch in dataset.iter(batch_size=HF_BATCH))


def hf_split_streams(path: str | Path, text_column: str, splits: Sequence[str] = SPLITS) -> dict[str, SentenceStream]:
    """A :class:`SentenceStream` over ``text_column`` for each split of a local Hugging Face dataset.

    ``valid`` is taken from a split called ``validation``, ``valid`` or ``dev``. The column
    is read in batches of :data:`HF_BATCH` rows; a row's "line" is its 1-based index. Nothing
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
        if getattr(dataset[name].features[text_column], "dtype", None) not in ("string", "large_string"):
            raise TextVAEError(f"data.text_column: column '{text_column}' of {path} does not hold text")
        column = dataset[name].select_columns([text_column])
        out[split] = SentenceStream(f"{path}[{name}]", functools.partial(_column_batches, column, text_column))
    return out
