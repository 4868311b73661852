"""Recipe sections -> objects: the model and the optimiser."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from textvae.data.tokenization import (
    load_encoder_tokenizer,
    load_pretrained_tokenizer,
    word_dropout_token_id,
)
from textvae.errors import TextVAEError
from textvae.models import TextVAEConfig, TextVAEModel
from textvae.models.memory import require_training_memory
from textvae.models.pretrained import check_tokenizer_fits, local_path
from textvae.training.config import OptimConfig
from textvae.training.recipe import Recipe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def pretrained_tokenizer(recipe: Recipe) -> tuple[PreTrainedTokenizerFast, dict] | None:
    """The pretrained decoder's tokenizer (and its metadata), as ``data.tokenizer: decoder`` uses it."""
    model = recipe.model
    if model.decoder_type != "pretrained":
        return None
    return load_pretrained_tokenizer(local_path(model.decoder_name_or_path), gguf_file=model.decoder_gguf_file,
                                     bos_token=recipe.data.bos_token, eos_token=recipe.data.eos_token,
                                     model_max_length=recipe.data.max_length + 2)


def build_model(recipe: Recipe, tokenizer: PreTrainedTokenizerFast) -> TextVAEModel:
    """A fresh model whose vocabulary and special ids come from ``tokenizer``; pretrained
    backbones are loaded here (and a pretrained encoder's own tokenizer attached)."""
    special = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "unk_token_id": word_dropout_token_id(tokenizer),
    }
    if special["unk_token_id"] is None and recipe.objective.word_dropout > 0:
        raise TextVAEError("recipe key 'objective.word_dropout': the decoder's tokenizer has no token to put in place "
                           "of a dropped word (no unknown or mask token apart from BOS/EOS/pad, and '_' is not one "
                           "token)")
    config = recipe.model.to_config(**special)
    if recipe.data.max_length + 2 > config.max_position_embeddings and "transformer" in (
        config.encoder_type,
        config.decoder_type,
    ):
        raise TextVAEError(
            f"recipe key 'data.max_length' ({recipe.data.max_length}) + BOS/EOS exceeds "
            f"model.max_position_embeddings ({config.max_position_embeddings})"
        )
    check_vocabulary_fits(config)
    encoder_tokenizer = None
    if config.encoder_type == "pretrained":
        encoder_tokenizer = load_encoder_tokenizer(local_path(config.encoder_name_or_path))
        check_tokenizer_fits("encoder", config, encoder_tokenizer)
    if config.decoder_type == "pretrained":
        # textvae picks the decoder's BOS and pad itself (its EOS where it has none), and
        # data.eos_token replaces its EOS: only an EOS of its own must be the model's.
        check_tokenizer_fits("decoder", config, tokenizer, own_roles=() if recipe.data.eos_token else ("eos",))
    require_training_memory(config)  # counted on the meta device: refused before a byte is allocated
    model = TextVAEModel(config)
    model.tokenizer, model.encoder_tokenizer = tokenizer, encoder_tokenizer
    return model


def check_vocabulary_fits(config: TextVAEConfig) -> None:
    """The ``invlip`` lift maps its inputs injectively into the centred logits: it needs more
    tokens than inputs. A tiny corpus (or a small ``data.vocab_size``) can give fewer."""
    if config.latent_path != "invlip":
        return
    keys = {"model.latent_size": config.latent_size}
    if config.invlip_state_in_lift:
        keys["model.invlip_state_size"] = config.invlip_state_size
    needed = sum(keys.values()) + 1
    if config.vocab_size < needed:
        named = " + ".join(f"{key} ({value})" for key, value in keys.items())
        raise TextVAEError(f"recipe keys {', '.join(repr(k) for k in keys)}: the invlip lift needs a vocabulary of at "
                           f"least {named} + 1 = {needed} tokens, but the tokenizer trained on data.corpus has "
                           f"{config.vocab_size}: lower those keys, or use more text / a larger data.vocab_size")


def build_optimizer(cfg: OptimConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
