"""save_pretrained / from_pretrained / AutoModel / load_model: exact round trips, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel

from tests.models import (
    pad_batch,
    perturb_parameters,
    random_sentences,
    tiny_model,
    word_tokenizer,
)
from textvae.errors import TextVAEError
from textvae.hub.loading import load_model
from textvae.models import TextVAEModel

VARIANTS = [
    dict(decoder_type=decoder, latent_path=path)
    for decoder in ("lstm", "transformer")
    for path in ("invlip", "concat", "none")
] + [
    dict(encoder_type="transformer", decoder_type="lstm"),
    dict(encoder_bidirectional=True, encoder_layers=2, decoder_layers=2, tie_word_embeddings=True),
    dict(latent_path="concat", latent_logits=True, posterior_bn_gamma=1.0),  # ptb/interpolate's design
]
VARIANT_IDS = [f"{v.get('decoder_type')}-{v.get('latent_path')}" for v in VARIANTS[:6]] + [
    "transformer-encoder", "tied-bilstm", "concat-logits-bn"]


def trained_looking(seed: int = 0, **options) -> TextVAEModel:
    """A model whose weights are far from any init: a loader that re-initialises is caught."""
    model = tiny_model(seed, **options)
    perturb_parameters(model, 0.2, seed)
    return model


def outputs(model: TextVAEModel) -> dict[str, torch.Tensor]:
    ids, mask = pad_batch(random_sentences(model.config.vocab_size, [3, 7, 1], seed=1))
    z = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(ids, mask, sample_posterior=False)
        greedy = model.decode_ids(z[:, 0], max_length=10)
    return {
        **{k: out[k] for k in ("rec_log_likelihood", "kl", "kl_per_dim", "mu", "logvar", "z", "num_tokens")},
        "log_likelihood": model.log_likelihood(ids, z, mask),
        "greedy": torch.tensor([row + [-1] * (11 - len(row)) for row in greedy]),
    }


def assert_identical(model: TextVAEModel, loaded: TextVAEModel) -> None:
    assert type(loaded) is TextVAEModel
    assert not loaded.training
    expected, state = model.state_dict(), loaded.state_dict()
    assert expected.keys() == state.keys()
    for key in expected:
        assert torch.equal(expected[key], state[key]), key
    reference = outputs(model)
    for key, value in outputs(loaded).items():
        assert torch.equal(value, reference[key]), key  # bit for bit


@pytest.mark.parametrize("options", VARIANTS, ids=VARIANT_IDS)
def test_round_trip_reproduces_outputs_bit_for_bit(options, tmp_path):
    model = trained_looking(1, **options)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    assert_identical(model, TextVAEModel.from_pretrained(tmp_path).eval())
    assert_identical(model, AutoModel.from_pretrained(tmp_path).eval())  # registered by `import textvae`
    assert_identical(model, load_model(tmp_path))  # eval mode already
    config = AutoConfig.from_pretrained(tmp_path).to_dict()
    expected = model.config.to_dict()
    for key in ("transformers_version", "_name_or_path"):
        config.pop(key, None), expected.pop(key, None)
    assert config == expected


def test_tied_embeddings_stay_tied_after_loading(tmp_path):
    model = trained_looking(2, tie_word_embeddings=True)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.head.output.weight is loaded.decoder.embedding.weight
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    with torch.no_grad():
        loaded.decoder.embedding.weight[5].add_(1.0)
    assert not torch.equal(outputs(loaded)["log_likelihood"], outputs(model)["log_likelihood"])


def test_lipschitz_constant_survives_the_round_trip(tmp_path):
    model = trained_looking(3, lipschitz=2.5)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config.lipschitz == 2.5
    assert loaded.lipschitz_bound() == model.lipschitz_bound() > 2.5


@pytest.mark.parametrize("recorded,refused", [({"invlip_rotations": 0, "invlip_outer_map": False}, None),
                                               ({"invlip_rotations": 8}, "invlip_rotations"),
                                               ({"invlip_lift": "learned"}, "invlip_lift")])
def test_an_earlier_export_loads_unless_it_records_a_retired_variant(tmp_path, recorded, refused):
    """Options that lost their ablation were removed; an export that records one at the value under
    which it changed nothing loads (with a warning), any other is refused in one line naming it."""
    model = trained_looking(3, lipschitz=2.5)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **recorded}))
    if refused:
        with pytest.raises(TextVAEError, match=rf"^{tmp_path}: config key '{refused}'.*retired"):
            load_model(tmp_path)
        return
    with pytest.warns(UserWarning, match="retired"):
        loaded = load_model(tmp_path)
    assert_identical(model, loaded)


# ------------------------------------------------------------------- companion tokenizer


def test_tokenizer_saved_beside_the_model_is_loaded_with_it(tmp_path):
    tokenizer = word_tokenizer()
    model = trained_looking(4, vocab_size=len(tokenizer))
    model.tokenizer = tokenizer
    model.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    for loaded in (load_model(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert loaded.tokenizer is not None and len(loaded.tokenizer) == len(tokenizer)
        assert loaded.tokenizer("the dog saw a cat .")["input_ids"] == tokenizer("the dog saw a cat .")["input_ids"]


def test_model_without_tokenizer_loads_with_none(tmp_path):
    trained_looking(5).save_pretrained(tmp_path)
    assert load_model(tmp_path).tokenizer is None


def test_tokenizer_of_another_vocabulary_is_refused(tmp_path):
    tokenizer = word_tokenizer()
    trained_looking(6, vocab_size=len(tokenizer) + 5).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    for load in (load_model, TextVAEModel.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(TextVAEError, match=r"tokenizer has 15 tokens but the model was built for vocab_size=20"):
            load(tmp_path)


# ------------------------------------------------------------------ load_model errors


def assert_one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message and len(message) < 300, message
    for fragment in fragments:
        assert fragment in message, message
    assert error.value.__cause__ is None or isinstance(error.value.__cause__, TextVAEError)


def test_missing_directory(tmp_path):
    with pytest.raises(TextVAEError) as error:
        load_model(tmp_path / "nowhere")
    assert_one_line(error, "not found", str(tmp_path / "nowhere"))


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(TextVAEError) as error:
        load_model(tmp_path)
    assert_one_line(error, "no config.json", str(tmp_path))


def test_directory_without_weights(tmp_path):
    trained_looking(7).config.save_pretrained(tmp_path)
    with pytest.raises(TextVAEError) as error:
        load_model(tmp_path)
    assert_one_line(error, "no model weights", str(tmp_path))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_weights(tmp_path, damage):
    trained_looking(8).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"\x00garbage" * 100 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(TextVAEError) as error:
        load_model(tmp_path)
    assert_one_line(error, "could not load the checkpoint", str(tmp_path))


def test_weights_of_another_shape(tmp_path):
    trained_looking(9, hidden_size=20).save_pretrained(tmp_path)
    config = tiny_model(9).config
    config.save_pretrained(tmp_path)  # config says hidden 16, weights are for 20
    with pytest.raises(TextVAEError) as error:
        load_model(tmp_path)
    assert_one_line(error, str(tmp_path))


def test_a_damaged_frozen_lift_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    trained_looking(9).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    key = next(k for k in weights if k.endswith("invlip.lift_raw"))
    weights[key] = weights[key] * 0.5  # singular values 0.5: the bound would be halved
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TextVAEError) as error:
        load_model(tmp_path)
    assert_one_line(error, str(tmp_path), "lift is not orthonormal and centred")


def test_unreachable_hub_id_is_one_line():
    with pytest.raises(TextVAEError) as error:
        load_model("nobody-textvae-test/no-such-model", local_files_only=True)
    assert_one_line(error, "nobody-textvae-test/no-such-model")


def test_run_directory_means_its_final_export(tmp_path):
    model = trained_looking(10)
    model.save_pretrained(tmp_path / "final")
    assert_identical(model, load_model(tmp_path))


def test_device_argument_and_eval_mode(tmp_path):
    model = trained_looking(11, dropout_input=0.5)
    model.train().save_pretrained(tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    assert not loaded.training and loaded.device.type == "cpu"
