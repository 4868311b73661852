"""Reading labelled sentences: one JSON-lines file, or a text file with aligned labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from textvae.data.labels import read_labelled
from textvae.errors import TextVAEError

COMMITTED = Path(__file__).resolve().parents[2] / "data" / "synthetic"


def jsonl(path: Path, *rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_one_file_with_text_and_labels(tmp_path):
    path = jsonl(tmp_path / "l.jsonl", {"text": " a b . ", "tense": "past", "n": 1},
                 "", {"text": "c d .", "tense": "present", "n": 2, "extra": None})
    data = read_labelled(path)
    assert data.sentences == ["a b .", "c d ."]  # stripped; the blank line skipped
    assert data.labels == {"n": [1, 2], "tense": ["past", "present"]}
    assert data.skipped == ("extra",)


def test_the_shipped_corpus_reads_as_text_plus_aligned_factors():
    data = read_labelled(COMMITTED / "valid.factors.jsonl", COMMITTED / "valid.txt")
    lines = (COMMITTED / "valid.txt").read_text(encoding="utf-8").splitlines()
    assert data.sentences == lines
    assert set(data.skipped) == {"adverb", "place", "preposition"}  # only some sentences have them
    assert "tense" in data.labels and len(data.labels["negation"]) == len(lines)
    assert None in data.labels["subject_adjective"]  # JSON null is a value like any other
    named = read_labelled(COMMITTED / "valid.factors.jsonl", COMMITTED / "valid.txt", ["tense", "negation"])
    assert list(named.labels) == ["tense", "negation"] and named.skipped == ()


@pytest.mark.parametrize(("rows", "attributes", "message"), [
    ([{"text": "a", "t": [1, 2]}], None, "l.jsonl:1: 't' is a JSON list; labels must be strings"),
    ([{"text": "a", "t": 1}, {"text": "b", "t": {"x": 1}}], None, "l.jsonl:2: 't' is a JSON object"),
    ([{"text": "a", "t": 1}, {"text": "b", "u": 2}], ["t"], "l.jsonl:2: no 't' key"),
    ([{"text": "a", "t": 1}, {"text": "b", "u": 2}], None, "no label key is on every line"),
    ([{"t": 1}], None, "l.jsonl:1: no 'text' (the sentence)"),
    ([{"text": " ", "t": 1}], None, "l.jsonl:1: an empty or non-string 'text'"),
    ([{"text": "a", "t": 1}], ["text"], "'text' holds the sentences; it is not an attribute"),
    (["[1, 2]"], None, "l.jsonl:1: not a JSON object (a JSON list)"),
    (["{oops"], None, "l.jsonl:1: not a JSON object (Expecting property name"),
    ([""], None, "l.jsonl: no labelled lines"),
])
def test_bad_label_files_name_the_line(tmp_path, rows, attributes, message):
    path = jsonl(tmp_path / "l.jsonl", *rows)
    with pytest.raises(TextVAEError) as caught:
        read_labelled(path, attributes=attributes)
    assert message in str(caught.value)


@pytest.mark.parametrize(("text", "labels", "message"), [
    ("a\nb\n", [{"t": 1}], "t.txt has 2 lines but"),
    ("a\n\n", [{"t": 1}, {"t": 2}], "t.txt:2: blank line"),
    ("a\nb\nc\n", [{"t": 1}, "", {"t": 3}], "l.jsonl:2: blank line"),
    ("a\nb\n", [{"t": 1}, ""], "t.txt has 2 lines but"),  # a blank last line of labels is a missing one
])
def test_aligned_files_must_line_up(tmp_path, text, labels, message):
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    path = jsonl(tmp_path / "l.jsonl", *labels)
    with pytest.raises(TextVAEError) as caught:
        read_labelled(path, tmp_path / "t.txt")
    assert message in str(caught.value)


def test_aligned_labels_are_checked_as_strictly_and_named_by_the_labels_line(tmp_path):
    (tmp_path / "t.txt").write_text("a b .\nc d .\na b .\n", encoding="utf-8")
    path = jsonl(tmp_path / "l.jsonl", {"t": 1, "u": "x"}, {"t": 2, "u": "y"}, {"t": 2, "u": "x"})
    with pytest.raises(TextVAEError, match=r"l\.jsonl:3: 'a b \.' is labelled t=2 here but 1 on line 1$"):
        read_labelled(path, tmp_path / "t.txt")
    with pytest.raises(TextVAEError, match=r"l\.jsonl: attribute 'u' is \"x\" on all 3 lines"):
        read_labelled(jsonl(tmp_path / "l.jsonl", {"t": 1, "u": "x"}, {"t": 2, "u": "x"}, {"t": 1, "u": "x"}),
                      tmp_path / "t.txt", ["u"])


def test_only_what_is_read_is_judged(tmp_path):
    """A key on some lines only is no attribute: its name and values are not held against the file."""
    path = jsonl(tmp_path / "l.jsonl", {"text": "a .", "t": True}, {"text": "b .", "t": 1, "odd key=": " "},
                 {"text": "a .", "t": True})
    data = read_labelled(path)
    assert data.labels == {"t": [True, 1, True]} and data.skipped == ("odd key=",)  # true and 1 are two values
    with pytest.raises(TextVAEError, match="l.jsonl:1: attribute name \"odd key=\" cannot be written"):
        read_labelled(path, attributes=["odd key="])
