"""``load_model`` and the CLI with Hub repo ids: downloads, and one line per failure."""

from __future__ import annotations

import pytest

from tests.hub.conftest import (
    SENTENCES,
    TOKEN,
    assert_same_weights,
    build_model,
    free_port_endpoint,
    point_client_at,
)
from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.hub.loading import load_model
from textvae.hub.push import push_model

REPO = "tester/hub-vae"


@pytest.fixture
def pushed(fake_hub, fresh_cache):
    """A model pushed to the loopback Hub, and a client with an empty cache."""
    model = build_model()
    push_model(model, REPO)
    fresh_cache()
    return model


def test_load_model_downloads_a_repo_id_ready_to_use(pushed):
    model = load_model(REPO)

    assert not model.training
    assert_same_weights(model, pushed)
    assert model.reconstruct(SENTENCES) == pushed.reconstruct(SENTENCES)


def test_cli_commands_take_a_repo_id(pushed, capsys):
    code = main(["interpolate", REPO, SENTENCES[0], SENTENCES[1], "--steps", "3"])

    assert code == 0
    out = capsys.readouterr().out
    for sentence in pushed.interpolate(SENTENCES[0], SENTENCES[1], steps=3, max_length=64):
        assert sentence in out


def test_sample_reconstruct_and_evaluate_take_a_repo_id(pushed, capsys, tmp_path):
    sentences = tmp_path / "in.txt"
    sentences.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    assert main(["sample", REPO, "-n", "2", "--max-length", "8"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["reconstruct", REPO, str(sentences)]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == SENTENCES
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    assert main(["evaluate", REPO, "--corpus", str(corpus), "--iw-samples", "2"]) == 0
    assert "NLL, importance-weighted" in capsys.readouterr().out


def test_evaluate_reports_a_hub_failure_not_a_missing_recipe(pushed, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrongSECRETvalue42")
    assert main(["evaluate", REPO]) == 2
    err = capsys.readouterr().err
    assert "rejected the token (401 Unauthorized)" in err and "recipe.yaml" not in err
    assert "hf_wrongSECRETvalue42" not in err


def test_cached_model_loads_offline(pushed, monkeypatch):
    from huggingface_hub import constants

    load_model(REPO)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    assert_same_weights(load_model(REPO), pushed)


def failure(repo_id: str = REPO) -> str:
    with pytest.raises(TextVAEError) as caught:
        load_model(repo_id)
    message = str(caught.value)
    assert "\n" not in message and caught.value.__context__ is None
    return message


def test_missing_repo_is_named_with_the_endpoint_not_huggingface_co(pushed, fake_hub):
    message = failure("tester/no-such-vae")

    assert message.startswith(f"tester/no-such-vae: no such model repository at {fake_hub.url} (404)")
    assert "huggingface.co" not in message


def test_private_repo_without_a_token_suggests_logging_in(pushed, fake_hub, monkeypatch):
    fake_hub.repos[REPO].private = True
    monkeypatch.delenv("HF_TOKEN")

    assert "if it is private, log in with `hf auth login` or set HF_TOKEN" in failure()


def test_rejected_token_is_reported_as_such_and_not_shown(pushed, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrongSECRETvalue42")

    message = failure()

    assert "rejected the token (401 Unauthorized)" in message
    assert "hf_wrongSECRETvalue42" not in message


def test_offline_mode_without_a_cached_copy(pushed, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    assert failure() == f"{REPO}: not in the local cache, and HF_HUB_OFFLINE is set so it cannot be downloaded"


def test_unreachable_hub_is_a_connection_error(pushed, tmp_path, monkeypatch):
    from huggingface_hub import file_download

    endpoint = free_port_endpoint()
    point_client_at(monkeypatch, endpoint, tmp_path / "home-down", token=TOKEN)
    # The client retries a failed download for ~25 s before giving up; keep the failure, skip the wait.
    monkeypatch.setattr(file_download, "_DEFAULT_RETRY_ON_EXCEPTIONS", ())

    message = failure()

    assert message.startswith(f"cannot reach the Hugging Face Hub at {endpoint} (connection error: ")
    assert message.endswith("and the model is not in the local cache")
