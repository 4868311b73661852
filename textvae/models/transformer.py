"""Pre-norm Transformer layers with a key/value cache, shared by encoder and decoder.

Written out (rather than ``nn.TransformerEncoderLayer``) for one reason: decoding. A
causal decoder that caches each layer's keys and values runs one position per step; the
torch layer can only re-encode the whole prefix at every step (quadratic in the length).
Attention is ``F.scaled_dot_product_attention`` (flash/memory-efficient kernels on GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from textvae.models.configuration_textvae import TextVAEConfig

KVCache = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer, keys and values of the positions seen so far, each (B, heads, S, head_dim)."""


class TransformerBlock(nn.Module):
    """x + Attn(LN(x)), then x + FFN(LN(x)) with a GELU feed-forward."""

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
                cache: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(B, T, W) -> (B, T, W) and this layer's keys/values including the T new positions.

        Args:
            causal: Position t attends to positions <= t only.
            keep: (B, S) True for keys that may be attended to (padding masks False).
            cache: Keys and values of S - T earlier positions (incremental decoding; the
                new positions come after all of them, so causality needs no mask).
        """
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        mask = None if keep is None else keep[:, None, None, :]  # (B, 1, 1, S)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0,
            is_causal=causal and cache is None and length > 1,
        )
        x = x + self.dropout(self.attn_out(attended.transpose(1, 2).reshape(batch, length, width)))
        x = x + self.dropout(self.ff(self.ff_norm(x)))
        return x, (k, v)


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
                cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """(B, T, W) -> normalised (B, T, W) outputs and the updated cache."""
        new_cache = []
        for index, block in enumerate(self.blocks):
            x, kv = block(x, causal=causal, keep=keep, cache=None if cache is None else cache[index])
            new_cache.append(kv)
        return self.norm(x), new_cache
