"""Corpus numbers from per-sentence terms: the one definition of every aggregate.

The corpus evaluation (:mod:`textvae.evaluation.corpus`), validation during training
(:func:`textvae.training.loop.validate`) and the shipped ``evaluate`` module
(:mod:`textvae.evaluation.textvae_metrics`) all reduce their sums and posteriors here,
so an ELBO, a perplexity, an MI or a BLEU means the same thing wherever it is printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from textvae.estimators import (
    active_units,
    corpus_bleu,
    kl_per_dimension,
    mutual_information,
    perplexity,
)


@dataclass
class LikelihoodTotals:
    """Sums over a corpus, from which the likelihood numbers follow.

    Sums rather than means, so batches and processes add up before anything is divided.
    """

    rec: float
    """Sum over sentences of -log p(x|z) (nats)."""
    kl: float
    """Sum over sentences of KL(q(z|x) || p(z)) (nats)."""
    tokens: int
    """Predicted tokens (words + EOS, never BOS)."""
    sentences: int
    iw_nll: float | None = None
    """Sum over sentences of the importance-weighted -log p(x), when it was estimated."""

    def numbers(self) -> dict[str, float]:
        """``elbo``, ``rec``, ``kl``, ``nll_elbo`` and ``ppl_elbo`` (plus ``nll_iw``, ``ppl_iw``),
        per sentence except the perplexities, which are exp(corpus NLL / predicted tokens)."""
        n, nll = self.sentences, self.rec + self.kl
        out = {"elbo": -nll / n, "rec": self.rec / n, "kl": self.kl / n, "nll_elbo": nll / n,
               "ppl_elbo": perplexity(nll, self.tokens)}
        if self.iw_nll is not None:
            out.update(nll_iw=self.iw_nll / n, ppl_iw=perplexity(self.iw_nll, self.tokens))
        return out


def latent_statistics(mu: torch.Tensor, logvar: torch.Tensor, *, delta: float = 0.01, seed: int = 0,
                      batch_size: int | None = None) -> dict[str, Any]:
    """MI, active units and the KL of each dimension from the (N, d) posteriors of a split.

    ``mi_split`` forms the aggregate posterior from all N posteriors; with ``batch_size``
    also ``mi_batch``, He et al. (2019)'s estimate per block of that many sentences (in
    the order given). Both draw their codes from a generator seeded with ``seed``.
    """
    out: dict[str, Any] = {
        "mi_split": mutual_information(mu, logvar, generator=torch.Generator().manual_seed(seed)),
    }
    if batch_size is not None:
        out["mi_batch"] = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(seed),
                                             batch_mi=True, batch_size=batch_size)
    count, variances = active_units(mu, delta)
    out.update(active_units=count, kl_per_dim=kl_per_dimension(mu, logvar).tolist(), au_variances=variances.tolist())
    return out


def reconstruction_scores(hypotheses: Sequence[Sequence[Any]], references: Sequence[Sequence[Any]]) -> dict[str, float]:
    """Corpus BLEU (0-100, over the given tokens, no re-tokenisation) and the exact-match rate."""
    exact = sum(list(h) == list(r) for h, r in zip(hypotheses, references, strict=True))
    bleu = corpus_bleu([" ".join(map(str, h)) for h in hypotheses], [" ".join(map(str, r)) for r in references])
    return {"bleu": bleu, "exact_match": exact / len(hypotheses)}
