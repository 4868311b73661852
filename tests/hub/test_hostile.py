"""The Hub as an attacker meets it: an endpoint that is not there fails fast in one line (a cached
model still loads); a push never publishes the uploader's local paths; a token is never echoed,
whatever its shape; a repo id the client would refuse is one line before any work."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch
import yaml

from tests.hub.conftest import (
    SENTENCES,
    TOKEN,
    build_model,
    free_port_endpoint,
    point_client_at,
    tree_digest,
)
from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.hub.push import push_export, push_model
from textvae.models.latents import ATTRIBUTES_FILE, AttributeVectors

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


# ------------------------------------------------------------------ the token is never echoed
MALFORMED_TOKENS = {  # --token value -> why it cannot be one
    "space": ("hf_SECRETpart1 SECRETpart2", "it contains whitespace (a token is one word, like hf_...)"),
    "newline": ("hf_SECRETpart1\nSECRETpart2", "it contains whitespace (a token is one word, like hf_...)"),
    "padded": ("\thf_SECRETpart1 ", "it contains whitespace (a token is one word, like hf_...)"),
    "non-ascii": ("hf_SECRÉTpart1", "it contains a non-ASCII or control character (a token is printable ASCII, like hf_...)"),
    "control": ("hf_SECRET\x07part1", "it contains a non-ASCII or control character (a token is printable ASCII, like hf_...)"),
    "empty": ("", "it is empty"),
}
REJECTED = ("textvae: error: the Hub rejected the token (401 Unauthorized): it is invalid or expired; log in again "
            "with `hf auth login`, or fix HF_TOKEN or the token given")


@pytest.mark.parametrize("case", MALFORMED_TOKENS)
def test_a_malformed_token_is_refused_before_any_request_and_never_echoed(case, fake_hub, tiny_export, capsys):
    token, why = MALFORMED_TOKENS[case]
    assert main(["push", str(tiny_export), REPO, "--token", token]) == 2
    assert capsys.readouterr().err.splitlines() == [f"textvae: error: --token: not a Hugging Face token: {why}"]
    assert fake_hub.requests == []


@pytest.mark.parametrize("token", ["hf_SECRETwrong0123456789abcdefghij", "hf_SECRET" + "x" * 5000, "SECRET"],
                         ids=["token-shaped", "very-long", "short"])
def test_a_well_formed_token_the_hub_refuses_is_named_never_echoed(token, fake_hub, tiny_export, capsys):
    assert main(["push", str(tiny_export), REPO, "--token", token]) == 2
    assert capsys.readouterr().err.splitlines() == [REJECTED]


@pytest.mark.parametrize(("command", "case"), [(["push", "EXPORT", REPO], "space"), (["sample", REPO], "space"),
                                               (["edit", REPO, "a", "--set", "x=y"], "space"),
                                               (["push", "EXPORT", REPO], "non-ascii"), (["evaluate", REPO], "non-ascii")],
                         ids=lambda value: value[0] if isinstance(value, list) else value)
def test_a_malformed_hf_token_is_named_by_its_variable_before_any_request(command, case, fake_hub, tiny_export,
                                                                          monkeypatch, capsys):
    """``evaluate`` fetches the recipe before loading the model: the client's failure is
    explained by the token too."""
    token, why = MALFORMED_TOKENS[case]
    monkeypatch.setenv("HF_TOKEN", token)
    assert main([str(tiny_export) if arg == "EXPORT" else arg for arg in command]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"textvae: error: the Hugging Face token in $HF_TOKEN is malformed: {why}; fix it, or log in again with "
        "`hf auth login`"]
    assert fake_hub.requests == []


@pytest.mark.parametrize("token", ["hf_SECRETwrong0123456789abcdefghij", "SECRET with spaces", "SECRET\nsecond line",
                                   "SECRET" * 1000, "SECRÉT"],
                         ids=["token-shaped", "spaces", "newline", "6000-chars", "non-ascii"])
def test_no_hub_failure_explanation_carries_a_token(token):
    """Whatever text the client or the server wraps around it, the token (raw or as a repr
    escapes it) and anything shaped like a Hub token is scrubbed from the one line."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from textvae.hub.failures import explain_hub_error

    response = httpx2.Response(500, request=httpx2.Request("POST", "http://127.0.0.1:9/api/models/x/commit/main"))
    header = f"Bearer {token}".encode("utf-8", "replace")
    failures = {
        "header": httpx2.LocalProtocolError(f"Illegal header value {header!r}"),
        "transport": httpx2.ConnectError(f"[Errno 111] while sending Authorization: Bearer {token} to the Hub"),
        "server": HfHubHTTPError("500 Server Error", response=response,
                                 server_message=f"no user for {token} (nor hf_OTHERsecret0123456789abcdefg)"),
    }
    wrapped = OSError("huggingface.co could not be reached")
    wrapped.__cause__ = failures["server"]
    for name, exc in [*failures.items(), ("wrapped", wrapped)]:
        message = explain_hub_error(exc, REPO, "http://127.0.0.1:9", writing=True, token=token)
        assert message is not None and "\n" not in message, name
        assert "SECRET" not in message and "OTHERsecret" not in message, (name, message)
    header_message = explain_hub_error(failures["header"], REPO, "http://127.0.0.1:9", writing=True, token=token)
    assert header_message == ("the HTTP client refused to send the request to the Hub (Illegal header value "
                              "b'Bearer ***'): a malformed token or header")  # not "cannot reach"


