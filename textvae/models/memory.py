"""How much memory a call may ask for, and what a model's weights take, known before allocating.

A count that allocates by its value (decoded rows, beams, tokens, importance samples, a model's
widths) is held to :func:`memory_budget` first: a value that cannot fit is refused in one line
naming it, instead of the process dying in the allocator or the kernel's OOM killer.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from textvae.errors import InvalidArgument, TextVAEError

if TYPE_CHECKING:
    from textvae.models.configuration_textvae import TextVAEConfig


def memory_budget(device: torch.device) -> int:
    """Bytes one call may ask for on ``device``: what the GPU has free (its allocator's cached
    blocks included), or half a CPU machine's physical memory (the rest is the model's, the
    system's and other processes'). Counts that allocate by their value are held to this before
    anything is allocated, so a value that cannot fit is refused instead of killing the process."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def readable(size: float) -> str:
    """Bytes as people read them: ``512 KiB``, ``3.2 GiB``, ``3.7e+14 GiB``."""
    for unit, scale in (("KiB", 2**10), ("MiB", 2**20)):
        if size < 1024 * scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size / 2**30:,.1f} GiB" if size < 2**50 else f"{size / 2**30:.2g} GiB"


def require_memory(name: str, needed: int, device: torch.device, advice: str) -> None:
    """Refuse, naming the parameter ``name``, a call that would ask ``device`` for more than
    :func:`memory_budget` (``advice``: which value would fit)."""
    budget = memory_budget(device)
    if needed > budget:
        raise InvalidArgument(name, f"needs about {readable(needed)}, more than the {readable(budget)} available on "
                              f"{device.type} ({advice})")


def require_training_memory(config: TextVAEConfig) -> None:
    """Refuse a model of textvae's own networks whose training state -- weights, gradients and
    Adam's two moments, four times the weights -- cannot fit where it would train, before any of
    it is allocated. (A pretrained backbone's size is its checkpoint's.)"""
    if "pretrained" in (config.encoder_type, config.decoder_type):
        return
    weights = weight_bytes(config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if weights is None:
        raise InvalidArgument("model", "a size overflows 64 bits: lower its widths, layers or vocabulary")
    require_memory("model", 4 * weights, device, f"{readable(weights)} of weights, and as much again for their gradients and "
                   "each of Adam's two moments: lower its widths, layers or vocabulary")


def require_weight_memory(config: TextVAEConfig, source: object) -> None:
    """Refuse to load an export whose ``config.json`` asks for more memory than this machine
    has, before the model is built: its sizes are counted on the meta device. Without it an
    edited config (a hidden size of 10^5) is a multi-gigabyte allocation, or an out-of-memory
    kill, before the weights file could show the shapes are wrong."""
    weights = weight_bytes(config)
    budget = memory_budget(torch.device("cpu"))  # from_pretrained builds on the CPU first
    if weights is None or weights > budget:
        size = "more than 64 bits of bytes" if weights is None else readable(weights)
        raise TextVAEError(f"{source}: config.json describes a model of {size} of weights, more than the "
                           f"{readable(budget)} this machine can give it; not loaded (an edited or foreign config.json?)")


def weight_bytes(config: TextVAEConfig) -> int | None:
    """Bytes of the weights and buffers ``config`` asks for, counted by building the model on the
    meta device (shapes only, nothing allocated); None when a size overflows 64 bits. Not for
    pretrained backbones, which a meta build would load. The model class comes from its
    registration with ``AutoModel`` (``textvae.models``), not an import: the model imports this
    module."""
    from transformers import AutoModel

    assert "pretrained" not in (config.encoder_type, config.decoder_type), "a backbone's size is its checkpoint's"
    try:
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except (RuntimeError, TypeError, OverflowError):  # torch: "Storage size calculation overflowed"
        return None
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
