"""textvae.models.generation: ``generate(latents=z)`` and the text API over it
(encode, decode, reconstruct, sample, interpolate)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LogitsProcessorList, NoBadWordsLogitsProcessor

from tests.models import BOS, EOS, perturb_parameters, step_logits, tiny_model, word_tokenizer
from textvae.errors import TextVAEError
from textvae.models.generation import interpolation_path

MODELS = {
    "lstm-invlip": dict(decoder_type="lstm", latent_path="invlip"),
    "lstm-concat": dict(decoder_type="lstm", latent_path="concat"),
    "tf-invlip": dict(decoder_type="transformer", latent_path="invlip"),
    "tf-concat": dict(decoder_type="transformer", latent_path="concat"),
}
# Greedy decodes of `varied_model(0, eos_bias=1.5, ...)` from `codes(4)`, max_length 10, by the
# hand-written decoder that generate() replaced (textvae.models.decoding at 1a351e7).
GREEDY_BEFORE_GENERATE = {
    "lstm-invlip": [[18] * 10, [17] + [0] * 9, [13, 13, 13, 3, 16, 16, 16, 16, 16, 16], [11] * 10],
    "lstm-concat": [[16] * 8, [19, 19, 11, 11], [11] * 10, [5]],
    "tf-invlip": [[6] * 10] * 4,
    "tf-concat": [[16, 19, 18, 21, 4, 11, 18, 4, 11, 4], [1, 19, 1, 19, 1, 19, 19, 19, 19, 1],
                  [8, 8, 8, 19, 8, 19, 8, 8, 8, 19], [1, 16, 16, 1, 19, 7, 7, 19, 16, 19]],
}

SENTENCES = ["the dog saw a cat .", "a small red cat ran", "the big old dog"]


def varied_model(seed: int, eos_bias: float = 1.0, **options):
    """A random model whose decoded sentences vary with the prefix and the code, and some end.

    At the init the logits hardly depend on the prefix (one token repeated); perturbing the
    decoder and the output layer, and raising EOS, gives varied and ending sentences.
    """
    model = tiny_model(seed, **options)
    perturb_parameters(model.decoder, 0.5, seed)
    perturb_parameters(model.head.output, 0.5, seed + 1)
    with torch.no_grad():
        model.head.output.bias[EOS] += eos_bias
    return model


def codes(n: int, seed: int = 0) -> torch.Tensor:
    return 2 * torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------- generate(latents=z)


@pytest.mark.parametrize("name", MODELS)
def test_greedy_generate_decodes_what_the_hand_written_decoder_did(name):
    model = varied_model(0, eos_bias=1.5, **MODELS[name])
    assert model.decode_ids(codes(4), max_length=10) == GREEDY_BEFORE_GENERATE[name]


@pytest.mark.parametrize("name", MODELS)
def test_greedy_is_the_chained_argmax_of_full_prefix_logits(name):
    """The cache (LSTM state, Transformer keys/values) gives the logits of the whole prefix."""
    model = varied_model(0, eos_bias=1.5, **MODELS[name])
    z = codes(6)
    decoded = model.decode_ids(z, max_length=12)
    for row in range(6):
        prefix = []
        with torch.no_grad():
            while len(prefix) < 12:
                token = int(step_logits(model, torch.tensor([[BOS, *prefix]]), z[row : row + 1])[0, -1].argmax())
                if token == EOS:
                    break
                prefix.append(token)
        assert decoded[row] == prefix, row


@pytest.mark.parametrize("name", ["lstm-concat", "tf-concat"])
def test_a_beam_of_one_is_greedy_and_beams_reorder_the_cache(name):
    model = varied_model(4, **MODELS[name])
    z = codes(8, seed=4)
    assert model.decode_ids(z, max_length=15, num_beams=1) == model.decode_ids(z, max_length=15)
    beams = model.decode_ids(z, max_length=15, num_beams=4)
    assert beams == model.decode_ids(z, max_length=15, num_beams=4, use_cache=False)  # prefix recomputed
    assert beams != model.decode_ids(z, max_length=15)  # a wider beam finds other sentences


def test_generate_takes_the_usual_sampling_options_and_logits_processors():
    model = varied_model(7, decoder_type="transformer")
    z = codes(6, seed=7)
    sequences = model.generate(latents=z, max_new_tokens=9, do_sample=True, top_p=0.9, temperature=0.8)
    assert sequences.shape[0] == 6 and sequences.shape[1] <= 10 and bool((sequences[:, 0] == BOS).all())
    word = int(model.generate(latents=z, max_new_tokens=9)[0, 1])  # greedy's first word
    banned = model.generate(latents=z, max_new_tokens=9, num_beams=4,
                            logits_processor=LogitsProcessorList([NoBadWordsLogitsProcessor([[word]], EOS)]))
    assert banned.shape[0] == 6 and not bool((banned == word).any())


def test_seeded_sampling_is_reproducible_seed_dependent_and_leaves_the_global_rng_alone():
    model = varied_model(7)
    z = codes(6, seed=7)

    def draw(seed):
        return model.decode_ids(z, max_length=12, do_sample=True, top_k=0, seed=seed)

    state = torch.random.get_rng_state()
    assert draw(0) == draw(0)
    assert draw(0) != draw(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(0)
    assert model.decode_ids(z, max_length=12, do_sample=True, top_k=0) == draw(0)


@pytest.mark.parametrize("max_length", [1, 5])
def test_decoded_rows_never_exceed_max_length_or_contain_eos(max_length):
    model = varied_model(1, decoder_type="lstm")  # rarely emits EOS: rows run to the limit
    for options in ({}, {"num_beams": 3}, {"do_sample": True, "seed": 0}):
        rows = model.decode_ids(codes(4), max_length=max_length, **options)
        assert all(len(row) <= max_length and EOS not in row for row in rows)
        assert max(len(row) for row in rows) == max_length


def test_batch_rows_decode_as_they_would_alone():
    model = varied_model(4, eos_bias=1.5, decoder_type="transformer", latent_path="concat")
    z = 2 * codes(6, seed=4)
    batched = model.decode_ids(z, max_length=10)
    assert batched == [model.decode_ids(z[i : i + 1], max_length=10)[0] for i in range(6)]
    assert len({tuple(row) for row in batched}) > 1  # z matters: rows differ


def test_generate_without_fitting_latents_says_what_it_needs():
    with pytest.raises(TextVAEError, match=r"needs latents=z, a \(batch, 4\) tensor"):
        tiny_model(0).generate(max_new_tokens=3)
    with pytest.raises(TextVAEError, match=r"latents must be \(batch, 4\) for this model, got \(2, 3\)"):
        tiny_model(0).generate(latents=torch.zeros(2, 3), max_new_tokens=3)


# ----------------------------------------------------------------------------- text API


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
    assert model.decode(z, max_length=8, num_beams=3) == model.tokenizer.batch_decode(
        model.decode_ids(z, max_length=8, num_beams=3), skip_special_tokens=True
    )


def test_decoded_sentences_are_one_line_each(model, monkeypatch):
    """A pretrained LM emits line breaks; printed one per line, a sentence must not span several."""
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    raw = ["a cat\n\n\nsat .  ", "\r\nthe dog\u2028ran\x85far", "no  break here"]
    monkeypatch.setattr(type(model.tokenizer), "batch_decode", lambda self, ids, **kw: list(raw))
    texts = model.decode(z, max_length=8)
    assert texts == ["a cat sat .", "the dog ran far", "no  break here"]
    assert all(len(text.splitlines()) == 1 for text in texts)


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
    with pytest.raises(TextVAEError, match="max_length: 6 is too long: the Transformer decoder has 6 positions"):
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


@pytest.mark.parametrize("steps,path,message", [(1, "lerp", "at least 2"), (3, "spline", "path: unknown path 'spline'")])
def test_bad_interpolation_options_are_user_errors(steps, path, message):
    with pytest.raises(TextVAEError, match=message):
        interpolation_path(torch.zeros(2), torch.ones(2), steps, path)
