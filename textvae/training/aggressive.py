"""Aggressive inference-network training (He et al. 2019, "Lagging Inference Networks and Posterior Collapse").

He et al. trace posterior collapse to an encoder that lags behind the model's true
posterior early in training: the decoder then learns to ignore z before z carries
anything. Their fix: before every decoder step, train the encoder alone until it has
caught up -- until its loss on fresh batches stops improving -- and stop doing this once
the mutual information I(x; z) on validation stops rising.

Two parts live here: :class:`AggressiveInference`, the on/off switch the trainer
checkpoints (so a run resumed inside the aggressive phase continues exactly), and
:func:`encoder_updates`, the inner loop. The trainer supplies the forward/backward pass,
so the loss is the same objective (KL weight, free bits) the decoder step uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class AggressiveInference:
    """Whether the aggressive phase is on, and the validation MI it is judged against.

    He et al. switch off at the end of the first epoch whose validation MI is below the
    previous epoch's (``cur_mi - pre_mi < 0``, with ``pre_mi = 0`` at the start); here the
    check runs at every validation (once an epoch unless ``train.eval_every`` is set).
    """

    enabled: bool
    active: bool = field(init=False)
    previous_mi: float = 0.0

    def __post_init__(self) -> None:
        self.active = self.enabled

    def validation(self, mi: float) -> None:
        """Record a validation MI (nats); switches the aggressive phase off when it fell."""
        if not self.active:
            return
        if mi < self.previous_mi:
            self.active = False
        self.previous_mi = mi

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.enabled, self.active, self.previous_mi = state["enabled"], state["active"], state["previous_mi"]


def encoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The inference network's parameters: everything under ``model.posterior``."""
    return list(model.posterior.parameters())


def decoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter outside the inference network (decoder, output head, latent path)."""
    encoder = {id(p) for p in model.posterior.parameters()}
    return [p for p in model.parameters() if id(p) not in encoder]


def step_except(optimizer: torch.optim.Optimizer, frozen: Iterable[nn.Parameter]) -> None:
    """One optimiser step that leaves ``frozen`` untouched, then clear every gradient.

    Dropping a gradient (``None``) makes torch's optimisers skip the parameter altogether:
    no update, and no change to its Adam moments -- as He et al.'s separate encoder and
    decoder optimisers behave.
    """
    for param in frozen:
        param.grad = None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@contextmanager
def gradients_off(params: list[nn.Parameter]) -> Iterator[None]:
    """``requires_grad`` off for ``params`` inside the block, restored after it.

    Why: the inner loop only needs gradients for the encoder. Without weight gradients
    for the decoder, autograd also skips every part of the graph that no encoder
    parameter reaches -- with ``invlip``'s z-free recurrence the whole decoder backward
    -- so an inner step costs about two thirds of a full one on the quickstart model.
    """
    flags = [p.requires_grad for p in params]
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in zip(params, flags, strict=True):
            param.requires_grad_(flag)


def encoder_updates(
    model: nn.Module,
    backward: Callable[[list[dict]], tuple[float, int]],
    first: list[dict],
    fresh: Callable[[], list[dict]],
    optimizer_step: Callable[[list[nn.Parameter]], None],
    max_steps: int,
    check_every: int,
    skip_decoder_gradients: bool = False,
) -> int:
    """He et al.'s inner loop: encoder-only steps until the loss stops improving.

    The first step is on the decoder step's own batches, every later one on ``fresh()``
    batches. The stopping rule is theirs: the loss per predicted token is summed over
    windows of ``check_every`` steps, and the loop ends after the first window that is
    worse than the one before it, or after ``max_steps`` steps.

    Args:
        model: The unwrapped model (its posterior is the encoder).
        backward: Forward and backward on a list of micro-batches; returns (loss summed
            over the sentences, predicted tokens).
        first: The batches the decoder step will use.
        fresh: Draws the next training batches.
        optimizer_step: Clips and steps, leaving the given parameters untouched.
        max_steps, check_every: ``train.aggressive_max_inner_steps`` and ``train.aggressive_check_every``.
        skip_decoder_gradients: Compute no decoder gradients at all (:func:`gradients_off`).
            Only for a single process: DDP expects a gradient for every parameter it wraps.

    Returns:
        The number of encoder steps taken.
    """
    frozen = decoder_parameters(model)
    previous, window_loss, window_tokens = math.inf, 0.0, 0
    batches = first
    with gradients_off(frozen) if skip_decoder_gradients else nullcontext():
        for inner in range(1, max_steps + 1):
            loss, tokens = backward(batches)
            optimizer_step(frozen)
            window_loss, window_tokens = window_loss + loss, window_tokens + tokens
            if inner % check_every == 0:
                current = window_loss / max(window_tokens, 1)
                if current > previous:
                    return inner
                previous, window_loss, window_tokens = current, 0.0, 0
            if inner < max_steps:
                batches = fresh()
    return max_steps
