"""BN-VAE (Zhu et al. 2020): batch-normalising mu with a fixed scale keeps the KL above a bound."""

from __future__ import annotations

import pytest
import torch

from tests.models import pad_batch, perturb_parameters, random_sentences, tiny_model
from textvae.models import TextVAEModel


def pre_norm_mu(model: TextVAEModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, d) the encoder's mu before the normalisation."""
    return model.posterior.to_params(model.posterior.encoder(ids, mask)).chunk(2, dim=-1)[0]


@pytest.mark.parametrize("scale", [0.0, 0.1, 1.0, 5.0], ids=lambda s: f"noise{s}")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_mean_kl_stays_above_the_analytic_bound_for_any_encoder_weights(scale, seed):
    gamma = 0.6
    model = tiny_model(seed, posterior_bn_gamma=gamma, latent_path="concat").train()
    perturb_parameters(model, scale, seed)  # includes the learnt shift and the logvar head
    ids, mask = pad_batch(random_sentences(24, [3, 5, 8, 2, 6, 7, 4, 9], seed))
    with torch.no_grad():
        out = model(ids, mask)
        v = pre_norm_mu(model, ids, mask).double().var(dim=0, unbiased=False)
    norm = model.posterior.mu_norm
    shift = norm.shift.detach().double()
    # KL_bj = (mu^2 + s^2 - log s^2 - 1) / 2 >= mu^2 / 2, and BN fixes mean_b mu_bj^2.
    bound = 0.5 * (gamma**2 * v / (v + norm.eps) + shift**2).sum()
    assert out.kl.double().mean() >= bound - 1e-6
    assert bound > 0.95 * model.config.latent_size * gamma**2 / 2  # about d gamma^2 / 2 while v >> eps


def test_gamma_is_not_a_parameter_and_survives_save_and_load(tmp_path):
    model = tiny_model(0, posterior_bn_gamma=0.7)
    assert all("gamma" not in name for name, _ in model.named_parameters())
    model.save_pretrained(tmp_path)
    loaded = TextVAEModel.from_pretrained(tmp_path)
    assert loaded.posterior.mu_norm.gamma == 0.7
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_without_gamma_the_posterior_is_unchanged():
    model = tiny_model(0)
    assert isinstance(model.posterior.mu_norm, torch.nn.Identity)
    assert not any("mu_norm" in name for name in model.state_dict())


def test_a_non_positive_gamma_is_refused():
    with pytest.raises(ValueError, match="posterior_bn_gamma must be > 0"):
        tiny_model(0, posterior_bn_gamma=0.0)
