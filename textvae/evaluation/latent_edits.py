"""How often an edit or an analogy in the code does what it should, read by the grammar's parser.

The embedded corpus knows every sentence's factors, and :func:`~textvae.data.synthetic.parse`
reads them back from any decoded sentence. So, for each attribute (tense, negation, the
subject's and the object's number):

* **edit**: move a test sentence's posterior mean from its value's mean to another
  value's (:meth:`~textvae.models.latents.AttributeVectors.direction`, the current value
  given by the corpus) and decode;
* **analogy**: for a test sentence C and another test sentence A with C's value, let B
  be A with only that attribute changed (rendered by the grammar); decode
  ``z_C + (z_B - z_A)``.

Either is a **success** when the decode parses with the target value, and among the
successes it **keeps** the sentence when every other factor is C's own. Reconstruction
exact match is reported beside them: an edit cannot keep what reconstruction already loses;
so successes are also compared with the source's own reconstruction (where it parses):
whether the edit changes only the attribute of what the model would have said anyway.
A subject pronoun carries its number (``he``/``they``), so subject-number cases use
sentences with a noun subject only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from textvae.data.synthetic import PRONOUNS, parse, render
from textvae.models.latents import AttributeVectors, decode_in_batches, encode_in_batches

if TYPE_CHECKING:
    from textvae.models import TextVAEModel

EDITED_FACTORS = ("tense", "negation", "subject_number", "object_number")


@dataclass(frozen=True)
class Rates:
    """Outcomes of one attribute's edits (or analogies)."""

    cases: int
    success: int
    """Decodes that parse with the target value."""
    kept: int
    """Successes whose every other factor is the source sentence's."""
    comparable: int = 0
    """Successes whose source's reconstruction parses."""
    kept_reconstruction: int = 0
    """Of those, the ones whose every other factor is the reconstruction's: what the edit
    keeps of what the model keeps at all."""

    @property
    def success_rate(self) -> float:
        return self.success / self.cases if self.cases else float("nan")

    @property
    def kept_rate(self) -> float:
        """Among the successes."""
        return self.kept / self.success if self.success else float("nan")

    @property
    def kept_reconstruction_rate(self) -> float:
        return self.kept_reconstruction / self.comparable if self.comparable else float("nan")


@dataclass(frozen=True)
class EditReport:
    sentences: int
    reconstruction_exact: float
    """Share of sentences whose greedy decode from the posterior mean is the sentence itself."""
    edits: dict[str, Rates]
    analogies: dict[str, Rates]
    strength: float

    def to_dict(self) -> dict[str, Any]:
        def rows(table: dict[str, Rates]) -> dict[str, dict[str, float]]:
            return {a: {**asdict(r), "success_rate": r.success_rate, "kept_rate": r.kept_rate,
                        "kept_reconstruction_rate": r.kept_reconstruction_rate} for a, r in table.items()}

        return {"sentences": self.sentences, "reconstruction_exact": self.reconstruction_exact,
                "strength": self.strength, "edits": rows(self.edits), "analogies": rows(self.analogies)}


@dataclass(frozen=True)
class _Case:
    source: int
    """The sentence whose other factors must be kept."""
    attribute: str
    target: Any


@torch.no_grad()
def measure_edits(model: TextVAEModel, vectors: AttributeVectors, sentences: Sequence[str],
                  factors: Sequence[dict[str, Any]], attributes: Sequence[str] = EDITED_FACTORS,
                  strength: float = 1.0, seed: int = 0, batch_size: int = 256, max_length: int = 40,
                  progress: bool = False) -> EditReport:
    """Edit and analogy success on sentences of the embedded grammar with their factor dicts.

    Args:
        vectors: Mean codes of (at least) ``attributes``, fitted on other sentences.
        strength: Scale of the edit direction.
        seed: Draws the A sentence of each analogy.
        max_length: Longest decode, in tokens.
    """
    vectors.check_model(model)
    mu, _ = encode_in_batches(model, sentences, batch_size, progress)
    decode = {"batch_size": batch_size, "max_length": max_length, "progress": progress}
    reconstructions = decode_in_batches(model, mu, **decode)
    exact = sum(" ".join(r.split()) == " ".join(s.split()) for r, s in zip(reconstructions, sentences, strict=True))
    references = {"source": factors, "reconstruction": [parse(r) for r in reconstructions]}

    edits, z_edits = _edit_cases(vectors, mu, factors, attributes, strength)
    analogies, z_analogies = _analogy_cases(model, mu, factors, attributes, random.Random(seed), batch_size)
    decoded = decode_in_batches(model, torch.cat([z_edits, z_analogies]), **decode)
    return EditReport(len(sentences), exact / len(sentences),
                      _score(edits, decoded[: len(edits)], references, attributes),
                      _score(analogies, decoded[len(edits) :], references, attributes), strength)


