"""A frozen pretrained decoder's states, computed once per corpus and read in every epoch.

With a frozen LM and a latent path that leaves the LM alone (``invlip``, ``none``), the
states h_t a sentence gives the LM never change during training: the LM is a fixed
function of the prefix. They are computed once per split and stored (bfloat16, one flat
``(tokens, H)`` array with where each sentence starts), and every epoch reads them instead
of running the LM, so training costs the encoder and the head.

The storage is the data layer's cache (:mod:`textvae.data.cache`): an entry of kind
``lm-states`` keyed by the LM's weights fingerprint, its tokenizer, the states' width and
dtype, and a digest of the split's token ids (which covers the corpus, the tokenizer and
the length policy). It is built atomically, validated when opened (a damaged entry is
reported in one line and rebuilt), and read with positioned reads, so a process holds only
the batches it reads.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from textvae.data.batching import Collator, evaluation_order
from textvae.data.cache import Entry, EntryWriter, cache_root, get_or_build
from textvae.data.tokenized import TokenRows, as_token_rows
from textvae.models import TextVAEModel

KIND = "lm-states"
VERSION = 1


def can_cache(model: TextVAEModel, word_dropout: float) -> bool:
    """Whether ``model``'s decoder states depend on the prefix alone: a frozen pretrained LM,
    z outside it, and no word dropout changing its inputs."""
    config = model.config
    return (config.decoder_type == "pretrained" and config.decoder_trainable == "frozen"
            and not model.decoder.uses_latent and word_dropout == 0)


def cache_inputs(model: TextVAEModel, rows: TokenRows) -> dict[str, Any]:
    """What the states depend on; their digest names the cache entry."""
    config, tokenizer = model.config, model.tokenizer
    vocabulary = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest() if tokenizer else None
    return {"kind": KIND, "version": VERSION, "lm": config.decoder_fingerprint, "lm_name": config.decoder_name_or_path,
            "tokenizer": vocabulary, "width": model.decoder.output_size, "dtype": "bfloat16", "ids": rows.digest()}


class StateCache:
    """The cached states of one split: :meth:`features` gives a batch's (B, T - 1, H) states."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.states = entry.rows("states")  # (tokens, H) bf16 bits as uint16
        self.starts, self.lengths = entry.array("starts"), entry.array("lengths")

    @property
    def directory(self) -> Path:
        return self.entry.path

    @property
    def built(self) -> bool:
        return self.entry.built_in_s is not None

    def features(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Each sentence's states, right-padded with zeros (what padded positions hold does not
        matter: their predictions are masked)."""
        with warnings.catch_warnings():  # read-only buffers: nothing here writes to them
            warnings.simplefilter("ignore", UserWarning)
            rows = [torch.from_numpy(self.states[int(self.starts[i]) : int(self.starts[i] + self.lengths[i])])
                    .view(torch.bfloat16) for i in indices]
        return {"decoder_states": torch.nn.utils.rnn.pad_sequence(rows, batch_first=True).float()}


def open_or_build(model: TextVAEModel, ids: Sequence[Sequence[int]] | TokenRows, name: str,
                  root: str | Path | None = None, batch_size: int = 32, progress: bool = True) -> StateCache:
    """The states of ``ids`` (split ``name``) in the cache under ``root`` (default: the data
    cache's root): opened when there and sound, else computed now."""
    rows = as_token_rows(ids)

    def build(writer: EntryWriter) -> dict[str, Any]:
        return _build(model, rows, name, writer, batch_size, progress)

    return StateCache(get_or_build(cache_root(root), KIND, cache_inputs(model, rows), build))


@torch.no_grad()
def _build(model: TextVAEModel, rows: TokenRows, name: str, writer: EntryWriter, batch_size: int,
           progress: bool) -> dict[str, Any]:
    """Run the LM once over every sentence (longest batches first, the evaluation order) and
    append its states; each sentence's start is recorded, since the order is not the split's."""
    lengths = np.asarray(rows.lengths, dtype=np.int64) - 1  # decoder inputs: all but EOS
    starts = np.zeros(len(rows), dtype=np.int64)
    written = 0
    was_training = model.training
    model.eval()
    collate = Collator(model.config.pad_token_id)
    bar = tqdm(total=len(rows), desc=f"LM states ({name})", unit="sent", disable=not progress, file=sys.stderr)
    use_autocast = model.device.type == "cuda"
    for batch in evaluation_order(rows.lengths, batch_size):
        inputs = collate(rows.gather(batch))["input_ids"][:, :-1].to(model.device)
        with torch.autocast(device_type=model.device.type, dtype=torch.bfloat16, enabled=use_autocast):
            hidden = model.decoder(inputs, None).to(torch.bfloat16).cpu()
        for row, i in enumerate(batch):
            starts[i] = written
            writer.append("states", hidden[row, : lengths[i]].view(torch.uint16).numpy())
            written += int(lengths[i])
        bar.update(len(batch))
    bar.close()
    model.train(was_training)
    writer.append("starts", starts)
    writer.append("lengths", lengths)
    return {"split": name, "sentences": len(rows), "tokens": written}