# ------------------------------------------------------------------ repo ids, checked first
BAD_REPO_IDS = {"space": "bad repo", "97-chars": "a" * 97, "empty": "", "double-dash": "a--b",
                "leading-dash": "x/-y", "dot-git": "name.git", "newline": "two\nlines", "non-ascii": "ünï/code",
                "three-parts": "a/b/c"}


@pytest.mark.parametrize("case", BAD_REPO_IDS)
def test_an_invalid_repo_id_is_one_line_before_the_export_is_read(case, fake_hub, tmp_path, capsys):
    from huggingface_hub.utils import validate_repo_id

    repo_id = BAD_REPO_IDS[case]
    with pytest.raises(Exception) as validator:
        validate_repo_id(repo_id)
    assert main(["push", str(tmp_path / "no-such-export"), repo_id]) == 2  # the export is never looked at
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"textvae: error: {repo_id!r} is not a Hub repo id: ")
    assert err[0].split(": ", 2)[2].split(" is not a Hub repo id: ")[1] in str(validator.value)
    assert fake_hub.requests == []


@pytest.mark.parametrize("case", [case for case in BAD_REPO_IDS if case != "three-parts"])  # that one is a path
def test_loading_an_invalid_repo_id_is_one_line_without_a_request(case, fake_hub, capsys):
    from textvae.hub.loading import load_attribute_vectors

    repo_id = BAD_REPO_IDS[case]
    expected = f"checkpoint not found: no such local directory, and {repo_id!r} is not a Hub repo id: "
    assert main(["sample", repo_id]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"textvae: error: {expected}")
    with pytest.raises(TextVAEError) as raised:
        load_attribute_vectors(repo_id)
    assert str(raised.value).startswith(expected) and "\n" not in str(raised.value)
    assert fake_hub.requests == []


# ------------------------------------------------------------------ no local path leaves the machine
def test_attribute_vectors_record_file_names_not_paths(tiny_export, tmp_path):
    deep = tmp_path / "home" / "ann" / "private"
    deep.mkdir(parents=True)
    (deep / "sentences.txt").write_text("".join(s + "\n" for s in SENTENCES))
    (deep / "labels.jsonl").write_text("".join(json.dumps({"negation": "not" in s}) + "\n" for s in SENTENCES))
    assert main(["attributes", str(tiny_export), str(deep / "labels.jsonl"), "--text", str(deep / "sentences.txt"),
                 "--min-count", "1"]) == 0
    stored = tiny_export / ATTRIBUTES_FILE
    assert AttributeVectors.load(stored).info == {"labels": "labels.jsonl", "text": "sentences.txt", "sentences": 3,
                                                  "min_count": 1}
    assert str(tmp_path).encode() not in stored.read_bytes()


