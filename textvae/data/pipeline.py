"""From a recipe's ``data`` section to token ids: the one path trainers and evaluation take.

``prepare_data`` finds the splits (a corpus directory, a registered name or a local
Hugging Face dataset), trains or loads the tokenizer, and tokenises every split under the
length policy, reporting what it skipped, cut or dropped. Both expensive steps go
through the cache (:mod:`textvae.data.cache`): a tokenizer trained on a corpus is kept
under ``<cache>/tokenizers/<key>``, a tokenised split under ``<cache>/tokenized/<key>``,
each key a digest of what the result depends on (the source files' fingerprints, which
see every byte, the tokenizer, the length policy, the head limit). A second run
memory-maps what the first built; a changed file gets a new key, never a stale entry.
Text is streamed throughout, so a corpus may be larger than memory. Evaluation, which has the model's tokenizer
already, runs the same steps through :func:`split_sources` and :func:`tokenize_split`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TokenizersBackend

from textvae.data.cache import Entry, EntryWriter, cache_root, file_fingerprint, get_or_build
from textvae.data.config import DECODER_TOKENIZER, DataConfig
from textvae.data.corpora import resolve_corpus
from textvae.data.reading import SPLITS, SentenceStream, head, hf_split_streams
from textvae.data.synthetic import factors_path, load_factors
from textvae.data.tokenization import (
    KINDS,
    Fingerprint,
    check_fits_corpus,
    fertility,
    load_meta,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from textvae.data.tokenized import (
    LengthPolicy,
    TokenRows,
    encode_stream,
    encoder_of,
    tokenizer_identity,
)
from textvae.errors import TextVAEError

FERTILITY_SAMPLE = 2000  # training sentences that set a tokenizer's tokens-per-word
FIT_SAMPLE = 10_000  # first sentences a loaded tokenizer is checked on (does it belong to this corpus?)
CACHE_VERSION = 1  # part of every key: bump it when what the cache holds changes


@dataclass
class SplitReport:
    """What became of one split's sentences between the file and the id arrays."""

    split: str
    source: str
    lines_read: int
    blank_skipped: int
    max_length: int
    policy: str
    limited_to: int | None = None
    """The head limit (``data.max_train_lines``) when it cut the split short."""
    truncated: int = 0
    dropped: int = 0

    def summary(self) -> str:
        used = (self.limited_to or self.lines_read) - self.dropped
        notes = [f"{self.blank_skipped:,} blank lines skipped"]
        if self.limited_to is not None:
            notes.append(f"first {self.limited_to:,} of {self.lines_read:,} used (data.max_train_lines)")
        if self.policy == "truncate":
            notes.append(f"{self.truncated:,} truncated to {self.max_length} tokens")
        else:
            notes.append(f"{self.dropped:,} dropped as longer than {self.max_length} tokens")
        return f"{self.split}: {used:,} sentences from {self.source} ({'; '.join(notes)})"


@dataclass
class SplitData:
    ids: TokenRows
    """``<bos> ... <eos>`` token ids, one row per sentence, memory-mapped from the cache."""
    line_numbers: np.ndarray
    """The source line (or dataset row) of each sentence, 1-based."""
    factors: list[dict[str, Any]] | None
    """Generative factors per sentence, for corpora that ship them (the synthetic one)."""
    report: SplitReport
    cache: Entry | None = None
    """The cache entry the rows are read from."""


@dataclass
class PreparedData:
    tokenizer: TokenizersBackend
    corpus_name: str
    splits: dict[str, SplitData] = field(default_factory=dict)
    tokenizer_cache: Entry | None = None
    """The cache entry of a tokenizer trained here (``None`` when one was loaded)."""


@dataclass
class SplitSource:
    """Where one split's sentences come from, and what identifies them for the cache key."""

    split: str
    stream: SentenceStream
    identity: dict[str, Any]
    """Fingerprints of the files the sentences (and factors) are read from."""
    factors: Path | None = None
    """The synthetic corpus's ``{split}.factors.jsonl``, aligned with the text's lines."""


