"""What users look at: interpolations between real sentences, prior samples, and how both read.

The corpus numbers (:mod:`~textvae.evaluation.corpus`) say how well a model explains a
split; these say how its generations behave, each estimated with the model's own greedy
decoding (what ``textvae interpolate`` and ``textvae sample`` print by default):

* **Interpolation** over P test pairs (A, B), chosen by a seeded permutation of the split:
  the posterior means of A and B, the ``steps`` points of the straight line between them
  (:func:`~textvae.models.generation.interpolation_path`), each decoded. Reported: the
  BLEU of the first point against A and of the last against B (mean sentence BLEU and
  corpus BLEU), the share of paths that move monotonically (sentence BLEU to A never
  rises along the path, to B never falls) and the share of steps whose decode differs
  from the previous one (0: every point decodes alike; 1: every step changes).
* **Diversity** of prior samples z ~ N(0, I): distinct-2 (unique bigrams / all bigrams over
  the samples) and self-BLEU (each sample against all the others; 100 = all alike).
* **Fluency** (:mod:`~textvae.evaluation.fluency`): the per-token perplexity an independent
  frozen causal LM gives the decoded interpolation points, the prior samples and real
  sentences of the split (the pairs' ends first), detokenised by the model's tokenizer
  alike, and the two ratios to the real sentences' (1: as fluent as real text to that LM).

BLEU, distinct-2 and self-BLEU count the model's own tokens (sacrebleu, ``tokenize='none'``
over token ids, as ``bleu_greedy`` does), so they do not depend on a detokeniser.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from textvae.data.tokenized import TokenRows, as_token_rows
from textvae.errors import InvalidArgument
from textvae.estimators import corpus_bleu
from textvae.evaluation.corpus import format_value
from textvae.evaluation.fluency import FluencyLM, start_token

if TYPE_CHECKING:
    from textvae.models import TextVAEModel

# Slack (in tokens) past the split's longest sentence that decodes may run to (as corpus.py's).
_DECODE_SLACK = 10
_MONOTONE_TOLERANCE = 1e-9


# --------------------------------------------------------------------------- scores of decoded text


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """sacrebleu sentence BLEU (0-100) over whitespace tokens, exp smoothing, effective order."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference], tokenize="none").score)


def path_scores(paths: Sequence[Sequence[str]], ends: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Endpoint BLEU, monotone share and step-change share of decoded interpolation paths.

    Args:
        paths: P paths, each the decodes of its points from A's end to B's (at least 2).
        ends: P pairs (A, B) of reference sentences. All texts are space-separated tokens.

    Returns:
        ``interpolation_bleu_start``/``_end`` (mean sentence BLEU of the first decode
        against A, the last against B), ``interpolation_corpus_bleu_start``/``_end``,
        ``interpolation_monotone`` (share of paths whose BLEU to A never rises and to B
        never falls) and ``interpolation_step_change`` (share of consecutive decodes that differ).
    """
    if not paths or len(paths) != len(ends) or min(map(len, paths)) < 2:
        raise InvalidArgument("paths", f"need one path of at least 2 points per pair, got {len(paths)} "
                              f"paths for {len(ends)} pairs")
    monotone = changes = steps = 0
    for path, (a, b) in zip(paths, ends, strict=True):
        to_a = [sentence_bleu(text, a) for text in path]
        to_b = [sentence_bleu(text, b) for text in path]
        monotone += (all(later <= earlier + _MONOTONE_TOLERANCE for earlier, later in pairwise(to_a))
                     and all(later >= earlier - _MONOTONE_TOLERANCE for earlier, later in pairwise(to_b)))
        changes += sum(x != y for x, y in pairwise(path))
        steps += len(path) - 1
    firsts, lasts = [p[0] for p in paths], [p[-1] for p in paths]
    return {
        "interpolation_bleu_start": _mean([sentence_bleu(h, a) for h, (a, _) in zip(firsts, ends, strict=True)]),
        "interpolation_bleu_end": _mean([sentence_bleu(h, b) for h, (_, b) in zip(lasts, ends, strict=True)]),
        "interpolation_corpus_bleu_start": corpus_bleu(firsts, [a for a, _ in ends]),
        "interpolation_corpus_bleu_end": corpus_bleu(lasts, [b for _, b in ends]),
        "interpolation_monotone": monotone / len(paths),
        "interpolation_step_change": changes / steps,
    }


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Unique n-grams over all n-grams of ``texts`` (whitespace tokens; n-grams stay within a
    text); 0 when no text has n tokens."""
    grams = [tuple(tokens[i : i + n]) for tokens in (t.split() for t in texts) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str]) -> float:
    """Mean sacrebleu sentence BLEU (0-100) of each text against all the others as references.

    The same number as ``sacrebleu.sentence_bleu(t_i, texts without t_i, tokenize='none')``
    averaged over i, in O(N) n-gram look-ups rather than O(N^2): a hypothesis is clipped by
    the largest count of each n-gram among the *other* texts, which is the largest count of
    all unless this text holds it, then the second largest.
    """
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    if len(texts) < 2:
        raise InvalidArgument("samples", f"self-BLEU compares samples with each other and needs at least 2, got "
                              f"{len(texts)}")
    grams = [extract_all_word_ngrams(text.rstrip(), 1, 4) for text in texts]
    top: dict[tuple[str, ...], list[int]] = {}  # n-gram -> [largest count, the text holding it, second largest]
    for i, (counts, _) in enumerate(grams):
        for gram, count in counts.items():
            best = top.setdefault(gram, [0, -1, 0])
            if count > best[0]:
                best[:] = [count, i, best[0]]
            elif count > best[2]:
                best[2] = count
    lengths = Counter(length for _, length in grams)
    scores = []
    for i, (counts, length) in enumerate(grams):
        lengths[length] -= 1  # the closest reference length among the others, ties to the shorter
        ref_len = min((n for n, k in lengths.items() if k > 0), key=lambda n: (abs(length - n), n))
        lengths[length] += 1
        correct, total = [0] * 4, [0] * 4
        for gram, count in counts.items():
            best = top[gram]
            total[len(gram) - 1] += count
            correct[len(gram) - 1] += min(count, best[2] if best[1] == i else best[0])
        scores.append(BLEU.compute_bleu(correct, total, length, ref_len, smooth_method="exp",
                                        effective_order=True).score)
    return _mean(scores)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


