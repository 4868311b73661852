"""TextVAEModel: a Hugging Face model for sentence VAEs.

Input format: ``input_ids`` as produced by textvae tokenizers, ``<bos> w_1 ... w_n <eos>``
right-padded with ``<pad>``; the decoder reads ``<bos> w_1 ... w_n`` and predicts
``w_1 ... w_n <eos>`` (n + 1 predicted tokens, BOS never predicted).

``forward`` has two modes. Without ``latents`` it is the VAE: encode, sample z, decode,
and return ``loss`` (-ELBO at beta = 1), ``logits`` and the raw terms (log-likelihood and
KL per sentence and per dimension); how training weights them (beta, annealing, free
bits) is :mod:`textvae.training.objectives`' job. With ``latents`` it is the decoder alone, as
transformers' ``generate()`` drives it: ``input_ids`` continue the sentences the cache
holds, conditioned on z, and the output is next-token ``logits`` and the ``cache``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Cache, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from textvae.errors import TextVAEError
from textvae.estimators import count_predicted_tokens, gaussian_kl_per_dim
from textvae.models.configuration_textvae import TextVAEConfig, own_padding_idx
from textvae.models.decoders import DECODER_CLASSES, OutputHead
from textvae.models.encoders import FixedScaleBatchNorm, GaussianPosterior
from textvae.models.generation import TextGenerationMixin
from textvae.models.integrity import (
    check_finite_weights,
    check_loading_info,
    check_model_type,
    check_tokenizer,
    quiet_load_report,
)
from textvae.models.invlip import ICNN, InverseLipschitzMap
from textvae.models.memory import require_weight_memory
from textvae.models.pretrained import (
    PretrainedDecoder,
    align_tensors,
    backbone_parts,
    check_loaded_keys,
    export_state_dict,
)
from textvae.padding import default_attention_mask, pad_ids

# Upper bound on elements of one (samples x tokens x vocab) logits block in log_likelihood.
_LOGITS_BLOCK = 2**25


@dataclass
class TextVAEOutput(ModelOutput):
    """The ELBO and its raw terms for B sentences with a d-dimensional latent, or (decoder
    mode) next-token logits and the cache.

    Args:
        loss: () mean over the batch of -ELBO = -log p(x|z) + KL, nats per sentence (beta = 1).
        logits: (B, T - 1, V) next-token logits of the sentence's positions (VAE mode), or
            (B, T, V) of the given decoder inputs (decoder mode).
        rec_log_likelihood: (B,) sum over predicted tokens of log p(x_t | x_<t, z).
        kl: (B,) KL(q(z|x) || N(0, I)), analytic.
        kl_per_dim: (B, d) its terms per latent dimension.
        mu, logvar: (B, d) posterior parameters.
        z: (B, d) the sample the decoder saw.
        num_tokens: (B,) predicted tokens per sentence (words + EOS).
        cache: The decoder's state after the inputs (decoder mode with ``use_cache``).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    rec_log_likelihood: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    kl_per_dim: torch.Tensor | None = None
    mu: torch.Tensor | None = None
    logvar: torch.Tensor | None = None
    z: torch.Tensor | None = None
    num_tokens: torch.Tensor | None = None
    cache: Cache | None = None


ENCODER_TOKENIZER_DIR = "encoder_tokenizer"


