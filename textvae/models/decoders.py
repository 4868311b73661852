"""Autoregressive decoders and the output head that brings z into every step.

A decoder turns the shifted sentence (BOS w_1 ... w_n) into states h_t; the
:class:`OutputHead` turns (h_t, z) into next-token logits. Where z enters depends on
``config.latent_path``:

* ``none``: nowhere (a language model).
* ``concat``: z initialises the LSTM state and is appended to every input embedding
  (Transformer: projected and added to every input) -- Bowman et al. 2016, He et al. 2019.
* ``invlip``: inside the head, ``logits_t = W h_t + f([P h_t; z])`` with ``f`` an
  :class:`~textvae.models.invlip.InverseLipschitzMap` whose lift is orthogonal to the
  all-ones vector, so for any fixed state h_t:
  ``||center(logits_t(z1) - logits_t(z2))|| >= L ||z1 - z2||``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Cache, DynamicCache

from textvae.errors import TextVAEError
from textvae.models.configuration_textvae import TextVAEConfig
from textvae.models.invlip import InverseLipschitzMap
from textvae.models.transformer import TransformerStack


def latent_feeds_inputs(config: TextVAEConfig) -> bool:
    """Whether z enters the decoder's recurrence/attention (and not only its head)."""
    return config.latent_path == "concat"


class LSTMState(Cache):
    """The LSTM decoder's state ``(h, c)``, each (layers, B, H), as a transformers :class:`~transformers.Cache`.

    ``generate()`` carries a model's cache from step to step and reorders it for beam
    search; an LSTM's whole past is its state, so that is all this cache holds. It has no
    per-position entries, so generate counts no cached positions (``get_seq_length`` is 0)
    and, with a cache, passes only the newest token.
    """

    def __init__(self) -> None:
        super().__init__(layers=[])
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.state is not None:
            self.state = tuple(s.index_select(1, beam_idx.to(s.device)) for s in self.state)


