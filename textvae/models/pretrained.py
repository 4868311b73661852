"""Pretrained Hugging Face backbones: any causal LM as the decoder, any encoder model.

The decoder is an ``AutoModelForCausalLM``. textvae runs its base model for the
final-norm states h_t and applies the LM's own output layer W for the z-free logits
``W h_t``, so each latent path attaches where it belongs and the LM's internals stay as
they are:

* ``invlip`` adds ``B g([P h_t; z])`` to ``W h_t`` in the :class:`~textvae.models.decoders.OutputHead`.
  The states do not depend on z, so with a frozen LM they can be computed once per
  corpus (``decoder_states`` in the model's forward).
* ``memory`` (Optimus, Li et al. 2020) turns z into ``memory_slots`` extra key/value
  positions per layer (separate keys and values, grouped-query heads as the LM has them),
  prefilled into the LM's cache before BOS, and adds a projection of z to every input
  embedding. Several slots (AdaVAE, LangVAE) give every layer several things to read.
* ``none`` is the LM alone.

The encoder is an ``AutoModel`` whose states are pooled (masked mean or first token).
Either backbone trains ``frozen``, with LoRA adapters (peft, injected in place) or
``full``. An export keeps a frozen or LoRA backbone as a *reference* (its name, a
fingerprint of its weights, and only the trained parts), unless it is *embedded*.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache, PreTrainedModel

from textvae.errors import TextVAEError, require_extra
from textvae.models.configuration_textvae import TextVAEConfig

# Probes run on a fresh backbone: its logits must be W h_t, and (memory) it must read a prefilled cache.
_PROBE_TOLERANCE = 1e-4


def local_path(name_or_path: str) -> str:
    """``~`` expanded, so recipes can point at ``~/.cache/...``; Hub ids pass unchanged."""
    return os.path.expanduser(name_or_path) if name_or_path.startswith("~") else name_or_path


# ------------------------------------------------------------------------------ loading


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _source_config(option: str, name: str, gguf_file: str | None) -> Any:
    """The backbone's config, or one line saying why it cannot be had."""
    path = Path(name)
    if gguf_file is not None:
        require_extra("gguf", "gguf", f"model.decoder_gguf_file: reading {gguf_file}")
        if path.is_dir() and not (path / gguf_file).is_file():
            raise TextVAEError(f"model.decoder_gguf_file: no file {gguf_file} in {name}")
    if path.exists() and not path.is_dir():
        raise TextVAEError(f"{option}: {name} is a file; give the directory that holds the model")
    try:
        return AutoConfig.from_pretrained(name, gguf_file=gguf_file) if gguf_file else AutoConfig.from_pretrained(name)
    except (OSError, ValueError, KeyError) as exc:
        where = "a local directory without a config.json" if path.is_dir() else \
            "neither a local directory nor a model that could be downloaded (offline, or not on the Hub)"
        raise TextVAEError(f"{option}: cannot load '{name}': {where} ({_first_line(exc)})") from None


def load_backbone(part: str, config: TextVAEConfig) -> PreTrainedModel:
    """The decoder's causal LM or the encoder's model, in float32, as ``config`` describes it.

    A *reference* backbone is loaded from its ``*_name_or_path`` (and checked against the
    fingerprint an export recorded); an *embedded* one is built from the stored config, its
    weights come with the export.
    """
    auto = AutoModelForCausalLM if part == "decoder" else AutoModel
    embedded = getattr(config, f"{part}_weights") == "embedded"
    model = _from_stored_config(part, config, auto) if embedded else _from_source(part, config, auto)
    if part == "encoder" and model.config.is_encoder_decoder:
        model = model.get_encoder()
    if part == "encoder" and getattr(model, "pooler", None) is not None:
        model.pooler = None  # textvae pools the states itself; an unused pooler would stall DDP
    align_tensors(model)
    expected = getattr(config, f"{part}_fingerprint")
    if not embedded and expected is not None and weights_fingerprint(model) != expected:
        raise TextVAEError(f"model.{part}_name_or_path: the weights of '{getattr(config, f'{part}_name_or_path')}' "
                           f"are not the ones this model was trained on (fingerprint "
                           f"{weights_fingerprint(model)[:12]} != {expected[:12]}); the export belongs to another base model")
    return model


