"""Attribute vectors, batched encoding and decoding, edits and analogies (textvae.models.latents)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers_models import offline_and_quiet, tiny_model, use_latent, word_tokenizer  # noqa: F401
from textvae.errors import InvalidArgument, TextVAEError
from textvae.models.latents import (
    NEAREST,
    AttributeVectors,
    analogy,
    decode_in_batches,
    edit,
    encode_in_batches,
    value_name,
)

SENTENCES = ["the old dog saw a small cat .", "she will not find the red boxes .", "he likes an apple .",
             "the farmers did not carry the heavy books .", "they met a king ."]
CODES = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])
LABELS = {"tense": ["past", "present", "past", "present"], "negation": [True, False, True, True]}


@pytest.fixture(scope="module")
def model():
    return use_latent(tiny_model(word_tokenizer()), SENTENCES)


def test_fit_takes_the_mean_code_and_count_of_every_value():
    vectors = AttributeVectors.fit(CODES, LABELS)
    assert vectors.values == {"tense": ["past", "present"], "negation": [False, True]}  # ordered by name
    assert vectors.counts == {"tense": [2, 2], "negation": [1, 3]}
    torch.testing.assert_close(vectors.means["tense"], torch.tensor([[0.0, 2.0], [2.0, 2.0]]))
    torch.testing.assert_close(vectors.means["negation"], torch.tensor([[2.0, 0.0], [2 / 3, 8 / 3]]))
    assert vectors.latent_size == 2 and vectors.attributes == ["tense", "negation"]


def test_values_are_found_by_value_or_by_their_command_line_name():
    vectors = AttributeVectors.fit(CODES, {**LABELS, "adjective": [None, "red", None, "red"]})
    assert vectors.index("negation", True) == vectors.index("negation", "true") == 1
    assert vectors.index("adjective", None) == vectors.index("adjective", "null") == 0
    assert [value_name(v) for v in (True, None, 3, 2.5, "x")] == ["true", "null", "3", "2.5", "x"]
    with pytest.raises(TextVAEError, match="unknown attribute 'mood' \\(stored: tense, negation, adjective\\)"):
        vectors.index("mood", "x")
    with pytest.raises(TextVAEError, match="attribute 'tense' has no value 'future' \\(stored: past, present\\)"):
        vectors.index("tense", "future")


def test_rare_values_and_values_that_print_alike_are_refused():
    with pytest.raises(InvalidArgument, match="min_count: attribute 'negation' has values seen fewer than 2 "
                       "times \\('false' 1x\\)"):
        AttributeVectors.fit(CODES, LABELS, min_count=2)
    with pytest.raises(TextVAEError, match="two values written 'true'"):
        AttributeVectors.fit(CODES[:2], {"flag": ["true", True]})
    with pytest.raises(TextVAEError, match="has 3 values for 4 codes"):
        AttributeVectors.fit(CODES, {"tense": ["past"] * 3})


def test_direction_moves_from_the_current_mean_to_the_target_mean():
    vectors = AttributeVectors.fit(CODES, LABELS)
    z = torch.tensor([[0.1, 0.0], [1.9, 0.0]])
    assert vectors.predict(z, "tense").tolist() == [0, 1]
    given = vectors.direction(z, "tense", "present", current="past", strength=0.5)
    torch.testing.assert_close(given, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    nearest = vectors.direction(z, "tense", "present", current=NEAREST)  # the second is present already
    torch.testing.assert_close(nearest, torch.tensor([[2.0, 0.0], [0.0, 0.0]]))


def test_saved_vectors_load_as_they_were(tmp_path):
    vectors = AttributeVectors.fit(CODES, {**LABELS, "n": [1, 2, 1, 2]}, info={"labels": "x.jsonl"})
    path = vectors.save(tmp_path / "attributes.safetensors")
    loaded = AttributeVectors.load(path)
    assert (loaded.values, loaded.counts, loaded.info) == (vectors.values, vectors.counts, vectors.info)
    assert all(torch.equal(loaded.means[a], vectors.means[a]) for a in vectors.attributes)
    assert [p.name for p in tmp_path.iterdir()] == ["attributes.safetensors"]  # no temporary file left


def test_loading_anything_else_is_one_clear_error(tmp_path, model):
    with pytest.raises(TextVAEError, match="no such file"):
        AttributeVectors.load(tmp_path / "missing.safetensors")
    model.save_pretrained(tmp_path / "export")
    with pytest.raises(TextVAEError, match="model.safetensors: not a textvae attribute-vectors file"):
        AttributeVectors.load(tmp_path / "export" / "model.safetensors")
    with pytest.raises(TextVAEError, match="2 dimensions, the model's code 4"):
        AttributeVectors.fit(CODES, LABELS).check_model(model)


def test_batched_encoding_and_decoding_match_one_call(model):
    mu, logvar = model.encode(SENTENCES)
    for batch_size in (1, 2, 64):
        got_mu, got_logvar = encode_in_batches(model, SENTENCES, batch_size)
        torch.testing.assert_close(got_mu, mu, atol=1e-4, rtol=1e-4)  # padding to another length
        torch.testing.assert_close(got_logvar, logvar, atol=1e-4, rtol=1e-4)
    assert decode_in_batches(model, mu, batch_size=2, max_length=12) == model.decode(mu, max_length=12)
    assert encode_in_batches(model, [])[0].shape == (0, 4)


def test_edit_decodes_the_moved_code(model):
    mu, _ = model.encode(SENTENCES)
    labels = {"tense": ["past", "future", "present", "past", "past"], "negation": [False, True, False, True, False]}
    vectors = AttributeVectors.fit(mu, labels)
    moved = mu + vectors.direction(mu, "tense", "present", "future")  # tested above; here: the same arithmetic
    expected = model.decode(moved, max_length=12)
    assert edit(model, vectors, SENTENCES, {"tense": "present"}, {"tense": "future"}, max_length=12) == expected
    # The current value of each sentence predicted from the unedited code, for every change.
    both = mu + vectors.direction(mu, "tense", "past") + vectors.direction(mu, "negation", True)
    assert edit(model, vectors, SENTENCES, {"tense": "past", "negation": "true"}, max_length=12) == \
        model.decode(both, max_length=12)
    assert edit(model, vectors, SENTENCES[0], {"tense": "past"}, strength=0.0, max_length=12) == \
        model.reconstruct(SENTENCES[:1], max_length=12)
    with pytest.raises(TextVAEError, match="a current value is given for negation, which no change names"):
        edit(model, vectors, SENTENCES, {"tense": "past"}, {"negation": True})
    with pytest.raises(TextVAEError, match="at least one change"):
        edit(model, vectors, SENTENCES, {})


def test_analogy_decodes_c_plus_b_minus_a(model):
    mu, _ = model.encode(SENTENCES[:3])
    assert analogy(model, *SENTENCES[:3], max_length=12) == model.decode((mu[2] + mu[1] - mu[0])[None], max_length=12)
    assert analogy(model, SENTENCES[0], SENTENCES[0], SENTENCES[2], max_length=12) == \
        model.reconstruct(SENTENCES[2:3], max_length=12)
    with pytest.raises(TextVAEError, match="as many A, B and C sentences \\(got 2, 1, 1\\)"):
        analogy(model, SENTENCES[:2], SENTENCES[0], SENTENCES[1])


@pytest.mark.parametrize("overrides", [{"encoder_type": "transformer", "decoder_type": "transformer",
                                        "num_attention_heads": 2}, {"latent_path": "concat"}])
def test_edits_and_analogies_work_for_other_encoders_decoders_and_latent_paths(overrides):
    model = use_latent(tiny_model(word_tokenizer(), **overrides), SENTENCES)
    mu, _ = encode_in_batches(model, SENTENCES, batch_size=2)
    vectors = AttributeVectors.fit(mu, {"negation": [False, True, False, True, False]})
    moved = mu[:1] + vectors.direction(mu[:1], "negation", True)
    assert edit(model, vectors, SENTENCES[0], {"negation": True}, max_length=8) == model.decode(moved, max_length=8)
    assert len(analogy(model, SENTENCES[:2], SENTENCES[1:3], SENTENCES[2:4], max_length=8)) == 2
