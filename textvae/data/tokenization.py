"""Tokenizers trained on the corpus and saved the Hugging Face way.

Every tokenizer is a ``tokenizers`` pipeline wrapped as ``TokenizersBackend`` so
that models, ``save_pretrained`` and the Hub treat it like any other. The contract the
rest of textvae relies on: ``<pad>``=0, ``<bos>``=1, ``<eos>``=2, ``<unk>``=3, and every
encoding is ``<bos> ... <eos>``, so ``tok(texts, padding=True, return_tensors="pt")`` is
model-ready.

A pretrained decoder brings its own tokenizer (:func:`load_pretrained_tokenizer`): its ids
are the ones the VAE models, wrapped to the same ``<bos> ... <eos>`` contract with the
LM's own special tokens (and EOS as padding when it has no pad token).

Kinds: ``word`` (whitespace-separated words; the literal ``<unk>`` of PTB-style corpora *is*
the unknown token), ``bpe`` and ``unigram`` (subwords, trained by ``tokenizers``).
``vocab_size`` counts the entries learned from the corpus; the four special tokens come
on top, so PTB's 10k-word vocabulary fits ``vocab_size=10000`` with nothing left out.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import TokenizersBackend

from textvae.atomic import staged_directory
from textvae.data.config import DECODER_TOKENIZER  # noqa: F401 -- re-exported beside KINDS
from textvae.errors import TextVAEError, require_extra

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
KINDS = ("word", "bpe", "unigram")
META_FILE = "textvae_tokenizer.json"
MAX_UNK_RATE = 0.05
# A subword tokenizer never says <unk>; on a foreign corpus it cuts words into more pieces.
MAX_FERTILITY_RATIO = 1.5


TRAIN_BATCH = 10_000
"""Sentences handed to a trainer at a time: a corpus is never held whole."""


def _batches(lines: Iterable[str]) -> Iterator[list[str]]:
    iterator = iter(lines)
    while batch := list(itertools.islice(iterator, TRAIN_BATCH)):
        yield batch


def _word_vocab(lines: Iterable[str], vocab_size: int, min_frequency: int, lowercase: bool) -> dict[str, int]:
    # Counted here rather than by WordLevelTrainer, which ranks a literal "<unk>" in the
    # corpus as an ordinary word and so moves the special token away from id 3. Counting
    # batch by batch gives the counts of the whole text (words never span lines).
    counts: Counter[str] = Counter()
    for batch in _batches(lines):
        text = "\n".join(batch)
        counts.update((text.lower() if lowercase else text).split())
    for token in SPECIAL_TOKENS:
        counts.pop(token, None)
    ranked = sorted((w for w, c in counts.items() if c >= min_frequency), key=lambda w: (-counts[w], w))
    return {w: i for i, w in enumerate([*SPECIAL_TOKENS, *ranked[:vocab_size]])}


def _build(kind: str, lines: Iterable[str], vocab_size: int, min_frequency: int, lowercase: bool) -> Tokenizer:
    if kind == "word":
        tok = Tokenizer(models.WordLevel(_word_vocab(lines, vocab_size, min_frequency, lowercase), unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:
        # Split on whitespace first so a special token between words leaves no stray "▁".
        tok = Tokenizer(models.BPE(unk_token=UNK) if kind == "bpe" else models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
        tok.decoder = decoders.Metaspace()
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    if kind == "bpe":
        tok.train_from_iterator(_batches(lines), trainers.BpeTrainer(
            vocab_size=vocab_size + len(SPECIAL_TOKENS), min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS), show_progress=False))
    elif kind == "unigram":
        tok.train_from_iterator(_batches(lines), trainers.UnigramTrainer(
            vocab_size=vocab_size + len(SPECIAL_TOKENS), special_tokens=list(SPECIAL_TOKENS),
            unk_token=UNK, show_progress=False))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)])
    return tok


def train_tokenizer(kind: str, lines: Iterable[str], vocab_size: int, min_frequency: int = 1,
                    lowercase: bool = False, *, model_max_length: int = 512) -> TokenizersBackend:
    """Train a ``word``/``bpe``/``unigram`` tokenizer on ``lines``.

    ``lines`` is read once, in batches, so it may be a stream over a corpus larger than
    memory: the trainers keep counts of distinct words, not the text.
    ``model_max_length`` is the longest encoding (BOS and EOS included) the model accepts;
    the data pipeline sets it from ``data.max_length``.
    """
    if kind not in KINDS:
        raise TextVAEError(f"data.tokenizer: unknown kind '{kind}' (use {', '.join(KINDS)} or a tokenizer directory)")
    if vocab_size < 1:
        raise TextVAEError(f"data.vocab_size must be at least 1, got {vocab_size}")
    if min_frequency < 1:
        raise TextVAEError(f"data.min_frequency must be at least 1, got {min_frequency}")
    return TokenizersBackend(tokenizer_object=_build(kind, lines, vocab_size, min_frequency, lowercase),
                                   pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   model_max_length=model_max_length)


def load_pretrained_tokenizer(name_or_path: str, *, gguf_file: str | None = None, bos_token: str | None = None,
                              eos_token: str | None = None, model_max_length: int = 512,
                              option: str = "model.decoder_name_or_path") -> tuple[TokenizersBackend, dict[str, Any]]:
    """A pretrained LM's tokenizer, made to encode every sentence as ``<bos> ... <eos>``.

    BOS is ``bos_token``, else the tokenizer's own BOS, else its EOS (GPT-2 style); EOS is
    ``eos_token`` or its own. A tokenizer without a pad token pads with EOS (the model's
    attention masks then come from the lengths, never from the pad id). The result is a
    plain ``TokenizersBackend`` over the same Rust tokenizer, so what is saved beside a
    model reloads with exactly this behaviour. Returns it with its metadata (source and a
    digest of its vocabulary), as :func:`save_tokenizer` stores it.
    """
    from transformers import AutoTokenizer

    if gguf_file:
        require_extra("gguf", "gguf", f"model.decoder_gguf_file: reading {gguf_file}")
    try:
        loaded = AutoTokenizer.from_pretrained(name_or_path, **({"gguf_file": gguf_file} if gguf_file else {}))
    except Exception as exc:  # noqa: BLE001 -- transformers raises many types for a missing tokenizer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TextVAEError(f"{option}: cannot load the tokenizer of '{name_or_path}' ({first})") from None
    if not isinstance(loaded, TokenizersBackend):
        raise TextVAEError(f"{option}: the tokenizer of '{name_or_path}' has no fast (Rust) version; "
                           "textvae needs one to encode corpora")
    bos = bos_token or loaded.bos_token or loaded.eos_token
    eos = eos_token or loaded.eos_token
    for key, token in (("data.bos_token", bos), ("data.eos_token", eos)):
        if token is None:
            raise TextVAEError(f"{key}: the tokenizer of '{name_or_path}' has no such token; name one of its tokens")
        if loaded.convert_tokens_to_ids(token) in (None, loaded.unk_token_id) and token != loaded.unk_token:
            raise TextVAEError(f"{key}: '{token}' is not a token of the tokenizer of '{name_or_path}'")
    backend = Tokenizer.from_str(loaded.backend_tokenizer.to_str())
    bos_id, eos_id = loaded.convert_tokens_to_ids(bos), loaded.convert_tokens_to_ids(eos)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=list(dict.fromkeys([(bos, bos_id), (eos, eos_id)])))
    tok = TokenizersBackend(tokenizer_object=backend, bos_token=bos, eos_token=eos,
                            pad_token=loaded.pad_token or eos, unk_token=loaded.unk_token,
                            model_max_length=model_max_length)
    meta = {"kind": "pretrained", "source": name_or_path, "gguf_file": gguf_file, "bos_token": bos,
            "eos_token": eos, "vocabulary_sha256": hashlib.sha256(backend.to_str().encode()).hexdigest()}
    return tok, meta


def load_encoder_tokenizer(name_or_path: str) -> TokenizersBackend:
    """A pretrained encoder's own tokenizer, as it comes (it adds its own special tokens)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:  # noqa: BLE001 -- transformers raises many types for a missing tokenizer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TextVAEError(f"model.encoder_name_or_path: cannot load the tokenizer of '{name_or_path}' ({first})") from None


