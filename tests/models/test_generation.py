"""textvae.models.generation: the text API (encode, decode, reconstruct, sample, interpolate)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.models import perturb_parameters, tiny_model, word_tokenizer
from textvae.errors import TextVAEError
from textvae.models.generation import interpolation_path

SENTENCES = ["the dog saw a cat .", "a small red cat ran", "the big old dog"]


@pytest.fixture(scope="module")
def model():
    tokenizer = word_tokenizer()
    model = tiny_model(3, vocab_size=len(tokenizer))
    perturb_parameters(model, 0.5, seed=1)
    perturb_parameters(model.posterior, 2.0, seed=2)  # sentences get codes far apart
    with torch.no_grad():
        model.head.output.bias[2] += 1.0  # some sentences end before max_length
    model.tokenizer = tokenizer
    return model


def test_encode_accepts_text_lists_and_id_batches_alike(model):
    mu, logvar = model.encode(SENTENCES)
    assert mu.shape == logvar.shape == (3, 4)
    batch = model.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    mu_ids, logvar_ids = model.encode(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(mu, mu_ids) and torch.equal(logvar, logvar_ids)
    mu_derived, _ = model.encode(batch["input_ids"])  # mask derived from <pad>
    assert torch.equal(mu, mu_derived)
    single, _ = model.encode(SENTENCES[1])  # a lone string is one sentence
    torch.testing.assert_close(single[0], mu[1], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(mu[0], mu[1])


def test_decode_is_the_tokenizer_view_of_decode_ids(model):
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    ids = model.decode_ids(z, max_length=8)
    texts = model.decode(z, max_length=8)
    assert texts == model.tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert all(isinstance(t, str) for t in texts)
    assert all(len(t.split()) <= 8 for t in texts)
    assert model.decode(z, "beam", max_length=8, beam_size=3) == model.tokenizer.batch_decode(
        model.decode_ids(z, "beam", max_length=8, beam_size=3), skip_special_tokens=True
    )


def test_reconstruct_decodes_the_posterior_mean(model):
    mu, _ = model.encode(SENTENCES)
    assert model.reconstruct(SENTENCES, max_length=10) == model.decode(mu, max_length=10)


def test_sample_is_reproducible_with_a_generator(model):
    def draw(seed):
        return model.sample(5, generator=torch.Generator().manual_seed(seed), max_length=10)

    assert draw(3) == draw(3)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    assert draw(3) == model.decode(z, max_length=10)
    assert len(draw(3)) == 5


def test_interpolate_starts_and_ends_at_the_two_sentences(model):
    steps = model.interpolate(SENTENCES[0], SENTENCES[1], steps=5, max_length=10)
    assert len(steps) == 5
    mu, _ = model.encode(SENTENCES[:2])
    ends = model.decode(mu, max_length=10)
    assert [steps[0], steps[-1]] == ends
    assert ends[0] != ends[1]
    path = interpolation_path(mu[0], mu[1], 5)
    assert steps == model.decode(path, max_length=10)


def test_text_api_without_tokenizer_says_how_to_get_one():
    bare = tiny_model(0)
    with pytest.raises(TextVAEError, match="no tokenizer attached"):
        bare.decode(torch.zeros(1, 4))
    with pytest.raises(TextVAEError, match="no tokenizer attached"):
        bare.encode(["the dog"])
    assert len(bare.decode_ids(torch.zeros(1, 4), max_length=3)) == 1  # ids need no tokenizer


def test_a_transformer_refuses_lengths_beyond_its_positions():
    tokenizer = word_tokenizer()
    model = tiny_model(4, vocab_size=len(tokenizer), encoder_type="transformer", decoder_type="transformer",
                       max_position_embeddings=6)
    model.tokenizer = tokenizer
    with pytest.raises(TextVAEError, match="sentence 1 has 7 tokens with BOS/EOS; the Transformer has 6 positions"):
        model.encode(["the dog", "the big old dog saw"])
    with pytest.raises(TextVAEError, match="--max-length 6: the Transformer decoder has 6 positions"):
        model.decode(torch.zeros(1, 4), max_length=6)
    assert len(model.decode(torch.zeros(1, 4), max_length=5)) == 1


# ----------------------------------------------------------------- interpolation paths


def test_lerp_is_the_straight_line():
    a, b = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([-1.0, 4.0, 2.0])
    path = interpolation_path(a, b, 5, "lerp")
    assert path.shape == (5, 3)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path[2], (a + b) / 2)
    torch.testing.assert_close(path[1:] - path[:-1], ((b - a) / 4).expand(4, -1))


def test_slerp_follows_the_great_circle_with_linear_norms():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])
    path = interpolation_path(a, b, 5, "slerp")
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=-1), torch.linspace(3.0, 1.0, 5))
    angles = torch.atan2(path[:, 1], path[:, 0])
    torch.testing.assert_close(angles, torch.linspace(0.0, math.pi / 2, 5))


def test_slerp_of_nearly_parallel_codes_stays_finite():
    a = torch.tensor([1.0, 2.0, 3.0])
    path = interpolation_path(a, 2 * a, 4, "slerp")
    assert bool(torch.isfinite(path).all())
    torch.testing.assert_close(path, interpolation_path(a, 2 * a, 4, "lerp"), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("steps,path,message", [(1, "lerp", "at least 2"), (3, "spline", "unknown --path")])
def test_bad_interpolation_options_are_user_errors(steps, path, message):
    with pytest.raises(TextVAEError, match=message):
        interpolation_path(torch.zeros(2), torch.ones(2), steps, path)