def split_sources(cfg: DataConfig, splits: Sequence[str]) -> tuple[str, dict[str, SplitSource]]:
    """The corpus name and where each of ``splits`` is read from (the text is not read yet;
    each file is hashed, or its hash recalled from the cache: :func:`file_fingerprint`)."""
    root = cache_root(cfg.cache_dir)
    if cfg.hf_dataset is not None:
        path = Path(cfg.hf_dataset).resolve()
        streams = hf_split_streams(cfg.hf_dataset, cfg.text_column, splits)
        files = [file_fingerprint(p, root) for p in sorted(path.rglob("*")) if p.is_file()]
        return path.name, {s: SplitSource(s, stream, {"dataset": files, "source": stream.source,
                                                      "column": cfg.text_column})
                           for s, stream in streams.items()}
    sources = {}
    for split, path in resolve_corpus(cfg.corpus, cfg.data_dir, splits).items():
        factors = factors_path(path.parent, split)
        factors = factors if factors.is_file() else None
        identity = {"file": file_fingerprint(path, root),
                    "factors": file_fingerprint(factors, root) if factors else None}
        sources[split] = SplitSource(split, SentenceStream.from_file(path), identity, factors)
    name = cfg.corpus if not Path(cfg.corpus).is_dir() else Path(cfg.corpus).resolve().name
    return name, sources


def _factors(source: SplitSource, report: SplitReport, lines: np.ndarray) -> list[dict[str, Any]] | None:
    """The factors of the kept sentences (``lines`` are their line numbers)."""
    if source.factors is None:
        return None
    factors = load_factors(source.factors.parent, source.split)
    if report.blank_skipped or len(factors) != report.lines_read:
        raise TextVAEError(f"{source.factors}: {len(factors)} rows do not match "
                           f"the {report.lines_read + report.blank_skipped} lines of {report.source}")
    return [factors[n - 1] for n in lines.tolist()]


def tokenize_split(tok: TokenizersBackend, source: SplitSource, cfg: DataConfig, *, limit: int | None = None,
                   progress: bool = True) -> SplitData:
    """Token ids of the first ``limit`` sentences of ``source`` under ``cfg``'s length policy.

    Read from the cache when an entry for this source, tokenizer, policy and limit is
    there; encoded into a new entry (streaming, with a progress bar) otherwise.
    """
    encoder = encoder_of(tok.backend_tokenizer)
    special = {"pad": tok.pad_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id, "unk": tok.unk_token_id}
    policy = LengthPolicy(cfg.max_length, cfg.length_policy, tok.eos_token_id, encoder.num_special_tokens_to_add(False))
    stream = source.stream.limited(limit)

    def build(writer: EntryWriter) -> dict[str, Any]:
        counts = encode_stream(writer, stream, encoder, policy, f"tokenise {source.split}", progress)
        if not counts["sentences"]:
            raise TextVAEError(f"data.max_length: every sentence of {stream.source} is longer than "
                               f"{cfg.max_length} tokens, so length_policy=drop leaves nothing")
        return {"source": stream.source, **counts}

    inputs = {"kind": "tokenized", "version": CACHE_VERSION, "source": source.identity,
              "tokenizer": tokenizer_identity(encoder, special), "policy": dataclasses.asdict(policy), "limit": limit}
    entry = get_or_build(cache_root(cfg.cache_dir), "tokenized", inputs, build)
    meta = entry.meta
    limited_to = limit if limit is not None and meta["lines_read"] > limit else None
    report = SplitReport(source.split, meta["source"], meta["lines_read"], meta["blank_skipped"], cfg.max_length,
                         cfg.length_policy, limited_to, meta["truncated"], meta["dropped"])
    lines = entry.array("lines")
    rows = TokenRows(entry.rows("ids"), entry.rows("offsets"), entry.array("lengths"))
    return SplitData(rows, lines, _factors(source, report, lines), report, entry)


