"""Tiny models, tokenizers and exports for the evaluation/generation tests.

Everything is small enough to build in milliseconds: a word tokenizer over the embedded
corpus's vocabulary, an LSTM VAE with a 4-D latent, and helpers that make its latent
"used" (posterior means spread over the prior, small posterior variance) or "collapsed"
(q(z|x) = p(z) for every x) by setting the posterior's output layer directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from textvae.data.synthetic import vocabulary, write_corpus
from textvae.data.tokenization import train_tokenizer
from textvae.models import TextVAEConfig, TextVAEModel
from textvae.training.recipe import dump_recipe, load_recipe


@pytest.fixture(autouse=True)
def offline_and_quiet(monkeypatch):
    """No Hub look-ups, and no weight-loading progress bars in the captured stderr."""
    from transformers.utils import logging

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    yield
    if was_enabled:
        logging.enable_progress_bar()


def run_cli(capsys, *argv: str) -> tuple[int, str, list[str]]:
    """``textvae ARGV`` in-process: (exit status, stdout, stderr lines)."""
    from textvae.cli import main

    capsys.readouterr()  # drop what fixtures printed
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


TINY_MODEL = dict(
    embedding_size=16,
    hidden_size=32,
    latent_size=4,
    invlip_state_size=8,
    icnn_hidden_size=16,
)


def word_tokenizer(words=None):
    """A word-level tokenizer (``<pad>``=0 ``<bos>``=1 ``<eos>``=2 ``<unk>``=3) over ``words``."""
    words = sorted(vocabulary()) if words is None else list(words)
    return train_tokenizer("word", [" ".join(words)], vocab_size=len(words), model_max_length=64)


def tiny_model(tokenizer, seed: int = 0, **overrides) -> TextVAEModel:
    """A randomly initialised tiny VAE with ``tokenizer`` attached, in eval mode."""
    torch.manual_seed(seed)
    config = TextVAEConfig(vocab_size=len(tokenizer), **{**TINY_MODEL, **overrides})
    model = TextVAEModel(config).eval()
    model.tokenizer = tokenizer
    return model


@torch.no_grad()
def use_latent(model: TextVAEModel, sentences: list[str], logvar: float = -4.0) -> TextVAEModel:
    """Make q(z|x) informative: on ``sentences`` the means are standardised (mean 0,
    variance 1 per dimension, like the prior) and every variance is e^logvar."""
    mu, _ = model.encode(sentences)
    mean, std = mu.mean(0), mu.std(0).clamp_min(1e-8)
    layer = model.posterior.to_params
    d = model.config.latent_size
    layer.weight[:d] /= std.unsqueeze(1)
    layer.bias[:d] = (layer.bias[:d] - mean) / std
    layer.weight[d:] = 0.0
    layer.bias[d:] = logvar
    return model


@torch.no_grad()
def collapse(model: TextVAEModel) -> TextVAEModel:
    """q(z|x) = N(0, I) for every sentence: the textbook posterior collapse."""
    layer = model.posterior.to_params
    layer.weight.zero_()
    layer.bias.zero_()
    return model


def make_corpus(directory: Path, n_test: int = 24) -> Path:
    """A small embedded-corpus copy (with factors) to evaluate on."""
    return write_corpus(directory, n_train=20, n_valid=8, n_test=n_test, seed=0)


def save_export(model: TextVAEModel, directory: Path, corpus: Path | None = None, *,
                active_units: int | None = None) -> Path:
    """A trainer-like export: weights, tokenizer, ``recipe.yaml`` (and ``train_summary.json``)."""
    model.save_pretrained(directory)
    overrides = [f"data.corpus={corpus}"] if corpus is not None else []
    dump_recipe(load_recipe(None, overrides), directory / "recipe.yaml")
    if active_units is not None:
        summary = {"best_step": 1, "valid": {"elbo": -10.0, "active_units": active_units}}
        (directory / "train_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return directory
