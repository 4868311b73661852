"""The Hub as an attacker meets it: an endpoint that is not there fails fast in one line (a cached
model still loads), and a push never publishes the uploader's local paths."""

from __future__ import annotations

import io
import json
import time

import pytest
import yaml

from tests.hub.conftest import TOKEN, build_model, free_port_endpoint, point_client_at
from textvae.cli import main
from textvae.hub.push import push_export, push_model

REPO = "tester/hostile-vae"


@pytest.mark.parametrize("command", [["sample", REPO], ["interpolate", REPO, "a", "b"], ["evaluate", REPO],
                                     ["reconstruct", REPO, "-"]], ids=lambda c: c[0])
def test_an_unreachable_endpoint_fails_at_once_in_one_line(command, tmp_path, monkeypatch, capsys):
    endpoint = free_port_endpoint()
    point_client_at(monkeypatch, endpoint, tmp_path / "home", token=TOKEN)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"the dog .\n")))
    started = time.monotonic()
    status = main(command)
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == [f"textvae: error: cannot reach the Hugging Face Hub at {endpoint} (connection error: "
                                   "Connection refused) and the model is not in the local cache"]
    assert elapsed < 5  # huggingface_hub alone retries for ~28 s


def test_a_cached_model_loads_while_the_endpoint_is_down(fake_hub, tmp_path, monkeypatch, capsys):
    from textvae.hub.loading import load_model

    push_model(build_model(), REPO)
    load_model(REPO)  # now in this machine's cache
    point_client_at(monkeypatch, free_port_endpoint(), tmp_path / "hf-home", token=TOKEN)  # same cache, Hub gone
    assert main(["sample", REPO, "-n", "2", "--max-length", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_a_push_publishes_no_local_path(fake_hub, tiny_export, tmp_path, monkeypatch):
    home = tmp_path / "home" / "ann"
    monkeypatch.setenv("HOME", str(home))
    corpus, run_dir = home / "data" / "my-corpus", tmp_path / "run"
    recipe = yaml.safe_load((tiny_export / "recipe.yaml").read_text())
    recipe["output_dir"] = str(run_dir)
    recipe["data"].update(corpus=str(corpus), data_dir=str(home / "data"), tokenizer=str(run_dir / "tokenizer"))
    (tiny_export / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tiny_export / "textvae_tokenizer.json").write_text(json.dumps(
        {"kind": "word", "corpus": "my-corpus", "train_source": f"{corpus}/train.txt"}))
    evaluation = json.loads((tiny_export / "evaluation.json").read_text())
    evaluation["data"].update(source=f"{corpus}/test.txt", corpus=str(corpus))
    evaluation["warnings"] = [f"read {corpus}/test.txt from ~/data/my-corpus"]
    (tiny_export / "evaluation.json").write_text(json.dumps(evaluation))
    summary = json.loads((tiny_export / "train_summary.json").read_text())
    (tiny_export / "train_summary.json").write_text(json.dumps({**summary, "run_dir": str(run_dir)}))

    push_export(tiny_export, REPO)

    remote = fake_hub.files(REPO)
    assert "textvae_tokenizer.json" in remote and "README.md" in remote
    for name, content in remote.items():
        if name.endswith((".json", ".yaml", ".md", ".jsonl")):
            text = content.decode()
            for private in (str(tmp_path), str(home), "/ann/", "~/"):
                assert private not in text, (name, private)
    assert remote["model.safetensors"] == (tiny_export / "model.safetensors").read_bytes()
    assert remote["tokenizer.json"] == (tiny_export / "tokenizer.json").read_bytes()
    published = yaml.safe_load(remote["recipe.yaml"])
    assert published["data"]["corpus"] == "my-corpus" and published["output_dir"] == "run"
    assert "| Corpus | my-corpus |" in remote["README.md"].decode()


class Killed(BaseException):
    """Stands for the process dying: no ``except Exception`` catches it."""


def test_a_push_killed_before_its_commit_leaves_the_repo_as_it_was(fake_hub, tiny_export, monkeypatch):
    """The card is built in memory and goes up in the one commit with the weights: all or nothing."""
    from huggingface_hub import HfApi

    push_export(tiny_export, REPO)
    before = (fake_hub.commit_count(REPO), fake_hub.files(REPO))

    def dying(self, *args, **kwargs):
        raise Killed

    monkeypatch.setattr(HfApi, "create_commit", dying)
    with pytest.raises(Killed):
        push_export(tiny_export, REPO, commit_message="a second version")
    assert (fake_hub.commit_count(REPO), fake_hub.files(REPO)) == before
