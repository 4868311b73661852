"""``textvae evaluate``'s interpolation, diversity and fluency numbers: in the JSON, the export's
evaluation.json and the table, with a tiny local causal LM as the fluency LM; bad flags are one line."""

from __future__ import annotations

import json

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

GENERATION_KEYS = {"interpolation_bleu_start", "interpolation_bleu_end", "interpolation_corpus_bleu_start",
                   "interpolation_corpus_bleu_end", "interpolation_monotone", "interpolation_step_change",
                   "samples_distinct_2", "samples_self_bleu"}
FLUENCY_KEYS = {"fluency_ppl_real", "fluency_ppl_interpolation", "fluency_ppl_samples",
                "fluency_ratio_interpolation", "fluency_ratio_samples"}
QUICK = ["--iw-samples", "2", "--max-sentences", "12", "--no-progress"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate-generation")
    corpus = make_corpus(root / "corpus", n_test=24)
    lines = (corpus / "test.txt").read_text(encoding="utf-8").splitlines()
    return save_export(use_latent(tiny_model(word_tokenizer()), lines), root / "export", corpus)


def test_interpolation_diversity_and_fluency_reach_the_json_the_export_and_the_table(export, backbones, capsys,
                                                                                        tmp_path):
    out = tmp_path / "eval.json"
    code, stdout, _ = run_cli(capsys, "evaluate", export, *QUICK, "--interpolation-pairs", 4,
                              "--interpolation-steps", 5, "--samples", 6, "--fluency-lm", backbones / "gpt2",
                              "--output", out)
    assert code == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert GENERATION_KEYS | FLUENCY_KEYS <= set(results)
    protocol = results["protocol"]["generation"]
    assert (protocol["interpolation_pairs"], protocol["interpolation_steps"], protocol["samples"]) == (4, 5, 6)
    assert protocol["fluency_lm"] == str(backbones / "gpt2") and protocol["fluency_real_sentences"] == 8
    assert len(results["generation_examples"]["interpolation"]) == 5
    assert results["fluency_ratio_samples"] == pytest.approx(results["fluency_ppl_samples"] / results["fluency_ppl_real"])
    saved = json.loads((export / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["samples_self_bleu"] == results["samples_self_bleu"]
    table = stdout.strip().splitlines()
    assert "| Interpolation: monotone paths |" in stdout and "| Fluency ratio: samples / real |" in stdout
    assert all(line.startswith("| ") and line.count(" | ") >= 2 for line in table)  # one table


def test_without_a_cached_default_lm_fluency_is_skipped_with_a_note(export, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTVAE_PRETRAINED", str(tmp_path / "none-here"))
    out = tmp_path / "eval.json"
    code, stdout, _ = run_cli(capsys, "evaluate", export, *QUICK, "--interpolation-pairs", 2, "--samples", 2,
                              "--output", out)
    assert code == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert GENERATION_KEYS <= set(results) and not FLUENCY_KEYS & set(results)
    assert "SmolLM2-135M is not cached" in results["protocol"]["generation"]["fluency"]
    assert "| Fluency | - | skipped: no --fluency-lm given" in stdout


def test_zero_pairs_and_samples_add_no_numbers(export, capsys, tmp_path):
    out = tmp_path / "eval.json"
    code, _, _ = run_cli(capsys, "evaluate", export, *QUICK, "--interpolation-pairs", 0, "--samples", 0,
                         "--output", out)
    results = json.loads(out.read_text(encoding="utf-8"))
    assert code == 0 and not (GENERATION_KEYS | FLUENCY_KEYS) & set(results)
    assert "generation" not in results["protocol"] and "generation_examples" not in results


@pytest.mark.parametrize("flags, message", [
    (["--samples", "1"], "argument --samples: must be 0 or at least 2"),
    (["--interpolation-steps", "1"], "argument --interpolation-steps: must be at least 2"),
    (["--interpolation-pairs", "-1"], "argument --interpolation-pairs: must be at least 0"),
    (["--fluency-lm", "/nowhere/lm"], "--fluency-lm: cannot load a causal LM from '/nowhere/lm'"),
    (["--fluency-lm-gguf", "x.gguf"], "--fluency-lm-gguf names a file inside --fluency-lm's folder"),
])
def test_bad_generation_flags_are_one_line(export, capsys, flags, message):
    code, stdout, err = run_cli(capsys, "evaluate", export, *QUICK, *flags)
    assert code == 2 and stdout == ""
    assert len(err) == 1 and message in err[0], err


def test_a_gguf_file_not_in_the_folder_is_one_line(export, backbones, capsys):
    pytest.importorskip("gguf")
    code, _, err = run_cli(capsys, "evaluate", export, *QUICK, "--fluency-lm", backbones / "gpt2",
                           "--fluency-lm-gguf", "absent.gguf")
    assert code == 2 and len(err) == 1 and "--fluency-lm-gguf: no file absent.gguf in" in err[0]
