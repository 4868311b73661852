"""Text in, text out: encode, decode, reconstruct, sample and interpolate.

Mixed into :class:`~textvae.models.TextVAEModel`; uses ``self.tokenizer`` (a
``TokenizersBackend`` attached by ``from_pretrained`` or the trainer). Decoding is
transformers' ``generate(latents=z, ...)``: every method here takes its keyword options
(``do_sample``, ``top_p``, ``temperature``, ``num_beams``, ``logits_processor``, a
``generation_config``, ...) and only adds the sentence-level bookkeeping.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from textvae.errors import InvalidArgument, TextVAEError
from textvae.padding import pad_ids


# Every line break of str.splitlines, with the blanks around it.
_LINE_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")


def interpolation_path(a: torch.Tensor, b: torch.Tensor, steps: int, path: str = "lerp") -> torch.Tensor:
    """``steps`` points from a to b inclusive, (d,) each -> (steps, d).

    ``slerp`` follows the great circle between the directions (and interpolates the
    norms linearly), which keeps intermediate points at a typical distance from the
    origin under a Gaussian prior; ``lerp`` is the straight line.
    """
    if steps < 2:
        raise InvalidArgument("steps", f"must be at least 2, got {steps}")
    t = torch.linspace(0.0, 1.0, steps, device=a.device, dtype=a.dtype).unsqueeze(1)
    if path == "lerp":
        return (1 - t) * a + t * b
    if path == "slerp":
        na, nb = a.norm(), b.norm()
        ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
        omega = torch.arccos((ua * ub).sum().clamp(-1 + 1e-7, 1 - 1e-7))
        direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / torch.sin(omega)
        return direction * ((1 - t) * na + t * nb)
    raise InvalidArgument("path", f"unknown path {path!r} (lerp, slerp)")


def trim(rows: torch.Tensor, eos_id: int, max_length: int) -> list[list[int]]:
    """(B, T) generated ids after BOS -> lists cut before the first EOS, at most ``max_length`` tokens.

    Decoding runs ``max_length + 1`` steps so that a ``max_length``-word sentence can end
    with EOS; a row that never emitted EOS has one token too many, cut here.
    """
    out = []
    for row in rows.tolist():
        out.append(row[: row.index(eos_id)] if eos_id in row else row[:max_length])
    return out


class TextGenerationMixin:
    """Sentence-level API on top of ``encode_ids`` and the batched decoders."""

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise TextVAEError("this model has no tokenizer attached; load it with from_pretrained from a textvae export")
        return self.tokenizer

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # Padded here, not by the tokenizer: padding=True would switch padding on in the
        # backend tokenizer for good (and save_pretrained would then write it to disk).
        ids = self._require_tokenizer()(list(texts))["input_ids"]
        positions = self.config.max_position_embeddings
        if "transformer" in (self.config.encoder_type, self.config.decoder_type):
            too_long = next((i for i, row in enumerate(ids) if len(row) > positions), None)
            if too_long is not None:
                raise TextVAEError(f"sentence {too_long} has {len(ids[too_long])} tokens with BOS/EOS; "
                                   f"the Transformer has {positions} positions")
        return {name: tensor.to(self.device) for name, tensor in pad_ids(ids, self.config.pad_token_id).items()}

    @torch.no_grad()
    def encode(self, texts_or_ids, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters (mu, logvar), each (B, d), of a list of sentences or an id batch."""
        if isinstance(texts_or_ids, str):
            texts_or_ids = [texts_or_ids]
        if isinstance(texts_or_ids, torch.Tensor):
            mask = attention_mask if attention_mask is not None else self.default_mask(texts_or_ids)
            return self.encode_ids(texts_or_ids.to(self.device), mask.to(self.device))
        return self.encode_ids(**self._tokenize(texts_or_ids))

    @torch.no_grad()
    def decode_ids(self, z: torch.Tensor, max_length: int = 64, seed: int | None = None,
                   **generate_kwargs: Any) -> list[list[int]]:
        """Token ids (no BOS/EOS) that ``generate(latents=z)`` decodes from each row of z (B, d).

        Args:
            max_length: Longest sentence in tokens, EOS not counted.
            seed: Seed the sampling (``do_sample=True``) draws from, without touching the
                global random state; None uses (and advances) it, as ``generate`` does.
            generate_kwargs: ``generate``'s own options; greedy decoding without any.
        """
        positions = self.config.max_position_embeddings
        if self.config.decoder_type == "transformer" and max_length + 1 > positions:
            raise InvalidArgument("max_length", f"{max_length} is too long: the Transformer decoder has {positions} "
                                  f"positions (BOS and at most {positions - 1} tokens)")
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            # The one-token prompt (BOS) is real: said explicitly, since with a pretrained tokenizer that
            # pads with EOS (or BOS) generate could not tell it from padding.
            generate_kwargs.setdefault("attention_mask", torch.ones(z.shape[0], 1, dtype=torch.long, device=self.device))
            sequences = self.generate(latents=z.to(self.device), max_new_tokens=max_length + 1, **generate_kwargs)
        return trim(sequences[:, 1:], self.config.eos_token_id, max_length)

    def decode(self, z: torch.Tensor, max_length: int = 64, **options: Any) -> list[str]:
        """Sentences decoded from each row of z (B, d), one line each; ``options`` as for
        :meth:`decode_ids`.

        A pretrained LM's tokens include line breaks, which no sentence of a one-per-line
        corpus holds: a break (with the blanks around it) reads as one space, so every
        command prints one line per sentence.
        """
        tokenizer = self._require_tokenizer()
        texts = tokenizer.batch_decode(self.decode_ids(z, max_length, **options), skip_special_tokens=True)
        return [_LINE_BREAKS.sub(" ", text).strip() for text in texts]

    def reconstruct(self, texts: list[str], **options: Any) -> list[str]:
        """Decode each sentence's posterior mean."""
        mu, _ = self.encode(texts)
        return self.decode(mu, **options)

    def sample(self, n: int = 10, generator: torch.Generator | None = None, **options: Any) -> list[str]:
        """Draw z ~ N(0, I) (from ``generator`` when given) and decode each."""
        z = torch.randn(n, self.config.latent_size, generator=generator).to(self.device)
        return self.decode(z, **options)

    def interpolate(self, a: str, b: str, steps: int = 8, path: str = "lerp", **options: Any) -> list[str]:
        """Decode ``steps`` points between the posterior means of two sentences, ends included."""
        mu, _ = self.encode([a, b])
        return self.decode(interpolation_path(mu[0], mu[1], steps, path), **options)
