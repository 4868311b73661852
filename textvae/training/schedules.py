"""Every schedule of a run, each a function of the optimiser step: KL weight, L, learning rate.

The KL and L schedules are pure functions of the (0-based) optimiser step (no internal
counter), so a trainer that saves its step resumes with exactly the same values. The
learning rate also decays on validation plateaus, so :class:`LRSchedule` keeps that
state and is checkpointed with the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.optim.lr_scheduler import LambdaLR

from textvae.training.config import OptimConfig

# --------------------------------------------------------------------------- KL and L


class Schedule(Protocol):
    """A weight as a pure function of the (0-based) optimiser step."""

    def __call__(self, step: int) -> float: ...


@dataclass(frozen=True)
class ConstantSchedule:
    """The same value at every step."""

    value: float

    def __call__(self, step: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class LinearWarmup:
    """Linear from ``start`` at step 0 to ``end`` at step ``steps``, then ``end``.

    This is He et al. (2019)'s KL warm-up (``kl_start`` rising to 1 over the first
    epochs) generalised to any end value. ``steps <= 0`` means no warm-up: the value is
    ``end`` from step 0.
    """

    start: float
    end: float
    steps: int

    def __call__(self, step: int) -> float:
        if self.steps <= 0 or step >= self.steps:
            return float(self.end)
        if step <= 0:
            return float(self.start)
        return float(self.start + (self.end - self.start) * step / self.steps)


@dataclass(frozen=True)
class CyclicalSchedule:
    """Fu et al. (2019, NAACL) cyclical annealing ("linear" ramp variant).

    ``total_steps`` are split into ``cycles`` cycles of length ``total_steps / cycles``.
    Within a cycle the value stays at 0 for the first ``zero_ratio`` of it (Optimus's
    ``ratio_zero``, Li et al. 2020: the model trains as an autoencoder there), rises
    linearly to ``end`` over the next ``ratio`` of it and stays at ``end`` for the rest;
    each new cycle restarts at 0.
    From ``total_steps`` on it stays at ``end``. The position in the cycle is computed
    with integer arithmetic, so cycle starts are exact even when the cycle length is
    not an integer.
    """

    total_steps: int
    cycles: int
    ratio: float
    end: float
    zero_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if self.cycles < 1:
            raise ValueError(f"cycles must be >= 1, got {self.cycles}")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if not 0.0 <= self.zero_ratio < 1.0 or self.zero_ratio + self.ratio > 1.0:
            raise ValueError(f"zero_ratio must be in [0, 1) with zero_ratio + ratio <= 1, got {self.zero_ratio}")

    def __call__(self, step: int) -> float:
        if step >= self.total_steps:
            return float(self.end)
        step = max(step, 0)
        # Fraction of the current cycle already done, in [0, 1).
        tau = (step * self.cycles) % self.total_steps / self.total_steps
        return float(self.end * min(1.0, max(0.0, tau - self.zero_ratio) / self.ratio))


@dataclass(frozen=True)
class Delayed:
    """``inner`` started ``delay`` steps late, ``before`` until then.

    Li et al. (2019)'s phase 2 is a fresh run of its own: its KL annealing (and the L
    warm-up) begin when the autoencoder phase ends, not at the run's step 0.
    """

    inner: Schedule
    delay: int
    before: float

    def __call__(self, step: int) -> float:
        return float(self.before) if step < self.delay else self.inner(step - self.delay)


# --------------------------------------------------------------------------- learning rate


class LRSchedule:
    """Learning rate = base * warm-up/cosine factor(step) * plateau scale.

    Plateau decay after He et al. (2019): when the validation loss has not improved for
    ``plateau_patience`` validations, the scale is multiplied by ``plateau_factor``
    (never below ``min_lr``). One ``LambdaLR`` applies both, so they cannot fight. He et
    al.'s script also reloads the best weights and restarts its SGD optimiser at each
    decay; textvae keeps the current weights and the optimiser's state.
    """

    def __init__(self, cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.scale = 1.0
        self.best = math.inf
        self.bad_validations = 0
        self.per_step = LambdaLR(optimizer, self.factor)

    def factor(self, step: int) -> float:
        cfg = self.cfg
        floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
        if step < cfg.warmup_steps:
            value = (step + 1) / cfg.warmup_steps
        elif cfg.scheduler == "cosine":
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, self.total_steps - cfg.warmup_steps))
            value = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            value = 1.0
        return max(value * self.scale, floor) if cfg.scheduler == "plateau" else value

    def step(self) -> None:
        self.per_step.step()

    def validation(self, loss: float) -> None:
        """Record a validation loss; decays the scale on a plateau."""
        if self.cfg.scheduler != "plateau":
            return
        if loss < self.best:
            self.best, self.bad_validations = loss, 0
            return
        self.bad_validations += 1
        if self.bad_validations > self.cfg.plateau_patience:
            self.scale *= self.cfg.plateau_factor
            self.bad_validations = 0

    def restart(self) -> None:
        """Forget the plateau decay and its validations (a new training phase, Li et al. 2019)."""
        self.scale, self.best, self.bad_validations = 1.0, math.inf, 0
        for group, base in zip(self.per_step.optimizer.param_groups, self.per_step.base_lrs, strict=True):
            group["lr"] = base * self.factor(self.per_step.last_epoch)

    def state_dict(self) -> dict:
        return {"per_step": self.per_step.state_dict(), "scale": self.scale, "best": self.best, "bad": self.bad_validations}

    def load_state_dict(self, state: dict) -> None:
        self.per_step.load_state_dict(state["per_step"])
        self.scale, self.best, self.bad_validations = state["scale"], state["best"], state["bad"]
