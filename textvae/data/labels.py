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
a named attribute must be on every line.

The labels are read as a user means them, so whatever would be silently misread is refused,
each in one line naming the file and line: a key twice in one object (JSON keeps the last),
``NaN``, ``Infinity`` or a number beyond float range such as ``1e400``, a line that is not
whole JSON (the last one too), an attribute name that ``textvae edit --set NAME=VALUE``
cannot write (empty, or holding whitespace, ``=`` or ``,``), a string value it cannot write
(empty, or with whitespace at either end, which the command line strips), one sentence
labelled two ways, and (naming the file) an attribute with a single value, whose vectors
could tell nothing apart yet would score a nearest-mean accuracy of 1.000. A sentence
repeated with the same labels is kept: it weighs in every mean as often as it occurs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textvae.data.reading import read_raw_lines
from textvae.errors import TextVAEError

TEXT_KEY = "text"
SCALARS = (str, int, float, bool, type(None))
UNWRITABLE = "=,"
"""Characters an attribute name cannot hold: ``--set NAME=VALUE`` splits at the first ``=``,
and lists of names are written with commas."""


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
    for attribute in attributes:
        _check_name(labels_path, rows[0][0], attribute)
    labels = {attribute: [_label(labels_path, line_no, row, attribute) for line_no, row in rows]
              for attribute in attributes}
    _check_consistent(labels_path, [line_no for line_no, _ in rows], sentences, labels)
    _check_several_values(labels_path, labels)
    return LabelledSentences(sentences, labels, skipped)


def _objects(path: str | Path, skip_blank: bool) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per line of a JSON-lines file; ``skip_blank`` False refuses blank lines."""
    rows = [(line_no, _parse(path, line_no, line)) for line_no, line in enumerate(read_raw_lines(path), 1)
            if line.strip()]
    if not rows:
        raise TextVAEError(f"{path}: no labelled lines")
    gap = next((i for i, (line_no, _) in enumerate(rows, 1) if line_no != i), None)
    if not skip_blank and gap is not None:
        raise TextVAEError(f"{path}:{gap}: blank line (each line labels the sentence on the same "
                           f"line of the text file)")
    return rows


def _parse(path: str | Path, line_no: int, line: str) -> dict[str, Any]:
    """One line's object, as strict JSON: no key twice, no ``NaN`` or ``Infinity``.

    Stricter than :func:`~textvae.data.reading.read_json_lines`, which forgives a cut-short
    last line (a killed append to a log): a labels file is written whole, so that is damage.
    """
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        row = dict(pairs)
        if len(row) < len(pairs):
            twice = next(key for i, (key, _) in enumerate(pairs) if key in dict(pairs[:i]))
            raise TextVAEError(f"{path}:{line_no}: key '{twice}' is given twice (JSON would keep the last one "
                               "without a word)")
        return row

    def constant(name: str) -> float:
        raise TextVAEError(f"{path}:{line_no}: {name} is not a label value (labels are finite numbers, strings, "
                           "booleans or null)")

    try:
        row = json.loads(line, object_pairs_hook=unique, parse_constant=constant)
    except ValueError as exc:  # a JSONDecodeError, or an integer beyond Python's digit limit
        raise TextVAEError(f"{path}:{line_no}: not a JSON object ({getattr(exc, 'msg', str(exc))})") from None
    if not isinstance(row, dict):
        raise TextVAEError(f"{path}:{line_no}: not a JSON object (a JSON {type(row).__name__})")
    return row


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
    if isinstance(value, float) and not math.isfinite(value):
        raise TextVAEError(f"{path}:{line_no}: '{attribute}' is a number beyond float range ({value}); labels "
                           "are finite numbers")
    if isinstance(value, str) and (not value.strip() or value != value.strip()):
        raise TextVAEError(f"{path}:{line_no}: '{attribute}' is {json.dumps(value)}, which `textvae edit --set "
                           f"{attribute}=VALUE` cannot name (the command line strips a value): trim it")
    return value


def _check_name(path: str | Path, line_no: int, attribute: str) -> None:
    """Refuse an attribute name ``textvae edit --set NAME=VALUE`` could not write."""
    if not attribute or any(c.isspace() or c in UNWRITABLE for c in attribute):
        raise TextVAEError(f"{path}:{line_no}: attribute name {json.dumps(attribute)} cannot be written as "
                           f"`textvae edit --set NAME=VALUE`: a name is not empty and holds no whitespace, "
                           f"'=' or ','; rename the key")


def _check_consistent(path: str | Path, line_numbers: list[int], sentences: list[str],
                      labels: dict[str, list[Any]]) -> None:
    """Refuse a sentence labelled two ways: its code would count towards both values' means."""
    first: dict[str, int] = {}
    for i, sentence in enumerate(sentences):
        j = first.setdefault(sentence, i)
        differ = next((a for a, column in labels.items() if json.dumps(column[i]) != json.dumps(column[j])), None)
        if differ is not None:
            raise TextVAEError(f"{path}:{line_numbers[i]}: '{sentence}' is labelled {differ}="
                               f"{json.dumps(labels[differ][i])} here but {json.dumps(labels[differ][j])} on line "
                               f"{line_numbers[j]}")


def _check_several_values(path: str | Path, labels: dict[str, list[Any]]) -> None:
    """Refuse an attribute with one value: nothing to tell apart, yet every sentence 'predicted' right."""
    for attribute, column in labels.items():
        if len({json.dumps(value) for value in column}) == 1:
            raise TextVAEError(f"{path}: attribute '{attribute}' is {json.dumps(column[0])} on all {len(column)} "
                               "lines; a single value gives vectors that tell nothing apart (leave it out with "
                               "--attribute, or label other values too)")
