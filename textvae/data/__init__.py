"""The data layer: corpora, tokenizers and batches (for training and evaluation alike).

It owns reading and checking corpora (streamed, never whole; and labelled sentences),
the embedded grammar (rendering and parsing), training and loading tokenizers (and a
pretrained decoder's), the length policy, the cache of tokenised splits (memory-mapped
arrays built once, ``cache.py`` being the general machinery), and length-bucketed batches
sharded over processes. It imports nothing from the models, training, evaluation, hub or
CLI layers.

Typical use (the trainer's)::

    data = prepare_data(recipe.data, tokenizer_dir=run_dir / "tokenizer")
    for split in data.splits.values():
        print(split.report.summary())
    loader = make_dataloader(data.splits["train"].ids, recipe.data.batch_size,
                             data.tokenizer.pad_token_id, shuffle=True, seed=recipe.seed,
                             bucket_batches=recipe.data.bucket_batches)

Names are imported on first use, so ``textvae data stats`` and ``textvae --help`` do not
pay for importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "config": ("DataConfig",),
    "labels": ("LabelledSentences", "read_labelled"),
    "batching": ("BucketBatchSampler", "Collator", "IndexCollator", "evaluation_order", "make_dataloader"),
    "cache": ("ArrayFile", "CacheCorrupt", "Entry", "EntryWriter", "cache_root", "clear", "entries", "file_fingerprint",
              "get_or_build", "open_entry", "sha256_file"),
    "corpora": ("CORPORA", "CorpusSpec", "download", "resolve_corpus"),
    "pipeline": ("PreparedData", "SplitData", "SplitReport", "SplitSource", "prepare_data", "split_sources",
                 "tokenize_split"),
    "reading": ("ReadReport", "SentenceStream", "hf_split_streams", "read_lines"),
    "stats": ("CorpusStats", "corpus_stats"),
    "synthetic": ("load_factors", "parse", "render", "write_corpus"),
    "tokenized": ("LengthPolicy", "TokenRows", "as_token_rows"),
    "tokenization": ("BOS_ID", "EOS_ID", "KINDS", "PAD_ID", "SPECIAL_TOKENS", "UNK_ID",
                     "load_tokenizer", "save_tokenizer", "train_tokenizer"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'textvae.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"textvae.data.{_MODULE_OF[name]}"), name)


def __dir__() -> list[str]:
    return __all__
