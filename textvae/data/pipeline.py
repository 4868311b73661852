"""From a recipe's ``data`` section to token ids: the one path trainers and evaluation take.

``prepare_data`` reads the splits (a corpus directory, a registered name or a local
Hugging Face dataset), trains or loads the tokenizer, encodes every split in one batch
call, applies the length policy and reports what it skipped, cut or dropped. Evaluation,
which has the model's tokenizer already, runs the same steps through :func:`read_splits`
and :func:`encode_split`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TokenizersBackend

from textvae.data.config import DataConfig
from textvae.data.corpora import SPLITS, resolve_corpus
from textvae.data.reading import ReadReport, read_hf_splits, read_lines
from textvae.data.synthetic import factors_path, load_factors
from textvae.data.tokenization import (
    DECODER_TOKENIZER,
    KINDS,
    check_fits_corpus,
    fertility,
    fingerprint,
    load_meta,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from textvae.errors import TextVAEError

FERTILITY_SAMPLE = 2000  # training sentences that set a tokenizer's tokens-per-word


@dataclass
class SplitReport:
    """What became of one split's sentences between the file and the id lists."""

    split: str
    source: str
    lines_read: int
    blank_skipped: int
    max_length: int
    policy: str
    limited_to: int | None = None
    """``data.max_train_lines`` when it cut the split short."""
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
    lines: list[str]
    ids: list[list[int]]
    """``<bos> ... <eos>`` token ids, one list per sentence, aligned with ``lines``."""
    factors: list[dict[str, Any]] | None
    """Generative factors per sentence, for corpora that ship them (the synthetic one)."""
    report: SplitReport


@dataclass
class PreparedData:
    tokenizer: TokenizersBackend
    corpus_name: str
    splits: dict[str, SplitData] = field(default_factory=dict)


@dataclass
class RawSplit:
    """One split as read from its file or dataset, before tokenisation."""

    lines: list[str]
    report: ReadReport
    factors: list[dict[str, Any]] | None

    def head(self, n: int) -> RawSplit:
        """The first ``n`` sentences, with their factors."""
        return RawSplit(self.lines[:n], self.report, self.factors[:n] if self.factors is not None else None)


def _read_files(cfg: DataConfig, splits: Sequence[str]) -> tuple[str, dict[str, RawSplit]]:
    files = resolve_corpus(cfg.corpus, cfg.data_dir, splits)
    raw = {}
    for split, path in files.items():
        lines, report = read_lines(path)
        factors = None
        if factors_path(path.parent, split).is_file():
            factors = load_factors(path.parent, split)
            if report.blank_skipped or len(factors) != len(lines):
                raise TextVAEError(f"{factors_path(path.parent, split)}: {len(factors)} rows do not match "
                                   f"the {len(lines) + report.blank_skipped} lines of {path}")
        raw[split] = RawSplit(lines, report, factors)
    name = cfg.corpus if not Path(cfg.corpus).is_dir() else Path(cfg.corpus).resolve().name
    return name, raw


def read_splits(cfg: DataConfig, splits: Sequence[str]) -> tuple[str, dict[str, RawSplit]]:
    """The corpus name and the sentences (and factors, where the corpus ships them) of ``splits``."""
    if cfg.hf_dataset is None:
        return _read_files(cfg, splits)
    loaded = read_hf_splits(cfg.hf_dataset, cfg.text_column, splits)
    return Path(cfg.hf_dataset).resolve().name, {s: RawSplit(lines, rep, None) for s, (lines, rep) in loaded.items()}


def _encode(tok: TokenizersBackend, lines: list[str]) -> list[list[int]]:
    # The Rust batch encoder, bypassing the Python wrapper's per-call checks.
    return [enc.ids for enc in tok.backend_tokenizer.encode_batch(lines)]


def _report(raw: RawSplit, cfg: DataConfig, split: str, limited_to: int | None = None) -> SplitReport:
    return SplitReport(split, raw.report.source, raw.report.lines_read, raw.report.blank_skipped,
                       cfg.max_length, cfg.length_policy, limited_to)


def encode_split(tok: TokenizersBackend, raw: RawSplit, cfg: DataConfig, split: str) -> SplitData:
    """Token ids of ``raw`` under ``cfg``'s length policy, encoded as :func:`prepare_data` does
    (for a split read with :func:`read_splits` and a tokenizer that already exists)."""
    return _apply_length_policy(raw, _encode(tok, raw.lines), _report(raw, cfg, split), tok.eos_token_id)