def test_safetensors_metadata_naming_local_paths_is_published_cut(fake_hub, tiny_export, tmp_path, monkeypatch):
    """An export of an earlier version (attribute vectors naming their labels by absolute path)
    and a codes file from `textvae encode` go up with the paths cut, tensors byte for byte."""
    from safetensors.numpy import save_file
    from safetensors.torch import load as load_tensors

    home = tmp_path / "home" / "ann"
    monkeypatch.setenv("HOME", str(home))
    info = {"labels": str(home / "data" / "labels.jsonl"), "text": "C:\\Users\\ann\\data\\sentences.txt",
            "sentences": 3, "min_count": 1}
    old = AttributeVectors({"negation": torch.ones(2, 4)}, {"negation": [False, True]}, {"negation": [2, 1]}, info)
    old.save(tiny_export / ATTRIBUTES_FILE)
    save_file({"mu": np.zeros((3, 4), dtype=np.float32)}, str(tiny_export / "codes.safetensors"),
              metadata={"checkpoint": str(tiny_export), "source": f"{home}/data/test.txt"})
    before = tree_digest(tiny_export)

    push_export(tiny_export, REPO)

    remote = fake_hub.files(REPO)
    for name in (ATTRIBUTES_FILE, "codes.safetensors"):
        for private in (str(tmp_path).encode(), b"Users", b"ann"):
            assert private not in remote[name], (name, private)
        assert load_tensors(remote[name]).keys() == load_tensors((tiny_export / name).read_bytes()).keys()
    published = tmp_path / "published.safetensors"
    published.write_bytes(remote[ATTRIBUTES_FILE])
    vectors = AttributeVectors.load(published)
    assert vectors.info == {**info, "labels": "labels.jsonl", "text": "sentences.txt"}
    assert torch.equal(vectors.means["negation"], old.means["negation"]) and vectors.counts == old.counts
    assert load_tensors(remote["codes.safetensors"])["mu"].sum() == 0
    assert tree_digest(tiny_export) == before  # the local export is only read


PRIVATE_DATA = {  # file -> (its content, HOME standing for the home directory; where the refusal points)
    "chat_template.jinja": ("{# drafted from HOME/notes/chat.txt #}\n{{ messages }}\n", "line 1"),
    "vocab.txt": ("the\ndog\nHOME/corpus/raw.txt\n", "line 3"),
    "recipe.yaml": ("seed: 0\ndata:\n  corpus: synthetic\n  url: file://HOME/data/corpus\n", "field data.url"),
}


@pytest.mark.parametrize("name", PRIVATE_DATA)
def test_a_file_textvae_cannot_rewrite_naming_a_private_path_refuses_the_push(name, fake_hub, tiny_export, tmp_path,
                                                                           monkeypatch, capsys):
    """Vocabularies and templates are data, and a URL is not a path to cut: a path into the home
    directory there refuses the push, naming the file and where, before any request."""
    home = tmp_path / "home" / "ann"
    monkeypatch.setenv("HOME", str(home))
    content, where = PRIVATE_DATA[name]
    (tiny_export / name).write_text(content.replace("HOME", str(home)))
    assert main(["push", str(tiny_export), REPO]) == 2
    private = f"{home}/{content.split('HOME/')[1].split()[0]}"
    assert capsys.readouterr().err.splitlines() == [
        f"textvae: error: {tiny_export / name}: {where} ({private}) is a local path and would be published; "
        "remove it from the file before pushing"]
    assert fake_hub.requests == []
