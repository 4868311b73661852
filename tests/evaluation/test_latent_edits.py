"""Edit and analogy success, checked on models whose answers are known.

The oracle's code is the one-hot encoding of a sentence's factors and it decodes by
rendering the factors its code points to: every edit and every analogy must succeed and
keep the sentence. Edits too short to cross to the target, and decodes outside the
grammar, must score zero.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from textvae.data import synthetic
from textvae.data.synthetic import load_factors, parse, render
from textvae.evaluation.latent_edits import EDITED_FACTORS, measure_edits
from textvae.models.latents import AttributeVectors, encode_in_batches

COMMITTED = Path(__file__).resolve().parents[2] / "data" / "synthetic"
ABSENT = "<absent>"
# Every factor and its possible values: one block of the oracle's code each.
BLOCKS = {
    "subject": sorted(synthetic.ANIMATE) + sorted(synthetic.PRONOUNS),
    "subject_adjective": [None, *synthetic.ADJECTIVES],
    "subject_number": list(synthetic.NUMBERS),
    "verb": sorted(synthetic.VERBS),
    "tense": list(synthetic.TENSES),
    "negation": [False, True],
    "object": sorted(synthetic.ANIMATE) + sorted(synthetic.THINGS),
    "object_adjective": [None, *synthetic.ADJECTIVES],
    "object_number": list(synthetic.NUMBERS),
    "extension": list(synthetic.EXTENSIONS),
    "preposition": [ABSENT, *synthetic.PREPOSITIONS],
    "place": [ABSENT, *synthetic.PLACES],
    "adverb": [ABSENT, *synthetic.ADVERBS],
}
SIZE = sum(len(values) for values in BLOCKS.values())


class Oracle:
    """encode: one-hot factors; decode: argmax of each block, rendered (or, ``nonsense``, a non-sentence)."""

    def __init__(self, decodes: str = "code"):
        self.config = SimpleNamespace(latent_size=SIZE)
        self.decodes = decodes

    def encode(self, texts):
        rows = []
        for text in texts:
            f = parse(text)
            rows.append(torch.cat([torch.eye(len(vs))[vs.index(f.get(key, ABSENT))] for key, vs in BLOCKS.items()]))
        return torch.stack(rows), torch.zeros(len(rows), SIZE)

    def decode(self, z, max_length=64, **options):
        if self.decodes == "nonsense":
            return ["dog the saw ."] * len(z)
        out = []
        for row in z:
            f, start = {}, 0
            for key, values in BLOCKS.items():
                value = values[int(row[start : start + len(values)].argmax())]
                start += len(values)
                if value != ABSENT:
                    f[key] = value
            out.append(render(f))
        return out


@pytest.fixture(scope="module")
def corpus():
    fit_sentences = (COMMITTED / "valid.txt").read_text(encoding="utf-8").splitlines()
    vectors = AttributeVectors.fit(encode_in_batches(Oracle(), fit_sentences)[0],
                                   {a: [f[a] for f in load_factors(COMMITTED, "valid")] for a in EDITED_FACTORS})
    sentences = (COMMITTED / "test.txt").read_text(encoding="utf-8").splitlines()[:60]
    return vectors, sentences, load_factors(COMMITTED, "test")[:60]


def test_an_oracle_code_edits_and_analogies_all_succeed_and_keep_the_sentence(corpus):
    vectors, sentences, factors = corpus
    report = measure_edits(Oracle(), vectors, sentences, factors, batch_size=16)
    assert report.sentences == 60 and report.reconstruction_exact == 1.0
    nouns = sum(f["subject"] not in synthetic.PRONOUNS for f in factors)
    expected_cases = {"tense": 120, "negation": 60, "subject_number": nouns, "object_number": 60}
    for table in (report.edits, report.analogies):
        assert {a: r.cases for a, r in table.items()} == expected_cases
        for rates in table.values():
            assert rates.success == rates.kept == rates.comparable == rates.kept_reconstruction == rates.cases
    row = report.to_dict()["edits"]["tense"]
    assert (row["success_rate"], row["kept_rate"], row["kept_reconstruction_rate"]) == (1.0, 1.0, 1.0)


def test_edits_too_short_to_change_the_value_and_decodes_outside_the_grammar_score_zero(corpus):
    vectors, sentences, factors = corpus
    short = measure_edits(Oracle(), vectors, sentences, factors, strength=0.4)  # the current value still wins
    assert all(r.success == 0 and r.cases > 0 for r in short.edits.values())
    assert all(r.success == r.cases for r in short.analogies.values())  # an analogy has no strength
    nonsense = measure_edits(Oracle("nonsense"), vectors, sentences, factors)
    assert nonsense.reconstruction_exact == 0.0
    for table in (nonsense.edits, nonsense.analogies):
        assert all(r.success == 0 for r in table.values())
        assert all(r.kept_rate != r.kept_rate for r in table.values())  # no success: the kept share is NaN
