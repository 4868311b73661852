"""Text in, text out: encode, decode, reconstruct, sample and interpolate.

Mixed into :class:`~textvae.models.TextVAEModel`; uses ``self.tokenizer`` (a
``TokenizersBackend`` attached by ``from_pretrained`` or the trainer). Decoding is
transformers' ``generate(latents=z, ...)``: every method here takes its keyword options
(``do_sample``, ``top_p``, ``temperature``, ``num_beams``, ``logits_processor``, a
``generation_config``, ...) and only adds the sentence-level bookkeeping.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from textvae.errors import InvalidArgument, TextVAEError
from textvae.models.memory import memory_budget, require_memory
from textvae.padding import pad_ids

# Every line break of str.splitlines, with the blanks around it.
_LINE_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")
# Float32 copies of a row's next-token scores that generate() holds at once (logits, log-probabilities,
# processed scores, probabilities, beam search's flattened top-k input), and int64 copies of its
# ids (beam search keeps several (beams, length) buffers): the estimate errs on the large side.
_SCORE_COPIES, _ID_COPIES = 8, 4


class FiniteScores(LogitsProcessor):
    """Refuses to go on decoding from NaN or +inf scores.

    Argmax and sampling from such scores pick a token anyway (an empty line, or torch's
    multinomial failing), so a code or an option that overflows the decoder (a huge edit
    strength, a tiny repetition penalty) would print nothing and exit 0. -inf is a ruled-out
    token (n-gram bans, nucleus filtering) and passes.
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top = float(scores.max())  # NaN propagates through max
        if math.isnan(top) or top == math.inf:
            raise TextVAEError(f"decoding gave non-finite scores ({top}) at token {input_ids.shape[1]}: the codes "
                               "or the decoding options overflow the decoder")
        return scores


def interpolation_path(a: torch.Tensor, b: torch.Tensor, steps: int, path: str = "lerp") -> torch.Tensor:
    """``steps`` points from a to b inclusive, (d,) each -> (steps, d).

    ``slerp`` follows the great circle between the directions (and interpolates the
    norms linearly), which keeps intermediate points at a typical distance from the
    origin under a Gaussian prior; ``lerp`` is the straight line.
    """
    if steps < 2:
        raise InvalidArgument("steps", f"must be at least 2, got {steps}")
    # The path and the temporaries of its arithmetic: three (steps, d) tensors.
    require_memory("steps", 3 * steps * a.numel() * a.element_size(), a.device, "ask for fewer points")
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

        The rows go to ``generate`` in as few calls as :func:`memory_budget` allows (one, unless
        the batch is large), so any number of rows can be decoded; sampling draws one random
        stream across the calls.

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
        if not bool(torch.isfinite(z).all()):
            raise TextVAEError("the codes to decode hold NaN or infinite values")
        rows = self.rows_per_generate(max_length, generate_kwargs.get("num_beams") or 1)
        # The one-token prompt (BOS) is real: said explicitly, since with a pretrained tokenizer that
        # pads with EOS (or BOS) generate could not tell it from padding.
        mask = generate_kwargs.pop("attention_mask", None)
        mask = torch.ones(z.shape[0], 1, dtype=torch.long, device=self.device) if mask is None else mask
        processors = LogitsProcessorList([*(generate_kwargs.pop("logits_processor", None) or []), FiniteScores()])
        out: list[list[int]] = []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, z.shape[0], rows):
                sequences = self.generate(latents=z[start : start + rows].to(self.device),
                                          attention_mask=mask[start : start + rows], max_new_tokens=max_length + 1,
                                          logits_processor=processors, **generate_kwargs)
                out += trim(sequences[:, 1:], self.config.eos_token_id, max_length)
        return out

    def decode_bytes_per_row(self, max_length: int, num_beams: int = 1) -> int:
        """Bytes ``generate`` is estimated to hold at its peak for one row of z: per beam, the
        next-token scores and the ids and decoder state of ``max_length`` tokens, BOS and EOS."""
        scores = _SCORE_COPIES * 4 * self.config.vocab_size
        per_token = _ID_COPIES * 8 + self._state_bytes_per_token()
        return num_beams * (scores + (max_length + 2) * per_token)

    def rows_per_generate(self, max_length: int, num_beams: int = 1) -> int:
        """How many rows one ``generate`` call may decode within :func:`memory_budget`; a single row
        that cannot fit is refused, naming ``max_length`` (or ``num_beams``) and the most that fit."""
        budget = memory_budget(self.device)
        per_row = self.decode_bytes_per_row(max_length, num_beams)
        shortest = self.decode_bytes_per_row(1, num_beams)
        if shortest > budget:
            require_memory("num_beams", per_row, self.device,
                           f"{budget // self.decode_bytes_per_row(1):,} beams fit")
        per_token = self.decode_bytes_per_row(2, num_beams) - shortest
        longest = (budget - shortest) // per_token + 1
        require_memory("max_length", per_row, self.device, f"at most {longest:,} tokens fit with {num_beams} beam(s)")
        return max(1, budget // per_row)

    def _state_bytes_per_token(self) -> int:
        """Bytes each decoded token adds to a row's decoder state: a Transformer's keys and values
        (float32, all heads: an upper bound); an LSTM's state does not grow."""
        config = self.config
        if config.decoder_type == "lstm":
            return 0
        if config.decoder_type == "transformer":
            layers, width = config.decoder_layers, config.hidden_size
        else:
            backbone = self.decoder.lm.config
            layers, width = backbone.num_hidden_layers, backbone.hidden_size
        return 2 * layers * width * 4

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
        require_memory("n", n * self.config.latent_size * 4, torch.device("cpu"), "draw fewer codes at a time")
        z = torch.randn(n, self.config.latent_size, generator=generator).to(self.device)
        return self.decode(z, **options)

    def interpolate(self, a: str, b: str, steps: int = 8, path: str = "lerp", **options: Any) -> list[str]:
        """Decode ``steps`` points between the posterior means of two sentences, ends included."""
        mu, _ = self.encode([a, b])
        return self.decode(interpolation_path(mu[0], mu[1], steps, path), **options)
