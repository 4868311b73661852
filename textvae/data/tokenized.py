"""Tokenised sentences as flat arrays: encoded once from a stream, kept in the cache, read by index.

A split is three arrays: ``ids`` (every sentence's token ids, end to end), ``offsets``
(sentence ``i`` is ``ids[offsets[i]:offsets[i + 1]]``) and ``lengths``; plus ``lines``,
the source line of each sentence (for reports and to align the synthetic corpus's
factors after the length policy dropped some). :class:`TokenRows` reads them by index,
so a memory-mapped corpus of any size costs only the pages its batches touch.

:func:`encode_stream` fills those arrays from a :class:`~textvae.data.reading.SentenceStream`
chunk by chunk with the tokenizer's Rust batch encoder, applying the length policy as it
goes. Nothing here assumes particular special-token ids: the end-of-sentence id and the
number of tokens the tokenizer adds come from the tokenizer.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from textvae.data.cache import ArrayFile, EntryWriter
from textvae.data.reading import SentenceStream


class TokenRows(Sequence):
    """Sentences of token ids held flat: row ``i`` is ``ids[offsets[i]:offsets[i + 1]]``.

    ``ids`` and ``offsets`` are arrays, or :class:`~textvae.data.cache.ArrayFile` readers of
    a cache entry (a batch then costs two positioned reads per sentence and no memory).
    Indexing gives a list of ints, as the id lists of the tokenizer would be; :attr:`lengths`
    is an array, so samplers never walk the rows. Two ``TokenRows`` are equal when they hold
    the same rows.
    """

    def __init__(self, ids: np.ndarray | ArrayFile, offsets: np.ndarray | ArrayFile,
                 lengths: np.ndarray | None = None) -> None:
        self.ids, self.offsets = ids, offsets
        self.lengths = np.diff(offsets[:]) if lengths is None else lengths

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> TokenRows:
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(offsets[-1]))
        return cls(ids, offsets, lengths)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> list[int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        start, stop = self.offsets[index % len(self) : index % len(self) + 2].tolist()
        return self.ids[start:stop].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return (self[i] for i in range(len(self)))

    def digest(self, block: int = 1 << 22) -> str:
        """SHA256 of the rows (ids and offsets as int64, read in blocks): what identifies the
        data a run saw, without walking the sentences one by one."""
        digest = hashlib.sha256()
        for array in (self.offsets, self.ids):
            total = len(self.offsets) if array is self.offsets else int(self.offsets[-1])
            for start in range(0, total, block):
                digest.update(np.asarray(array[start : min(start + block, total)], dtype=np.int64).tobytes())
            digest.update(b"|")
        return digest.hexdigest()

    def gather(self, indices: Sequence[int]) -> list[list[int]]:
        """Rows ``indices`` (a batch)."""
        return [self[int(i)] for i in indices]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenRows):
            return NotImplemented
        return np.array_equal(self.lengths, other.lengths) and np.array_equal(self.ids[:], other.ids[:])

    __hash__ = None


def as_token_rows(ids: Sequence[Sequence[int]] | TokenRows) -> TokenRows:
    """``ids`` as :class:`TokenRows` (id lists are copied into arrays)."""
    return ids if isinstance(ids, TokenRows) else TokenRows.from_lists(ids)


# --------------------------------------------------------------------------- encoding


def encoder_of(backend: Tokenizer) -> Tokenizer:
    """A copy of ``backend`` that neither truncates nor pads: what the cache is encoded with.

    (transformers switches truncation and padding on the tokenizer it wraps per call; the
    copy is immune to that, and its JSON is what :func:`tokenizer_identity` hashes.)
    """
    encoder = Tokenizer.from_str(backend.to_str())
    encoder.no_truncation()
    encoder.no_padding()
    return encoder


def tokenizer_identity(encoder: Tokenizer, special_ids: dict[str, int | None]) -> dict[str, Any]:
    """What makes two tokenizers encode alike: a SHA256 of the serialised tokenizer and the
    special-token ids the model and the length policy use."""
    return {"sha256": hashlib.sha256(encoder.to_str().encode("utf-8")).hexdigest(), "special_ids": special_ids}


@dataclass(frozen=True)
class LengthPolicy:
    """``data.max_length`` and ``data.length_policy`` in ids.

    ``max_length`` counts the sentence's own tokens; the ``added`` ones the tokenizer puts
    around it (BOS and EOS here) come on top. Truncation keeps a final ``eos_id``.
    """

    max_length: int
    policy: str
    eos_id: int | None
    added: int

    @property
    def limit(self) -> int:
        return self.max_length + self.added

    def apply(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat ``ids`` of rows of ``lengths`` -> (ids, lengths, kept rows) under the policy."""
        long = lengths > self.limit
        if not long.any():
            return ids, lengths, np.ones(len(lengths), dtype=bool)
        if self.policy == "drop":
            return ids[np.repeat(~long, lengths)], lengths[~long], ~long
        ends = np.cumsum(lengths)
        position = np.arange(len(ids)) - np.repeat(ends - lengths, lengths)  # within the row
        keeps_eos = long & (ids[ends - 1] == self.eos_id) if self.eos_id is not None else np.zeros_like(long)
        head = np.repeat(np.where(long, self.limit - keeps_eos, lengths), lengths)
        tail = np.repeat(keeps_eos, lengths) & (position == np.repeat(lengths, lengths) - 1)
        return ids[(position < head) | tail], np.where(long, self.limit, lengths), np.ones(len(lengths), dtype=bool)


def _id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def encode_stream(writer: EntryWriter, stream: SentenceStream, encoder: Tokenizer, policy: LengthPolicy,
                  description: str = "tokenise", progress: bool = True) -> dict[str, int]:
    """Encode ``stream`` into the arrays ``ids``, ``offsets``, ``lengths`` and ``lines`` of ``writer``.

    Each chunk of the stream is one call of the Rust batch encoder (parallel over the
    sentences), its ids are copied into one array and the length policy cuts or drops
    rows there, vectorised. Returns the counts: ``lines_read``, ``blank_skipped``,
    ``truncated``, ``dropped``, ``sentences``.
    """
    dtype = _id_dtype(encoder.get_vocab_size(with_added_tokens=True))
    writer.append("offsets", np.zeros(1, dtype=np.int64))
    for name, kind in (("ids", dtype), ("lengths", np.int32), ("lines", np.int64)):
        writer.append(name, np.empty(0, dtype=kind))
    end = truncated = dropped = kept = 0
    with tqdm(desc=description, unit=" sentences", unit_scale=True, file=sys.stderr, disable=not progress,
              mininterval=1.0, leave=False) as bar:  # closed (and cleared) before any error is printed
        for sentences, numbers in stream:
            encodings = encoder.encode_batch_fast(sentences)
            lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
            ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=dtype,
                              count=int(lengths.sum()))
            truncated += int((lengths > policy.limit).sum()) if policy.policy == "truncate" else 0
            ids, lengths, keep = policy.apply(ids, lengths)
            dropped += len(keep) - len(lengths)
            kept += len(lengths)
            writer.append("ids", ids)
            writer.append("lengths", lengths.astype(np.int32))
            writer.append("offsets", end + np.cumsum(lengths))
            writer.append("lines", numbers[keep])
            end += int(lengths.sum())
            bar.update(len(sentences))
    return {"lines_read": stream.lines_read, "blank_skipped": stream.blank_skipped, "truncated": truncated,
            "dropped": dropped, "sentences": kept}
