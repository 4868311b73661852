"""``textvae evaluate`` on a tiny saved export: table, JSON, plots and one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers_models import (  # noqa: F401
    make_corpus,
    offline_and_quiet,
    run_cli,
    save_export,
    tiny_model,
    use_latent,
    word_tokenizer,
)
from textvae.cli.evaluate import write_json_atomic


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    corpus = make_corpus(root / "corpus", n_test=24)
    lines = (corpus / "test.txt").read_text(encoding="utf-8").splitlines()
    model = use_latent(tiny_model(word_tokenizer()), lines)
    export = save_export(model, root / "run" / "final", corpus)
    metrics = [{"step": s, "split": "train", "elbo": -60.0 + s, "rec": 55.0, "kl": 5.0} for s in (1, 2)]
    (root / "run" / "metrics.jsonl").write_text("\n".join(map(json.dumps, metrics)) + "\n", encoding="utf-8")
    return root, corpus, export


def test_evaluate_prints_a_table_and_writes_json_with_the_protocol(workspace, capsys, tmp_path):
    root, _, export = workspace
    out = tmp_path / "results" / "eval.json"
    code, stdout, _ = run_cli(capsys, "evaluate", root / "run", "--iw-samples", 5, "--output", out, "--no-progress")
    assert code == 0
    assert stdout.startswith("| Metric | Value | Notes |")
    assert "PPL from IW-NLL" in stdout and "Probe: tense" in stdout
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["protocol"]["iw_samples"] == 5
    assert results["protocol"]["num_sentences"] == 24
    assert results["data"]["split"] == "test" and results["data"]["source"].endswith("test.txt")
    assert results["checkpoint"]["model_safetensors_sha256"]
    assert "tense" in results["probes"]
    # The export keeps its own copy, written atomically (no temporary file left behind).
    assert json.loads((export / "evaluation.json").read_text(encoding="utf-8"))["nll_iw"] == results["nll_iw"]
    assert not [p for p in export.iterdir() if p.name.startswith(".evaluation.json")]
    # ... and the model card's figures, which `textvae push` uploads beside it.
    assert (export / "kl_per_dim.png").read_bytes()[:4] == b"\x89PNG"
    assert (export / "latent_pca.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_without_matplotlib_still_writes_the_results_and_says_why_no_figures(workspace, capsys,
                                                                                        monkeypatch):
    import importlib.util

    root, _, export = workspace
    for figure in export.glob("*.png"):  # the workspace is shared with the tests above
        figure.unlink()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, _, err = run_cli(capsys, "evaluate", export, "--iw-samples", 2, "--max-sentences", 12, "--no-progress")
    assert code == 0 and (export / "evaluation.json").is_file()
    assert not (export / "kl_per_dim.png").exists()
    assert any("matplotlib is not installed" in line for line in err)


def test_evaluate_plots_kl_pca_and_training_curves(workspace, capsys, tmp_path):
    root, _, export = workspace
    code, _, _ = run_cli(capsys, "evaluate", export, "--iw-samples", 2, "--max-sentences", 12,
                         "--plots", tmp_path / "plots", "--no-progress")
    assert code == 0
    names = {p.name for p in (tmp_path / "plots").iterdir()}
    assert names == {"kl_per_dim.png", "latent_pca.png", "training_curves.png"}
    for path in (tmp_path / "plots").iterdir():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corpus_option_replaces_the_recipe_and_max_sentences_limits(workspace, capsys, tmp_path):
    _, corpus, export = workspace
    bare = tmp_path / "bare"
    shutil.copytree(export, bare)
    (bare / "recipe.yaml").unlink()
    code, _, err = run_cli(capsys, "evaluate", bare, "--no-progress")
    assert code == 2 and err == [f"textvae: error: {bare}: no recipe.yaml in the export to say which corpus "
                                 "to use; pass --corpus NAME_OR_DIR"]
    out = tmp_path / "valid.json"
    code, _, _ = run_cli(capsys, "evaluate", bare, "--corpus", corpus, "--split", "valid", "--max-sentences", 5,
                         "--iw-samples", 2, "--output", out, "--no-progress")
    assert code == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["protocol"]["num_sentences"] == 5
    assert results["data"]["split"] == "valid"


@pytest.mark.parametrize(
    ("damage", "extra", "message"),
    [
        ("missing", [], "checkpoint not found"),
        ("corrupt", [], "could not load the checkpoint"),
        (None, ["--iw-samples", "0"], "argument --iw-samples: must be at least 1, got 0"),
        (None, ["--split", "dev"], "argument --split: invalid choice: 'dev'"),
        (None, ["--mi", "both"], "argument --mi: invalid choice: 'both'"),
        (None, ["--corpus", "/nonexistent/corpus"], "corpus directory not found"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(workspace, capsys, tmp_path, damage, extra, message):
    _, _, export = workspace
    target = tmp_path / "export"
    if damage != "missing":
        shutil.copytree(export, target)
    if damage == "corrupt":
        (target / "model.safetensors").write_bytes(b"not a safetensors file at all")
    code, stdout, err = run_cli(capsys, "evaluate", target, "--no-progress", *extra)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("textvae: error: ") and message in err[0], err
    assert stdout == ""


def test_json_is_replaced_atomically(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_json_atomic(path, {"x": 2})
    assert json.loads(path.read_text(encoding="utf-8")) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