def _train(cfg: DataConfig, corpus: str, train: SplitSource) -> tuple[Path, Entry]:
    """The tokenizer of kind ``cfg.tokenizer`` trained on the train split, from the cache or
    trained now (streaming the split once); returns its directory and cache entry."""

    def build(writer: EntryWriter) -> dict[str, Any]:
        stream = train.stream.limited(cfg.max_train_lines)
        tally = Fingerprint((sentences for sentences, _ in stream), FERTILITY_SAMPLE)
        tok = train_tokenizer(cfg.tokenizer, tally, cfg.vocab_size, cfg.min_frequency, cfg.lowercase,
                              model_max_length=cfg.max_length + 2)
        sample = tally.sample
        meta = {"kind": cfg.tokenizer, "corpus": corpus, "train_source": stream.source,
                "train_fingerprint": tally.hexdigest(), "train_lines": tally.count,
                "vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency, "lowercase": cfg.lowercase,
                "fertility": fertility([e.ids for e in tok.backend_tokenizer.encode_batch(sample)], sample)}
        save_tokenizer(tok, writer.directory / "tokenizer", meta)
        return {"source": f"{cfg.tokenizer} tokenizer of {stream.source}"}

    inputs = {"kind": "tokenizer", "version": CACHE_VERSION, "corpus": corpus, "train": train.identity,
              "max_train_lines": cfg.max_train_lines, **{key: getattr(cfg, key) for key in
                                                         ("tokenizer", "vocab_size", "min_frequency", "lowercase")}}
    entry = get_or_build(cache_root(cfg.cache_dir), "tokenizers", inputs, build)
    return entry.path / "tokenizer", entry


def _check_fits(tok: TokenizersBackend, directory: Path, meta: dict, corpus: str, source: SplitSource,
                limit: int | None) -> None:
    """Refuse a loaded tokenizer built for another corpus, judged on the split's first sentences."""
    sample = head(source.stream, min(FIT_SAMPLE, limit or FIT_SAMPLE))
    ids = [e.ids for e in tok.backend_tokenizer.encode_batch(sample)]
    check_fits_corpus(ids, sample, directory, meta, corpus, source.split)


def prepare_data(cfg: DataConfig, *, tokenizer_dir: Path | None = None, splits: Sequence[str] = SPLITS,
                 progress: bool = True, tokenizer: tuple[TokenizersBackend, dict] | None = None) -> PreparedData:
    """Tokenise ``splits`` as ``cfg`` describes, through the cache.

    When ``cfg.tokenizer`` is a kind, the tokenizer is trained on the train split (after
    ``max_train_lines``), or taken from the cache where that was done before; when it is
    a directory it is loaded and checked against the first sentences of the first
    requested split (more than 5% ``<unk>`` means it belongs to another corpus); when it is
    ``decoder``, ``tokenizer`` (a pretrained decoder's, with its metadata) is used. Either
    way it is saved to ``tokenizer_dir`` when one is given, so a run directory always holds
    the tokenizer its model was trained with.
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise TextVAEError(f"unknown split(s) {unknown or list(splits)} (use {', '.join(SPLITS)})")
    trains = cfg.tokenizer in KINDS
    needed = list(splits) if not trains or "train" in splits else ["train", *splits]
    corpus, sources = split_sources(cfg, needed)
    limits = {split: cfg.max_train_lines if split == "train" else None for split in needed}
    trained = directory = None
    if cfg.tokenizer == DECODER_TOKENIZER:
        if tokenizer is None:
            raise TextVAEError("data.tokenizer: 'decoder' is the pretrained decoder's own tokenizer, "
                               "and model.decoder_type is not pretrained")
        tok, meta = tokenizer
    else:
        if trains:
            directory, trained = _train(cfg, corpus, sources["train"])
        else:
            directory = Path(cfg.tokenizer)
            if not directory.exists():
                raise TextVAEError(f"data.tokenizer: '{cfg.tokenizer}' is neither a kind ({', '.join(KINDS)}) "
                                   f"nor an existing tokenizer directory")
        tok, meta = load_tokenizer(directory), load_meta(directory)
    tok.model_max_length = cfg.max_length + 2
    if not trains and directory is not None and meta.get("kind") != "pretrained":
        _check_fits(tok, directory, meta, corpus, sources[splits[0]], limits[splits[0]])
    prepared = PreparedData(tok, corpus, tokenizer_cache=trained)
    for split in splits:
        prepared.splits[split] = tokenize_split(tok, sources[split], cfg, limit=limits[split], progress=progress)
    if tokenizer_dir is not None and (directory is None or Path(tokenizer_dir).resolve() != directory.resolve()):
        save_tokenizer(tok, tokenizer_dir, meta)
    return prepared