class Fingerprint:
    """Training sentences streaming past, with a SHA256 of them, so a tokenizer can name its data.

    Iterating yields the sentences of ``chunks`` (lists of sentences) one by one, once;
    afterwards :attr:`count` and :meth:`hexdigest` describe what went through (the digest of
    the sentences each followed by a newline), and :attr:`sample` holds the first
    ``sample_size`` of them.
    """

    def __init__(self, chunks: Iterable[Sequence[str]], sample_size: int = 0) -> None:
        self.chunks, self.sample_size = chunks, sample_size
        self.digest, self.count, self.sample = hashlib.sha256(), 0, []

    def __iter__(self) -> Iterator[str]:
        for chunk in self.chunks:
            self.digest.update(("\n".join(chunk) + "\n").encode("utf-8"))
            self.count += len(chunk)
            self.sample.extend(chunk[: self.sample_size - len(self.sample)])
            yield from chunk

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def word_dropout_token_id(tokenizer: TokenizersBackend) -> int | None:
    """The id word dropout puts in place of a decoder input (Bowman et al. 2016 use ``<unk>``).

    textvae's own tokenizers have a distinct ``<unk>``. A pretrained LM's often has none, or
    one that is also its EOS or BOS (GPT-2's ``<|endoftext|>``): dropping words to EOS would
    teach the decoder that a sentence ends anywhere, and a frozen LM reads EOS as a document
    boundary. Then its mask token, if it has one; else the single token an underscore
    encodes to (a blank to fill in, as a reader sees it); None when there is no such token.
    """
    structural = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    candidates = [tokenizer.unk_token_id, getattr(tokenizer, "mask_token_id", None)]
    candidates += [ids[0] for ids in (tokenizer.encode(text, add_special_tokens=False) for text in (" _", "_"))
                   if len(ids) == 1]
    return next((int(c) for c in candidates if c is not None and c not in structural), None)


