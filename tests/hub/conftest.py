"""Fixtures for Hub tests: a loopback Hub, a client pointed at it, and tiny exports.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET`` and the
cache paths once, at import; by the time a test runs, torch and transformers have imported
it. :func:`point_client_at` therefore patches the handful of module attributes those values
ended up in (and sets the environment too, for subprocesses). Everything goes through
``monkeypatch``, so each test gets a fresh, empty cache and the patches never leak.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
import torch

from tests.hub.fake_hub import FakeHub

TOKEN = "hf_loopbackSECRETtoken0123456789"
WORDS = "the a old young dog cat man woman saw found will not small red big boxes she he ran home .".split()
SENTENCES = ["the old dog saw a small cat .", "she will not find the red boxes .", "a young man ran home ."]


def point_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path, token: str | None = TOKEN) -> None:
    """Make huggingface_hub and transformers, already imported, talk to ``endpoint`` only.

    Also empties the token sources (``HF_TOKEN`` and the token file) and sets ``HF_TOKEN``
    to ``token`` when given, and gives the client a fresh ``HF_HOME`` so every download
    really goes over HTTP.
    """
    from huggingface_hub import constants, hf_api
    from transformers.utils import hub as transformers_hub

    home.mkdir(parents=True, exist_ok=True)
    env = {
        "HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HF_TOKEN_PATH", "HF_HUB_DISABLE_XET"):
        monkeypatch.delenv(key, raising=False)
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token)
    patches = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_XET": False,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)  # the instance behind huggingface_hub.<function>
    monkeypatch.setattr(transformers_hub, "_hf_api", None)  # transformers caches its HfApi


@pytest.fixture(autouse=True)
def no_progress_bars(monkeypatch: pytest.MonkeyPatch):
    """What ``make test``'s HF_HUB_DISABLE_PROGRESS_BARS does (transformers reads it at import):
    stderr then holds only what textvae prints."""
    from transformers.utils import logging as transformers_logging

    monkeypatch.setattr(transformers_logging, "_tqdm_active", False)


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A running loopback Hub with the client pointed at it and ``HF_TOKEN`` set to :data:`TOKEN`."""
    with FakeHub(tmp_path / "hub-storage", token=TOKEN) as hub:
        point_client_at(monkeypatch, hub.url, tmp_path / "hf-home")
        yield hub
    assert not hub.unrouted, f"the client called endpoints the fake Hub lacks: {hub.unrouted}"


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Switch the client to a new, empty cache (a second machine downloading the model)."""
    from huggingface_hub import constants

    def switch(name: str = "second-machine") -> Path:
        home = tmp_path / name
        monkeypatch.setattr(constants, "HF_HOME", str(home))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        monkeypatch.setenv("HF_HOME", str(home))
        return home

    return switch


def build_tokenizer():
    """A word-level textvae tokenizer: <pad>=0 <bos>=1 <eos>=2 <unk>=3, encodings <bos> ... <eos>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {word: i for i, word in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 1), ("<eos>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        model_max_length=64,
    )


def build_model(seed: int = 0, latent_path: str = "invlip", **options):
    """A tiny random TextVAEModel with :func:`build_tokenizer` attached (``options``: more config keys)."""
    from textvae import TextVAEConfig, TextVAEModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = TextVAEConfig(vocab_size=len(tokenizer), hidden_size=32, embedding_size=16, latent_size=4,
                           icnn_hidden_size=16, invlip_state_size=8, lipschitz=2.0, latent_path=latent_path,
                           **options)
    model = TextVAEModel(config).eval()
    model.tokenizer = tokenizer
    return model


EVALUATION = {  # the shape `textvae evaluate` writes, trimmed
    "data": {"corpus": "synthetic", "split": "test", "num_sentences": 1000},
    "elbo": -41.25,
    "nll_iw": 39.5,
    "ppl_iw": 18.4,
    "ppl_elbo": 20.1,
    "kl": 3.25,
    "mi": 2.1,
    "active_units": 4,
    "bleu_greedy": 55.0,
    "protocol": {"iw_samples": 500, "iw_samples_used": 500, "active_units_delta": 0.01},
}


@pytest.fixture
def tiny_export(tmp_path: Path) -> Path:
    """A save_pretrained export with recipe.yaml, train_summary.json and evaluation.json beside it."""
    import json

    export = tmp_path / "run" / "final"
    build_model().save_pretrained(export)
    (export / "recipe.yaml").write_text(
        "output_dir: runs/tiny\nseed: 0\ndata:\n  corpus: synthetic\nmodel:\n  latent_size: 4\n"
    )
    (export / "train_summary.json").write_text(json.dumps({"steps": 30, "epochs": 1, "best_valid_elbo": -42.0}))
    (export / "evaluation.json").write_text(json.dumps(EVALUATION))
    return export


def tree_digest(directory: Path) -> dict[str, str]:
    """Relative path -> sha256 (plus mtime) of every file under ``directory``: to prove it untouched."""
    out = {}
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file():
            out[str(path.relative_to(directory))] = f"{hashlib.sha256(path.read_bytes()).hexdigest()}:{os.stat(path).st_mtime_ns}"
    return out


def assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def free_port_endpoint() -> str:
    """An endpoint where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
