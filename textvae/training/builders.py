"""Recipe sections -> objects: the model, the optimiser and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.optim.lr_scheduler import LambdaLR

from textvae.errors import TextVAEError
from textvae.models import TextVAEConfig, TextVAEModel
from textvae.training.config import OptimConfig
from textvae.training.recipe import Recipe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def build_model(recipe: Recipe, tokenizer: PreTrainedTokenizerFast) -> TextVAEModel:
    """A fresh model whose vocabulary and special ids come from ``tokenizer``."""
    special = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "unk_token_id": tokenizer.unk_token_id,
    }
    try:
        config = TextVAEConfig(**{**recipe.model, **special})
    except ValueError as exc:
        raise TextVAEError(f"recipe section 'model': {exc}") from None
    if recipe.data.max_length + 2 > config.max_position_embeddings and "transformer" in (
        config.encoder_type,
        config.decoder_type,
    ):
        raise TextVAEError(
            f"recipe key 'data.max_length' ({recipe.data.max_length}) + BOS/EOS exceeds "
            f"model.max_position_embeddings ({config.max_position_embeddings})"
        )
    model = TextVAEModel(config)
    model.tokenizer = tokenizer
    return model


def build_optimizer(cfg: OptimConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


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
