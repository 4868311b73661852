"""Encoders: token ids -> parameters (mu, log sigma^2) of the Gaussian posterior q(z|x)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from textvae.models.configuration_textvae import TextVAEConfig, own_padding_idx
from textvae.models.pretrained import PretrainedEncoder
from textvae.models.transformer import TransformerStack


class LSTMEncoder(nn.Module):
    """(Bi)LSTM over the sentence; the final states of the last layer are pooled.

    A bidirectional encoder packs the sequences so that padding never reaches the
    recurrence (its backward LSTM would otherwise start on pad tokens). A unidirectional
    one runs on the padded batch and takes the top layer's output at each sentence's last
    real token: the same state, since right padding comes after it, but through the fused
    whole-sequence LSTM kernel (on CPU the packed path runs step by step; it made a
    PTB-sized training step ~7% slower, benchmarks/README.md).
    """

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=own_padding_idx(config))
        self.lstm = nn.LSTM(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.encoder_layers,
            batch_first=True,
            bidirectional=config.encoder_bidirectional,
        )
        self.output_size = config.hidden_size * (2 if config.encoder_bidirectional else 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and mask -> (B, output_size) pooled state."""
        if not self.lstm.bidirectional:
            out, _ = self.lstm(self.embedding(input_ids))  # (B, T, H), top layer
            last = attention_mask.sum(dim=1) - 1
            return out[torch.arange(out.shape[0], device=out.device), last]
        lengths = attention_mask.sum(dim=1).cpu()
        packed = pack_padded_sequence(self.embedding(input_ids), lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n: (layers * 2, B, H)
        return torch.cat([h_n[-2], h_n[-1]], dim=-1)  # the top layer's forward and backward states


class TransformerEncoder(nn.Module):
    """Pre-norm Transformer encoder (SDPA attention) with masked mean pooling."""

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=own_padding_idx(config))
        self.positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = TransformerStack(config, config.encoder_layers)
        self.output_size = config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and mask -> (B, hidden) mean of the non-pad outputs."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embedding(input_ids) + self.positions(positions)
        x = self.layers(x, causal=False, keep=attention_mask.bool())
        weights = attention_mask.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


ENCODER_CLASSES = {"lstm": LSTMEncoder, "transformer": TransformerEncoder, "pretrained": PretrainedEncoder}


class FixedScaleBatchNorm(nn.Module):
    """BN-VAE's normalisation of mu (Zhu et al. 2020): batch-normalise, scale by a fixed gamma, learnt shift.

    In training mode every dimension of ``mu`` has batch mean ``shift_j`` and batch variance
    ``gamma^2 v_j / (v_j + eps)`` (``v_j``: the batch variance before normalising). Since
    ``sigma^2 - log sigma^2 - 1 >= 0``, the batch-mean KL is then at least
    ``sum_j (gamma^2 v_j / (v_j + eps) + shift_j^2) / 2`` -- about ``d gamma^2 / 2`` -- whatever
    the encoder's weights: the posterior cannot collapse onto the prior. gamma is a plain
    float, not a parameter, so neither the optimiser nor an initialiser can shrink it. In
    eval mode the running statistics are used and the bound holds only on average.

    ``eps`` is far below BatchNorm's usual 1e-5: at initialisation the encoder's mu has a
    batch variance of 1e-7 to 1e-5 per dimension, and with eps = 1e-5 the factor
    ``v_j / (v_j + eps)`` -- and the guaranteed KL -- would be near 0 early in training,
    exactly when posterior collapse sets in.
    """

    def __init__(self, size: int, gamma: float, momentum: float = 0.1, eps: float = 1e-10):
        super().__init__()
        self.gamma, self.momentum, self.eps = float(gamma), momentum, eps
        self.shift = nn.Parameter(torch.zeros(size))
        self.register_buffer("running_mean", torch.zeros(size))
        self.register_buffer("running_var", torch.ones(size))

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d)."""
        normalised = F.batch_norm(mu, self.running_mean, self.running_var, training=self.training,
                                  momentum=self.momentum, eps=self.eps)
        return self.gamma * normalised + self.shift


class GaussianPosterior(nn.Module):
    """Encoder + a linear layer giving mu and log sigma^2 of q(z|x) = N(mu, diag sigma^2).

    With ``config.posterior_bn_gamma`` set, mu passes through :class:`FixedScaleBatchNorm` (BN-VAE).
    """

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        self.encoder = ENCODER_CLASSES[config.encoder_type](config)
        self.to_params = nn.Linear(self.encoder.output_size, 2 * config.latent_size)
        gamma = config.posterior_bn_gamma
        self.mu_norm = nn.Identity() if gamma is None else FixedScaleBatchNorm(config.latent_size, gamma)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_params(self.encoder(input_ids, attention_mask)).chunk(2, dim=-1)
        return self.mu_norm(mu), logvar
