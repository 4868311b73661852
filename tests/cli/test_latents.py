"""``textvae encode | attributes | edit | analogy`` on a tiny export with a used latent."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch

from tests.helpers_models import (  # noqa: F401
    make_corpus,
    offline_and_quiet,
    run_cli,
    save_export,
    tiny_model,
    use_latent,
    word_tokenizer,
)
from textvae.cli import main
from textvae.hub.loading import load_model
from textvae.models.latents import ATTRIBUTES_FILE, AttributeVectors, analogy, edit

A, B, C = "the old dog saw a small cat .", "she will not find the red boxes .", "he likes an apple ."
SHORT = ["--max-length", "12"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_test=40)


@pytest.fixture(scope="module")
def export(tmp_path_factory, corpus):
    sentences = (corpus / "test.txt").read_text(encoding="utf-8").splitlines()
    model = use_latent(tiny_model(word_tokenizer()), sentences)
    return save_export(model, tmp_path_factory.mktemp("export") / "final")


@pytest.fixture(scope="module")
def with_attributes(tmp_path_factory, export, corpus):
    """A copy of the export with the test split's tense and negation vectors stored."""
    copy = tmp_path_factory.mktemp("with-attributes") / "final"
    shutil.copytree(export, copy)
    assert main(["attributes", str(copy), str(corpus / "test.factors.jsonl"), "--text", str(corpus / "test.txt"),
                 "--attribute", "tense", "--attribute", "negation", "--min-count", "2"]) == 0
    return copy


def assert_error(code, out, err, message):
    assert code == 2 and out == "" and len(err) == 1 and err[0].startswith("textvae: error: "), err
    assert message in err[0], err[0]


# --------------------------------------------------------------------------- encode


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".parquet"])
def test_encode_writes_means_logvars_and_samples_row_by_line(export, capsys, tmp_path, suffix):
    source = tmp_path / "in.txt"
    source.write_text(f"{A}\n\n  {B}\n{C}\n", encoding="utf-8")
    out_path = tmp_path / f"codes{suffix}"
    code, out, err = run_cli(capsys, "encode", export, source, "-o", out_path, "--logvar", "--sample", "--batch-size", 2)
    assert code == 0 and out == ""
    assert err[0] == f"note: {source}: 1 blank line skipped (line 2): 3 sentences follow the other lines in order"
    assert err[-1] == f"wrote 3 codes of 4 dimensions (mu, logvar, z) to {out_path}"
    arrays = read_codes(out_path)
    mu, logvar = load_model(export).encode([A, B, C])
    assert arrays["line"].tolist() == [1, 3, 4]
    np.testing.assert_allclose(arrays["mu"], mu.numpy(), atol=1e-4)
    np.testing.assert_allclose(arrays["logvar"], logvar.numpy(), atol=1e-4)
    noise = (arrays["z"] - arrays["mu"]) / np.exp(0.5 * arrays["logvar"])
    expected = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)).numpy()  # --seed 0
    np.testing.assert_allclose(noise, expected, atol=1e-3)
    if suffix == ".parquet":
        assert arrays["text"] == [A, B, C]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.txt", out_path.name])  # no temporary left


def read_codes(path):
    if path.suffix == ".npz":
        return dict(np.load(path))
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(path)
    import pyarrow.parquet as pq

    return {name: column if name == "text" else np.array(column)
            for name, column in pq.read_table(path).to_pydict().items()}


