"""Tiny random pretrained backbones saved to disk, so the loading code runs as on real models.

A GPT-2 (absolute positions, ``<|endoftext|>`` as BOS and EOS, no pad token), a Llama
(grouped-query attention, rotary positions, ``<s>``/``</s>``), a BERT encoder ([CLS] ...
[SEP], with a pad token) and a DistilBERT (no causal-LM head), each with a word-level
tokenizer over the embedded corpus's vocabulary, built in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    TokenizersBackend,
)

from textvae.data.synthetic import vocabulary

# Every model loads with these on from_pretrained; `special` come first in the vocabulary.
SPECIALS = {
    "gpt2": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
    "llama": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "bert": {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]"},
}


def _tokenizer(kind: str, words: list[str]) -> TokenizersBackend:
    specials = list(dict.fromkeys(SPECIALS["bert" if kind == "distilbert" else kind].values()))
    vocab = {token: i for i, token in enumerate([*specials, *words, "<", "unk", ">"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials[-1] if kind != "gpt2" else specials[0]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(specials)
    if kind in ("bert", "distilbert"):
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    names = SPECIALS["bert" if kind == "distilbert" else kind]
    return TokenizersBackend(tokenizer_object=backend, model_max_length=64, **names)


def _config(kind: str, vocab_size: int, tokenizer: TokenizersBackend):
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4, **ids)
    if kind == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                           tie_word_embeddings=False, **ids)
    if kind == "bert":
        return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    return DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=1, n_heads=4, hidden_dim=64,
                            max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)


MODEL_CLASSES = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "bert": BertModel, "distilbert": DistilBertModel}


def save_tiny_backbone(kind: str, directory: Path, seed: int = 0, vocab_size: int | None = None,
                       tokenizer_kind: str | None = None) -> Path:
    """A random tiny ``kind`` model and its tokenizer in ``directory`` (created).

    ``vocab_size`` (default: the tokenizer's size) sizes the embedding table, and
    ``tokenizer_kind`` saves another kind's tokenizer beside it: a backbone that does not
    match its tokenizer.
    """
    words = sorted(vocabulary())
    tokenizer = _tokenizer(kind, words)
    torch.manual_seed(seed)
    model = MODEL_CLASSES[kind](_config(kind, vocab_size or len(tokenizer), tokenizer)).eval()
    model.save_pretrained(directory)
    (tokenizer if tokenizer_kind is None else _tokenizer(tokenizer_kind, words)).save_pretrained(directory)
    return Path(directory)
