"""Counts that allocate by their value, called from Python: what cannot fit is refused naming the
parameter before anything is allocated, what can is split to fit, and codes or scores that
overflow are refused instead of decoding to empty sentences."""

from __future__ import annotations

import pytest
import torch

from tests.helpers_models import offline_and_quiet, tiny_model, word_tokenizer  # noqa: F401
from textvae.errors import InvalidArgument, TextVAEError
from textvae.models import TextVAEConfig, TextVAEModel, generation, memory
from textvae.models.generation import interpolation_path
from textvae.models.latents import AttributeVectors, edit
from textvae.models.memory import require_training_memory, weight_bytes


@pytest.fixture(scope="module")
def model() -> TextVAEModel:
    return tiny_model(word_tokenizer())


@pytest.fixture
def memory_of(monkeypatch):
    """Pretend the machine has ``size`` bytes for one call."""

    def shrink(size: int) -> None:
        monkeypatch.setattr(memory, "memory_budget", lambda device: size)
        monkeypatch.setattr(generation, "memory_budget", lambda device: size)

    return shrink


def test_rows_are_decoded_in_calls_that_fit_and_decode_as_one(model, memory_of, monkeypatch):
    z = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    whole = model.decode_ids(z, max_length=5, num_beams=3)
    calls = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(len(kw["latents"])) or generate(**kw))
    memory_of(3 * model.decode_bytes_per_row(5, 3))
    assert model.decode_ids(z, max_length=5, num_beams=3) == whole
    assert calls == [3, 3, 1]


@pytest.mark.parametrize("options, name, advice", [
    ({"max_length": 10**9}, "max_length", "tokens fit with 1 beam(s))"),
    ({"max_length": 10**30, "num_beams": 2}, "max_length", "tokens fit with 2 beam(s))"),
    ({"max_length": 3, "num_beams": 10**12}, "num_beams", "beams fit)"),
])
def test_a_row_that_cannot_fit_is_refused_naming_the_parameter(model, options, name, advice):
    with pytest.raises(InvalidArgument) as info:
        model.decode(torch.zeros(1, 4), **options)
    assert info.value.name == name and str(info.value).endswith(advice)
    assert "available on cpu (" in str(info.value)


@pytest.mark.parametrize("call, name", [
    (lambda m: m.sample(10**12), "n"),
    (lambda m: interpolation_path(torch.zeros(4), torch.ones(4), 10**12), "steps"),
])
def test_counts_of_codes_are_held_to_memory_before_they_are_drawn(model, call, name):
    with pytest.raises(InvalidArgument) as info:
        call(model)
    assert info.value.name == name


def test_non_finite_codes_and_scores_are_refused(model):
    with pytest.raises(TextVAEError, match="the codes to decode hold NaN or infinite values"):
        model.decode(torch.full((2, 4), float("inf")))
    with pytest.raises(TextVAEError, match=r"decoding gave non-finite scores \(inf\) at token 1"):
        model.decode(torch.zeros(2, 4), max_length=3, repetition_penalty=1e-300)  # BOS's logit / 1e-300


def test_an_edit_that_overflows_the_codes_names_its_strength(model):
    """The probe's `edit --strength 1e308` decoded infinities to an empty line and exit 0."""
    vectors = AttributeVectors.fit(torch.randn(20, 4), {"tense": ["past"] * 10 + ["present"] * 10})
    with pytest.raises(InvalidArgument) as info:
        edit(model, vectors, ["the dog ."], {"tense": "past"}, {"tense": "present"}, strength=1e308, max_length=3)
    assert str(info.value) == "strength: 1e+308 moves the codes past the largest float: use a smaller one"


def test_weights_are_counted_without_allocating_them():
    config = TextVAEConfig(vocab_size=50, embedding_size=8, hidden_size=16, latent_size=4, invlip_state_size=4,
                           icnn_hidden_size=8)
    built = TextVAEModel(config)
    assert weight_bytes(config) == sum(t.numel() * t.element_size() for t in (*built.parameters(), *built.buffers()))
    assert weight_bytes(TextVAEConfig(embedding_size=2**62)) is None  # torch's storage size overflows


@pytest.mark.parametrize("sizes, problem", [
    ({"hidden_size": 10**8}, "needs about "),
    ({"embedding_size": 2**62}, "a size overflows 64 bits"),
])
def test_a_model_whose_training_cannot_fit_is_refused(sizes, problem):
    with pytest.raises(InvalidArgument) as info:
        require_training_memory(TextVAEConfig(**sizes))
    assert info.value.name == "model" and problem in str(info.value)
