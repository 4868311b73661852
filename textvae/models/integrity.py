"""Is a checkpoint what it claims to be? The checks ``TextVAEModel.from_pretrained`` runs.

transformers loads what it can and reports the rest in a multi-line table on stderr:
another model type's config loads as ours with random weights, a missing tensor is
initialised at random, and non-finite weights load as they are. A tokenizer swapped for
another corpus's tokenizer of the same size loads silently and decodes word salad. Each of
these refuses here in one line naming the file, tensor or tokenizer, so a checkpoint that
belongs to something else never runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from transformers import PreTrainedConfig
from transformers.utils import logging as hf_logging

from textvae.errors import TextVAEError
from textvae.models.configuration_textvae import TextVAEConfig


def check_model_type(name_or_path: Any, **hub_kwargs: Any) -> None:
    """Refuse a ``config.json`` of another model type before transformers builds anything from it."""
    config, _ = PreTrainedConfig.get_config_dict(name_or_path, **hub_kwargs)
    model_type = config.get("model_type")
    if model_type != TextVAEConfig.model_type:
        described = f"a {model_type!r} model" if model_type else "no model_type"
        raise TextVAEError(f"{name_or_path}: config.json describes {described}, not a textvae model: "
                           "this checkpoint belongs to another model")


@contextmanager
def quiet_load_report() -> Iterator[None]:
    """Silence transformers' load-report table: :func:`check_loading_info` says what matters in one line."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def check_loading_info(info: Mapping[str, Any], source: Any, allow_mismatched: bool = False) -> None:
    """Refuse weights that are not this model's: tensors missing (they would be random), unexpected
    (another model's), or of another shape."""
    for key, what in (("missing_keys", "missing from the weights (it would be random)"),
                      ("mismatched_keys", "of another shape in the weights"),
                      ("unexpected_keys", "in the weights but not in this model")):
        names = sorted(map(_tensor_name, info.get(key) or ()))
        if names and not (key == "mismatched_keys" and allow_mismatched):
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            raise TextVAEError(f"{source}: tensor {names[0]}{more} {what}: the weights do not belong to this "
                               "model's config.json")


def _tensor_name(entry: Any) -> str:
    """A key of transformers' loading info; mismatches are (name, shape in file, shape in model)."""
    if isinstance(entry, tuple) and len(entry) == 3:
        name, stored, expected = entry
        return f"{name} ({' x '.join(map(str, stored))}, the model has {' x '.join(map(str, expected))})"
    return str(entry)


def check_finite_weights(model: torch.nn.Module, source: Any) -> None:
    """Refuse a model with NaN or infinite weights, naming the first such tensor."""
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise TextVAEError(f"{source}: weight {name} holds {count} non-finite value(s) (NaN or inf); "
                               "the checkpoint is damaged")


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """SHA256 of what maps text to ids (vocabulary, merges, normalisation, special tokens), or
    None for a tokenizer without a ``tokenizers`` backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    document = json.loads(backend.to_str())
    relevant = {key: document.get(key) for key in ("model", "normalizer", "pre_tokenizer", "added_tokens")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def record_tokenizer(config: TextVAEConfig, tokenizer: Any, corpus: str | None) -> None:
    """Write the tokenizer's fingerprint (and the corpus it was built on) into the model's config,
    so an export can tell its own tokenizer from another."""
    config.tokenizer_fingerprint = tokenizer_fingerprint(tokenizer)
    config.tokenizer_corpus = corpus


def check_tokenizer(tokenizer: Any, config: TextVAEConfig, source: Any) -> None:
    """Refuse a tokenizer that is not the one the model was trained with (size, then fingerprint)."""
    # A pretrained decoder's embedding matrix may be padded beyond its tokenizer's size.
    pretrained = getattr(config, "decoder_type", None) == "pretrained"
    if not (len(tokenizer) <= config.vocab_size if pretrained else len(tokenizer) == config.vocab_size):
        raise TextVAEError(
            f"{source}: tokenizer has {len(tokenizer)} tokens but the model was built for "
            f"vocab_size={config.vocab_size}; the tokenizer does not belong to this model"
        )
    recorded = getattr(config, "tokenizer_fingerprint", None)
    found = tokenizer_fingerprint(tokenizer)
    if recorded and found and found != recorded:
        corpus = getattr(config, "tokenizer_corpus", None)
        trained = f"the tokenizer of corpus '{corpus}'" if corpus else "another tokenizer"
        raise TextVAEError(f"{source}: the tokenizer files are not the ones the model was trained with (config.json "
                           f"records {trained}, fingerprint {recorded[:12]}; these give {found[:12]}): restore the "
                           "export's own tokenizer files")
