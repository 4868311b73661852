"""``textvae push`` and ``push_export`` against the loopback Hub, through the real client."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.hub.conftest import (
    SENTENCES,
    TOKEN,
    assert_same_weights,
    build_model,
    free_port_endpoint,
    point_client_at,
    tree_digest,
)
from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.hub.push import push_export, push_model

REPO = "tester/tiny-vae"
EXPORT_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json", "recipe.yaml", "train_summary.json", "evaluation.json"}


def test_push_uploads_the_export_and_a_card_in_one_commit_without_touching_it(fake_hub, tiny_export):
    evaluation = json.loads((tiny_export / "evaluation.json").read_text())
    evaluation["checkpoint"] = {**evaluation.get("checkpoint", {}), "source": str(tiny_export)}
    evaluation["data"] = {"corpus": "synthetic", "source": str(tiny_export.parent / "test.txt")}
    (tiny_export / "evaluation.json").write_text(json.dumps(evaluation))
    before = tree_digest(tiny_export.parent)

    result = push_export(tiny_export, REPO)

    assert tree_digest(tiny_export.parent) == before
    assert fake_hub.commit_count(REPO) == 2  # the repo's initial commit + ours
    remote = fake_hub.files(REPO)
    assert set(remote) == EXPORT_FILES | {"README.md", ".gitattributes"}
    for name in EXPORT_FILES - {"evaluation.json"}:
        assert remote[name] == (tiny_export / name).read_bytes(), name
    # evaluation.json goes up with the numbers intact but no local paths in it.
    local, published = json.loads((tiny_export / "evaluation.json").read_text()), json.loads(remote["evaluation.json"])
    assert str(tiny_export.parent) not in remote["evaluation.json"].decode()
    assert published["checkpoint"]["source"] == REPO and published["data"]["source"] == "synthetic"
    assert {k: v for k, v in published.items() if k not in ("checkpoint", "data")} == \
        {k: v for k, v in local.items() if k not in ("checkpoint", "data")}
    assert sorted(result.files) == sorted(EXPORT_FILES | {"README.md"})
    assert result.commit_oid in result.commit_url


def test_pushed_model_loads_identically_on_a_fresh_machine(fake_hub, tiny_export, fresh_cache):
    from textvae import TextVAEModel

    local = TextVAEModel.from_pretrained(tiny_export).eval()
    push_export(tiny_export.parent, REPO)  # a run directory: its final/ export is pushed
    fresh_cache()
    downloads_before = len(fake_hub.requests_to("GET", r"/resolve/"))

    remote = TextVAEModel.from_pretrained(REPO).eval()

    assert len(fake_hub.requests_to("GET", r"/resolve/")) > downloads_before  # really downloaded
    assert_same_weights(local, remote)
    assert remote.tokenizer(SENTENCES)["input_ids"] == local.tokenizer(SENTENCES)["input_ids"]
    assert remote.interpolate(SENTENCES[0], SENTENCES[1], steps=5) == local.interpolate(SENTENCES[0], SENTENCES[1], steps=5)
    seed = torch.Generator().manual_seed(3)
    assert remote.sample(4, generator=seed) == local.sample(4, generator=torch.Generator().manual_seed(3))


def test_automodel_loads_the_pushed_model_with_its_tokenizer(fake_hub, tiny_export, fresh_cache):
    from transformers import AutoModel

    import textvae

    push_export(tiny_export, REPO)
    fresh_cache()

    model = AutoModel.from_pretrained(REPO)

    assert isinstance(model, textvae.TextVAEModel)
    assert model.tokenizer is not None
    assert_same_weights(model, textvae.TextVAEModel.from_pretrained(tiny_export))


def test_card_on_the_hub_parses_and_its_usage_snippet_runs(fake_hub, tiny_export, fresh_cache):
    from huggingface_hub import ModelCard

    push_export(tiny_export, REPO)
    fresh_cache()

    card = ModelCard.load(REPO)

    assert card.data.library_name == "textvae"
    assert {"text-vae", "posterior-collapse", "sentence-vae", "textvae", "pytorch"} <= set(card.data.tags)
    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    assert f'from_pretrained("{REPO}")' in snippet
    exec(compile(snippet, "model-card-usage", "exec"), {})  # downloads REPO and generates text


def test_push_uploads_the_evaluation_figures_and_the_card_shows_them(fake_hub, tiny_export, fresh_cache):
    from huggingface_hub import ModelCard

    (tiny_export / "kl_per_dim.png").write_bytes(b"\x89PNG kl")
    (tiny_export / "latent_pca.png").write_bytes(b"\x89PNG pca")
    (tiny_export / "notes.png").write_bytes(b"\x89PNG private")  # not a card figure: stays local

    push_export(tiny_export, REPO)
    fresh_cache()

    remote = fake_hub.files(REPO)
    assert remote["kl_per_dim.png"] == b"\x89PNG kl" and remote["latent_pca.png"] == b"\x89PNG pca"
    assert "notes.png" not in remote
    text = ModelCard.load(REPO).text
    assert "](kl_per_dim.png)" in text and "](latent_pca.png)" in text


def test_push_model_takes_transformers_keywords_and_opens_a_pull_request(fake_hub):
    import inspect

    from transformers.utils import PushToHubMixin

    model = build_model()
    theirs = set(inspect.signature(PushToHubMixin.push_to_hub).parameters) - {"self"}
    assert theirs <= set(inspect.signature(push_model).parameters)
    push_model(model, REPO)
    main_before = fake_hub.files(REPO)

    result = push_model(model, REPO, create_pr=True, commit_message="retrained", commit_description="why: more data",
                        tags=["experiment-7"], token=True, max_shard_size="50KB")

    assert result.pr_url.endswith("/discussions/1")
    assert fake_hub.files(REPO) == main_before  # main untouched until the PR is merged
    in_pr = fake_hub.files(REPO, "refs/pr/1")
    assert "model.safetensors.index.json" in in_pr  # sharded at max_shard_size
    assert b"experiment-7" in in_pr["README.md"]
    assert fake_hub.descriptions[result.commit_oid] == "why: more data"


def test_cli_push_to_a_private_repo_on_a_branch(fake_hub, tiny_export, capsys):
    code = main(["push", str(tiny_export), "branch-vae", "--private", "--revision", "dev",
                 "--commit-message", "first upload"])

    assert code == 0
    repo = fake_hub.repos["tester/branch-vae"]  # namespace from the token's user
    assert repo.private
    assert "model.safetensors" in fake_hub.files("tester/branch-vae", "dev")
    assert "model.safetensors" not in fake_hub.files("tester/branch-vae", "main")
    commit = fake_hub.requests_to("POST", r"/commit/dev$")[-1]
    assert b'"summary": "first upload"' in commit.body
    out = capsys.readouterr().out
    assert out.startswith("pushed 9 files to tester/branch-vae: ")


def test_push_over_the_lfs_protocol_with_xet_disabled(fake_hub, tiny_export, fresh_cache, monkeypatch):
    from huggingface_hub import constants

    from textvae import TextVAEModel

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    fake_hub.lfs_patterns = ("*.safetensors",)

    push_export(tiny_export, REPO)

    assert fake_hub.requests_to("POST", r"\.git/info/lfs/objects/batch$")
    assert len(fake_hub.requests_to("PUT", r"^/_lfs/")) == 1
    assert b'"key": "lfsFile"' in fake_hub.requests_to("POST", r"/commit/main$")[-1].body
    fresh_cache()
    assert_same_weights(TextVAEModel.from_pretrained(REPO), TextVAEModel.from_pretrained(tiny_export))


def test_pushing_a_model_uploads_weights_tokenizer_and_the_textvae_card(fake_hub, fresh_cache):
    from huggingface_hub import ModelCard

    from textvae import TextVAEModel

    model = build_model()
    result = push_model(model, REPO)
    fresh_cache()

    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(result.files)
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(fake_hub.files(REPO))
    remote = TextVAEModel.from_pretrained(REPO)
    assert_same_weights(model, remote)
    assert remote.tokenizer(SENTENCES)["input_ids"] == model.tokenizer(SENTENCES)["input_ids"]
    assert ModelCard.load(REPO).data.library_name == "textvae"


# ------------------------------------------------------------------- failures
def no_token(hub, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN")
    return None


def wrong_token(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_wrongSECRETvalue42")
    return "hf_wrongSECRETvalue42"


def refused_repo(hub, monkeypatch, tmp_path):
    hub.create_repo("someone-else/their-vae")
    hub.refused.add("someone-else/their-vae")
    return TOKEN


def server_error(hub, monkeypatch, tmp_path):
    hub.fail_commits_with = 500
    return TOKEN


def server_down(hub, monkeypatch, tmp_path):
    point_client_at(monkeypatch, free_port_endpoint(), tmp_path / "home-down")
    return TOKEN


def offline_mode(hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return TOKEN


@pytest.mark.parametrize(
    ("setup", "repo", "expected"),
    [
        (no_token, REPO, "no Hugging Face token"),
        (wrong_token, REPO, "rejected the token (401 Unauthorized)"),
        (refused_repo, "someone-else/their-vae", "refused the upload to someone-else/their-vae (403 Forbidden)"),
        (server_error, REPO, "refused the upload to tester/tiny-vae (HTTP 500: The commit could not be created)"),
        (server_down, REPO, "cannot reach the Hugging Face Hub at http://127.0.0.1:"),
        (offline_mode, REPO, "HF_HUB_OFFLINE is set"),
    ],
    ids=lambda v: v.__name__ if callable(v) else None,
)
def test_push_failure_is_one_line_exit_2_export_untouched_token_hidden(
    setup, repo, expected, fake_hub, tiny_export, tmp_path, monkeypatch, capfd, caplog
):
    token = setup(fake_hub, monkeypatch, tmp_path)
    before = tree_digest(tiny_export.parent)
    caplog.set_level(logging.DEBUG)

    code = main(["push", str(tiny_export), repo])

    out, err = capfd.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith("textvae: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert tree_digest(tiny_export.parent) == before
    if token is not None:
        assert token not in out + err + caplog.text


def test_push_error_carries_no_reference_to_the_request(fake_hub, tiny_export, monkeypatch):
    """The client's exception holds the request and its Authorization header: it must not ride along."""
    monkeypatch.setenv("HF_TOKEN", "hf_wrongSECRETvalue42")

    with pytest.raises(TextVAEError) as caught:
        push_export(tiny_export, REPO)

    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert "hf_wrongSECRETvalue42" not in str(caught.value)


