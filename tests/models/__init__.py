"""Tests of :mod:`textvae.models`; shared helpers for building tiny models and batches."""

from __future__ import annotations

import contextlib
import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from textvae.models import TextVAEConfig, TextVAEModel  # noqa: E402

PAD, BOS, EOS, UNK = 0, 1, 2, 3


WORDS = "the a dog cat saw ran old small red big .".split()


def tiny_config(**overrides) -> TextVAEConfig:
    """A model small enough to build and run in milliseconds on a CPU."""
    options = dict(
        vocab_size=24,
        embedding_size=12,
        hidden_size=16,
        latent_size=4,
        invlip_state_size=4,
        icnn_hidden_size=8,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    options.update(overrides)
    return TextVAEConfig(**options)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Build modules in ``dtype``: what is computed at construction (a frozen orthonormal
    lift) then has that precision, rather than float32's rounded up by ``.double()``."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> TextVAEModel:
    """A randomly initialised model in eval mode (deterministic given ``seed``)."""
    torch.manual_seed(seed)
    with default_dtype(dtype):
        return TextVAEModel(tiny_config(**overrides)).eval()


def perturb_parameters(model: torch.nn.Module, scale: float, seed: int = 0) -> None:
    """Add N(0, scale^2) noise to every parameter: the guarantees hold for *any* weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            param.add_(scale * noise.to(param.dtype))


def pad_batch(sentences: list[list[int]], pad_id: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Word-id lists -> right-padded ``<bos> w.. <eos>`` ids and the attention mask."""
    rows = [[BOS, *words, EOS] for words in sentences]
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def random_sentences(vocab_size: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    """Word ids drawn from the non-special part of the vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab_size, (n,), generator=generator).tolist() for n in lengths]


def step_logits(model: TextVAEModel, prefix: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Logits at every position of a fixed prefix, (N, T) ids and (N, d) z -> (N, T, V).

    Goes through the same decoder + head as ``forward`` (z enters the recurrence too when
    the latent path is ``concat``).
    """
    return model.head(model.decoder(prefix, z), z)


def centred_ratios(
    model: TextVAEModel, prefix: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, with_slack: bool = False
):
    """||center(logits_t(z1) - logits_t(z2))|| / ||z1 - z2|| for every pair and position: (N, T).

    Centring removes the one direction softmax ignores (a constant shift of all logits).
    With ``with_slack`` also returns the rounding allowance of each ratio, (N, T): a few
    hundred ulps of the magnitudes that cancel in the difference (large logits of two
    nearby codes lose digits in float32; in float64 the allowance is negligible).
    """
    l1, l2 = step_logits(model, prefix, z1), step_logits(model, prefix, z2)
    diff = l1 - l2
    diff = diff - diff.mean(dim=-1, keepdim=True)
    dz = (z1 - z2).norm(dim=-1, keepdim=True)
    ratios = diff.norm(dim=-1) / dz
    if not with_slack:
        return ratios
    eps = torch.finfo(l1.dtype).eps
    magnitude = l1.norm(dim=-1) + l2.norm(dim=-1) + model.lipschitz_bound() * (z1.norm(dim=-1) + z2.norm(dim=-1)).unsqueeze(-1)
    return ratios, 256 * eps * magnitude / dz


def word_tokenizer(words: list[str] = WORDS):
    """A ``PreTrainedTokenizerFast`` with textvae's contract: pad/bos/eos/unk = 0..3, ``<bos> .. <eos>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", BOS), ("<eos>", EOS)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        model_max_length=64,
    )