def test_encode_reads_stdin_and_writes_npy_means(export, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{A}\n{B}\n"))
    code, _, err = run_cli(capsys, "encode", export, "-", "--output", tmp_path / "mu.npy")
    assert code == 0 and err == [f"wrote 2 codes of 4 dimensions (mu) to {tmp_path / 'mu.npy'}"]
    np.testing.assert_allclose(np.load(tmp_path / "mu.npy"), load_model(export).encode([A, B])[0].numpy(), atol=1e-4)


@pytest.mark.parametrize(("argv", "message"), [
    (["-o", "{tmp}/c.npy", "--logvar"], "a .npy file holds one array (the means); use .npz, .safetensors or "
     ".parquet with --logvar"),
    (["-o", "{tmp}/c.csv"], "argument --output/-o: {tmp}/c.csv: the name must end in .npy, .npz, .safetensors, .parquet"),
    (["-o", "{tmp}/missing/c.npy"], "no such directory {tmp}/missing"),
])
def test_encode_refuses_bad_outputs_in_one_line(export, capsys, tmp_path, argv, message):
    source = tmp_path / "in.txt"
    source.write_text(A + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "encode", export, source, *[a.format(tmp=tmp_path) for a in argv])
    assert_error(code, out, err, message.format(tmp=tmp_path))


# --------------------------------------------------------------------------- attributes


def test_attributes_are_stored_in_the_export_with_their_counts(with_attributes, corpus, capsys):
    vectors = AttributeVectors.load(with_attributes / ATTRIBUTES_FILE)
    factors = [json.loads(line) for line in (corpus / "test.factors.jsonl").read_text().splitlines()]
    assert vectors.attributes == ["tense", "negation"]
    assert dict(zip(vectors.values["tense"], vectors.counts["tense"], strict=True)) == {
        t: sum(f["tense"] == t for f in factors) for t in ("future", "past", "present")}
    assert vectors.info["sentences"] == 40 and vectors.info["min_count"] == 2
    # a second run may not silently replace them
    code, out, err = run_cli(capsys, "attributes", with_attributes, corpus / "test.factors.jsonl",
                             "--text", corpus / "test.txt")
    assert_error(code, out, err, "attributes.safetensors exists: pass --overwrite to replace it")


def test_attributes_print_values_counts_and_nearest_mean_accuracy(export, corpus, capsys, tmp_path):
    labels = tmp_path / "labels.jsonl"
    sentences = (corpus / "test.txt").read_text().splitlines()
    factors = [json.loads(line) for line in (corpus / "test.factors.jsonl").read_text().splitlines()]
    labels.write_text("".join(json.dumps({"text": s, "negation": f["negation"], "place": f.get("place")}) + "\n"
                              for s, f in zip(sentences, factors, strict=True)))
    output = tmp_path / "vectors.safetensors"
    code, out, err = run_cli(capsys, "attributes", export, labels, "--output", output, "--min-count", 1)
    assert code == 0 and err == [] and output.is_file() and not (export / ATTRIBUTES_FILE).exists()
    lines = out.splitlines()
    assert lines[0] == f"40 sentences: mean codes of 2 attributes stored in {output}"
    negation = next(line for line in lines if line.startswith("negation\t")).split("\t")
    trues = sum(f["negation"] for f in factors)
    assert 0 <= float(negation[1]) <= 1 and negation[2] == f"false ({40 - trues}), true ({trues})"


@pytest.mark.parametrize(("argv", "message"), [
    (["--attribute", "mood"], "test.factors.jsonl:1: no 'mood' key"),
    (["--min-count", "1000"], "--min-count: attribute 'tense' has values seen fewer than 1000 times"),
    (["--min-count", "0"], "argument --min-count: must be at least 1, got 0"),
])
def test_attributes_refuse_bad_labels_in_one_line(export, corpus, capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, "attributes", export, corpus / "test.factors.jsonl", "--text", corpus / "test.txt",
                             "--output", tmp_path / "v.safetensors", "--attribute", "tense", *argv)
    assert_error(code, out, err, message)
    assert not (tmp_path / "v.safetensors").exists()


# --------------------------------------------------------------------------- edit, analogy


def test_edit_decodes_what_the_library_edit_decodes(with_attributes, capsys):
    model = load_model(with_attributes)
    vectors = AttributeVectors.load(with_attributes / ATTRIBUTES_FILE)
    code, out, err = run_cli(capsys, "edit", with_attributes, A, B, "--set", "tense=past", "--set", "negation=true",
                             "--from", "tense=present", "--strength", "1.5", *SHORT)
    assert code == 0 and err == []
    expected = edit(model, vectors, [A, B], {"tense": "past", "negation": "true"}, {"tense": "present"}, 1.5,
                    max_length=12)
    assert out.splitlines() == expected


def test_analogy_decodes_what_the_library_analogy_decodes(export, capsys):
    code, out, err = run_cli(capsys, "analogy", export, A, B, C, *SHORT)
    assert code == 0 and err == []
    assert out.splitlines() == analogy(load_model(export), A, B, C, max_length=12)


@pytest.mark.parametrize(("argv", "message"), [
    (["--set", "mood=happy"], "unknown attribute 'mood' (stored: tense, negation)"),
    (["--set", "tense=perfect"], "attribute 'tense' has no value 'perfect' (stored: future, past, present)"),
    (["--set", "tense=past", "--from", "tense=perfect"], "attribute 'tense' has no value 'perfect'"),
    (["--set", "tense=past", "--from", "negation=true"], "a current value is given for negation, which no change"),
    (["--set", "tense=past", "--set", "tense=future"], "--set: attribute 'tense' is given twice"),
    (["--set", "tense"], "argument --set: expected ATTRIBUTE=VALUE, got 'tense'"),
    (["--set", "tense=past", "--strength", "0"], "argument --strength: must be a positive finite number, got 0"),
])
def test_edit_refuses_unknown_attributes_and_values_in_one_line(with_attributes, capsys, argv, message):
    assert_error(*run_cli(capsys, "edit", with_attributes, A, *argv), message)


def test_edit_without_stored_vectors_says_how_to_make_them(export, capsys, tmp_path):
    assert_error(*run_cli(capsys, "edit", export, A, "--set", "tense=past"),
                 f"{export}: no attribute vectors (attributes.safetensors); compute them with `textvae attributes")
    assert_error(*run_cli(capsys, "edit", export, A, "--set", "tense=past", "--attributes", tmp_path / "x.safetensors"),
                 "x.safetensors: no such file")