def test_token_from_the_command_line_is_sent_but_never_printed_or_uploaded(fake_hub, tiny_export, monkeypatch, capfd, caplog):
    monkeypatch.delenv("HF_TOKEN")
    caplog.set_level(logging.DEBUG)

    assert main(["push", str(tiny_export), REPO, "--token", TOKEN]) == 0

    out, err = capfd.readouterr()
    assert TOKEN not in out + err + caplog.text
    commits = fake_hub.requests_to("POST", "/commit/")
    assert commits and all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in commits)
    assert not any(TOKEN.encode() in content for content in fake_hub.files(REPO).values())


def test_cli_in_a_fresh_process_reads_hf_endpoint_and_hides_the_token(fake_hub, tiny_export, tmp_path):
    """The user's way in: HF_ENDPOINT set before anything imports huggingface_hub."""
    env = {**os.environ, "HF_ENDPOINT": fake_hub.url, "HF_HOME": str(tmp_path / "cli-home"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0", "HF_DEBUG": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_TOKEN", None)
    root = Path(__file__).resolve().parents[2]

    proc = subprocess.run([sys.executable, "-m", "textvae", "push", str(tiny_export), "cli-vae", "--token", TOKEN],
                          env=env, cwd=root, capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr
    assert "pushed 9 files to tester/cli-vae" in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr
    assert "model.safetensors" in fake_hub.files("tester/cli-vae")


@pytest.mark.slow
def test_trained_quickstart_export_reproduces_its_interpolation_from_the_hub(fake_hub, tmp_path, fresh_cache):
    """The must-show path: train the quickstart, evaluate, push, download elsewhere, interpolate."""
    from huggingface_hub import ModelCard

    from textvae import TextVAEModel
    from textvae.hub.loading import load_model
    from textvae.training.loop import train
    from textvae.training.recipe import load_recipe

    root = Path(__file__).resolve().parents[2]
    recipe = load_recipe(root / "recipes" / "quickstart.yaml", [
        f"output_dir={tmp_path / 'quickstart'}", "train.max_steps=30", "train.eval_batches=1",
        "data.max_train_lines=2000", "train.progress=false",
    ])
    run_dir = train(recipe)
    assert main(["evaluate", str(run_dir), "--iw-samples", "5", "--max-sentences", "50", "--no-progress"]) == 0
    a, b = "the old dog saw a small cat .", "she will not find the red boxes ."
    local = load_model(run_dir)
    expected = local.interpolate(a, b, steps=6)

    assert main(["push", str(run_dir), "quickstart-vae"]) == 0
    fresh_cache()
    remote = TextVAEModel.from_pretrained("tester/quickstart-vae").eval()

    assert remote.interpolate(a, b, steps=6) == expected
    assert_same_weights(remote, local)
    card = ModelCard.load("tester/quickstart-vae").text
    assert "on **synthetic**" in card and "K = 5" in card and "numbers on the test split (50 sentences" in card
    assert {"recipe.yaml", "train_summary.json", "evaluation.json"} <= set(fake_hub.files("tester/quickstart-vae"))


def test_pushing_the_same_export_twice_adds_no_commit(fake_hub, tiny_export):
    """The card is deterministic (fixed seed), so nothing changed and the client skips the commit."""
    first = push_export(tiny_export, REPO)
    second = push_export(tiny_export, REPO)

    assert fake_hub.commit_count(REPO) == 2
    assert second.commit_oid == first.commit_oid


def test_a_directory_that_is_not_an_export_fails_before_any_request(fake_hub, tmp_path):
    with pytest.raises(TextVAEError, match="not a textvae export"):
        push_export(tmp_path, REPO)

    assert fake_hub.requests == []


def test_pushed_attribute_vectors_let_a_hub_model_be_edited(fake_hub, tiny_export, fresh_cache, capsys, tmp_path):
    from textvae.hub.loading import load_attribute_vectors, load_model
    from textvae.models.latents import ATTRIBUTES_FILE, AttributeVectors, edit

    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"text": s, "negation": "not" in s}) + "\n" for s in SENTENCES))
    assert main(["attributes", str(tiny_export), str(labels), "--min-count", "1"]) == 0
    push_export(tiny_export, REPO)
    assert fake_hub.files(REPO)[ATTRIBUTES_FILE] == (tiny_export / ATTRIBUTES_FILE).read_bytes()
    fresh_cache()
    capsys.readouterr()

    assert main(["edit", REPO, SENTENCES[0], "--set", "negation=true", "--max-length", "10"]) == 0
    local = AttributeVectors.load(tiny_export / ATTRIBUTES_FILE)
    assert capsys.readouterr().out.splitlines() == edit(load_model(tiny_export), local, [SENTENCES[0]],
                                                        {"negation": True}, max_length=10)
    assert load_attribute_vectors(REPO).counts == local.counts == {"negation": [2, 1]}
    # a Hub id has no export to store new vectors in
    assert main(["attributes", REPO, str(labels), "--min-count", "1"]) == 2
    assert f"{REPO} is not a local export: give --output FILE" in capsys.readouterr().err


def test_a_hub_model_without_attribute_vectors_says_so(fake_hub, tiny_export, fresh_cache, capsys):
    push_export(tiny_export, REPO)
    fresh_cache()
    capsys.readouterr()
    assert main(["edit", REPO, SENTENCES[0], "--set", "negation=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"textvae: error: {REPO}: no attribute vectors (attributes.safetensors); compute them with "
                   f"`textvae attributes {REPO} LABELS.jsonl`"]


def test_transformers_push_to_hub_is_refused_naming_the_entry_point_that_writes_the_card(fake_hub):
    with pytest.raises(TextVAEError, match=r"push_to_hub would upload an empty model card: .*textvae\.hub\.push\.push_model"):
        build_model().push_to_hub(REPO)
    assert REPO not in fake_hub.repos
