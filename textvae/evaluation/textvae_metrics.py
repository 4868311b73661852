"""Sentence-VAE corpus metrics as a Hugging Face ``evaluate`` module.

Load it offline from the installed package (no Hub access needed)::

    from textvae.evaluation.metric import load_metric

    metric = load_metric()            # ELBO-based numbers
    metric = load_metric("iw")        # also the importance-weighted bound
    for batch in loader:
        out = model(**batch)
        metric.add_batch(rec_log_likelihood=out.rec_log_likelihood.tolist(),
                         kl=out.kl.tolist(), num_tokens=out.num_tokens.tolist())
    metric.compute()

    load_metric("latent").compute(mu=mus, logvar=logvars)          # KL, MI, active units
    load_metric("reconstruction").compute(predictions=outs, references=sources)  # BLEU

Each example is one sentence; the inputs are the raw per-sentence terms of
:class:`~textvae.models.TextVAEOutput` (plus ``iw_log_likelihood`` from
:func:`textvae.estimators.iw_log_likelihood` for the ``iw`` configuration), its
posterior parameters (``latent``) or its greedy reconstruction (``reconstruction``).
Everything is computed over the whole corpus at once, so batching does not change the
result. The module is a thin adapter: every number comes from
:mod:`textvae.evaluation.metrics`, the reductions ``textvae evaluate`` and training's
validation use, so the three cannot drift apart.
"""

from __future__ import annotations

import datasets
import evaluate
import torch

from textvae.evaluation.metrics import LikelihoodTotals, latent_statistics, reconstruction_scores

_DESCRIPTION = """\
Corpus-level sentence-VAE numbers in the protocol of He et al. (2019): the ELBO and its
KL and reconstruction parts per sentence, the NLL bound from the ELBO and (``iw`` config)
from the importance-weighted bound, and the matching perplexities
exp(total NLL / predicted tokens), where predicted tokens are words + EOS, never BOS.
"""

_KWARGS_DESCRIPTION = """\
Args:
    rec_log_likelihood: per sentence, sum_t log p(x_t | x_<t, z) (nats).
    kl: per sentence, KL(q(z|x) || p(z)) (nats).
    num_tokens: per sentence, predicted tokens (words + EOS).
    iw_log_likelihood: (``iw`` config only) per sentence, the importance-weighted
        estimate of log p(x).
    mu, logvar: (``latent`` config) per sentence, the posterior's mean and log-variance (d each).
    delta: (``latent``) active-unit threshold, default 0.01.
    seed: (``latent``) seed of the codes the MI estimate draws, default 0.
    predictions, references: (``reconstruction`` config) per sentence, the decoded
        reconstruction and the source, space-separated tokens.
Returns:
    elbo: mean over sentences of rec_log_likelihood - kl (a lower bound on log p(x)).
    nll: -elbo, the NLL bound per sentence that He et al. (2019) report as "NLL".
    rec: mean reconstruction loss -rec_log_likelihood per sentence.
    kl: mean KL per sentence.
    ppl_elbo: exp(sum(-rec_log_likelihood + kl) / sum(num_tokens)).
    num_sentences, num_tokens: the corpus size.
    nll_iw, ppl_iw: (``iw`` config only) the same from iw_log_likelihood.
    latent config: kl, kl_per_dim, mi (whole-split aggregate posterior), active_units,
        au_variances (unbiased Var_x E_q[z_j]), num_sentences.
    reconstruction config: bleu (corpus BLEU, 0-100, sacrebleu, no re-tokenisation),
        exact_match (share of sentences reconstructed exactly), num_sentences.
"""

_CITATION = """\
@inproceedings{he2019lagging,
  title={Lagging Inference Networks and Posterior Collapse in Variational Autoencoders},
  author={He, Junxian and Spokoyny, Daniel and Neubig, Graham and Berg-Kirkpatrick, Taylor},
  booktitle={International Conference on Learning Representations},
  year={2019}
}
"""

_CONFIGS = ("default", "iw", "latent", "reconstruction")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextvaeMetrics(evaluate.Metric):
    """ELBO / NLL / KL / perplexity of a sentence VAE over a corpus."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in _CONFIGS:
            raise ValueError(f"unknown textvae_metrics config {self.config_name!r} (known: {', '.join(_CONFIGS)})")
        if self.config_name == "latent":
            features = {"mu": datasets.Sequence(datasets.Value("float64")),
                        "logvar": datasets.Sequence(datasets.Value("float64"))}
        elif self.config_name == "reconstruction":
            features = {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
        else:
            features = {
                "rec_log_likelihood": datasets.Value("float64"),
                "kl": datasets.Value("float64"),
                "num_tokens": datasets.Value("int64"),
            }
        if self.config_name == "iw":
            features["iw_log_likelihood"] = datasets.Value("float64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(features),
            reference_urls=["https://github.com/jxhe/vae-lagging-encoder"],
        )

    def _compute(self, **inputs) -> dict:
        first = next(iter(inputs.values()), None)
        if not first:
            raise ValueError("textvae_metrics needs at least one sentence")
        if self.config_name == "latent":
            return _latent(**inputs)
        if self.config_name == "reconstruction":
            return _reconstruction(**inputs)
        return _likelihood(**inputs)


def _likelihood(rec_log_likelihood: list[float], kl: list[float], num_tokens: list[int],
                iw_log_likelihood: list[float] | None = None) -> dict[str, float]:
    totals = LikelihoodTotals(-sum(rec_log_likelihood), sum(kl), int(sum(num_tokens)), len(rec_log_likelihood),
                              None if iw_log_likelihood is None else -sum(iw_log_likelihood))
    numbers = totals.numbers()
    result = {"elbo": numbers["elbo"], "nll": numbers["nll_elbo"], "rec": numbers["rec"], "kl": numbers["kl"],
              "ppl_elbo": numbers["ppl_elbo"], "num_sentences": totals.sentences, "num_tokens": totals.tokens}
    if iw_log_likelihood is not None:
        result.update(nll_iw=numbers["nll_iw"], ppl_iw=numbers["ppl_iw"])
    return result


def _latent(mu: list[list[float]], logvar: list[list[float]], delta: float = 0.01, seed: int = 0) -> dict:
    stats = latent_statistics(torch.tensor(mu, dtype=torch.float64), torch.tensor(logvar, dtype=torch.float64),
                              delta=delta, seed=seed)
    return {"kl": sum(stats["kl_per_dim"]), "kl_per_dim": stats["kl_per_dim"], "mi": stats["mi_split"],
            "active_units": stats["active_units"], "au_variances": stats["au_variances"], "num_sentences": len(mu)}


def _reconstruction(predictions: list[str], references: list[str]) -> dict:
    scores = reconstruction_scores([p.split() for p in predictions], [r.split() for r in references])
    return {**scores, "num_sentences": len(predictions)}