def _apply_length_policy(raw: RawSplit, ids: list[list[int]], report: SplitReport, eos_id: int) -> SplitData:
    limit = report.max_length + 2  # BOS and EOS do not count towards max_length
    if report.policy == "truncate":
        long_rows = [i for i, row in enumerate(ids) if len(row) > limit]
        for i in long_rows:
            ids[i] = ids[i][: limit - 1] + [eos_id]
        report.truncated = len(long_rows)
        return SplitData(raw.lines, ids, raw.factors, report)
    keep = [i for i, row in enumerate(ids) if len(row) <= limit]
    report.dropped = len(ids) - len(keep)
    if not keep:
        raise TextVAEError(f"data.max_length: every sentence of {report.source} is longer than "
                           f"{report.max_length} tokens, so length_policy=drop leaves nothing")
    factors = [raw.factors[i] for i in keep] if raw.factors is not None else None
    return SplitData([raw.lines[i] for i in keep], [ids[i] for i in keep], factors, report)


def _tokenizer(cfg: DataConfig, corpus: str, train: RawSplit | None,
               given: tuple[TokenizersBackend, dict] | None) -> tuple[TokenizersBackend, dict, Path | None]:
    """Train one on the train split, or load ``cfg.tokenizer``, or take the ``given`` one (a
    pretrained decoder's); return it, its meta and the directory it was loaded from (``None``
    when trained or given here)."""
    if cfg.tokenizer == DECODER_TOKENIZER:
        if given is None:
            raise TextVAEError("data.tokenizer: 'decoder' is the pretrained decoder's own tokenizer, "
                               "and model.decoder_type is not pretrained")
        return given[0], given[1], None
    if cfg.tokenizer in KINDS:
        tok = train_tokenizer(cfg.tokenizer, train.lines, cfg.vocab_size, cfg.min_frequency, cfg.lowercase,
                              model_max_length=cfg.max_length + 2)
        sample = train.lines[:FERTILITY_SAMPLE]
        meta = {"kind": cfg.tokenizer, "corpus": corpus, "train_source": train.report.source,
                "train_fingerprint": fingerprint(train.lines), "train_lines": len(train.lines),
                "vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency, "lowercase": cfg.lowercase,
                "fertility": fertility(_encode(tok, sample), sample)}
        return tok, meta, None
    directory = Path(cfg.tokenizer)
    if not directory.exists():
        raise TextVAEError(f"data.tokenizer: '{cfg.tokenizer}' is neither a kind ({', '.join(KINDS)}) "
                           f"nor an existing tokenizer directory")
    tok = load_tokenizer(directory)
    tok.model_max_length = cfg.max_length + 2
    return tok, load_meta(directory), directory


def prepare_data(cfg: DataConfig, *, tokenizer_dir: Path | None = None, splits: Sequence[str] = SPLITS,
                 tokenizer: tuple[TokenizersBackend, dict] | None = None) -> PreparedData:
    """Read, tokenise and length-limit ``splits`` as ``cfg`` describes.

    When ``cfg.tokenizer`` is a kind, the tokenizer is trained on the train split (after
    ``max_train_lines``); when it is a directory it is loaded and checked against the
    first requested split (more than 5% ``<unk>`` means it belongs to another corpus);
    when it is ``decoder``, ``tokenizer`` (a pretrained decoder's, with its metadata) is used.
    Either way it is saved to ``tokenizer_dir`` when one is given, so a run directory
    always holds the tokenizer its model was trained with.
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise TextVAEError(f"unknown split(s) {unknown or list(splits)} (use {', '.join(SPLITS)})")
    trains = cfg.tokenizer in KINDS
    needed = list(splits) if not trains or "train" in splits else ["train", *splits]
    corpus, raw = read_splits(cfg, needed)
    limited = cfg.max_train_lines
    if limited is not None and "train" in raw and len(raw["train"].lines) > limited:
        raw["train"] = raw["train"].head(limited)
    else:
        limited = None
    tok, meta, loaded_from = _tokenizer(cfg, corpus, raw.get("train"), tokenizer)
    prepared = PreparedData(tok, corpus)
    for split in splits:
        r = raw[split]
        ids = _encode(tok, r.lines)
        if loaded_from is not None and split == splits[0] and meta.get("kind") != "pretrained":
            check_fits_corpus(ids, r.lines, loaded_from, meta, corpus, split)
        report = _report(r, cfg, split, limited if split == "train" else None)
        prepared.splits[split] = _apply_length_policy(r, ids, report, tok.eos_token_id)
    if tokenizer_dir is not None and (loaded_from is None or Path(tokenizer_dir).resolve() != loaded_from.resolve()):
        save_tokenizer(tok, tokenizer_dir, meta)
    return prepared
