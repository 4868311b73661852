"""Labelled sentences: the input attribute vectors are computed from.

Two layouts are read, both JSON lines:

* one file, one object per line, the sentence under ``"text"`` and each label under its
  attribute's name: ``{"text": "the dog saw a cat .", "tense": "past", "negation": false}``;
* a text file (one sentence per line) and a labels file whose line i describes sentence
  i, as the embedded corpus ships ``test.txt`` beside ``test.factors.jsonl``.

Labels are JSON scalars (strings, numbers, booleans, ``null``); a list or an object is
refused, since a mean code per value needs values that can be told apart by equality.
Without a list of attributes, every key on every line is one (keys only some lines carry,
like the corpus's ``place``, are left out and named in :attr:`LabelledSentences.skipped`);
a named attribute must be on every line. Every error names the file and line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textvae.data.reading import read_json_lines, read_raw_lines
from textvae.errors import TextVAEError

TEXT_KEY = "text"
SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class LabelledSentences:
    """Sentences and, per attribute, one label for each of them."""

    sentences: list[str]
    labels: dict[str, list[Any]]
    """attribute -> one JSON scalar per sentence, in file order."""
    skipped: tuple[str, ...] = ()
    """Keys left out because only some lines carry them (when no attributes were named)."""


def read_labelled(labels_path: str | Path, text_path: str | Path | None = None,
                  attributes: Sequence[str] | None = None) -> LabelledSentences:
    """Read labelled sentences from one JSON-lines file, or a text file and its aligned labels.

    Args:
        labels_path: JSON lines; with ``text_path`` None, each object holds the sentence under ``"text"``.
        text_path: One sentence per line, line i labelled by line i of ``labels_path``.
        attributes: The attributes to read; None reads every key found on every line.
    """
    if text_path is None:
        rows = _objects(labels_path, skip_blank=True)
        sentences = [_sentence(labels_path, line_no, row) for line_no, row in rows]
    else:
        rows = _objects(labels_path, skip_blank=False)
        sentences = _aligned_sentences(text_path, labels_path, len(rows))
    keys = [set(row) - ({TEXT_KEY} if text_path is None else set()) for _, row in rows]
    if attributes is None:
        everywhere, anywhere = set.intersection(*keys), set.union(*keys)
        if not everywhere:
            raise TextVAEError(f"{labels_path}: no label key is on every line (name the attributes to read)")
        attributes, skipped = sorted(everywhere), tuple(sorted(anywhere - everywhere))
    else:
        skipped = ()
        if text_path is None and TEXT_KEY in attributes:
            raise TextVAEError(f"{labels_path}: '{TEXT_KEY}' holds the sentences; it is not an attribute")
    labels = {attribute: [_label(labels_path, line_no, row, attribute) for line_no, row in rows]
              for attribute in attributes}
    return LabelledSentences(sentences, labels, skipped)


def _objects(path: str | Path, skip_blank: bool) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per line of a JSON-lines file; ``skip_blank`` False refuses blank lines."""
    rows = read_json_lines(path)
    if not rows:
        raise TextVAEError(f"{path}: no labelled lines")
    gap = next((i for i, (line_no, _) in enumerate(rows, 1) if line_no != i), None)
    if not skip_blank and gap is not None:
        raise TextVAEError(f"{path}:{gap}: blank line (each line labels the sentence on the same "
                           f"line of the text file)")
    return rows


def _sentence(path: str | Path, line_no: int, row: dict[str, Any]) -> str:
    text = row.get(TEXT_KEY)
    if not isinstance(text, str) or not text.strip():
        problem = "no" if TEXT_KEY not in row else "an empty or non-string"
        raise TextVAEError(f"{path}:{line_no}: {problem} '{TEXT_KEY}' (the sentence); or give the sentences "
                           f"as a text file aligned with the labels")
    return text.strip()


def _aligned_sentences(text_path: str | Path, labels_path: str | Path, n_labels: int) -> list[str]:
    lines = read_raw_lines(text_path)
    if len(lines) != n_labels:
        raise TextVAEError(f"{text_path} has {len(lines)} lines but {labels_path} has {n_labels}: "
                           f"line i of the labels must describe line i of the text")
    blank = next((i for i, line in enumerate(lines, 1) if not line.strip()), None)
    if blank is not None:
        raise TextVAEError(f"{text_path}:{blank}: blank line (its labels would describe no sentence)")
    return [line.strip() for line in lines]


def _label(path: str | Path, line_no: int, row: dict[str, Any], attribute: str) -> Any:
    if attribute not in row:
        raise TextVAEError(f"{path}:{line_no}: no '{attribute}' key (every line needs each attribute read)")
    value = row[attribute]
    if not isinstance(value, SCALARS):
        raise TextVAEError(f"{path}:{line_no}: '{attribute}' is a JSON {'list' if isinstance(value, list) else 'object'}"
                           f"; labels must be strings, numbers, booleans or null")
    return value
