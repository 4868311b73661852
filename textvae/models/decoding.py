"""Batched decoding from latent codes: greedy, sampling and beam search.

Each function drives ``model.next_token_logits(tokens, z, state, lift)`` one step at a
time for a whole batch, stops a row at ``<eos>`` and returns token ids without BOS/EOS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from textvae.errors import TextVAEError

if TYPE_CHECKING:
    from textvae.models.modeling_textvae import TextVAEModel


def _trim(rows: torch.Tensor, eos_id: int, max_length: int) -> list[list[int]]:
    """(B, T) generated ids -> lists cut before the first EOS, at most ``max_length`` tokens.

    Decoding runs ``max_length + 1`` steps so that a ``max_length``-word sentence can end
    with EOS; a row that never emitted EOS has one token too many, cut here.
    """
    out = []
    for row in rows.tolist():
        out.append(row[: row.index(eos_id)] if eos_id in row else row[:max_length])
    return out


@torch.no_grad()
def greedy_or_sample(
    model: TextVAEModel,
    z: torch.Tensor,
    max_length: int,
    sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Greedy decoding (``sample=False``) or ancestral sampling with temperature/top-p."""
    config = model.config
    batch = z.shape[0]
    lift = model.head.lift()
    tokens = torch.full((batch,), config.bos_token_id, dtype=torch.long, device=z.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=z.device)
    state, generated = None, []
    for _ in range(max_length + 1):
        logits, state = model.next_token_logits(tokens, z, state, lift)
        if sample:
            probs = torch.softmax(logits.float() / max(temperature, 1e-6), dim=-1)
            if top_p < 1.0:
                probs = _top_p_filter(probs, top_p)
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            tokens = logits.argmax(dim=-1)
        tokens = tokens.masked_fill(finished, config.eos_token_id)
        generated.append(tokens)
        finished |= tokens == config.eos_token_id
        if bool(finished.all()):
            break
    return _trim(torch.stack(generated, dim=1), config.eos_token_id, max_length)


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches ``top_p`` (nucleus)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return filtered / filtered.sum(dim=-1, keepdim=True)


@torch.no_grad()
def beam_search(
    model: TextVAEModel, z: torch.Tensor, max_length: int, beam_size: int = 5, length_penalty: float = 1.0
) -> list[list[int]]:
    """Batched beam search; hypotheses are ranked by log-probability / length**length_penalty."""
    config = model.config
    batch, vocab = z.shape[0], config.vocab_size
    lift = model.head.lift()
    zb = z.repeat_interleave(beam_size, dim=0)  # (B*W, d)
    tokens = torch.full((batch * beam_size,), config.bos_token_id, dtype=torch.long, device=z.device)
    scores = torch.full((batch, beam_size), float("-inf"), device=z.device)
    scores[:, 0] = 0.0  # all beams start identical: keep one alive
    finished = torch.zeros(batch, beam_size, dtype=torch.bool, device=z.device)
    lengths = torch.zeros(batch, beam_size, device=z.device)
    history = torch.empty(batch, beam_size, 0, dtype=torch.long, device=z.device)
    state = None
    for _ in range(max_length + 1):
        logits, state = model.next_token_logits(tokens, zb, state, lift)
        logp = torch.log_softmax(logits.float(), dim=-1).view(batch, beam_size, vocab)
        # A finished beam may only continue with EOS, at no cost.
        eos_only = torch.full_like(logp[0, 0], float("-inf"))
        eos_only[config.eos_token_id] = 0.0
        logp = torch.where(finished.unsqueeze(-1), eos_only, logp)
        candidates = (scores.unsqueeze(-1) + logp).view(batch, -1)  # (B, W*V)
        scores, flat = candidates.topk(beam_size, dim=-1)
        beam, tokens2d = flat // vocab, flat % vocab
        finished = finished.gather(1, beam)
        lengths = lengths.gather(1, beam) + (~finished).float()
        history = torch.cat([history.gather(1, beam.unsqueeze(-1).expand_as(history)), tokens2d.unsqueeze(-1)], dim=-1)
        finished |= tokens2d == config.eos_token_id
        index = (beam + torch.arange(batch, device=z.device).unsqueeze(1) * beam_size).view(-1)
        state = model.decoder.reorder_state(state, index)
        tokens = tokens2d.view(-1)
        if bool(finished.all()):
            break
    normalised = scores / lengths.clamp_min(1.0).pow(length_penalty)
    best = normalised.argmax(dim=-1)
    return _trim(history[torch.arange(batch, device=z.device), best], config.eos_token_id, max_length)


def decode_latents(
    model: TextVAEModel, z: torch.Tensor, strategy: str = "greedy", max_length: int = 64, **options: Any
) -> list[list[int]]:
    """Dispatch on ``strategy``: ``greedy``, ``sample`` or ``beam``."""
    positions = model.config.max_position_embeddings
    if model.config.decoder_type == "transformer" and max_length + 1 > positions:
        raise TextVAEError(f"--max-length {max_length}: the Transformer decoder has {positions} positions "
                           f"(BOS and at most {positions - 1} tokens)")
    if strategy == "greedy":
        return greedy_or_sample(model, z, max_length)
    if strategy == "sample":
        return greedy_or_sample(model, z, max_length, sample=True, **options)
    if strategy == "beam":
        return beam_search(model, z, max_length, **options)
    raise ValueError(f"unknown decoding strategy {strategy!r} (greedy, sample, beam)")
