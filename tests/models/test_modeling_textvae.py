"""textvae.models.modeling_textvae: the latent paths, padding, the ELBO terms, log_likelihood.

The central measurement: for a fixed prefix, how far apart do the (centred) next-token
logits of two latent codes lie, relative to the distance of the codes?  The ``invlip``
path must keep this ratio >= ``model.lipschitz_bound()`` at every position; a collapsed
decoder shows 0; a ``concat`` decoder shows something positive but unbounded below.
"""

from __future__ import annotations

import pytest
import torch

import textvae.models.modeling_textvae as modeling
from tests.models import (
    UNK,
    centred_ratios,
    pad_batch,
    perturb_parameters,
    random_sentences,
    step_logits,
    tiny_config,
    tiny_model,
)
from textvae.errors import RetiredOptionWarning, TextVAEError
from textvae.models import TextVAEModel

DECODERS = ["lstm", "transformer"]


def latent_pairs(n: int, d: int, seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """n pairs of codes whose norms and distances span 0.01 .. 100."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 2, n, dtype=torch.float64).unsqueeze(1)
    z1 = scale * torch.randn(n, d, generator=generator, dtype=torch.float64)
    z2 = z1 + scale.flip(0) * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return z1.to(dtype), z2.to(dtype)


def fixed_prefix(model: TextVAEModel, n: int, length: int = 8, seed: int = 0) -> torch.Tensor:
    """One ``<bos> w..`` prefix repeated for n rows."""
    words = random_sentences(model.config.vocab_size, [length - 1], seed)[0]
    return torch.tensor([[model.config.bos_token_id, *words]]).expand(n, -1)


def measure(model: TextVAEModel, n: int = 96, seed: int = 0, with_slack: bool = False):
    """Ratios (n, T) for n code pairs at every position of one prefix (and their rounding slack)."""
    dtype = next(model.parameters()).dtype
    z1, z2 = latent_pairs(n, model.config.latent_size, seed, dtype)
    with torch.no_grad():
        return centred_ratios(model, fixed_prefix(model, n, seed=seed), z1, z2, with_slack)


def assert_bounded_below(model: TextVAEModel, bound: float, seed: int = 0) -> torch.Tensor:
    ratios, slack = measure(model, seed=seed, with_slack=True)
    bad = ratios < bound - slack
    assert not bool(bad.any()), f"{int(bad.sum())} ratios below {bound}: min {float(ratios.min())}"
    return ratios


# ------------------------------------------------------------ the inverse-Lipschitz path


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("lipschitz", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("perturbed", [False, True])
@pytest.mark.parametrize("lift", ["frozen", "output_whitened"])
@pytest.mark.parametrize("design", [{}, {"invlip_state_in_lift": False, "invlip_state_size": 6}])
def test_invlip_decoder_logits_move_at_least_bound_times_z(decoder, lipschitz, perturbed, lift, design):
    model = tiny_model(1, decoder_type=decoder, lipschitz=lipschitz, invlip_lift=lift, **design)
    if perturbed:  # any weights, not only the init: the bound is structural
        perturb_parameters(model, 0.5, seed=2)
    bound = model.lipschitz_bound()
    assert bound >= lipschitz
    ratios = assert_bounded_below(model, bound)
    assert ratios.shape == (96, 8)  # every pair at every position


@pytest.mark.parametrize("key,value", [("invlip_rotations", 3), ("invlip_outer_map", True),
                                       ("invlip_condition_input", True), ("invlip_learn_lift", True),
                                       ("invlip_lift", "learned"), ("invlip_lift", "plausible"), ("invlip_lift", "output")])
def test_a_config_with_a_retired_variant_is_refused_naming_it_and_its_replacement(key, value):
    """An earlier export of a design that lost its ablation: its weights belong to code that is gone."""
    with pytest.raises(TextVAEError, match=rf"^config key '{key}'.*retired: .*(drop the key|frozen|concat)"):
        tiny_config(**{key: value})


def test_a_config_recording_retired_options_at_their_neutral_values_loads_with_one_warning():
    """Earlier exports record every option: at the value under which it changed nothing, the weights
    mean what they meant."""
    with pytest.warns(RetiredOptionWarning, match="retired") as caught:
        config = tiny_config(invlip_rotations=0, invlip_outer_map=False, invlip_condition_input=False,
                             invlip_top_k=64, invlip_learn_lift=False)
    assert len(caught) == 1
    assert config.invlip_lift == "frozen"
    assert not any(hasattr(config, key) for key in ("invlip_rotations", "invlip_outer_map", "invlip_top_k"))


@pytest.mark.parametrize("decoder", DECODERS)
def test_invlip_bound_holds_in_float64(decoder):
    model = tiny_model(3, dtype=torch.float64, decoder_type=decoder, lipschitz=2.0)
    perturb_parameters(model, 1.0, seed=3)
    _, slack = measure(model, seed=5, with_slack=True)
    assert float(slack.max()) < 1e-7  # the allowance is negligible here ...
    assert_bounded_below(model, model.lipschitz_bound(), seed=5)  # ... and the bound holds



# ----------------------------------------------------------- collapse and its absence


def zero_concat_latent_weights(model: TextVAEModel) -> None:
    """Cut every way z enters a ``concat`` decoder."""
    decoder = model.decoder
    with torch.no_grad():
        if model.config.decoder_type == "lstm":
            decoder.lstm.weight_ih_l0[:, model.config.embedding_size :] = 0  # z columns of the input
            decoder.init_state.weight.zero_()  # c_0 = W z + b
        else:
            decoder.latent_proj.weight.zero_()


@pytest.mark.parametrize("decoder", DECODERS)
def test_measurement_shows_zero_for_a_collapsed_concat_decoder(decoder):
    model = tiny_model(5, decoder_type=decoder, latent_path="concat")
    assert float(measure(model).min()) > 0  # z matters before zeroing ...
    zero_concat_latent_weights(model)
    assert float(measure(model).max()) == 0.0  # ... and not at all after


@pytest.mark.parametrize("decoder", DECODERS)
def test_language_model_path_ignores_z(decoder):
    assert float(measure(tiny_model(0, decoder_type=decoder, latent_path="none")).max()) == 0.0


@pytest.mark.parametrize("decoder", DECODERS)
def test_concat_decoder_has_no_lower_bound(decoder):
    model = tiny_model(5, decoder_type=decoder, latent_path="concat")
    ratios = measure(model)
    assert model.lipschitz_bound() == 0.0
    assert float(ratios.min()) > 0.0
    assert float(ratios.min()) < 0.1  # z pairs whose logits hardly move: nothing forbids it


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("lipschitz", [0.5, 2.0])
def test_invlip_path_cannot_be_zeroed(decoder, lipschitz):
    """Zero (or softplus to ~0) every weight of psi, the state projection and W: ratio stays >= L."""
    model = tiny_model(6, decoder_type=decoder, lipschitz=lipschitz)
    head = model.head
    with torch.no_grad():
        for weight in [*head.invlip.psi.input_weights, *head.invlip.psi.input_biases]:
            weight.zero_()
        for raw in [*head.invlip.psi.hidden_raw, head.invlip.psi.output_raw]:
            raw.fill_(-40.0)  # softplus(-40) ~ 4e-18: psi is (numerically) zero
        head.invlip.scale_raw.fill_(-40.0)  # s = 1 + softplus(-40) ~ 1
        head.state_proj.weight.zero_()
        head.output.weight.zero_()
    ratios = assert_bounded_below(model, lipschitz)
    # and with psi gone, L u alone carries it: the bound is attained (up to float32 rounding)
    assert float(ratios.median()) == pytest.approx(lipschitz, rel=1e-5)


# -------------------------------------------------------------------------- padding


ENCODERS = [
    dict(encoder_type="lstm"),
    dict(encoder_type="lstm", encoder_bidirectional=True, encoder_layers=2),
    dict(encoder_type="transformer", encoder_layers=2),
]


@pytest.mark.parametrize("encoder", ENCODERS, ids=["lstm", "bilstm", "transformer"])
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("latent_path", ["invlip", "concat"])
def test_padding_changes_nothing(encoder, decoder, latent_path):
    model = tiny_model(7, decoder_type=decoder, latent_path=latent_path, decoder_layers=2, **encoder)
    sentences = random_sentences(24, [2, 9, 5, 1], seed=8)
    ids, mask = pad_batch(sentences)
    # garbage (non-pad) ids under the mask must not matter either
    garbage = torch.where(mask.bool(), ids, torch.randint(4, 24, ids.shape))
    wide_ids, wide_mask = (torch.cat([t, torch.zeros_like(t[:, :3])], dim=1) for t in (ids, mask))
    with torch.no_grad():
        batched = [model(i, m, sample_posterior=False) for i, m in ((ids, mask), (garbage, mask), (wide_ids, wide_mask))]
        for row, words in enumerate(sentences):
            alone_ids, alone_mask = pad_batch([words])
            alone = model(alone_ids, alone_mask, sample_posterior=False)
            for out in batched:
                for field in ("rec_log_likelihood", "mu", "logvar", "kl", "num_tokens"):
                    torch.testing.assert_close(getattr(out, field)[row], getattr(alone, field)[0], atol=1e-5, rtol=1e-5)
    assert batched[0].num_tokens.tolist() == [len(w) + 1 for w in sentences]


@pytest.mark.parametrize("encoder", ENCODERS, ids=["lstm", "bilstm", "transformer"])
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("latent_path", ["invlip", "concat", "none"])
def test_forward_backward_with_padding_in_train_mode(encoder, decoder, latent_path):
    model = tiny_model(8, decoder_type=decoder, latent_path=latent_path, dropout_input=0.1, dropout_output=0.1, **encoder)
    model.train()
    ids, mask = pad_batch(random_sentences(24, [3, 8, 1], seed=9))
    out = model(ids, mask, word_dropout=0.3)
    assert out.rec_log_likelihood.shape == (3,) and out.z.shape == (3, 4)
    assert bool((out.rec_log_likelihood < 0).all())
    (-out.rec_log_likelihood + out.kl).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert bool(torch.isfinite(param.grad).all()), name
    if latent_path != "none":  # gradient reaches the encoder through z
        assert float(model.posterior.to_params.weight.grad.abs().sum()) > 0


def test_kl_is_the_analytic_gaussian_kl():
    model = tiny_model(0)
    ids, mask = pad_batch(random_sentences(24, [4, 6], seed=1))
    perturb_parameters(model.posterior, 0.3)
    out = model(ids, mask)
    q = torch.distributions.Normal(out.mu, (0.5 * out.logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(out.mu), torch.ones_like(out.mu))
    expected = torch.distributions.kl_divergence(q, p)
    torch.testing.assert_close(out.kl_per_dim, expected)
    torch.testing.assert_close(out.kl, expected.sum(-1))
    assert float(out.kl.detach().min()) > 0


def test_forward_decodes_from_a_posterior_sample_or_its_mean():
    model = tiny_model(0)
    perturb_parameters(model.posterior, 0.3)
    ids, mask = pad_batch(random_sentences(24, [4, 6], seed=1))
    torch.manual_seed(0)
    sampled = model(ids, mask)
    assert not torch.equal(sampled.z, sampled.mu)
    mean = model(ids, mask, sample_posterior=False)
    assert torch.equal(mean.z, mean.mu)


def test_word_dropout_replaces_decoder_inputs_but_not_bos_or_targets():
    model = tiny_model(0, latent_path="none").train()  # dropout probabilities are 0
    ids, mask = pad_batch(random_sentences(24, [4, 6], seed=1))
    out = model(ids, mask, word_dropout=1.0)
    inputs = ids[:, :-1].clone()
    inputs[:, 1:] = UNK
    logits = step_logits(model, inputs, out.z)
    expected = TextVAEModel._sequence_log_likelihood(logits, ids[:, 1:], mask[:, 1:])
    torch.testing.assert_close(out.rec_log_likelihood, expected)
    model.eval()  # no word dropout at evaluation
    assert not torch.allclose(model(ids, mask, word_dropout=1.0).rec_log_likelihood, expected)


def test_reparameterize_shapes():
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    assert TextVAEModel.reparameterize(mu, logvar).shape == (3, 4)
    assert TextVAEModel.reparameterize(mu, logvar, num_samples=5).shape == (3, 5, 4)


# ----------------------------------------------------------------- log_likelihood


PATHS = [
    dict(latent_path="invlip"),  # shared decoder, per-sample head
    dict(latent_path="none"),  # shared decoder and head
    dict(latent_path="concat"),  # decoder repeated per sample
]


@pytest.mark.parametrize("path", PATHS, ids=["invlip", "none", "concat"])
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("block", [None, 1, 3])
def test_log_likelihood_over_k_samples_equals_a_loop(path, decoder, block, monkeypatch):
    model = tiny_model(10, decoder_type=decoder, **path)
    ids, mask = pad_batch(random_sentences(24, [3, 7, 1], seed=11))
    z = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(12))
    if block is not None:  # force several sample blocks of `block` samples
        monkeypatch.setattr(modeling, "_LOGITS_BLOCK", block * 3 * (ids.shape[1] - 1) * 24)
    batched = model.log_likelihood(ids, z, mask)
    assert batched.shape == (3, 5)
    loop = torch.stack([model.log_likelihood(ids, z[:, k], mask) for k in range(5)], dim=1)
    torch.testing.assert_close(batched, loop, atol=1e-5, rtol=1e-6)
    # each sample's value is the decoder's own log-likelihood of that sentence
    single = torch.stack([model.log_likelihood(ids[i : i + 1], z[i, 2:3], mask[i : i + 1])[0] for i in range(3)])
    torch.testing.assert_close(batched[:, 2], single, atol=1e-5, rtol=1e-6)
    if path["latent_path"] != "none":
        assert float((batched[:, 0] - batched[:, 1]).abs().max()) > 0  # z matters


@pytest.mark.parametrize("path", PATHS, ids=["invlip", "none", "concat"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_prefix_logits_over_k_samples_equal_one_call_per_sample(path, decoder):
    model = tiny_model(10, decoder_type=decoder, **path).eval()
    ids, _ = pad_batch(random_sentences(24, [3, 7, 1], seed=11))
    z = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        batched = model.prefix_logits(ids, z)
        loop = torch.stack([model.prefix_logits(ids, z[:, k]) for k in range(4)], dim=1)
    assert batched.shape == (3, 4, ids.shape[1] - 1, 24)
    torch.testing.assert_close(batched, loop, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("latent_path", ["invlip", "concat", "none"])
def test_log_likelihood_at_the_mean_equals_forward_reconstruction(decoder, latent_path):
    model = tiny_model(13, decoder_type=decoder, latent_path=latent_path)
    ids, mask = pad_batch(random_sentences(24, [5, 2], seed=14))
    out = model(ids, mask, sample_posterior=False)
    torch.testing.assert_close(model.log_likelihood(ids, out.mu), out.rec_log_likelihood.detach())


def test_log_likelihood_is_a_normalised_distribution_over_one_token():
    """Summing p(x|z) over every one-word sentence and the empty one gives <= 1 (the rest: longer)."""
    model = tiny_model(15, vocab_size=8, invlip_state_size=2)
    words = list(range(4, 8))
    ids, mask = pad_batch([[]] + [[w] for w in words])
    z = torch.randn(1, 4).expand(len(words) + 1, -1)
    total = model.log_likelihood(ids, z, mask).exp().sum()
    assert 0 < float(total) <= 1.0


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="latent_path"):
        tiny_config(latent_path="skip")
    with pytest.raises(ValueError, match="decoder_type"):
        tiny_config(decoder_type="gru")
    with pytest.raises(ValueError, match="lipschitz"):
        tiny_config(lipschitz=-1.0)


def test_a_transformer_vae_trains_and_scores_under_bf16_autocast():
    # What the trainer does on a GPU (bf16 autocast), on the CPU: LSTMs are left out
    # because CPU bf16 autocast crashes nn.LSTM; the Transformer and the invlip head run.
    model = tiny_model(15, encoder_type="transformer", decoder_type="transformer", latent_path="invlip").train()
    ids, mask = pad_batch(random_sentences(24, [6, 3, 8], seed=16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask)
        loss = (out.kl - out.rec_log_likelihood).mean()
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        exact = model.log_likelihood(ids, out.mu.detach(), mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.log_likelihood(ids, out.mu.detach(), mask)
            decoded = model.decode_ids(out.mu.detach(), max_length=5, num_beams=2)
    torch.testing.assert_close(low, exact, rtol=0.05, atol=0.5)
    assert len(decoded) == 3


# ------------------------------------------------------------------ transformers conventions


def test_forward_returns_the_negative_elbo_and_the_logits_first():
    model = tiny_model(20)
    ids, mask = pad_batch(random_sentences(24, [5, 2, 7], seed=20))
    out = model(ids, mask)
    torch.testing.assert_close(out.loss, (out.kl - out.rec_log_likelihood).mean())
    assert out.logits.shape == (3, ids.shape[1] - 1, 24)
    assert list(out.keys())[:2] == ["loss", "logits"]
    torch.manual_seed(0)
    first = model(ids, mask, return_dict=False)[:2]
    torch.manual_seed(0)
    again = model(ids, mask)
    assert torch.equal(first[0], again.loss) and torch.equal(first[1], again.logits)


@pytest.mark.parametrize("latent_logits", [False, True])
@pytest.mark.parametrize("decoder_type", DECODERS)
def test_decoder_mode_continues_from_its_cache(decoder_type, latent_logits):
    model = tiny_model(21, decoder_type=decoder_type, latent_path="concat", latent_logits=latent_logits)
    ids = torch.tensor([[1, 5, 9, 7, 4]])
    z = torch.randn(1, 4, generator=torch.Generator().manual_seed(21))
    with torch.no_grad():
        whole = model(ids, latents=z).logits
        head = model(ids[:, :3], latents=z, use_cache=True)
        tail = model(ids[:, 3:], latents=z, cache=head.cache, use_cache=True)
    torch.testing.assert_close(torch.cat([head.logits, tail.logits], dim=1), whole, atol=1e-5, rtol=1e-5)
    assert model(ids, latents=z).cache is None  # nothing kept without use_cache


@pytest.mark.parametrize("tied", [True, False])
def test_output_embeddings_are_tied_to_the_input_embedding_the_transformers_way(tied):
    model = tiny_model(22, tie_word_embeddings=tied)
    assert model._tied_weights_keys == {"head.output.weight": "decoder.embedding.weight"}
    assert model.get_input_embeddings() is model.decoder.embedding
    assert model.get_output_embeddings() is model.head.output
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) is tied


@pytest.mark.parametrize("fraction", [0.4, 0.6, 0.8])
def test_device_maps_keep_every_no_split_module_whole(fraction):
    from accelerate import infer_auto_device_map

    model = tiny_model(23, encoder_type="transformer", decoder_type="transformer", decoder_layers=3)
    whole = [name for name, module in model.named_modules()
             if type(module).__name__ in model._no_split_modules]
    assert {"TransformerBlock", "InverseLipschitzMap"} <= {type(model.get_submodule(n)).__name__ for n in whole}
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    device_map = infer_auto_device_map(model, max_memory={"cpu": int(fraction * size), "disk": 10 * size},
                                       no_split_module_classes=list(model._no_split_modules))
    assert len(set(device_map.values())) == 2  # the model was split somewhere ...
    assert not [key for key in device_map for name in whole if key.startswith(f"{name}.")]  # ... not inside these


def test_init_weights_never_overwrites_loaded_weights(tmp_path):
    model = tiny_model(24, tie_word_embeddings=True)
    perturb_parameters(model, 0.2, seed=24)
    model.save_pretrained(tmp_path)
    loaded = TextVAEModel.from_pretrained(tmp_path)
    loaded.apply(loaded._init_weights)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    fresh = tiny_model(24, tie_word_embeddings=True)  # the same call on unloaded weights does initialise
    before = {key: value.clone() for key, value in fresh.state_dict().items()}
    fresh.apply(fresh._init_weights)
    assert not torch.equal(fresh.state_dict()["decoder.embedding.weight"], before["decoder.embedding.weight"])


@pytest.mark.parametrize("decoder_type", DECODERS)
def test_latent_logits_add_one_bias_of_z_to_every_step(decoder_type):
    """The bag-of-words path: logits(z) = logits without it + W z at every position, in
    teacher forcing, in per-sample scoring (log_likelihood) and in the ELBO's forward."""
    model = tiny_model(24, decoder_type=decoder_type, latent_path="concat", latent_logits=True)
    perturb_parameters(model, 0.3, seed=24)
    ids = torch.tensor([[1, 5, 9, 7, 4, 2], [1, 8, 6, 2, 0, 0]])
    z = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(24))
    with torch.no_grad():
        logits = model.prefix_logits(ids, z)  # (B, K, T, V)
        bias = model.head.latent_logits(z).unsqueeze(-2)
        model.head.latent_logits.weight.zero_()
        without = model.prefix_logits(ids, z)
    torch.testing.assert_close(logits - without, bias.expand_as(logits), atol=1e-5, rtol=1e-5)
    assert bias.abs().min() > 0  # the bias moved every logit
    with torch.no_grad():
        model.head.latent_logits.weight.normal_(generator=torch.Generator().manual_seed(1))
        scored = model.log_likelihood(ids, z)
        expected = torch.stack([model.log_likelihood(ids, z[:, k]) for k in range(3)], dim=1)
    torch.testing.assert_close(scored, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("path", ["invlip", "none"])
def test_latent_logits_are_refused_where_they_would_break_the_bound_or_have_no_z(path):
    with pytest.raises(ValueError, match=f"latent_logits.*latent_path={path}"):
        tiny_config(latent_path=path, latent_logits=True)