def save_tokenizer(tok: TokenizersBackend, directory: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``tok`` plus ``textvae_tokenizer.json`` (``meta``) to ``directory``.

    The files are written to a temporary sibling directory that is renamed into place,
    so a crash never leaves a directory that loads as a broken tokenizer.
    """
    with staged_directory(directory) as tmp:
        tok.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return Path(directory)


def load_meta(directory: str | Path) -> dict[str, Any]:
    """The ``textvae_tokenizer.json`` of a saved tokenizer."""
    path = Path(directory) / META_FILE
    if Path(directory).is_file():
        raise TextVAEError(f"{directory}: is a file, expected a tokenizer directory")
    if not Path(directory).is_dir():
        raise TextVAEError(f"tokenizer directory not found: {directory}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TextVAEError(f"{directory}: not a textvae tokenizer (no {META_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TextVAEError(f"{path}: corrupt tokenizer metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise TextVAEError(f"{path}: corrupt tokenizer metadata (not a JSON object)")
    return meta


def load_tokenizer(directory: str | Path) -> TokenizersBackend:
    """Load a tokenizer written by :func:`save_tokenizer`; check the special-token ids (a
    pretrained LM's tokenizer keeps its own)."""
    meta = load_meta(directory)
    try:
        tok = TokenizersBackend.from_pretrained(str(directory))
    except Exception as exc:  # transformers raises many types for damaged files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TextVAEError(f"{directory}: corrupt tokenizer ({first})") from None
    if meta.get("kind") != "pretrained" and tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) != list(range(4)):
        raise TextVAEError(f"{directory}: special tokens are not <pad>=0 <bos>=1 <eos>=2 <unk>=3")
    return tok


def unk_rate(ids: Sequence[Sequence[int]], lines: Sequence[str]) -> float:
    """Share of the tokens (BOS/EOS excluded) that the tokenizer turned into ``<unk>``.

    A literal ``<unk>`` in the text is not counted: PTB marks 5% of its words that way,
    and a tokenizer is not to blame for them.
    """
    total = sum(len(row) - 2 for row in ids)
    unknown = sum(row.count(UNK_ID) for row in ids) - sum(line.count(UNK) for line in lines)
    return max(unknown, 0) / max(total, 1)


def fertility(ids: Sequence[Sequence[int]], lines: Sequence[str]) -> float:
    """Tokens per whitespace-separated word (BOS/EOS excluded)."""
    return sum(len(row) - 2 for row in ids) / max(sum(len(line.split()) for line in lines), 1)


def check_fits_corpus(ids: Sequence[Sequence[int]], lines: Sequence[str], directory: str | Path,
                      meta: dict[str, Any], corpus: str, split: str = "train") -> None:
    """Reject a saved tokenizer that was built for another corpus.

    A word-level one maps much of a foreign corpus to ``<unk>`` (more than 5% is
    refused); a subword one cuts its words into many more pieces than on the corpus it
    was trained on (``meta["fertility"]``; more than 1.5 times is refused). Training with
    either would run without complaint and learn mostly ``<unk>`` or characters.
    """
    built_on = f"data.tokenizer {directory} was built on corpus '{meta.get('corpus', 'unknown')}'"
    advice = "train one with data.tokenizer=word|bpe|unigram"
    rate = unk_rate(ids, lines)
    if rate > MAX_UNK_RATE:
        raise TextVAEError(f"{built_on} and maps {rate:.1%} of the {split} tokens of '{corpus}' to <unk> "
                           f"(limit {MAX_UNK_RATE:.0%}); {advice}")
    own = meta.get("fertility")
    here = fertility(ids, lines)
    if own and here > MAX_FERTILITY_RATIO * own:
        raise TextVAEError(f"{built_on} and cuts the {split} words of '{corpus}' into {here:.2f} tokens each "
                           f"({own:.2f} on its own corpus, limit {MAX_FERTILITY_RATIO:g}x); {advice}")
