"""The recipe's ``data`` section: where the sentences come from and how they become batches."""


from typing import Literal

from textvae.schema import (
    MAX_BATCH,
    MAX_TOKENS,
    MAX_VOCAB,
    between,
    count,
    field,
    path_field,
    section,
)

DECODER_TOKENIZER = "decoder"
"""``data.tokenizer`` for a pretrained decoder's own tokenizer."""


@section("data")
class DataConfig:
    """Where the sentences come from and how they become batches."""

    corpus: str = path_field("input", "synthetic")
    """A registered corpus (``synthetic``, ``ptb``, ``yahoo``, ``yelp``, ``snli``) or a
    directory holding ``train.txt``/``valid.txt``/``test.txt`` (one sentence a line)."""
    data_dir: str | None = path_field("input", None)
    """Where registered corpora live; else ``$TEXTVAE_DATA``, ``../shared/data``, ``~/.cache/textvae``."""
    hf_dataset: str | None = path_field("input", None)
    """A local Hugging Face ``datasets`` directory (``save_to_disk``) or data-files folder; replaces ``corpus``."""
    text_column: str = "text"
    tokenizer: str = path_field("input", "word")
    """``word``, ``bpe``, ``unigram`` (trained on the train split), a saved tokenizer directory, or
    ``decoder``: a pretrained decoder's own tokenizer (``model.decoder_type: pretrained`` needs it)."""
    bos_token: str | None = None
    """With ``tokenizer: decoder``: the token every sentence starts with (default: the tokenizer's
    BOS, else its EOS)."""
    eos_token: str | None = None
    """With ``tokenizer: decoder``: the token every sentence ends with (default: the tokenizer's EOS)."""
    vocab_size: int = field(between(5, MAX_VOCAB), default=10000)
    """At least the 4 special tokens and one word; at most 10,000,000."""
    min_frequency: int = field(count(1), default=1)
    lowercase: bool = False
    max_length: int = field(between(1, MAX_TOKENS), default=64)
    """Longest sentence in tokens, BOS/EOS not counted (at most 16,384)."""
    length_policy: Literal["truncate", "drop"] = "truncate"
    """What happens to longer sentences: ``truncate`` or ``drop`` (both counted and reported)."""
    batch_size: int = field(between(1, MAX_BATCH), default=32)
    """Sentences per batch (at most 4,096)."""
    max_train_lines: int | None = field(count(1), default=None)
    """Use only the first N training sentences (quick runs)."""
    bucket_batches: int = field(count(1), default=50)
    """Length bucketing sorts within chunks of this many batches, then shuffles the batches."""
    cache_dir: str | None = None
    """Where tokenised splits and trained tokenizers are cached; else ``$TEXTVAE_CACHE``, else ``~/.cache/textvae``."""
