"""Sentence-VAE corpus metrics as a Hugging Face ``evaluate`` module.

Load it offline from the installed package (no Hub access needed)::

    from textvae.metrics import load_metric

    metric = load_metric()            # ELBO-based numbers
    metric = load_metric("iw")        # also the importance-weighted bound
    for batch in loader:
        out = model(**batch)
        metric.add_batch(rec_log_likelihood=out.rec_log_likelihood.tolist(),
                         kl=out.kl.tolist(), num_tokens=out.num_tokens.tolist())
    metric.compute()

Each example is one sentence; the inputs are the raw per-sentence terms of
:class:`~textvae.models.TextVAEOutput` (plus ``iw_log_likelihood`` from
:func:`textvae.estimators.iw_log_likelihood` for the ``iw`` configuration). Sums are
taken over the whole corpus, so batching does not change the result.
"""

from __future__ import annotations

import datasets
import evaluate

from textvae.estimators import perplexity

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
Returns:
    elbo: mean over sentences of rec_log_likelihood - kl (a lower bound on log p(x)).
    nll: -elbo, the NLL bound per sentence that He et al. (2019) report as "NLL".
    rec: mean reconstruction loss -rec_log_likelihood per sentence.
    kl: mean KL per sentence.
    ppl_elbo: exp(sum(-rec_log_likelihood + kl) / sum(num_tokens)).
    num_sentences, num_tokens: the corpus size.
    nll_iw, ppl_iw: (``iw`` config only) the same from iw_log_likelihood.
"""

_CITATION = """\
@inproceedings{he2019lagging,
  title={Lagging Inference Networks and Posterior Collapse in Variational Autoencoders},
  author={He, Junxian and Spokoyny, Daniel and Neubig, Graham and Berg-Kirkpatrick, Taylor},
  booktitle={International Conference on Learning Representations},
  year={2019}
}
"""

_CONFIGS = ("default", "iw")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextvaeMetrics(evaluate.Metric):
    """ELBO / NLL / KL / perplexity of a sentence VAE over a corpus."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in _CONFIGS:
            raise ValueError(f"unknown textvae_metrics config {self.config_name!r} (known: {', '.join(_CONFIGS)})")
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

    def _compute(
        self,
        rec_log_likelihood: list[float],
        kl: list[float],
        num_tokens: list[int],
        iw_log_likelihood: list[float] | None = None,
    ) -> dict[str, float]:
        n = len(rec_log_likelihood)
        if n == 0:
            raise ValueError("textvae_metrics needs at least one sentence")
        total_rec = -sum(rec_log_likelihood)
        total_kl = sum(kl)
        total_tokens = int(sum(num_tokens))
        result = {
            "elbo": -(total_rec + total_kl) / n,
            "nll": (total_rec + total_kl) / n,
            "rec": total_rec / n,
            "kl": total_kl / n,
            "ppl_elbo": perplexity(total_rec + total_kl, total_tokens),
            "num_sentences": n,
            "num_tokens": total_tokens,
        }
        if iw_log_likelihood is not None:
            total_iw = -sum(iw_log_likelihood)
            result["nll_iw"] = total_iw / n
            result["ppl_iw"] = perplexity(total_iw, total_tokens)
        return result