class LSTMDecoder(nn.Module):
    def __init__(self, config: TextVAEConfig, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout_input)
        self.uses_latent = latent_feeds_inputs(config)
        extra = config.latent_size if self.uses_latent else 0
        self.lstm = nn.LSTM(config.embedding_size + extra, config.hidden_size, config.decoder_layers, batch_first=True)
        # He et al. 2019: c_0 = W z, h_0 = tanh(c_0).
        self.init_state = nn.Linear(config.latent_size, config.hidden_size * config.decoder_layers) if self.uses_latent else None

    def initial_state(self, z: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.init_state is None:
            return None
        c0 = self.init_state(z).view(z.shape[0], self.lstm.num_layers, -1).transpose(0, 1).contiguous()
        return torch.tanh(c0), c0

    def _inputs(self, input_ids: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        x = self.dropout(self.embedding(input_ids))  # (B, T, E)
        if self.uses_latent:
            x = torch.cat([x, z.unsqueeze(1).expand(-1, x.shape[1], -1).to(x.dtype)], dim=-1)
        return x

    @staticmethod
    def new_cache() -> LSTMState:
        return LSTMState()

    def forward(self, input_ids: torch.Tensor, z: torch.Tensor | None, cache: LSTMState | None = None) -> torch.Tensor:
        """(B, T) ids, (B, d) z -> (B, T, H) states. Right padding never affects earlier positions.

        With ``cache`` the tokens continue from its state (or start from z's when it is
        empty), and the state after them is stored back.
        """
        state = cache.state if cache is not None and cache.state is not None else self.initial_state(z)
        out, state = self.lstm(self._inputs(input_ids, z), state)
        if cache is not None:
            cache.state = state
        return out


class TransformerDecoder(nn.Module):
    """Causal pre-norm Transformer (SDPA attention); decoding steps reuse cached keys/values."""

    def __init__(self, config: TextVAEConfig, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding
        self.input_proj = (
            nn.Linear(config.embedding_size, config.hidden_size, bias=False)
            if config.embedding_size != config.hidden_size
            else nn.Identity()
        )
        self.positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout_input)
        self.uses_latent = latent_feeds_inputs(config)
        self.latent_proj = nn.Linear(config.latent_size, config.hidden_size) if self.uses_latent else None
        self.layers = TransformerStack(config, config.decoder_layers)

    def _inputs(self, input_ids: torch.Tensor, z: torch.Tensor | None, start: int) -> torch.Tensor:
        """(B, T) ids at positions start.. -> (B, T, H) input vectors."""
        end, limit = start + input_ids.shape[1], self.positions.num_embeddings
        if end > limit:
            raise TextVAEError(f"the Transformer decoder has {limit} positions (BOS and at most {limit - 1} "
                               f"tokens); asked for {end}")
        positions = torch.arange(start, end, device=input_ids.device)
        x = self.input_proj(self.embedding(input_ids)) + self.positions(positions)
        if self.uses_latent:
            x = x + self.latent_proj(z).unsqueeze(1)
        return self.dropout(x)

    @staticmethod
    def new_cache() -> DynamicCache:
        return DynamicCache()

    def forward(self, input_ids: torch.Tensor, z: torch.Tensor | None, cache: Cache | None = None) -> torch.Tensor:
        """(B, T) ids, (B, d) z -> (B, T, H). Causal, so right padding changes nothing before it.

        With ``cache`` the tokens come after the positions it holds, and their keys and
        values are appended to it.
        """
        start = cache.get_seq_length() if cache is not None else 0
        return self.layers(self._inputs(input_ids, z, start), causal=True, cache=cache)


DECODER_CLASSES = {"lstm": LSTMDecoder, "transformer": TransformerDecoder}


class OutputHead(nn.Module):
    """Decoder states (and z) -> next-token logits, with the ``invlip`` map inside.

    Args:
        config: The model's config.
        state_size: Width H of the decoder states (the LM's width for a pretrained decoder).
        output_layer: The decoder's own output layer W (a pretrained LM's ``lm_head``), used
            instead of a new one. It stays the decoder's module: the head only calls it.
    """

    def __init__(self, config: TextVAEConfig, state_size: int | None = None, output_layer: nn.Module | None = None):
        super().__init__()
        state_size = config.hidden_size if state_size is None else state_size
        self.dropout = nn.Dropout(config.dropout_output)
        tied = config.tie_word_embeddings
        # Tied: project to the embedding width; TextVAEModel ties `output.weight` to the
        # decoder's input embedding (its `_tied_weights_keys`).
        self.proj = (
            nn.Linear(state_size, config.embedding_size, bias=False)
            if tied and state_size != config.embedding_size
            else nn.Identity()
        )
        # A tuple hides a borrowed layer from module registration (and the state dict).
        self._borrowed = (output_layer,) if output_layer is not None else ()
        if output_layer is None:
            self.output = nn.Linear(config.embedding_size if tied else state_size, config.vocab_size)
        # z's own bias on every step's logits: which words the sentence has (their order is the decoder's).
        self.latent_logits = (nn.Linear(config.latent_size, config.vocab_size, bias=False)
                              if config.latent_logits else None)
        self.invlip = None
        self.output_lift = config.invlip_lift == "output_whitened"
        if config.latent_path == "invlip":
            self.state_proj = nn.Linear(state_size, config.invlip_state_size)
            self.state_in_lift = config.invlip_state_in_lift
            context = 0 if self.state_in_lift else config.invlip_state_size
            self.invlip = InverseLipschitzMap(
                config.latent_size + (config.invlip_state_size if self.state_in_lift else 0),
                config.vocab_size,
                lipschitz=config.lipschitz,
                hidden_size=config.icnn_hidden_size,
                num_layers=config.icnn_layers,
                center=True,
                context_features=context,
                directions_of=self.output_layer().weight if self.output_lift else None,
            )

    def output_layer(self) -> nn.Module:
        """W: the head's own output layer, or the one borrowed from the decoder."""
        return self._borrowed[0] if self._borrowed else self.output

    def lift(self) -> torch.Tensor | None:
        """The ``invlip`` lift B, computed once for callers that evaluate the head many times
        (None when there is no map)."""
        if self.invlip is None:
            return None
        return self.invlip.lift_weight(self.output_layer().weight if self.output_lift else None)

    def base_logits(self, h: torch.Tensor) -> torch.Tensor:
        """The part of the logits that does not see z directly: (..., H) -> (..., V)."""
        return self.output_layer()(self.proj(self.dropout(h)))

    def add_latent(self, base: torch.Tensor, h: torch.Tensor, z: torch.Tensor,
                   lift: torch.Tensor | None = None) -> torch.Tensor:
        """``base`` logits plus f([P h; z]) for ``invlip``.

        Args:
            base: (..., T, V) :meth:`base_logits` of ``h``.
            h: (..., T, H) decoder states; ``z`` (..., d). Leading dims broadcast, so one
                prefix (B, 1, T, .) can be scored under K latents (B, K, d).
            lift: :meth:`lift`, when the caller has it already.
        """
        state = self.state_proj(self.dropout(h))  # (..., T, s)
        z = z.unsqueeze(-2).to(state.dtype)  # (..., 1, d)
        if self.state_in_lift:  # the map's input and output are [P h; z]
            shape = torch.broadcast_shapes(state.shape[:-1], z.shape[:-1])
            u, context = torch.cat([state.expand(*shape, -1), z.expand(*shape, -1)], dim=-1), None
        else:  # only z is mapped; P h conditions psi
            u, context = z, state
        return base + self.invlip(u, self.lift() if lift is None else lift, context)

    def forward(self, h: torch.Tensor, z: torch.Tensor | None, lift: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.base_logits(h)
        if self.latent_logits is not None:
            logits = logits + self.latent_logits(z.to(logits.dtype)).unsqueeze(-2)
        if self.invlip is not None:
            logits = self.add_latent(logits, h, z, lift)
        return logits