def _candidates(factors: Sequence[dict[str, Any]], attribute: str) -> list[int]:
    """Sentences whose ``attribute`` can change alone (a pronoun's number cannot)."""
    return [i for i, f in enumerate(factors) if attribute != "subject_number" or f["subject"] not in PRONOUNS]


def _edit_cases(vectors: AttributeVectors, mu: torch.Tensor, factors: Sequence[dict[str, Any]],
                attributes: Sequence[str], strength: float) -> tuple[list[_Case], torch.Tensor]:
    """Every sentence towards every other value of every attribute: the cases and their codes."""
    cases, codes = [], []
    for attribute in attributes:
        rows = _candidates(factors, attribute)
        for target in vectors.values[attribute]:
            for current in vectors.values[attribute]:
                group = [i for i in rows if factors[i][attribute] == current and current != target]
                if group:
                    z = mu[group]
                    codes.append(z + vectors.direction(z, attribute, target, current, strength))
                    cases += [_Case(i, attribute, target) for i in group]
    return cases, torch.cat(codes) if codes else mu[:0]


def _analogy_cases(model: TextVAEModel, mu: torch.Tensor, factors: Sequence[dict[str, Any]],
                   attributes: Sequence[str], rng: random.Random,
                   batch_size: int) -> tuple[list[_Case], torch.Tensor]:
    """For each sentence C and each other value: A (another sentence with C's value) and B
    (A rendered with the target value); the codes ``z_C + z_B - z_A``."""
    cases, a_rows, b_sentences = [], [], []
    for attribute in attributes:
        rows = _candidates(factors, attribute)
        by_value: dict[str, list[int]] = {}
        for i in rows:
            by_value.setdefault(repr(factors[i][attribute]), []).append(i)
        targets = sorted({repr(factors[i][attribute]): factors[i][attribute] for i in rows}.items())
        for c in rows:
            same = by_value[repr(factors[c][attribute])]
            for key, target in targets:
                if key == repr(factors[c][attribute]) or len(same) < 2:
                    continue
                a = _other(rng, same, c)
                cases.append(_Case(c, attribute, target))
                a_rows.append(a)
                b_sentences.append(render({**factors[a], attribute: target}))
    if not cases:
        return cases, mu[:0]
    z_b, _ = encode_in_batches(model, b_sentences, batch_size)
    c_rows = [case.source for case in cases]
    return cases, mu[c_rows] + z_b - mu[a_rows]


def _other(rng: random.Random, pool: list[int], excluded: int) -> int:
    """A random member of ``pool`` (at least two long) other than ``excluded``, by rejection."""
    while True:
        pick = rng.choice(pool)
        if pick != excluded:
            return pick


def _score(cases: list[_Case], decoded: list[str], references: dict[str, Sequence[dict[str, Any] | None]],
           attributes: Sequence[str]) -> dict[str, Rates]:
    """Tally each attribute's cases; ``references``: the factors of the source sentences and
    of their reconstructions (None where one does not parse)."""
    counts = {a: [0] * 5 for a in attributes}  # cases, success, kept, comparable, kept_reconstruction
    for case, sentence in zip(cases, decoded, strict=True):
        parsed = parse(sentence)
        tally = counts[case.attribute]
        tally[0] += 1
        if parsed is None or parsed[case.attribute] != case.target:
            continue
        tally[1] += 1
        tally[2] += parsed == {**references["source"][case.source], case.attribute: case.target}
        reconstruction = references["reconstruction"][case.source]
        if reconstruction is not None:
            tally[3] += 1
            tally[4] += parsed == {**reconstruction, case.attribute: case.target}
    return {a: Rates(*tally) for a, tally in counts.items()}
