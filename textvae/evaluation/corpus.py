"""Corpus evaluation of a sentence VAE in the protocol of He et al. (2019).

One pass over a split gives every number papers report, each labelled with how it was
estimated (the protocol dict travels with the numbers into ``evaluation.json``):

* **ELBO, rec, KL** per sentence: rec is the mean of ``log p(x|z_k)`` over the same K
  posterior samples the IW bound uses (an unbiased, low-variance estimate of
  ``E_q log p(x|z)``), KL is analytic.
* **IW-NLL**: ``-log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)`` (Burda et al. 2016), fed to
  :class:`textvae.estimators.IWAccumulator` in chunks of samples so memory is bounded.
* **PPL** from both bounds, over *predicted* tokens (words + EOS, never BOS).
* **MI** of the whole split's aggregate posterior, and He et al.'s mini-batch variant.
* **AU** (Var_x E_q[z_j] >= delta) and the KL of each latent dimension.
* **Reconstruction**: teacher-forced argmax token accuracy at z = mu, and corpus BLEU and
  exact-match rate of greedy reconstructions from mu.
* **Factor probes** (:mod:`textvae.evaluation.probing`) when the split has known factors.
* **Next-token TV**: how far apart the next-token distributions on the true prefix lie
  under two posterior samples, beside the same for two prior samples -- the effect of z
  in distribution space, where a logit-space guarantee may not be felt.
* **Warnings**: KL without MI (``KL > 2 MI + 1``) or no active unit
  (:func:`textvae.estimators.latent_warning`).

A ``latent_path="none"`` model is a language model: log p(x) is exact, so one "sample"
is used whatever K says, and KL/MI/AU are 0 by definition.

The sentences are batched by the data layer (:func:`textvae.data.batching.evaluation_order`,
padded by the training :class:`~textvae.data.batching.Collator`), and the corpus numbers are
reduced by :mod:`textvae.evaluation.metrics`, as in training's validation. The pass keeps
the posteriors (:class:`Evaluation`), so figures need no second encoding of the split.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from textvae.data.batching import Collator, evaluation_order
from textvae.data.cache import sha256_file
from textvae.data.tokenized import TokenRows, as_token_rows
from textvae.errors import InvalidArgument, TextVAEError
from textvae.estimators import (
    MI_SATURATED_NOTE,
    IWAccumulator,
    count_predicted_tokens,
    gaussian_kl_per_dim,
    latent_warning,
    mi_ceiling,
    mi_saturated,
    perplexity,
    token_matches,
)
from textvae.evaluation.metrics import LikelihoodTotals, latent_statistics, reconstruction_scores

if TYPE_CHECKING:
    from accelerate import Accelerator

    from textvae.models import TextVAEModel

MI_VARIANTS = ("split", "batch")
# Slack (in ids) past the longest input that greedy reconstructions may run to.
_DECODE_SLACK = 10


# --------------------------------------------------------------------------- inputs


def check_ids(ids: Sequence[Sequence[int]] | TokenRows, bos_id: int, eos_id: int) -> None:
    """Every row must be model-ready ``<bos> w_1 ... w_n <eos>`` (what the tokenizer emits)."""
    if len(ids) == 0:
        raise InvalidArgument("ids", "no sentences to evaluate")
    for i, row in enumerate(ids):
        if len(row) < 2 or row[0] != bos_id or row[-1] != eos_id:
            raise InvalidArgument("ids", f"sentence {i} is not '<bos> ... <eos>' token ids "
                                  "(tokenise with the model's tokenizer, which adds them)")


# --------------------------------------------------------------------------- estimators


@torch.no_grad()
def importance_sampled_log_likelihood(
    model: TextVAEModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    num_samples: int,
    sample_chunk: int = 50,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IW estimate of log p(x) and the mean of log p(x|z_k), for a batch of sentences.

    The noise for all K samples is drawn at once, (K, B, d) -- small next to the logits --
    so the result does not depend on ``sample_chunk``; each chunk of k samples is then one
    batched ``model.log_likelihood`` call over (B, k) latents, which bounds memory.

    Args:
        input_ids, attention_mask: (B, T) model-ready batch.
        mu, logvar: (B, d) posterior parameters.
        num_samples: K.
        sample_chunk: Samples per decoder call.
        generator: Source of the noise (reproducibility).

    Returns:
        ``(iw, rec)``, both (B,) float64: the IW estimate of log p(x) and the Monte-Carlo
        mean over the same samples of log p(x|z) (the ELBO's reconstruction term).
    """
    accumulator = IWAccumulator()
    rec_sum = torch.zeros(mu.shape[0], dtype=torch.float64, device=mu.device)
    eps = torch.randn((num_samples, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    std = (0.5 * logvar).exp().unsqueeze(1)  # (B, 1, d)
    for chunk in eps.split(sample_chunk):  # (k, B, d)
        z = mu.unsqueeze(1) + std * chunk.transpose(0, 1)  # (B, k, d)
        log_px_z = model.log_likelihood(input_ids, z, attention_mask)  # (B, k)
        accumulator.update(log_px_z, z, mu, logvar)
        rec_sum += log_px_z.double().sum(dim=1)
    return accumulator.compute(), rec_sum / num_samples


@torch.no_grad()
def teacher_forced_predictions(model: TextVAEModel, input_ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Argmax next token at every position given the true prefix and z: (B, T) -> (B, T-1)."""
    return model.prefix_logits(input_ids, z).argmax(dim=-1)


@torch.no_grad()
def own_code_gains(model: TextVAEModel, input_ids: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """How much better each sentence is reconstructed from its own code than from another's (nats).

    ``log p(x_i | mu_i) - log p(x_i | mu_{i-1})``, the other code the previous sentence's of
    the batch: (B, T), (B, d) -> (B,) float64, NaN for a batch of one. Unlike the MI
    estimate it has no ceiling (an autoencoder that holds every word gains about the
    sentence's whole information), and unlike the KL it counts only what the decoder
    reads: a code that leaves the prior without changing the prediction gains 0, and so
    does the same code for every sentence or a decoder that ignores z.
    """
    if mu.shape[0] < 2:
        return torch.full((mu.shape[0],), math.nan, dtype=torch.float64)
    log_px = model.log_likelihood(input_ids, torch.stack([mu, mu.roll(1, dims=0)], dim=1), mask)  # (B, 2)
    return (log_px[:, 0].double() - log_px[:, 1].double()).cpu()


@torch.no_grad()
def next_token_total_variation(model: TextVAEModel, input_ids: torch.Tensor, mask: torch.Tensor,
                               z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Summed total variation between the next-token distributions under two latents.

    ``TV_t = 1/2 sum_w |p(w | x_<t, z1) - p(w | x_<t, z2)|`` on the true prefix, summed over
    the predicted positions of the batch (divide by their count for the mean). How much
    the code moves what the decoder predicts, in distribution space: 0 when z is ignored,
    1 when the two latents put their mass on different tokens.
    """
    probs = torch.softmax(model.prefix_logits(input_ids, torch.stack([z1, z2], dim=1)).float(), dim=-1)
    tv = 0.5 * (probs[:, 0] - probs[:, 1]).abs().sum(-1)  # (B, T-1)
    return float((tv * mask[:, 1:]).sum())


# --------------------------------------------------------------------------- identity


def word_count(tokenizer: Any, ids: TokenRows) -> int:
    """Whitespace words of the sentences the ids spell (BOS and EOS cut), plus one EOS each:
    the unit of per-word perplexity, the same for every tokenizer of the same text."""
    words = 0
    for start in range(0, len(ids), 4096):  # a block of sentences at a time: a split may be large
        texts = tokenizer.batch_decode([row[1:-1] for row in ids.gather(range(start, min(start + 4096, len(ids))))])
        words += sum(len(text.split()) for text in texts)
    return words + len(ids)


def checkpoint_identity(model: TextVAEModel) -> dict[str, Any]:
    """Which weights the numbers belong to: source, a hash or Hub commit, and the config."""
    config = model.config
    source = str(getattr(model, "name_or_path", "") or "")
    identity: dict[str, Any] = {"source": source or None}
    weights = Path(source) / "model.safetensors" if source else None
    if weights is not None and weights.is_file():
        identity["source"] = str(Path(source).resolve())
        identity["model_safetensors_sha256"] = sha256_file(weights)
    else:  # in memory, or from the Hub cache: hash the weights themselves
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        identity["state_dict_sha256"] = digest.hexdigest()
    if getattr(config, "_commit_hash", None):
        identity["commit"] = config._commit_hash
    identity["config"] = {
        "latent_path": config.latent_path,
        "lipschitz": config.lipschitz,
        "latent_size": config.latent_size,
        "encoder": _describe_part(config, "encoder"),
        "decoder": _describe_part(config, "decoder"),
        "embedding_size": config.embedding_size,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    if model.head.invlip is not None and model.head.output_lift:
        # The lift through W is whitened to give s * L; W A alone would give L * sigma.
        identity["config"]["lipschitz_bound"] = model.lipschitz_bound()
        identity["config"]["output_lift_sigma"] = model.head.invlip.output_sigma(model.head.output_layer().weight)
    return identity


def _describe_part(config: Any, part: str) -> str:
    """``lstm x1``, or for a pretrained backbone its name and what of it trained."""
    kind = getattr(config, f"{part}_type")
    if kind != "pretrained":
        return f"{kind} x{getattr(config, f'{part}_layers')}"
    return f"pretrained {getattr(config, f'{part}_name_or_path')} ({getattr(config, f'{part}_trainable')})"


# --------------------------------------------------------------------------- evaluate


@dataclass
class Evaluation:
    """What one pass over a split gives: the report and the posteriors behind it."""

    results: dict[str, Any]
    """The numbers, ``protocol`` and ``checkpoint``: JSON-serialisable (``evaluation.json``)."""
    mu: torch.Tensor
    """(N, d) posterior means on the CPU, in the order of the sentences (for plots)."""
    logvar: torch.Tensor


def evaluate(model: TextVAEModel, ids: Sequence[Sequence[int]] | TokenRows, **options: Any) -> dict[str, Any]:
    """The numbers of :func:`evaluate_split` alone (``options`` are its keywords)."""
    return evaluate_split(model, ids, **options).results


def evaluate_split(
    model: TextVAEModel,
    ids: Sequence[Sequence[int]] | TokenRows,
    *,
    iw_samples: int = 500,
    delta: float = 0.01,
    batch_size: int = 64,
    mi: str = "split",
    bleu: bool = True,
    seed: int = 0,
    progress: bool = True,
    factors: Sequence[dict[str, Any]] | None = None,
    sample_chunk: int = 50,
    accelerator: Accelerator | None = None,
) -> Evaluation:
    """Every evaluation number of ``model`` on sentences ``ids``, with its protocol, in one pass.

    Args:
        model: A :class:`~textvae.models.TextVAEModel` (put in eval mode here).
        ids: N model-ready id lists ``<bos> w_1 ... w_n <eos>`` (or the rows of a tokenised split).
        iw_samples: K importance samples per sentence (He et al.: 500).
        delta: Active-unit threshold on Var_x E_q[z_j].
        batch_size: Sentences per forward pass; also the block size of the mini-batch MI.
        mi: Which MI the headline ``mi`` key repeats: ``split`` (aggregate posterior of the
            whole split) or ``batch`` (He et al.'s per-mini-batch estimate). Both are reported.
        bleu: Greedy-decode reconstructions from mu and score them (the slowest part after IW).
        seed: Seeds the posterior samples and the MI estimate.
        progress: Show a tqdm bar on stderr.
        factors: One dict of known generative factors per sentence (embedded corpus): adds
            linear probes of the posterior means (:func:`textvae.evaluation.probing.probe_factors`).
        sample_chunk: Importance samples per decoder call.
        accelerator: Share the batches among its processes (every process calls this):
            process ``r`` of ``R`` evaluates batches ``r::R`` and the per-sentence results are
            gathered with ``gather_for_metrics``. Each process draws the noise of every
            batch, using its own batches' only, so each sentence sees the same samples, and
            the numbers are those of one process up to float rounding.

    Returns:
        The results (numbers, ``protocol``, ``checkpoint``) and the split's posteriors, on
        every process.
    """
    if mi not in MI_VARIANTS:
        raise InvalidArgument("mi", f"must be one of {', '.join(MI_VARIANTS)}, got {mi!r}")
    for name, value in (("iw_samples", iw_samples), ("batch_size", batch_size), ("sample_chunk", sample_chunk)):
        if value < 1:
            raise InvalidArgument(name, f"must be at least 1, got {value}")
    if factors is not None and len(factors) != len(ids):
        raise InvalidArgument("factors", f"{len(factors)} factor rows for {len(ids)} sentences")
    if len(ids) < 2:  # one sentence has no variance across sentences: AU and MI would be NaN
        raise TextVAEError(f"an evaluation compares sentences (active units, mutual information) and needs at "
                           f"least 2, got {len(ids)}")
    ids = as_token_rows(ids)
    check_ids(ids, model.config.bos_token_id, model.config.eos_token_id)
    split = _pass_over(model, ids, iw_samples, batch_size, bleu, seed, progress, sample_chunk, accelerator)
    return Evaluation(_results(model, ids, split, iw_samples=iw_samples, delta=delta, batch_size=batch_size, mi=mi,
                               bleu=bleu, seed=seed, factors=factors), split.mu, split.logvar)


def _pass_over(model: TextVAEModel, ids: TokenRows, iw_samples: int, batch_size: int, bleu: bool, seed: int,
               progress: bool, sample_chunk: int, accelerator: Accelerator | None) -> _SplitPass:
    """Every sentence's numbers, each batch on one process and gathered to every process; the
    noise of every batch is drawn on every process, so a sentence's samples are those of one."""
    was_training = model.training
    model.eval()
    num_samples = iw_samples if model.has_latent else 1  # log p(x) is exact without a latent
    generator = torch.Generator(device=model.device).manual_seed(seed)
    # The TV draws have their own stream, so the IW and MI numbers do not depend on them.
    split = _SplitPass(len(ids), model.config.latent_size, torch.Generator(device=model.device).manual_seed(seed + 1))
    processes, rank = (accelerator.num_processes, accelerator.process_index) if accelerator else (1, 0)
    collate = Collator(model.config.pad_token_id)
    bar = tqdm(total=len(ids), desc="evaluate", unit="sent", disable=not progress or rank > 0, file=sys.stderr,
               leave=False)
    with torch.no_grad():
        for number, batch in enumerate(evaluation_order(ids.lengths, batch_size)):
            if number % processes == rank:
                split.add(model, ids, batch, collate(ids.gather(batch)), num_samples, sample_chunk, generator, bleu)
            else:
                split.skip(model, len(batch), num_samples, generator)
            bar.update(len(batch))
    bar.close()
    model.train(was_training)
    if processes > 1:
        split.gather(accelerator)
    return split


def _results(model: TextVAEModel, ids: TokenRows, split: _SplitPass, *, iw_samples: int, delta: float,
             batch_size: int, mi: str, bleu: bool, seed: int, factors: Sequence[dict[str, Any]] | None) -> dict:
    """The split's numbers from its sentences' (see :func:`evaluate_split` for the arguments)."""
    has_latent = model.has_latent
    kl = gaussian_kl_per_dim(split.mu.double(), split.logvar.double()).sum(-1) * float(has_latent)  # (N,)
    totals = LikelihoodTotals(float(-split.rec.sum()), float(kl.sum()), split.tokens, len(ids), float(-split.iw.sum()))
    results: dict[str, Any] = totals.numbers()
    words = word_count(model.tokenizer, ids) if getattr(model, "tokenizer", None) is not None else None
    if words is not None:  # per word, comparable across tokenizers (the decoder's ids may be subwords)
        results["ppl_elbo_word"] = perplexity(totals.rec + totals.kl, words)
        results["ppl_iw_word"] = perplexity(totals.iw_nll, words)
    results.update(_latent_statistics(split.mu, split.logvar, has_latent, delta, batch_size, mi, seed))
    results["mi_ceiling"] = mi_ceiling(len(ids))
    results["mi_saturated"] = has_latent and mi_saturated(results["mi_split"], len(ids))
    results["token_accuracy_teacher_forced"] = split.correct / split.tokens
    if has_latent:
        results["own_code_gain"] = float(split.gain.nanmean())
        results["kl_minus_mi"] = results["kl"] - results["mi_split"]
        results["next_token_tv_posterior"] = split.tv_posterior / split.tokens
        results["next_token_tv_prior"] = split.tv_prior / split.tokens
    warning = latent_warning(results["kl"], results["mi_split"], results["active_units"], len(ids)) if has_latent else None
    results["warnings"] = [warning] if warning else []
    if bleu:
        scores = reconstruction_scores(split.hypotheses, split.references)
        results["bleu_greedy"], results["exact_match_greedy"] = scores["bleu"], scores["exact_match"]
    if factors is not None:
        from textvae.evaluation.probing import probe_factors

        with_length = [{**f, "length": n - 2} for f, n in zip(factors, ids.lengths.tolist(), strict=True)]
        results["probes"] = probe_factors(split.mu, with_length, seed=seed)
    results["protocol"] = _protocol(len(ids), split.tokens, iw_samples, has_latent, delta, batch_size, mi, bleu, seed)
    if words is not None:
        results["protocol"].update(num_words=words, ppl_word="exp(corpus NLL / (whitespace words + EOS)), the words "
                                   "of each sentence as its decoder ids decode")
    results["checkpoint"] = checkpoint_identity(model)
    return results


class _SplitPass:
    """Per-sentence results of one pass over a split, stored in the split's order.

    ``iw``/``rec`` (N,) float64, ``mu``/``logvar`` (N, d) on the CPU, token counters, and
    the greedy reconstructions (id lists) with their references.
    """

    def __init__(self, n: int, latent_size: int, tv_generator: torch.Generator):
        self.iw = torch.zeros(n, dtype=torch.float64)
        self.rec = torch.zeros(n, dtype=torch.float64)
        self.gain = torch.zeros(n, dtype=torch.float64)
        self.mu, self.logvar = torch.zeros(n, latent_size), torch.zeros(n, latent_size)
        self.tokens = self.correct = 0
        self.tv_posterior = self.tv_prior = 0.0
        self.tv_generator = tv_generator
        self.hypotheses: list[list[int]] = [[] for _ in range(n)]
        self.references: list[list[int]] = [[] for _ in range(n)]
        self.done: list[int] = []
        """Indices of the sentences this process evaluated."""

    def skip(self, model, size: int, num_samples: int, generator: torch.Generator) -> None:
        """Draw the noise a batch of ``size`` sentences would use, and nothing else: another
        process evaluates it, and every later batch must see the noise it sees on one process."""
        shape, options = (size, model.config.latent_size), {"device": model.device, "dtype": torch.float32}
        torch.randn((num_samples, *shape), generator=generator, **options)
        if model.has_latent:
            torch.randn((4, *shape), generator=self.tv_generator, **options)

    def gather(self, accelerator: Accelerator) -> None:
        """Every process's sentences and counts, on every process (``gather_for_metrics``)."""
        index = torch.tensor(self.done, dtype=torch.long)
        mine = {"index": index, "iw": self.iw[index], "rec": self.rec[index], "gain": self.gain[index], "mu": self.mu[index],
                "logvar": self.logvar[index], "hypotheses": [self.hypotheses[i] for i in self.done],
                "references": [self.references[i] for i in self.done],
                "counts": (self.tokens, self.correct, self.tv_posterior, self.tv_prior)}
        parts = accelerator.gather_for_metrics([mine], use_gather_object=True)
        self.tokens = self.correct = 0
        self.tv_posterior = self.tv_prior = 0.0
        for part in parts:
            index = part["index"]
            self.iw[index], self.rec[index], self.gain[index] = part["iw"], part["rec"], part["gain"]
            self.mu[index], self.logvar[index] = part["mu"], part["logvar"]
            for i, hypothesis, reference in zip(index.tolist(), part["hypotheses"], part["references"], strict=True):
                self.hypotheses[i], self.references[i] = hypothesis, reference
            tokens, correct, tv_posterior, tv_prior = part["counts"]
            self.tokens, self.correct = self.tokens + tokens, self.correct + correct
            self.tv_posterior, self.tv_prior = self.tv_posterior + tv_posterior, self.tv_prior + tv_prior
        self.done = sorted(i for part in parts for i in part["index"].tolist())

    def add(self, model, ids: TokenRows, batch: list[int], tensors: dict[str, torch.Tensor],
            num_samples: int, sample_chunk: int, generator: torch.Generator, bleu: bool) -> None:
        """Evaluate sentences ``batch`` (indices into ``ids``), padded as ``tensors``."""
        input_ids, mask = tensors["input_ids"].to(model.device), tensors["attention_mask"].to(model.device)
        mu, logvar = model.encode_ids(input_ids, mask)  # (B, d)
        iw, rec = importance_sampled_log_likelihood(model, input_ids, mask, mu, logvar, num_samples, sample_chunk,
                                                    generator)
        index = torch.tensor(batch)
        self.done += batch
        self.iw[index], self.rec[index] = iw.cpu(), rec.cpu()
        self.mu[index], self.logvar[index] = mu.cpu(), logvar.cpu()
        predicted = teacher_forced_predictions(model, input_ids, mu)  # (B, T-1)
        self.correct += token_matches(predicted, input_ids[:, 1:], mask[:, 1:])[0]
        if model.has_latent:
            self.gain[index] = own_code_gains(model, input_ids, mask, mu)
            std = (0.5 * logvar).exp()
            noise = torch.randn((4, *mu.shape), generator=self.tv_generator, device=mu.device, dtype=mu.dtype)
            self.tv_posterior += next_token_total_variation(model, input_ids, mask, mu + std * noise[0],
                                                            mu + std * noise[1])
            self.tv_prior += next_token_total_variation(model, input_ids, mask, noise[2], noise[3])
        self.tokens += int(count_predicted_tokens(mask).sum())
        if bleu:
            decoded = model.decode_ids(mu, max_length=input_ids.shape[1] + _DECODE_SLACK)
            for row, i in enumerate(batch):
                self.hypotheses[i], self.references[i] = decoded[row], list(ids[i][1:-1])


def _latent_statistics(
    mus: torch.Tensor, logvars: torch.Tensor, has_latent: bool, delta: float, batch_size: int, mi: str, seed: int
) -> dict[str, Any]:
    """MI (both variants, the headline one repeated as ``mi``), AU and KL per dimension."""
    if not has_latent:
        return {"mi": 0.0, "mi_split": 0.0, "mi_batch": 0.0, "active_units": 0, "kl_per_dim": [], "au_variances": []}
    stats = latent_statistics(mus, logvars, delta=delta, seed=seed, batch_size=batch_size)
    return {"mi": stats["mi_" + mi], **stats}


def _protocol(
    n: int, tokens: int, iw_samples: int, has_latent: bool, delta: float, batch_size: int, mi: str, bleu: bool,
    seed: int,
) -> dict[str, Any]:
    """How every number was estimated, so results from different runs can be compared."""
    return {
        "num_sentences": n,
        "num_predicted_tokens": tokens,
        "token_counting": "words + EOS per sentence (BOS is never predicted)",
        "iw_samples": iw_samples,
        "iw_samples_used": iw_samples if has_latent else 1,
        "nll_iw": "log-mean-exp of log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x)"
        if has_latent
        else "exact log p(x) (no latent variable)",
        "elbo": "mean over the K samples of log p(x|z_k) minus analytic KL",
        "ppl": "exp(corpus NLL / predicted decoder tokens), per decoder token (ppl_*_word: per word)",
        "mi_split": "aggregate posterior over all N posteriors of the split, 1 sample per x; it cannot exceed "
                    "mi_ceiling = log N, and mi_saturated says it is within 1 nat of it (a lower bound only)",
        "own_code_gain": "mean over sentences of log p(x|mu_x) - log p(x|mu_x'), x' the previous sentence of its "
                         "evaluation batch (teacher-forced; no ceiling)",
        "kl_minus_mi": "KL - mi_split: the KL that does not tell sentences apart (KL(q(z) || p(z)) when MI is not "
                       "saturated)",
        "mi_batch": f"He et al. (2019) calc_mi: aggregate posterior per block of {batch_size} sentences (split order)",
        "mi_headline": mi,
        "active_units_delta": delta,
        "active_units": "Var_x E_q[z_j] >= delta (unbiased variance)",
        "token_accuracy_teacher_forced": "argmax of p(x_t | x_<t, z=mu) vs x_t over predicted tokens",
        "next_token_tv": "mean over predicted tokens of TV(p(.|x_<t, z1), p(.|x_<t, z2)), z1, z2 two draws "
                         "from q(z|x) (posterior) or from N(0, I) (prior), true prefix",
        "warnings": "KL > 2 MI + 1 nats (MI more than 1 nat below its log N ceiling), or no active unit",
        "bleu_greedy": "sacrebleu corpus BLEU (tokenize=none) of greedy decodes from mu vs the input tokens"
        if bleu
        else "not computed",
        "batch_size": batch_size,
        "seed": seed,
    }


# --------------------------------------------------------------------------- report

_ROWS = (
    ("elbo", "ELBO (nats / sentence)"),
    ("rec", "Reconstruction -E_q log p(x\\|z)"),
    ("kl", "KL(q(z\\|x) \\|\\| p(z)): the rate"),
    ("nll_iw", "NLL, importance-weighted"),
    ("nll_elbo", "NLL bound from the ELBO"),
    ("ppl_iw", "PPL from IW-NLL, per decoder token"),
    ("ppl_elbo", "PPL from the ELBO, per decoder token"),
    ("ppl_iw_word", "PPL from IW-NLL, per word"),
    ("ppl_elbo_word", "PPL from the ELBO, per word"),
    ("mi_split", "MI, whole-split aggregate posterior"),
    ("mi_batch", "MI, mini-batch (He et al.)"),
    ("mi_ceiling", "MI ceiling log N"),
    ("own_code_gain", "Own-code gain log p(x\\|mu_x) - log p(x\\|mu_x')"),
    ("kl_minus_mi", "KL - MI"),
    ("active_units", "Active units"),
    ("token_accuracy_teacher_forced", "Token accuracy (teacher-forced, z = mu)"),
    ("next_token_tv_posterior", "Next-token TV, two posterior samples"),
    ("next_token_tv_prior", "Next-token TV, two prior samples"),
    ("bleu_greedy", "BLEU of greedy reconstructions"),
    ("exact_match_greedy", "Exact-match greedy reconstructions"),
)


def format_value(value: Any) -> str:
    """A number as the evaluation tables print it (4 significant digits, ``inf`` spelled out)."""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}" if abs(value) < 1e4 else f"{value:.1f}"
    return str(value)


def format_markdown(results: dict[str, Any]) -> str:
    """One Markdown table of the numbers of :func:`evaluate`, protocol in the notes column.

    Pipes inside cells are escaped (``\\|``) so ``p(x|z)`` does not open a new column.
    """
    protocol = results.get("protocol", {})
    config = results.get("checkpoint", {}).get("config", {})
    notes = {
        "nll_iw": f"K = {protocol.get('iw_samples_used', '?')}",
        "active_units": f"delta = {protocol.get('active_units_delta', '?')}, d = {config.get('latent_size', '?')}",
        "ppl_iw": f"{protocol.get('num_predicted_tokens', '?')} predicted decoder tokens (+ EOS)",
        "ppl_iw_word": f"{protocol.get('num_words', '?')} words (+ EOS)",
        "elbo": f"{protocol.get('num_sentences', '?')} sentences",
        "mi_split": MI_SATURATED_NOTE if results.get("mi_saturated") else "",
    }
    lines = ["| Metric | Value | Notes |", "| --- | --- | --- |"]
    source = results.get("checkpoint", {}).get("source")
    if source:
        lines.append(f"| Checkpoint | {source} | latent_path = {config.get('latent_path')}, L = {config.get('lipschitz')} |")
    for key, label in _ROWS:
        if key in results:
            lines.append(f"| {label} | {format_value(results[key])} | {notes.get(key, '')} |")
    for factor, probe in results.get("probes", {}).items():
        lines.append(
            f"| Probe: {factor} | {format_value(probe['accuracy'])} | chance {format_value(probe['chance'])}, "
            f"gain {format_value(probe['ce_gain_nats'])} nats |"
        )
    return "\n".join(lines)
