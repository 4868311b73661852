import json
from collections import Counter
from pathlib import Path

import pytest

from tests.data.conftest import assert_one_line_error
from textvae.data.synthetic import (
    ADJECTIVES,
    EXTENSIONS,
    TENSES,
    load_factors,
    parse,
    render,
    vocabulary,
    write_corpus,
)
from textvae.errors import TextVAEError

COMMITTED = Path(__file__).resolve().parents[2] / "data" / "synthetic"
FILES = [f"{s}{ext}" for s in ("train", "valid", "test") for ext in (".txt", ".factors.jsonl")]
BASE = {"subject_adjective": None, "subject_number": "singular", "negation": False,
        "object_adjective": None, "object_number": "singular", "extension": "none"}


def test_committed_corpus_is_what_the_generator_writes(tmp_path):
    write_corpus(tmp_path)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (COMMITTED / name).read_bytes(), name


def test_every_committed_sentence_is_rendered_from_its_factors():
    for split in ("train", "valid", "test"):
        lines = (COMMITTED / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        factors = load_factors(COMMITTED, split)
        assert len(lines) == len(factors)
        assert all(render(f) == line for f, line in zip(factors, lines, strict=True))


def test_parse_inverts_render_on_every_committed_sentence():
    for split in ("train", "valid", "test"):
        lines = (COMMITTED / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        for line, factors in zip(lines, load_factors(COMMITTED, split), strict=True):
            parsed = parse(line)
            assert parsed == factors and list(parsed) == list(factors), line  # same keys, same order


@pytest.mark.parametrize("sentence", [
    "", ".", "the dog saw a cat", "the dog saw a cat . .", "the dog saw a cat in the park",
    "the dogs sees a cat .", "he see a dog .", "they does not see a dog .",  # agreement
    "a dog saw a cat .", "the dog saw an cat .", "the dog saw the cat .", "the dog saw a cats .",  # determiners
    "the box saw a cat .", "the dog did see a cat .", "the dog will saw a cat .", "the dog not saw a cat .",
    "the dog saw a cat quickly in the park .", "the dog saw a cat in park .", "the old old dog saw a cat .",
    "the dog saw a cat . the dog saw a cat .", "The dog saw a cat .", "the dog saw a zebra .",
])
def test_parse_rejects_sentences_outside_the_grammar(sentence):
    assert parse(sentence) is None


def test_parse_ignores_spacing_and_reads_every_verb_form():
    assert parse("  the old dog   saw a small cat . ") == parse("the old dog saw a small cat .")
    assert parse("we do not carry the heavy boxes by the river again .") == {
        "subject": "we", "subject_adjective": None, "subject_number": "plural", "verb": "carry",
        "tense": "present", "negation": True, "object": "box", "object_adjective": "heavy",
        "object_number": "plural", "extension": "pp+adverb", "preposition": "by", "place": "river",
        "adverb": "again"}


def test_demo_sentences_come_from_the_grammar():
    dog = {**BASE, "subject": "dog", "subject_adjective": "old", "verb": "see", "tense": "past",
           "object": "cat", "object_adjective": "small"}
    she = {**BASE, "subject": "she", "verb": "find", "tense": "future", "negation": True,
           "object": "box", "object_adjective": "red", "object_number": "plural"}
    assert render(dog) == "the old dog saw a small cat ."
    assert render(she) == "she will not find the red boxes ."


@pytest.mark.parametrize(("tense", "negation", "number", "verb_words"), [
    ("present", False, "singular", "sees"), ("present", False, "plural", "see"),
    ("present", True, "singular", "does not see"), ("present", True, "plural", "do not see"),
    ("past", True, "plural", "did not see"), ("future", False, "plural", "will see"),
])
def test_verb_agrees_with_tense_negation_and_number(tense, negation, number, verb_words):
    f = {**BASE, "subject": "dog", "subject_number": number, "verb": "see", "tense": tense,
         "negation": negation, "object": "apple"}
    subject = "the dog" if number == "singular" else "the dogs"
    assert render(f) == f"{subject} {verb_words} an apple ."


def test_vocabulary_is_small_and_covers_the_corpus():
    vocab = vocabulary()
    assert 100 <= len(vocab) <= 300
    used = set((COMMITTED / "train.txt").read_text(encoding="utf-8").split())
    assert used <= vocab
    assert len(used) > 0.9 * len(vocab)


def test_every_factor_value_occurs():
    factors = load_factors(COMMITTED, "train")
    counts = {key: Counter(str(f.get(key)) for f in factors) for key in ("tense", "negation", "extension",
                                                                         "subject_number", "object_adjective")}
    assert set(counts["tense"]) == set(TENSES)
    assert set(counts["negation"]) == {"True", "False"}
    assert set(counts["extension"]) == set(EXTENSIONS)
    assert set(counts["subject_number"]) == {"singular", "plural"}
    assert set(counts["object_adjective"]) == {*ADJECTIVES, "None"}


def test_splits_are_independent_streams(tmp_path):
    write_corpus(tmp_path / "a", n_train=30, n_valid=5, n_test=5)
    write_corpus(tmp_path / "b", n_train=60, n_valid=5, n_test=5)
    write_corpus(tmp_path / "c", n_train=30, n_valid=5, n_test=5, seed=1)
    a, b, c = ((tmp_path / d / "train.txt").read_text().splitlines() for d in "abc")
    assert b[:30] == a
    assert (tmp_path / "a/valid.txt").read_bytes() == (tmp_path / "b/valid.txt").read_bytes()
    assert a != c


def test_load_factors_errors(tmp_path):
    with pytest.raises(TextVAEError, match="train.factors.jsonl: no such file"):
        load_factors(tmp_path, "train")
    (tmp_path / "train.factors.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(TextVAEError, match="train.factors.jsonl:2: not a JSON object"):
        load_factors(tmp_path, "train")


def test_cli_generate(cli, tmp_path):
    rc, out, _ = cli("data", "generate", "--out", tmp_path / "s", "--train", 12, "--valid", 3, "--test", 4, "--seed", 5)
    assert rc == 0 and "12/3/4" in out
    assert [len((tmp_path / "s" / n).read_text().splitlines()) for n in FILES] == [12, 12, 3, 3, 4, 4]
    assert json.loads((tmp_path / "s/test.factors.jsonl").read_text().splitlines()[0])["tense"] in TENSES


def test_cli_generate_rejects_empty_split(cli, tmp_path):
    rc, _, err = cli("data", "generate", "--out", tmp_path, "--valid", 0)
    assert_one_line_error(rc, err, "--valid: must be at least 1")