def load_companion_tokenizer(name_or_path, config: TextVAEConfig | None, **hub_kwargs):
    """The tokenizer saved beside a model, or None; a vocabulary that does not fit the model is an error
    (not checked without ``config``: the encoder's own tokenizer)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
    except (OSError, ValueError) as exc:
        present = [n for n in ("tokenizer.json", "tokenizer_config.json") if (Path(str(name_or_path)) / n).is_file()]
        if present:  # there, but unreadable: not the same as an export without a tokenizer
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise TextVAEError(f"{name_or_path}: the tokenizer files ({', '.join(present)}) cannot be read "
                               f"({type(exc).__name__}: {first[:200]})") from None
        return None
    if config is not None:
        check_tokenizer(tokenizer, config, name_or_path)
    return tokenizer


class TextVAEModel(TextGenerationMixin, PreTrainedModel, GenerationMixin):
    config_class = TextVAEConfig
    base_model_prefix = "textvae"
    main_input_name = "input_ids"
    # The Transformer blocks (encoder and decoder) recompute their activations in the backward
    # pass after gradient_checkpointing_enable(); an LSTM has no such layer.
    supports_gradient_checkpointing = True
    # With tie_word_embeddings the output layer shares the decoder's input embedding.
    _tied_weights_keys = {"head.output.weight": "decoder.embedding.weight"}
    # Kept whole by device maps and FSDP wrapping: a Transformer block, an LSTM (its fused
    # weights), and the invlip map (its ICNN runs through `gradient`, not `forward`, so
    # Accelerate's per-module device hooks would not move its inputs).
    _no_split_modules = ["TransformerBlock", "LSTM", "InverseLipschitzMap"]

    def __init__(self, config: TextVAEConfig):
        super().__init__(config)
        # The vocabulary is the decoder's: a pretrained LM's output layer may be wider than its tokenizer.
        self.decoder = PretrainedDecoder(config) if config.decoder_type == "pretrained" else None
        if self.decoder is not None:
            config.vocab_size = self.decoder.output_layer().out_features
        self.posterior = GaussianPosterior(config) if config.latent_path != "none" else None
        if self.decoder is None:
            embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=own_padding_idx(config))
            self.decoder = DECODER_CLASSES[config.decoder_type](config, embedding)
            self.head = OutputHead(config)
        else:
            self.head = OutputHead(config, self.decoder.output_size, self.decoder.output_layer())
        # Attached by from_pretrained / the trainer (see TextGenerationMixin); a pretrained
        # encoder reads each sentence with its own tokenizer.
        self.tokenizer = self.encoder_tokenizer = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The decoder's token embedding (the encoder has its own, and keeps it)."""
        return self.decoder.lm.get_input_embeddings() if self.pretrained_decoder else self.decoder.embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        if self.pretrained_decoder:
            self.decoder.lm.set_input_embeddings(value)
        else:
            self.decoder.embedding = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.head.output_layer()

    def set_output_embeddings(self, value: nn.Linear) -> None:
        if self.pretrained_decoder:
            self.decoder.lm.set_output_embeddings(value)
        else:
            self.head.output = value

    @property
    def pretrained_decoder(self) -> bool:
        return self.config.decoder_type == "pretrained"

    # ---------------------------------------------------------- persistence
    def save_pretrained(self, save_directory, *args, embed_backbones: bool = False, **kwargs):
        """``PreTrainedModel.save_pretrained`` plus the attached tokenizers, so an export is self-contained.

        A frozen or LoRA pretrained backbone is saved as a reference to its base model (its
        name and a fingerprint of its weights) plus the trained parts, not as a copy of the
        LM; ``embed_backbones=True`` (or a fully trained backbone) stores all of its weights,
        LoRA merged, so the export needs neither the base model nor peft.
        """
        if backbone_parts(self.config):
            kwargs["state_dict"], weights = export_state_dict(self, kwargs.get("state_dict"), embed_backbones)
            # Keys as the modules name them: transformers would otherwise "revert" a backbone's
            # weight renamings (GPT-2's) and drop the LoRA keys it does not know.
            kwargs.setdefault("save_original_format", False)
            nothing_own = not kwargs["state_dict"]  # (save_pretrained empties the dict it is given)
            live, self.config = self.config, copy.deepcopy(self.config)
            self.config.update(weights)
            try:
                result = super().save_pretrained(save_directory, *args, **kwargs)
            finally:
                self.config = live
            if nothing_own:  # a frozen LM alone: nothing of its own, but an export all the same
                from safetensors.torch import save_file

                save_file({}, str(Path(save_directory) / "model.safetensors"), metadata={"format": "pt"})
        else:
            result = super().save_pretrained(save_directory, *args, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)
        if self.encoder_tokenizer is not None:
            self.encoder_tokenizer.save_pretrained(Path(save_directory) / ENCODER_TOKENIZER_DIR)
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load weights and, when the directory or Hub repo has one, the tokenizer beside them.

        A checkpoint that belongs to something else (another model type, missing, extra or
        mis-shaped tensors, non-finite weights, another tokenizer) is refused in one line
        (:mod:`textvae.models.integrity`) instead of loading with random or wrong parts. An
        export with pretrained backbones loads its reference backbones from their own names
        (checked against the recorded fingerprints), then the trained parts.
        """
        hub_keys = ("revision", "token", "cache_dir", "local_files_only", "subfolder")
        hub_kwargs = {k: kwargs[k] for k in hub_keys if k in kwargs}
        if "config" not in kwargs:
            check_model_type(pretrained_model_name_or_path, **hub_kwargs)
        try:
            config = kwargs.get("config") or TextVAEConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        except TextVAEError as exc:  # a retired option recorded by an earlier export
            raise TextVAEError(f"{pretrained_model_name_or_path}: {exc}") from None
        with_info = kwargs.pop("output_loading_info", False)
        info = None
        if backbone_parts(config):
            model = cls._from_export_with_backbones(pretrained_model_name_or_path, config, hub_kwargs)
        else:
            require_weight_memory(config, pretrained_model_name_or_path)  # a crafted config.json asks for no memory
            with quiet_load_report():
                model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                                      **{**kwargs, "ignore_mismatched_sizes": True})
            check_loading_info(info, pretrained_model_name_or_path, kwargs.get("ignore_mismatched_sizes", False))
        align_tensors(model)
        check_finite_weights(model, pretrained_model_name_or_path)
        if model.head.invlip is not None:
            try:
                model.head.invlip.check_lift()
            except ValueError as exc:
                raise TextVAEError(f"{pretrained_model_name_or_path}: {exc}") from None
        model.tokenizer = load_companion_tokenizer(pretrained_model_name_or_path, model.config, **hub_kwargs)
        if model.config.encoder_type == "pretrained":
            model.encoder_tokenizer = load_companion_tokenizer(pretrained_model_name_or_path, None, **{
                **hub_kwargs, "subfolder": "/".join(filter(None, (hub_kwargs.get("subfolder"), ENCODER_TOKENIZER_DIR)))})
        return (model, info) if with_info else model

    @classmethod
    def _from_export_with_backbones(cls, source, config: TextVAEConfig, hub_kwargs: dict) -> TextVAEModel:
        """Build the model (loading reference backbones by name), then read the export's weights into it."""
        from safetensors.torch import load_file
        from transformers.utils import cached_file
        from transformers.utils.hub import get_checkpoint_shard_files

        # Not super().from_pretrained: a reference export holds only the trained parts, and cls(config)
        # loads the backbones from their named bases; transformers' loader would build the model empty
        # and find every backbone weight missing. Its shard resolution finds the files, local or Hub.
        model = cls(config)
        try:
            index = cached_file(source, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False,
                                **hub_kwargs)
            if index is not None:
                files, _ = get_checkpoint_shard_files(source, index, **hub_kwargs)
            else:
                files = [cached_file(source, "model.safetensors", **hub_kwargs)]
            state = {k: v for file in files for k, v in load_file(file).items()}
        except Exception as exc:  # noqa: BLE001 -- a damaged file fails in safetensors' own words
            raise TextVAEError(f"{source}: cannot read the weights ({type(exc).__name__}: {exc})") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        check_loaded_keys(config, missing, unexpected, str(source))
        model.config._name_or_path = str(source)
        return model

    def push_to_hub(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused: transformers' upload would carry an empty model card, and the card is built by
        the sharing layer, which this layer cannot import. ``textvae.hub.push.push_model(model,
        repo_id, ...)`` takes the same keywords and uploads the card with the weights."""
        raise TextVAEError("TextVAEModel.push_to_hub would upload an empty model card: push with "
                           "textvae.hub.push.push_model(model, repo_id, ...) (the same keywords), or `textvae push`")

    # ----------------------------------------------------------------- init
    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Uniform init of recurrent weights and embeddings as in He et al. (2019); with a
        pretrained decoder, a zero state projection in the invlip map.

        Never touches a loaded weight: transformers' ``init`` functions skip tensors that
        ``from_pretrained`` flagged as loaded, and the invlip map, whose own init also
        re-orthonormalises the lift (which would change a loaded lift in its last bits),
        is initialised only when some of its weights were not loaded.
        """
        if isinstance(module, (ICNN, InverseLipschitzMap)):
            if not all(getattr(p, "_is_hf_initialized", False) for p in module.parameters()):
                module.reset_parameters()
        elif isinstance(module, nn.LSTM):
            for param in module.parameters():
                init.uniform_(param, -0.1, 0.1)
        elif isinstance(module, nn.Embedding):
            init.uniform_(module.weight, -0.1, 0.1)
        elif self.pretrained_decoder and module is getattr(self.head, "state_proj", None):
            # P = 0: the map starts from the code alone, and the model from the LM's own
            # predictions (a random P h_t, lifted, would scramble them before any training).
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    # -------------------------------------------------------------- latent
    @property
    def has_latent(self) -> bool:
        return self.posterior is not None

    def lipschitz_bound(self) -> float:
        """The constant the ``invlip`` path guarantees for centred logits (0 for other paths)."""
        return self.head.invlip.lower_bound() if self.head.invlip is not None else 0.0

    def encode_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) -> posterior mu, logvar, each (B, d). A ``none`` model returns the prior."""
        if self.posterior is None:
            zeros = input_ids.new_zeros(input_ids.shape[0], self.config.latent_size, dtype=torch.float)
            return zeros, zeros
        if self.config.encoder_type == "pretrained":
            input_ids, attention_mask = self.encoder_inputs(input_ids, attention_mask)
        mu, logvar = self.posterior(input_ids, attention_mask)
        return mu.float(), logvar.float()

    @torch.no_grad()
    def recompute_posterior_statistics(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Replace BN-VAE's running statistics by the average of the batch statistics over ``batches``.

        Eval mode normalises mu with running averages that training keeps with momentum 0.1,
        so they describe the last few batches: an encoder that moves fast (a high LR) leaves
        them behind, and with length-bucketed batches they follow the last few buckets. A
        validation or export on them can score sentences whose codes the decoder never saw
        (a validation KL of thousands). This measures the statistics afresh ("precise BN",
        Wu & Johnson 2021): each batch of (ids, mask) is encoded with the rest of the model in
        eval mode and the statistics are averaged with equal weights, as training's batches
        normalise them. Returns the batches used (0 without BN, which changes nothing).
        """
        norm = self.posterior.mu_norm if self.posterior is not None else None
        if not isinstance(norm, FixedScaleBatchNorm):
            return 0
        training, momentum, used = self.training, norm.momentum, 0
        self.eval()
        norm.train()
        try:
            for input_ids, attention_mask in batches:
                if input_ids.shape[0] < 2:  # no batch variance
                    continue
                used += 1
                norm.momentum = 1.0 / used  # the running value becomes the mean over the batches so far
                self.encode_ids(input_ids, attention_mask)
        finally:
            norm.momentum = momentum
            self.train(training)
        return used

    def encoder_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sentences of decoder ids (B, T), as a pretrained encoder's own tokenizer reads them.

        The ids are decoded back to text (BOS and EOS cut, every other token kept, so a
        literal ``<unk>`` stays) and encoded again: the encoder reads the sentence the decoder
        models, cut where the length policy cut it, without a second id stream in the data.
        """
        if self.tokenizer is None or self.encoder_tokenizer is None:
            raise TextVAEError("a pretrained encoder reads the sentence with its own tokenizer: attach "
                               "model.tokenizer and model.encoder_tokenizer (from_pretrained does)")
        lengths = attention_mask.sum(dim=1).tolist()
        texts = self.tokenizer.batch_decode([row[1 : n - 1] for row, n in zip(input_ids.tolist(), lengths, strict=True)])
        tok = self.encoder_tokenizer
        ids = tok(texts, truncation=True, max_length=min(tok.model_max_length, 512))["input_ids"]
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        return tuple(t.to(input_ids.device) for t in pad_ids(ids, pad).values())

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        """z = mu + sigma * eps; with ``num_samples`` K the result is (B, K, d)."""
        if num_samples is not None:
            mu, logvar = mu.unsqueeze(1), logvar.unsqueeze(1)
            eps = torch.randn(mu.shape[0], num_samples, mu.shape[-1], device=mu.device, dtype=mu.dtype)
        else:
            eps = torch.randn_like(mu)
        return mu + (0.5 * logvar).exp() * eps

    # ------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        word_dropout: float = 0.0,
        sample_posterior: bool = True,
        decoder_states: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> TextVAEOutput | tuple:
        """The VAE on whole sentences, or (with ``latents``) the decoder alone.

        Args:
            input_ids: (B, T) ``<bos> ... <eos>`` right-padded; with ``latents``, decoder
                inputs that continue what ``cache`` holds (``<bos>`` first when it is empty).
            attention_mask: (B, T) 1 on real tokens; derived from ``<pad>`` when omitted.
                Decoder mode reads no mask: the decoder is causal and generated rows are
                never padded before their last token.
            latents: (B, d) codes to decode from; selects decoder mode.
            cache: The decoder's state so far (decoder mode; created when ``use_cache``).
            use_cache: Return the decoder's state for the next call (decoder mode).
            word_dropout: Probability of replacing decoder inputs by ``<unk>`` (training only).
            sample_posterior: Decode from a sample of q(z|x) (the ELBO) or from its mean.
            decoder_states: (B, T - 1, H) the decoder's states on the sentence's inputs, computed
                before (a frozen pretrained LM's state cache): the decoder is not run. Only
                where z does not enter the decoder (``invlip``, ``none``) and without word dropout.
            return_dict: ``False`` gives the output's non-None fields as a tuple.
        """
        if latents is None:
            output = self._vae_forward(input_ids, attention_mask, word_dropout, sample_posterior, decoder_states)
        else:
            if use_cache and cache is None:
                cache = self.decoder.new_cache()
            cache = cache if use_cache else None
            z = latents.to(self.dtype)
            output = TextVAEOutput(logits=self.head(self.decoder(input_ids, z, cache), z), cache=cache)
        return output.to_tuple() if return_dict is False else output

    def _vae_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, word_dropout: float,
                     sample_posterior: bool, decoder_states: torch.Tensor | None = None) -> TextVAEOutput:
        """One pass of the VAE with one posterior sample per sentence."""
        if attention_mask is None:
            attention_mask = self.default_mask(input_ids)
        mu, logvar = self.encode_ids(input_ids, attention_mask)
        z = self.reparameterize(mu, logvar) if sample_posterior and self.has_latent else mu
        decoder_inputs = input_ids[:, :-1]
        if decoder_states is not None:
            if self.decoder.uses_latent or (word_dropout > 0 and self.training):
                raise TextVAEError("decoder_states stand for the decoder only where z does not enter it and "
                                   "its inputs are not dropped out")
            hidden = decoder_states.to(self.dtype)
        else:
            if word_dropout > 0 and self.training:
                drop = torch.rand(decoder_inputs.shape, device=input_ids.device) < word_dropout
                drop[:, 0] = False  # keep BOS
                decoder_inputs = decoder_inputs.masked_fill(drop, self.config.unk_token_id)
            hidden = self.decoder(decoder_inputs, z)
        logits = self.head(hidden, z)
        rec = self._sequence_log_likelihood(logits, input_ids[:, 1:], attention_mask[:, 1:])
        kl_per_dim = gaussian_kl_per_dim(mu, logvar)
        kl = kl_per_dim.sum(-1)
        return TextVAEOutput(
            loss=(kl - rec).mean(),
            logits=logits,
            rec_log_likelihood=rec,
            kl=kl,
            kl_per_dim=kl_per_dim,
            mu=mu,
            logvar=logvar,
            z=z,
            num_tokens=count_predicted_tokens(attention_mask),
        )

    # ---------------------------------------------------------- generation
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        """No: the decoder builds its own cache on the first step (a ``DynamicCache`` for the
        Transformer, an :class:`~textvae.models.decoders.LSTMState` for the LSTM), so
        ``generate()`` must not hand an LSTM a key/value cache it cannot use."""
        return False

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, latents: torch.Tensor | None = None,
                                      **kwargs) -> dict:
        """transformers' preparation, after checking that there are codes to decode from."""
        d = self.config.latent_size
        if latents is None:
            raise TextVAEError(f"TextVAEModel.generate needs latents=z, a (batch, {d}) tensor: "
                               "z ~ N(0, I) to sample, or model.encode(sentences)[0] to reconstruct")
        if latents.dim() != 2 or latents.shape[1] != d:
            raise TextVAEError(f"latents must be (batch, {d}) for this model, got {tuple(latents.shape)}")
        return super().prepare_inputs_for_generation(input_ids, latents=latents, **kwargs)

    def default_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The attention mask of right-padded ``<bos> ... <eos>`` rows (see :func:`textvae.padding.default_attention_mask`)."""
        return default_attention_mask(input_ids, self.config.pad_token_id, self.config.eos_token_id)

    @staticmethod
    def _sequence_log_likelihood(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(..., T, V) logits, (..., T) targets and mask -> (...,) summed log-probabilities."""
        nll = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction="none")
        return -(nll.view(targets.shape) * mask).sum(-1)

    @torch.no_grad()
    def log_likelihood(self, input_ids: torch.Tensor, z: torch.Tensor,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x | z) for (B, d) or (B, K, d) latents -> (B,) or (B, K).

        ``attention_mask`` (B, T) is derived from ``<pad>`` when omitted, as in :meth:`forward`.

        Samples are processed in blocks that keep the logits small. When z does not enter
        the decoder's recurrence (``invlip`` default, ``none``) the decoder runs once per
        sentence and only the head is evaluated per sample -- the main saving of
        importance-weighted evaluation with K = 500.
        """
        if attention_mask is None:
            attention_mask = self.default_mask(input_ids)
        single = z.dim() == 2
        z = z.unsqueeze(1) if single else z
        inputs, targets, mask = input_ids[:, :-1], input_ids[:, 1:], attention_mask[:, 1:]
        block = max(1, _LOGITS_BLOCK // (z.shape[0] * inputs.shape[1] * self.config.vocab_size))
        out = [self._sequence_log_likelihood(logits, targets.unsqueeze(1).expand(-1, logits.shape[1], -1),
                                             mask.unsqueeze(1))
               for logits in self._logits_per_sample(inputs, z, block)]
        result = torch.cat(out, dim=1)
        return result[:, 0] if single else result

    def _logits_per_sample(self, inputs: torch.Tensor, z: torch.Tensor, block: int) -> Iterator[torch.Tensor]:
        """Teacher-forced logits for (B, K, d) latents, (B, k, T, V) for each block of k samples.

        When z does not enter the decoder's recurrence (``invlip`` default, ``none``) the
        decoder runs once for all samples and only the head sees each one.
        """
        batch = z.shape[0]
        lift = self.head.lift()
        shared = None if self.decoder.uses_latent else self.decoder(inputs, None).unsqueeze(1)  # (B, 1, T, H)
        base = None if shared is None else self.head.base_logits(shared)  # (B, 1, T, V)
        for zs in z.split(block, dim=1):  # zs: (B, k, d)
            k = zs.shape[1]
            if shared is None:
                flat = zs.reshape(batch * k, -1)
                hidden = self.decoder(inputs.repeat_interleave(k, 0), flat).view(batch, k, inputs.shape[1], -1)
                logits = self.head(hidden, zs, lift)
            elif self.head.invlip is not None:
                logits = self.head.add_latent(base, shared, zs, lift)
            else:
                logits = base
            yield logits.expand(batch, k, *logits.shape[2:])

    def prefix_logits(self, input_ids: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Teacher-forced next-token logits: (B, T) ``<bos> ... <eos>`` ids and (B, d) z -> (B, T-1, V);
        (B, K, d) z -> (B, K, T-1, V), with the decoder run once when z is not in its recurrence."""
        inputs = input_ids[:, :-1]
        if z is not None and z.dim() == 3:
            return torch.cat(list(self._logits_per_sample(inputs, z, z.shape[1])), dim=1)
        return self.head(self.decoder(inputs, z), z)
