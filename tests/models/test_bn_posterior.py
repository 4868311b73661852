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


def test_recomputed_statistics_are_the_mean_of_the_batch_statistics_training_normalises_with():
    model = tiny_model(0, posterior_bn_gamma=1.0, latent_path="concat").train()
    norm = model.posterior.mu_norm
    norm.running_mean.fill_(100.0)  # running averages left behind by a fast-moving encoder
    norm.running_var.fill_(1e-6)
    batches = [pad_batch(random_sentences(24, lengths, seed))
               for seed, lengths in enumerate(([3, 5, 8, 2, 6, 4], [5], [7, 2, 3, 9, 4, 6, 5, 8, 3]))]
    with torch.no_grad():
        mus = [pre_norm_mu(model.eval(), ids, mask) for ids, mask in batches if len(ids) > 1]
    model.train()
    assert model.recompute_posterior_statistics(iter(batches)) == 2  # the one-sentence batch has no variance
    torch.testing.assert_close(norm.running_mean, torch.stack([mu.mean(0) for mu in mus]).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack([mu.var(0) for mu in mus]).mean(0))
    assert model.training and norm.momentum == 0.1  # what it changed for the measurement is restored
    ids, mask = batches[2]
    with torch.no_grad():
        mu, _ = model.eval().encode_ids(ids, mask)
    want = (mus[1] - norm.running_mean) / (norm.running_var + norm.eps).sqrt() + norm.shift
    torch.testing.assert_close(mu, want.detach(), rtol=1e-4, atol=1e-4)


def test_without_bn_no_statistics_are_recomputed():
    model = tiny_model(0)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert model.recompute_posterior_statistics([pad_batch(random_sentences(24, [3, 5], 0))]) == 0
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