def _from_stored_config(part: str, config: TextVAEConfig, auto: type) -> PreTrainedModel:
    stored = getattr(config, f"{part}_config")
    if stored is None:
        raise TextVAEError(f"the export embeds the {part} but stores no {part}_config")
    backbone_config = AutoConfig.for_model(**{k: v for k, v in stored.items() if k != "quantization_config"})
    return auto.from_config(backbone_config, dtype=torch.float32)


def _source(part: str, config: TextVAEConfig) -> tuple[str, str, str | None, Any]:
    """The recipe key naming ``part``'s backbone, its name or path, its GGUF file, and its config."""
    option = f"model.{part}_name_or_path"
    name = local_path(getattr(config, f"{part}_name_or_path"))
    gguf_file = config.decoder_gguf_file if part == "decoder" else None
    return option, name, gguf_file, _source_config(option, name, gguf_file)


def _from_source(part: str, config: TextVAEConfig, auto: type) -> PreTrainedModel:
    option, name, gguf_file, source = _source(part, config)
    if part == "decoder" and not _has_causal_head(source):
        raise TextVAEError(f"{option}: '{name}' is a {source.model_type} model, which has no causal-LM head "
                           "(AutoModelForCausalLM cannot load it); give a decoder-only language model")
    try:
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        return auto.from_pretrained(name, dtype=torch.float32, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- transformers raises many types for unusable checkpoints
        raise TextVAEError(f"{option}: cannot load the weights of '{name}' ({type(exc).__name__}: "
                           f"{_first_line(exc)})") from None


_SPECIAL_ROLES = ("bos", "eos", "pad")


def check_tokenizer_fits(part: str, config: TextVAEConfig, tokenizer: Any,
                         own_roles: Sequence[str] = _SPECIAL_ROLES) -> None:
    """Refuse a ``part`` backbone whose token table does not belong to ``tokenizer``, in one line
    naming both sizes and the path.

    A table smaller than the tokenizer's ids is always refused: an id past it is an
    ``IndexError`` mid-training. A larger table is common and legitimate: many models pad it
    to a round size for fast kernels (Qwen2 151,936 rows for 151,665 tokens, Phi-2 51,200 for
    50,295, T5 32,128 for 32,100), so size alone cannot tell padding from another model's
    tokenizer; the model's special ids can (:func:`_check_special_ids`).
    """
    option, name, _, source = _source(part, config)
    text = source.get_text_config() if hasattr(source, "get_text_config") else source
    table, size = text.vocab_size, max(tokenizer.get_vocab().values()) + 1
    where = f"{option}: '{name}' has an embedding table of {table} tokens but its tokenizer has {size}"
    if size > table:
        raise TextVAEError(f"{where}: ids from {table} on would index past the table; the tokenizer belongs to "
                           "another model")
    if size < table:
        _check_special_ids(where, text, tokenizer, size, own_roles)


def _check_special_ids(where: str, text_config: Any, tokenizer: Any, size: int, own_roles: Sequence[str]) -> None:
    """Padding rows never change a model's special tokens; another model's tokenizer does.

    So every ``bos/eos/pad_token_id`` the model's config gives (an id or a list of them) must
    be a special token of the tokenizer, and the tokenizer's own token of each of
    ``own_roles`` (those textvae did not choose itself) must be among the config's ids for
    that role. A tokenizer that shares the model's special ids but not its words passes:
    nothing in a checkpoint tells it from padding.
    """
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for role in _SPECIAL_ROLES:
        given = getattr(text_config, f"{role}_token_id", None)
        ids = [given] if isinstance(given, int) else list(given or [])
        stray = next((i for i in ids if i not in special), None)
        if stray is not None:
            what = "beyond it" if stray >= size else f"'{tokenizer.convert_ids_to_tokens(stray)}' there, no special token"
            raise TextVAEError(f"{where}, and the model's {role}_token_id {stray} is {what}: the tokenizer belongs "
                               "to another model")
        own = getattr(tokenizer, f"{role}_token_id") if role in own_roles else None
        if ids and own is not None and own not in ids:
            raise TextVAEError(f"{where}, and its {role} token is id {own} where the model's {role}_token_id is "
                               f"{given}: the tokenizer belongs to another model")


def align_tensors(model: nn.Module) -> None:
    """Copy every weight that safetensors left at an address not 64-byte aligned.

    CPU kernels vectorise such tensors differently, so outputs would differ in the last bits
    from one load to the next (and a resumed run from an uninterrupted one); copies in
    torch's own (aligned) memory make loading bit-exact.
    """
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.data_ptr() % 64:
                tensor.data = tensor.data.clone()


def _has_causal_head(backbone_config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    return type(backbone_config) in MODEL_FOR_CAUSAL_LM_MAPPING


def weights_fingerprint(model: nn.Module) -> str:
    """A digest of a backbone's weights: names, shapes, and 66 values spread over each tensor.

    Cheap next to hashing every byte (135M parameters), and enough to tell two checkpoints
    of one architecture apart; computed before any adapter is added.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        picks = torch.arange(66) * max(flat.numel() - 1, 0) // 65 if flat.numel() else flat.long()
        digest.update(f"{name}:{tuple(tensor.shape)}:".encode())
        digest.update(flat[picks].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def add_lora(model: nn.Module, config: TextVAEConfig, part: str) -> None:
    """Inject LoRA adapters (peft) into ``model`` in place; only they train afterwards."""
    require_extra("peft", "peft", f"model.{part}_trainable=lora")
    import peft

    lora = peft.LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                           target_modules=config.lora_target_modules)
    try:
        peft.inject_adapter_in_model(lora, model)
    except ValueError as exc:
        raise TextVAEError(f"model.lora_target_modules: {_first_line(exc)}") from None
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)


def prepare_backbone(model: nn.Module, config: TextVAEConfig, part: str) -> None:
    """Set what trains (``*_trainable``) and record the backbone's config and fingerprint."""
    if getattr(config, f"{part}_config") is None:
        setattr(config, f"{part}_config", model.config.to_dict())
    if getattr(config, f"{part}_license") is None:
        setattr(config, f"{part}_license", readme_license(getattr(config, f"{part}_name_or_path")))
    reference = getattr(config, f"{part}_weights") == "reference"
    if reference and getattr(config, f"{part}_fingerprint") is None:
        setattr(config, f"{part}_fingerprint", weights_fingerprint(model))
    trainable = getattr(config, f"{part}_trainable")
    if trainable == "lora" and reference:  # an embedded export holds the adapters merged
        add_lora(model, config, part)
    else:
        model.requires_grad_(trainable != "frozen")


def readme_license(name_or_path: str | None) -> str | None:
    """The ``license`` of a local model directory's card (README.md front matter), if it states one."""
    readme = Path(local_path(name_or_path or "")) / "README.md"
    if not readme.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(readme).data.license
    except Exception:  # noqa: BLE001 -- a card that does not parse states nothing
        return None


def is_base_weight(name: str) -> bool:
    """Whether a state-dict key of a reference backbone comes from its base (not saved)."""
    return "lora_" not in name


# ------------------------------------------------------------------------------ decoder


def cache_shape(lm_config: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head dimension) of a causal LM's attention cache."""
    text = lm_config.get_text_config() if hasattr(lm_config, "get_text_config") else lm_config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return text.num_hidden_layers, kv_heads, head_dim


class PretrainedDecoder(nn.Module):
    """A causal LM as the decoder: (B, T) ids (and z) -> (B, T, H) final-norm states.

    The LM's output layer stays the LM's: :meth:`output_layer` gives it to the head, which
    computes ``W h_t`` and adds the ``invlip`` map. A frozen LM runs in eval mode always
    (no dropout), so its states are a function of the prefix alone and can be cached.
    """

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        self.lm = load_backbone("decoder", config)
        fresh = config.decoder_config is None
        prepare_backbone(self.lm, config, "decoder")
        self.trainable = config.decoder_trainable
        self.output_size = self.lm.get_output_embeddings().in_features
        self.uses_latent = config.latent_path == "memory"
        self.memory = self.latent_embedding = None
        if self.uses_latent:
            try:
                self.layers, kv_heads, head_dim = cache_shape(self.lm.config)
            except AttributeError:
                raise TextVAEError(f"model.latent_path=memory: '{config.decoder_name_or_path}' "
                                   f"({self.lm.config.model_type}) has no attention key/value cache to prefill") from None
            self.kv_shape = (kv_heads, head_dim)
            self.memory_slots = config.memory_slots
            self.memory = nn.Linear(config.latent_size, self.layers * 2 * kv_heads * self.memory_slots * head_dim,
                                    bias=False)
            if config.memory_embeddings:
                width = self.lm.get_input_embeddings().embedding_dim
                self.latent_embedding = nn.Linear(config.latent_size, width, bias=False)
        # The LM's tied weights (lm_head <-> embed_tokens), so the outer model saves one copy.
        self.all_tied_weights_keys = {f"lm.{k}": f"lm.{v}" for k, v in
                                      (getattr(self.lm, "all_tied_weights_keys", None) or {}).items()}
        if fresh:
            self._probe(config)

    def output_layer(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    def train(self, mode: bool = True) -> PretrainedDecoder:
        super().train(mode)
        if self.trainable == "frozen":
            self.lm.eval()
        return self

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.lm.config)

    def _prefill(self, z: torch.Tensor, cache: DynamicCache) -> None:
        """Write z's keys and values into every layer's cache, as the ``memory_slots`` positions
        before BOS. They are written as the attention stores them (after any rotary
        embedding): position-free slots the tokens' queries reach at any distance."""
        batch = z.shape[0]
        kv = self.memory(z).view(batch, self.layers, 2, self.kv_shape[0], self.memory_slots, self.kv_shape[1])
        for layer in range(self.layers):
            cache.update(kv[:, layer, 0], kv[:, layer, 1], layer)

    def forward(self, input_ids: torch.Tensor, z: torch.Tensor | None, cache: DynamicCache | None = None) -> torch.Tensor:
        """(B, T) ids continuing what ``cache`` holds -> (B, T, H) final-norm states."""
        if self.memory is not None and cache is None:
            if self.training and self.lm.is_gradient_checkpointing:
                raise TextVAEError("latent_path=memory cannot train with gradient checkpointing: transformers' "
                                   "checkpointed layers drop the key/value cache that carries z")
            cache = self.new_cache()  # teacher forcing: a cache of its own, for the memory slot
        if self.memory is not None and cache.get_seq_length() == 0:
            self._prefill(z, cache)
        start = cache.get_seq_length() - (self.memory_slots if self.memory is not None else 0) if cache is not None else 0
        embeds = self.lm.get_input_embeddings()(input_ids)
        if self.latent_embedding is not None:
            embeds = embeds + self.latent_embedding(z).unsqueeze(1).to(embeds.dtype)
        # Token positions start at 0 whatever the memory slot takes: an LM with absolute
        # position embeddings (GPT-2) sees its sentences where it was trained to.
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        out = self.lm.base_model(inputs_embeds=embeds, position_ids=positions, cache=cache,
                                 use_cache=cache is not None)
        return out.last_hidden_state

    @torch.no_grad()
    def _probe(self, config: TextVAEConfig) -> None:
        """Refuse an LM whose logits are not ``W h_t`` (soft-capping, scaling: the latent paths
        would miss that step) or, for ``memory``, one that cannot read a prefilled cache."""
        name = config.decoder_name_or_path
        was_training = self.lm.training
        self.lm.eval()
        ids = torch.tensor([[config.bos_token_id or 0, config.eos_token_id or 0]])
        try:
            logits = self.lm(input_ids=ids).logits
            mine = self.output_layer()(self.forward(ids, None) if self.memory is None else
                                       self.lm.base_model(input_ids=ids).last_hidden_state)
        finally:
            self.lm.train(was_training)
        if not torch.allclose(logits, mine, atol=_PROBE_TOLERANCE, rtol=_PROBE_TOLERANCE):
            raise TextVAEError(f"model.decoder_name_or_path: the logits of '{name}' ({self.lm.config.model_type}) are "
                               "not its output layer applied to its last hidden state (soft-capped or scaled); "
                               "textvae's latent paths need that form")
        if self.memory is None:
            return
        z = torch.randn(2, config.latent_size, generator=torch.Generator().manual_seed(0))
        try:
            states = self.forward(ids.expand(2, -1), z * 10)
        except Exception as exc:  # noqa: BLE001 -- each architecture fails its own way
            raise TextVAEError(f"model.latent_path=memory: '{name}' ({self.lm.config.model_type}) does not accept a "
                               f"prefilled key/value cache ({type(exc).__name__}: {_first_line(exc)})") from None
        if torch.allclose(states[0], states[1]):
            raise TextVAEError(f"model.latent_path=memory: '{name}' ({self.lm.config.model_type}) ignores a prefilled "
                               "key/value cache")


# ------------------------------------------------------------------------------ encoder


class PretrainedEncoder(nn.Module):
    """An ``AutoModel`` over the encoder's own token ids, pooled to one (B, H) vector."""

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        self.model = load_backbone("encoder", config)
        prepare_backbone(self.model, config, "encoder")
        self.trainable = config.encoder_trainable
        self.pooling = config.encoder_pooling
        self.output_size = self.model.config.hidden_size

    def train(self, mode: bool = True) -> PretrainedEncoder:
        super().train(mode)
        if self.trainable == "frozen":
            self.model.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, S) encoder ids and mask -> (B, H)."""
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "first":
            return states[:, 0]
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


# ------------------------------------------------------------------------------ persistence

BACKBONE_PREFIXES = {"decoder": "decoder.lm.", "encoder": "posterior.encoder.model."}


def backbone_parts(config: TextVAEConfig) -> list[str]:
    """``decoder`` and/or ``encoder``: the parts of ``config`` that are pretrained backbones."""
    return [part for part in ("decoder", "encoder") if getattr(config, f"{part}_type") == "pretrained"]


def export_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor] | None,
                      embed: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What an export of ``model`` stores, and the ``*_weights`` its config then records.

    A frozen or LoRA backbone is a reference: its base weights are left out (the LoRA
    adapters stay). A fully trained one, or any with ``embed``, is stored whole; LoRA
    adapters are then merged into the base weights (peft's own merge), so the export loads
    without peft and without the base model.
    """
    config = model.config
    lora = [part for part in backbone_parts(config) if getattr(config, f"{part}_trainable") == "lora"]
    if embed and lora:
        from peft.tuners.lora import LoraLayer

        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        for layer in layers:
            layer.merge()
        try:
            state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
        finally:
            for layer in layers:
                layer.unmerge()
        state_dict = {k.replace(".base_layer.", "."): v for k, v in state_dict.items() if "lora_" not in k}
    state_dict = dict(model.state_dict() if state_dict is None else state_dict)
    weights = {}
    for part in backbone_parts(config):
        embedded = embed or getattr(config, f"{part}_trainable") == "full"
        weights[f"{part}_weights"] = "embedded" if embedded else "reference"
        if not embedded:
            prefix = BACKBONE_PREFIXES[part]
            state_dict = {k: v for k, v in state_dict.items() if not (k.startswith(prefix) and is_base_weight(k))}
    return state_dict, weights


def check_loaded_keys(config: TextVAEConfig, missing: list[str], unexpected: list[str], source: str) -> None:
    """An export must hold every weight but the base weights of its reference backbones."""
    allowed = tuple(BACKBONE_PREFIXES[p] for p in backbone_parts(config) if getattr(config, f"{p}_weights") == "reference")
    absent = [k for k in missing if not (k.startswith(allowed) and is_base_weight(k))] if allowed else list(missing)
    if absent or unexpected:
        what = f"missing {absent[0]}" if absent else f"unexpected {unexpected[0]}"
        raise TextVAEError(f"{source}: the weights do not fit the config ({what}, "
                           f"{len(absent)} missing and {len(unexpected)} unexpected in all)")