# --------------------------------------------------------------------------- decoding


@dataclass
class GenerationQuality:
    """The numbers of :func:`evaluate_generation`, how they were had, and a few of the texts."""

    numbers: dict[str, float] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add_to(self, results: dict[str, Any]) -> dict[str, Any]:
        """Into an evaluation's results: the numbers at the top, ``protocol.generation``, ``generation_examples``
        (nothing at all when nothing was asked for)."""
        if not self.protocol:
            return results
        results.update(self.numbers)
        results.setdefault("protocol", {})["generation"] = self.protocol
        results["generation_examples"] = self.examples
        return results


def choose_pairs(n: int, pairs: int, seed: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Up to ``pairs`` disjoint sentence pairs of a split of ``n`` (at most n // 2), and the
    seeded permutation of the split they are the first 2P entries of."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    count = min(pairs, n // 2)
    return [(order[2 * i], order[2 * i + 1]) for i in range(count)], order


@torch.no_grad()
def decode_in_blocks(model: TextVAEModel, z: torch.Tensor, max_length: int, batch_size: int, bar: tqdm
                     ) -> list[list[int]]:
    """Greedy ids of each row of ``z`` (N, d), ``batch_size`` rows a ``decode_ids`` call."""
    out: list[list[int]] = []
    for start in range(0, len(z), batch_size):
        out += model.decode_ids(z[start : start + batch_size].to(model.device), max_length=max_length)
        bar.update(min(batch_size, len(z) - start))
    return out


def evaluate_generation(
    model: TextVAEModel,
    ids: Sequence[Sequence[int]] | TokenRows,
    mu: torch.Tensor,
    *,
    pairs: int = 50,
    steps: int = 8,
    samples: int = 100,
    seed: int = 0,
    batch_size: int = 64,
    fluency: FluencyLM | None = None,
    fluency_note: str | None = None,
    progress: bool = True,
) -> GenerationQuality:
    """Interpolation, diversity and fluency numbers of ``model`` on a split (see the module doc).

    Args:
        model: A :class:`~textvae.models.TextVAEModel` with a tokenizer.
        ids: The split's N model-ready rows ``<bos> ... <eos>``.
        mu: (N, d) their posterior means (:class:`~textvae.evaluation.corpus.Evaluation` keeps them).
        pairs: Interpolation pairs (at most N // 2; 0: none). Not for a model without a latent.
        steps: Points per path, ends included.
        samples: Prior samples (0: none, else at least 2). With ``pairs``, 0 gives an empty report.
        seed: Seeds the choice of pairs and the prior draws.
        batch_size: Codes per decoder call.
        fluency: The LM that scores the decodes; None: no fluency numbers (``fluency_note`` says why).
        progress: tqdm bars on stderr.
    """
    if steps < 2:
        raise InvalidArgument("steps", f"must be at least 2, got {steps}")
    if pairs < 0:
        raise InvalidArgument("pairs", f"must be at least 0, got {pairs}")
    if samples < 0 or samples == 1:
        raise InvalidArgument("samples", f"must be 0 or at least 2 (self-BLEU compares samples), got {samples}")
    if pairs == 0 and samples == 0:
        return GenerationQuality()
    ids = as_token_rows(ids)
    chosen, order = choose_pairs(len(ids), pairs if model.has_latent else 0, seed)
    max_length = int(ids.lengths.max()) - 2 + _DECODE_SLACK
    if model.config.decoder_type == "transformer":
        max_length = min(max_length, model.config.max_position_embeddings - 1)
    report = GenerationQuality(protocol=_protocol(model, pairs, len(chosen), steps, samples, seed, max_length))
    decode = model.tokenizer.batch_decode
    with tqdm(total=len(chosen) * steps + samples, desc="generate", unit="sent", disable=not progress,
              file=sys.stderr, leave=False) as bar:
        paths = _interpolate(model, mu, chosen, steps, max_length, batch_size, bar)
        drawn = _sample(model, samples, seed, max_length, batch_size, bar)
    if paths:
        ends = [(_tokens(ids[a][1:-1]), _tokens(ids[b][1:-1])) for a, b in chosen]
        report.numbers.update(path_scores([[_tokens(row) for row in path] for path in paths], ends))
        report.examples["interpolation"] = decode(paths[0], skip_special_tokens=True)
    if drawn:
        texts = [_tokens(row) for row in drawn]
        report.numbers.update(samples_distinct_2=distinct_n(texts, 2), samples_self_bleu=self_bleu(texts))
        report.examples["samples"] = decode(drawn[:5], skip_special_tokens=True)
    if fluency is not None and (paths or drawn):
        real = [ids[i][1:-1] for i in order[: max(2 * len(chosen), samples)]]
        report.numbers.update(_fluency(fluency, decode, real, [row for p in paths for row in p], drawn, progress))
        report.protocol["fluency_lm"] = fluency.name
        report.protocol["fluency_start_token"] = start_token(fluency.tokenizer)
        report.protocol["fluency_real_sentences"] = len(real)
    else:
        report.protocol["fluency"] = ("not computed: nothing was generated" if not (paths or drawn)
                                      else fluency_note or "not computed: no fluency LM given")
    return report


def _interpolate(model: TextVAEModel, mu: torch.Tensor, chosen: list[tuple[int, int]], steps: int,
                 max_length: int, batch_size: int, bar: tqdm) -> list[list[list[int]]]:
    """The greedy decodes of each pair's path: P lists of ``steps`` id lists."""
    from textvae.models.generation import interpolation_path

    if not chosen:
        return []
    z = torch.cat([interpolation_path(mu[a].float(), mu[b].float(), steps) for a, b in chosen])  # (P * steps, d)
    flat = decode_in_blocks(model, z, max_length, batch_size, bar)
    return [flat[p * steps : (p + 1) * steps] for p in range(len(chosen))]


def _sample(model: TextVAEModel, n: int, seed: int, max_length: int, batch_size: int, bar: tqdm) -> list[list[int]]:
    """Greedy decodes of ``n`` codes z ~ N(0, I), drawn from their own stream (``seed + 2``: the
    corpus evaluation uses ``seed`` and ``seed + 1``)."""
    if n == 0:
        return []
    z = torch.randn(n, model.config.latent_size, generator=torch.Generator().manual_seed(seed + 2))
    return decode_in_blocks(model, z, max_length, batch_size, bar)


def _fluency(lm: FluencyLM, decode, real: list[list[int]], points: list[list[int]], drawn: list[list[int]],
             progress: bool) -> dict[str, float]:
    """Perplexities of the three sets of texts and the ratios to the real sentences'."""
    out: dict[str, float] = {}
    ppl_real = lm.perplexity(decode(real, skip_special_tokens=True), progress=progress, desc="fluency: real")
    for key, rows in (("interpolation", points), ("samples", drawn)):
        ppl = lm.perplexity(decode(rows, skip_special_tokens=True), progress=progress, desc=f"fluency: {key}") \
            if rows else None
        if ppl is not None:
            out[f"fluency_ppl_{key}"] = ppl
            if ppl_real is not None and math.isfinite(ppl) and math.isfinite(ppl_real):
                out[f"fluency_ratio_{key}"] = ppl / ppl_real
    if ppl_real is not None:
        out["fluency_ppl_real"] = ppl_real
    return out


def _tokens(row: Sequence[int]) -> str:
    """Token ids as the space-separated 'words' BLEU and distinct-n count."""
    return " ".join(map(str, row))


def _protocol(model: TextVAEModel, asked: int, pairs: int, steps: int, samples: int, seed: int,
              max_length: int) -> dict[str, Any]:
    protocol: dict[str, Any] = {
        "decoding": f"greedy, at most {max_length} tokens (the split's longest sentence + {_DECODE_SLACK})",
        "interpolation_pairs": pairs,
        "interpolation_steps": steps,
        "interpolation": f"lerp between posterior means of {pairs} disjoint pairs of the split (seeded permutation, "
                         f"seed {seed}); BLEU is sacrebleu (tokenize=none) over the model's token ids; monotone: "
                         "sentence BLEU to A never rises along the path and to B never falls; step change: share "
                         "of consecutive points that decode differently",
        "samples": samples,
        "diversity": f"{samples} z ~ N(0, I) (seed {seed} + 2): distinct-2 = unique / all token bigrams over the "
                     "samples; self-BLEU = mean sentence BLEU of each sample against all others",
        "fluency_ppl": "exp(total NLL / tokens) of the fluency LM, its own tokenizer on the detokenised text, "
                       "each text after <|endoftext|> where the LM has it, else its BOS, else EOS; real = the "
                       "split's sentences (the pairs' ends first); ratio = generated / real (1: as fluent as real "
                       "text to that LM; an LM rewards repetition, so read it beside distinct-2)",
    }
    if not model.has_latent:
        protocol["interpolation"] = "not computed: the model has no latent variable"
    elif pairs < asked:
        protocol["interpolation_pairs_asked"] = asked
    return protocol


# --------------------------------------------------------------------------- report

ROWS = (
    ("interpolation_bleu_start", "Interpolation: BLEU of the first point vs A"),
    ("interpolation_bleu_end", "Interpolation: BLEU of the last point vs B"),
    ("interpolation_monotone", "Interpolation: monotone paths"),
    ("interpolation_step_change", "Interpolation: steps that change the sentence"),
    ("samples_distinct_2", "Prior samples: distinct-2"),
    ("samples_self_bleu", "Prior samples: self-BLEU"),
    ("fluency_ppl_real", "Fluency LM PPL: real sentences"),
    ("fluency_ppl_interpolation", "Fluency LM PPL: interpolation points"),
    ("fluency_ppl_samples", "Fluency LM PPL: prior samples"),
    ("fluency_ratio_interpolation", "Fluency ratio: interpolation / real"),
    ("fluency_ratio_samples", "Fluency ratio: samples / real"),
)


def markdown_rows(results: dict[str, Any]) -> list[str]:
    """Rows of the evaluation's Markdown table (``| label | value | notes |``) for the numbers here."""
    protocol = (results.get("protocol") or {}).get("generation") or {}
    notes = {
        "interpolation_bleu_start": f"{protocol.get('interpolation_pairs', '?')} pairs x "
                                    f"{protocol.get('interpolation_steps', '?')} steps, greedy; corpus BLEU "
                                    f"{format_value(results.get('interpolation_corpus_bleu_start', '?'))}",
        "interpolation_bleu_end": f"corpus BLEU {format_value(results.get('interpolation_corpus_bleu_end', '?'))}",
        "samples_distinct_2": f"{protocol.get('samples', '?')} samples z ~ N(0, I), greedy",
        "fluency_ppl_real": f"{protocol.get('fluency_lm', '')}, {protocol.get('fluency_real_sentences', '?')} sentences",
    }
    lines = [f"| {label} | {format_value(results[key])} | {notes.get(key, '')} |" for key, label in ROWS if key in results]
    if "fluency" in protocol and (protocol.get("interpolation_pairs") or protocol.get("samples")):
        lines.append(f"| Fluency | - | {protocol['fluency']} |")
    return lines

