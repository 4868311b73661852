"""Pre-norm Transformer layers with a key/value cache, shared by encoder and decoder.

Written out (rather than ``nn.TransformerEncoderLayer``) for one reason: decoding. A
causal decoder that caches each layer's keys and values (in a transformers
:class:`~transformers.Cache`, which ``generate()`` reorders for beam search) runs one
position per step; the torch layer can only re-encode the whole prefix at every step
(quadratic in the length). Attention is ``F.scaled_dot_product_attention``
(flash/memory-efficient kernels on GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Cache
from transformers.modeling_layers import GradientCheckpointingLayer

from textvae.models.configuration_textvae import TextVAEConfig


class TransformerBlock(GradientCheckpointingLayer):
    """x + Attn(LN(x)), then x + FFN(LN(x)) with a GELU feed-forward.

    A ``GradientCheckpointingLayer``: after ``model.gradient_checkpointing_enable()`` its
    activations are recomputed in the backward pass instead of kept (training only).
    """

    def __init__(self, width: int, heads: int, feed_forward: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.ff_norm = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, feed_forward), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(feed_forward, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *, causal: bool, keep: torch.Tensor | None = None,
                cache: Cache | None = None, layer_index: int = 0) -> torch.Tensor:
        """(B, T, W) -> (B, T, W).

        Args:
            causal: Position t attends to positions <= t only.
            keep: (B, S) True for keys that may be attended to (padding masks False).
            cache: Keys and values of earlier positions (incremental decoding); this layer's
                entry ``layer_index`` gains the T new positions.
        """
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.update(k, v, layer_index)  # (B, heads, S, head_dim), earlier positions first
        past = k.shape[2] - length
        mask = None if keep is None else keep[:, None, None, :]  # (B, 1, 1, S)
        is_causal = causal and length > 1
        if is_causal and past:  # T new positions after `past` cached ones: SDPA's is_causal aligns them wrongly
            mask = torch.ones(length, past + length, dtype=torch.bool, device=x.device).tril(past)
            is_causal = False
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0, is_causal=is_causal,
        )
        x = x + self.dropout(self.attn_out(attended.transpose(1, 2).reshape(batch, length, width)))
        return x + self.dropout(self.ff(self.ff_norm(x)))


class TransformerStack(nn.Module):
    """``num_layers`` :class:`TransformerBlock` s and a final LayerNorm."""

    def __init__(self, config: TextVAEConfig, num_layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                             config.dropout_input)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, x: torch.Tensor, *, causal: bool, keep: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(B, T, W) -> normalised (B, T, W) outputs; ``cache`` (one entry per block) is updated in place."""
        for index, block in enumerate(self.blocks):
            x = block(x, causal=causal, keep=keep, cache=cache, layer_index=index)
        return self.norm(x)
