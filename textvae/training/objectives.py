"""The training objective: how the model's raw terms become the loss.

Following fairseq's "criterion" split, :class:`~textvae.models.TextVAEModel` only
returns raw per-sentence terms (``rec_log_likelihood``, ``kl``, ``kl_per_dim``, ...);
everything that is a *training choice* lives here: the KL weight schedule, free bits,
the schedule of the inverse-Lipschitz constant L, and the autoencoder phase of Li et
al. (2019) that precedes them. Keeping the choices out of the
model means evaluation always sees the true ELBO, whatever trick training used.

The schedules themselves (KL weight, L, and the learning rate beside them) are in
:mod:`textvae.training.schedules`.

Normalisation: the loss is a mean over *sentences* (He et al. 2019; Bowman et al.
2016), not over tokens, so the relative weight of the reconstruction and KL terms is
the one the ELBO prescribes for a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, get_args

import torch
from torch import Tensor

from textvae.errors import TextVAEError
from textvae.training.config import FreeBitsMode, ObjectiveConfig
from textvae.training.schedules import (
    ConstantSchedule,
    CyclicalSchedule,
    Delayed,
    LinearWarmup,
    Schedule,
)

FREE_BITS_MODES = get_args(FreeBitsMode)


# --------------------------------------------------------------------------- free bits


def free_bits_kl(kl_per_dim: Tensor, free_bits: float, mode: str = "dim") -> Tensor:
    """The KL term of the loss after free bits; a scalar (nats per sentence).

    Args:
        kl_per_dim: (B, d) analytic KL(q(z_j|x_b) || N(0, 1)) per sentence and dimension.
        free_bits: lambda in nats; 0 gives the plain batch-mean KL.
        mode:
            ``dim`` -- Kingma et al. (2016, "Improved variational inference with inverse
            autoregressive flow", free bits) with one group per latent dimension:
            ``sum_j max(lambda, mean_b KL_bj)``; lambda is per dimension. A dimension whose
            batch-mean KL is below lambda gets no KL gradient, so the encoder may use
            lambda nats of it for free.
            ``total`` -- a target rate on the whole code: ``max(lambda, mean_b sum_j KL_bj)``;
            lambda is for all of z. This is the batch-level total-KL threshold of Li et al.
            (2019, "A surprisingly effective fix for deep latent variable modeling of
            text"; the ``fb=3`` option of their released code, which drops the term
            instead of clamping it -- same gradient). Note that the variant their paper
            reports (``fb=2``) thresholds every sentence's per-dimension KL at
            ``lambda / d``: that is ``sentence``.
            ``sentence`` -- Li et al.'s ``fb=2``: ``mean_b sum_j max(lambda / d, KL_bj)``;
            lambda is for all of z, spread evenly over the dimensions of every sentence.

    Returns:
        () tensor, differentiable w.r.t. ``kl_per_dim``.
    """
    if mode not in FREE_BITS_MODES:
        raise ValueError(f"free-bits mode must be one of {FREE_BITS_MODES}, got {mode!r}")
    if mode == "dim":
        return kl_per_dim.mean(dim=0).clamp(min=free_bits).sum()
    if mode == "sentence":
        return kl_per_dim.clamp(min=free_bits / kl_per_dim.shape[1]).sum(dim=1).mean()
    return kl_per_dim.sum(dim=1).mean().clamp(min=free_bits)


# --------------------------------------------------------------------------- aggregate posterior


def mmd_to_prior(z: Tensor, kernel: str = "imq", generator: torch.Generator | None = None) -> Tensor:
    """Unbiased estimate of MMD^2 between the codes ``z`` (B, d) and B draws of N(0, I).

    The InfoVAE term (Zhao et al. 2017): it is 0 when the aggregate posterior q(z) is the
    prior, whatever each q(z|x) is, so it spreads the codes over the prior instead of
    pulling each posterior onto it as the KL does. Kernels: ``imq`` ``C / (C + |x - y|^2)``
    with ``C = 2d`` (Tolstikhin et al. 2018), ``rbf`` ``exp(-|x - y|^2 / (2d))``.

    Returns:
        () tensor, differentiable w.r.t. ``z``; needs B >= 2.
    """
    n, d = z.shape
    prior = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    both = torch.cat([z, prior])  # (2B, d)
    distances = torch.cdist(both, both).pow(2)  # (2B, 2B)
    gram = 2 * d / (2 * d + distances) if kernel == "imq" else torch.exp(-distances / (2 * d))
    off_diagonal = 1.0 - torch.eye(n, device=z.device, dtype=z.dtype)
    within = ((gram[:n, :n] + gram[n:, n:]) * off_diagonal).sum() / (n * (n - 1))
    return within - 2.0 * gram[:n, n:].mean()


# --------------------------------------------------------------------------- objective


class VAEOutput(Protocol):
    """What the objective reads from :class:`~textvae.models.TextVAEOutput`."""

    rec_log_likelihood: Tensor  # (B,) sum_t log p(x_t | x_<t, z), EOS predicted, BOS not
    kl: Tensor  # (B,) KL(q(z|x) || N(0, I))
    z: Tensor  # (B, d) the codes the decoder saw
    kl_per_dim: Tensor  # (B, d)
    num_tokens: Tensor  # (B,) predicted tokens per sentence (words + EOS)


@dataclass
class ObjectiveTerms:
    """The loss and its detached diagnostics for one batch.

    All per-sentence values are means over the batch's sentences, in nats. ``rec``, ``kl``
    and the ELBO are the *true* terms (beta = 1, no free bits) whatever the training
    weight, so numbers logged during warm-up are comparable with evaluation.
    """

    loss: Tensor
    """() the scalar to backpropagate: ``mean_b(-rec_b) + kl_weight * kl_term``."""
    kl_term: Tensor
    """() the KL term that ``kl_weight`` multiplies (after free bits, or ``|KL - target_rate|``)."""
    mmd: Tensor | None
    """() MMD^2 between the batch's codes and the prior (when ``mmd_weight`` is set)."""
    rec: Tensor
    """() mean reconstruction loss ``-log p(x|z)`` per sentence."""
    kl: Tensor
    """() mean KL(q(z|x) || p(z)) per sentence."""
    neg_elbo: Tensor
    """() ``rec + kl``: the negative ELBO at beta = 1, an upper bound on -log p(x)."""
    elbo: Tensor
    """() ``-neg_elbo``, a lower bound on log p(x) per sentence."""
    kl_weight: float
    num_sentences: int
    num_tokens: Tensor
    """() predicted tokens in the batch (words + EOS)."""
    neg_elbo_per_token: Tensor
    """() ``sum_b(-rec_b + kl_b) / num_tokens``."""
    elbo_ppl: Tensor
    """() ``exp(neg_elbo_per_token)``: the perplexity bound He et al. (2019) report."""


class Objective:
    """Combines the model's raw terms into the loss for a given step.

    Build it with :meth:`from_config`. Stateless: ``objective(output, step)`` depends
    only on its arguments, so nothing needs to be checkpointed. With ``pretrain_steps`` N
    the first N steps are Li et al.'s autoencoder phase (the caller's ``kl_schedule`` is
    already :class:`Delayed` by N with weight 0 before, so those steps optimise the
    reconstruction alone); the trainer restarts the decoder at step N.
    """

    def __init__(
        self,
        kl_schedule: Schedule,
        *,
        free_bits: float = 0.0,
        free_bits_mode: str = "dim",
        word_dropout: float = 0.0,
        pretrain_steps: int = 0,
        target_rate: float | None = None,
        mmd_weight: float = 0.0,
        mmd_kernel: str = "imq",
    ) -> None:
        if free_bits_mode not in FREE_BITS_MODES:
            raise ValueError(f"free_bits_mode must be one of {FREE_BITS_MODES}, got {free_bits_mode!r}")
        self.kl_schedule = kl_schedule
        self.free_bits = float(free_bits)
        self.free_bits_mode = free_bits_mode
        self._word_dropout = float(word_dropout)
        self.pretrain_steps = int(pretrain_steps)
        self.target_rate = target_rate
        self.mmd_weight = float(mmd_weight)
        self.mmd_kernel = mmd_kernel

    @classmethod
    def from_config(cls, cfg: ObjectiveConfig, total_steps: int) -> Objective:
        """Validate ``cfg`` and build the schedules.

        Args:
            cfg: The recipe's ``objective`` section.
            total_steps: Optimiser steps of the whole run; less ``cfg.pretrain_steps``, the
                span of the cyclical schedule unless ``cfg.kl_cycle_steps`` is set.

        Raises:
            TextVAEError: naming the offending ``objective.*`` key.
        """
        if cfg.pretrain_steps > 0 and cfg.pretrain_steps >= total_steps:
            raise TextVAEError(f"recipe key 'objective.pretrain_steps': {cfg.pretrain_steps} leaves no step of the "
                               f"run's {total_steps} for the VAE phase")
        kl_schedule: Schedule
        if cfg.kl_schedule == "constant":
            kl_schedule = ConstantSchedule(cfg.beta)
        elif cfg.kl_schedule == "linear":
            kl_schedule = LinearWarmup(cfg.kl_start, cfg.beta, cfg.kl_warmup_steps)
        else:
            span = cfg.kl_cycle_steps if cfg.kl_cycle_steps is not None else total_steps - cfg.pretrain_steps
            if span < 1:
                key = "objective.kl_cycle_steps" if cfg.kl_cycle_steps is not None else "objective.kl_schedule"
                raise TextVAEError(f"recipe key '{key}': the cyclical schedule needs >= 1 step, got {span}")
            kl_schedule = CyclicalSchedule(span, cfg.kl_cycles, cfg.kl_cycle_ratio, cfg.beta, cfg.kl_cycle_zero_ratio)

        if cfg.pretrain_steps > 0:
            kl_schedule = Delayed(kl_schedule, cfg.pretrain_steps, before=0.0)
        return cls(
            kl_schedule,
            free_bits=cfg.free_bits,
            free_bits_mode=cfg.free_bits_mode,
            word_dropout=cfg.word_dropout,
            pretrain_steps=cfg.pretrain_steps,
            target_rate=cfg.target_rate,
            mmd_weight=cfg.mmd_weight,
            mmd_kernel=cfg.mmd_kernel,
        )

    @property
    def word_dropout(self) -> float:
        """Probability the model should replace a decoder input token by ``<unk>``."""
        return self._word_dropout

    def kl_weight(self, step: int) -> float:
        return self.kl_schedule(step)

    def pretraining(self, step: int) -> bool:
        """Whether (0-based) optimiser ``step`` belongs to the autoencoder phase."""
        return step < self.pretrain_steps

    def starts_vae_phase(self, step: int) -> bool:
        """Whether ``step`` is the first step after an autoencoder phase (restart the decoder before it)."""
        return self.pretrain_steps > 0 and step == self.pretrain_steps

    def __call__(self, output: VAEOutput, step: int) -> ObjectiveTerms:
        """Loss and diagnostics for one batch of ``B`` sentences at optimiser ``step``."""
        rec_ll = output.rec_log_likelihood  # (B,)
        kl = output.kl  # (B,)
        weight = self.kl_weight(step)
        if self.target_rate is not None:
            kl_term = (kl.mean() - self.target_rate).abs()
        elif self.free_bits > 0:
            kl_term = free_bits_kl(output.kl_per_dim, self.free_bits, self.free_bits_mode)
        else:
            kl_term = kl.mean()
        loss = -rec_ll.mean() + weight * kl_term
        mmd = None
        if self.mmd_weight > 0 and output.z.shape[0] > 1:
            mmd = mmd_to_prior(output.z.float(), self.mmd_kernel)
            loss = loss + self.mmd_weight * mmd

        with torch.no_grad():
            rec = -rec_ll.detach().mean()
            kl_mean = kl.detach().mean()
            neg_elbo = rec + kl_mean
            num_tokens = output.num_tokens.detach().sum()
            per_token = (kl.detach() - rec_ll.detach()).sum() / num_tokens.clamp(min=1)
        return ObjectiveTerms(
            loss=loss,
            kl_term=kl_term.detach(),
            mmd=None if mmd is None else mmd.detach(),
            rec=rec,
            kl=kl_mean,
            neg_elbo=neg_elbo,
            elbo=-neg_elbo,
            kl_weight=weight,
            num_sentences=int(rec_ll.shape[0]),
            num_tokens=num_tokens,
            neg_elbo_per_token=per_token,
            elbo_ppl=per_token.exp(),
        )
