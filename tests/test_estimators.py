"""Known-answer tests of :mod:`textvae.estimators` (He et al. 2019 evaluation protocol)."""

from __future__ import annotations

import math

import pytest
import torch

from textvae.estimators import (
    IWAccumulator,
    active_units,
    active_units_from_sums,
    corpus_bleu,
    count_predicted_tokens,
    gaussian_kl_per_dim,
    gaussian_log_density,
    iw_log_likelihood,
    kl_per_dimension,
    latent_warning,
    mi_ceiling,
    mi_saturated,
    mutual_information,
    perplexity,
    standard_normal_log_density,
    token_matches,
)

# --------------------------------------------------------------------------- densities


def test_gaussian_log_density_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    z, mu, logvar = (torch.randn(5, 3, 4, generator=g, dtype=torch.float64) for _ in range(3))
    expected = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    assert torch.allclose(gaussian_log_density(z, mu, logvar), expected)


def test_standard_normal_log_density_is_the_zero_mean_unit_variance_case():
    z = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.float64)
    expected = torch.tensor([-math.log(2 * math.pi), -math.log(2 * math.pi) - 2.5], dtype=torch.float64)
    assert torch.allclose(standard_normal_log_density(z), expected)


def test_kl_per_dimension_is_the_data_mean_of_the_analytic_kl():
    mu = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, math.log(2.0)]])
    # dim 0: mean of mu^2 / 2 = (0.5 + 4.5) / 2; dim 1: (2 - log 2 - 1) / 2
    expected = torch.tensor([2.5, 0.5 * (1.0 - math.log(2.0))], dtype=torch.float64)
    assert torch.allclose(kl_per_dimension(mu, logvar), expected)


# --------------------------------------------------------------------------- IW bound
# Linear-Gaussian model: p(z) = N(0, 1), p(x|z) = N(z, 1)  =>  p(x) = N(0, 2),
# exact posterior p(z|x) = N(x/2, 1/2).

X = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0], dtype=torch.float64)
LOG_PX = -0.5 * math.log(2 * math.pi * 2.0) - X.pow(2) / 4.0


def sample_iw_inputs(mu, logvar, k, seed):
    """z ~ N(mu, exp(logvar)) (B, K, 1) and log p(x|z) (B, K) of the linear-Gaussian model."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(len(X), k, 1, generator=g, dtype=torch.float64)
    z = mu.unsqueeze(1) + eps * (0.5 * logvar).exp().unsqueeze(1)
    log_px_given_z = -0.5 * math.log(2 * math.pi) - 0.5 * (X[:, None] - z[..., 0]).pow(2)
    return log_px_given_z, z


@pytest.mark.parametrize("k", [1, 7, 100])
def test_iw_with_the_exact_posterior_equals_log_px_for_every_k(k):
    mu, logvar = (X / 2).unsqueeze(1), torch.full((len(X), 1), math.log(0.5), dtype=torch.float64)
    log_px_given_z, z = sample_iw_inputs(mu, logvar, k, seed=k)
    assert torch.allclose(iw_log_likelihood(log_px_given_z, z, mu, logvar), LOG_PX, atol=1e-6)


def test_iw_with_a_poor_proposal_converges_as_k_grows():
    # q(z|x) = N(0, 1.5^2): wrong mean and too wide.
    mu, logvar = torch.zeros(len(X), 1, dtype=torch.float64), torch.full((len(X), 1), 2 * math.log(1.5), dtype=torch.float64)
    errors = {}
    for k in (1, 5000):
        log_px_given_z, z = sample_iw_inputs(mu, logvar, k, seed=1)
        errors[k] = (iw_log_likelihood(log_px_given_z, z, mu, logvar) - LOG_PX).abs().mean().item()
    assert errors[5000] < 0.02
    assert errors[5000] < errors[1] / 20


def test_iw_streaming_accumulator_equals_the_one_shot_estimate():
    mu, logvar = torch.zeros(len(X), 1, dtype=torch.float64), torch.zeros(len(X), 1, dtype=torch.float64)
    log_px_given_z, z = sample_iw_inputs(mu, logvar, 1000, seed=2)
    acc = IWAccumulator()
    for lp, zz in zip(log_px_given_z.split(137, dim=1), z.split(137, dim=1), strict=True):
        acc.update(lp, zz, mu, logvar)
    assert acc.num_samples == 1000
    assert torch.allclose(acc.compute(), iw_log_likelihood(log_px_given_z, z, mu, logvar), atol=1e-10)


def test_iw_is_stable_for_long_sentence_log_likelihoods():
    # log p(x|z) of -3000 nats would underflow exp() in any dtype without logsumexp.
    mu, logvar = torch.zeros(2, 1), torch.zeros(2, 1)
    z = torch.zeros(2, 4, 1)
    log_px_given_z = torch.full((2, 4), -3000.0)
    assert torch.allclose(iw_log_likelihood(log_px_given_z, z, mu, logvar),
                          torch.full((2,), -3000.0, dtype=torch.float64))


def test_iw_accumulator_refuses_to_compute_before_any_update():
    with pytest.raises(RuntimeError):
        IWAccumulator().compute()


# --------------------------------------------------------------------------- perplexity


def test_predicted_tokens_exclude_bos_and_include_eos():
    # BOS w w w EOS pad pad  /  BOS w w w w w EOS
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    counts = count_predicted_tokens(mask)
    assert counts.tolist() == [4, 6]
    assert perplexity(23.0, int(counts.sum())) == pytest.approx(math.exp(2.3))


def test_perplexity_is_corpus_level_not_a_mean_of_sentence_perplexities():
    # Sentences with NLL 4 over 2 tokens and 30 over 10 tokens: exp(34 / 12).
    assert perplexity(4.0 + 30.0, 2 + 10) == pytest.approx(math.exp(34 / 12))


def test_perplexity_rejects_zero_tokens_and_does_not_overflow():
    with pytest.raises(ValueError):
        perplexity(1.0, 0)
    assert perplexity(1e6, 1) == math.inf


# --------------------------------------------------------------------------- MI
# x ~ N(0, s^2), q(z|x) = N(a x, sigma^2): the aggregate posterior is N(0, a^2 s^2 + sigma^2)
# and I_q(x; z) = 1/2 log(1 + a^2 s^2 / sigma^2).


def gaussian_channel(a, sigma, n=2000, d_extra=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g)
    mu = torch.cat([a * x, torch.zeros(n, d_extra)], dim=1)
    logvar = torch.full_like(mu, 2 * math.log(sigma))
    return mu, logvar, g


@pytest.mark.parametrize(("a", "sigma"), [(1.0, 1.0), (3.0, 0.5)])
def test_mi_matches_the_closed_form_of_a_gaussian_channel(a, sigma):
    mu, logvar, g = gaussian_channel(a, sigma)
    expected = 0.5 * math.log(1 + a * a / sigma**2)
    estimate = mutual_information(mu, logvar, samples_per_x=2, generator=g)
    assert estimate == pytest.approx(expected, abs=0.05)


def test_mi_is_zero_when_the_code_ignores_x():
    mu, logvar, g = gaussian_channel(0.0, 1.0)
    assert abs(mutual_information(mu, logvar, samples_per_x=2, generator=g)) < 0.03


def test_mi_adds_nothing_for_an_uninformative_extra_dimension():
    mu, logvar, g = gaussian_channel(1.0, 1.0, d_extra=1)
    estimate = mutual_information(mu, logvar, samples_per_x=2, generator=g)
    assert estimate == pytest.approx(0.5 * math.log(2.0), abs=0.05)


def test_mi_memory_chunking_does_not_change_the_estimate():
    mu, logvar, _ = gaussian_channel(1.0, 1.0, n=300)
    whole = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(5))
    chunked = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(5), max_elements=1000)
    assert chunked == pytest.approx(whole, abs=1e-10)


def test_batch_mi_is_capped_by_log_batch_size_while_whole_split_mi_is_not():
    # True MI = 1/2 log 37 = 1.81 nats > log 4 = 1.39: He et al.'s per-batch estimate
    # with batches of 4 cannot reach it.
    mu, logvar, _ = gaussian_channel(3.0, 0.5)
    whole = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(1))
    per_batch = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(1),
                                   batch_mi=True, batch_size=4)
    assert per_batch < math.log(4) + 0.05
    assert whole > 1.7


def test_batch_mi_with_one_batch_equals_whole_split_mi():
    mu, logvar, _ = gaussian_channel(1.0, 1.0, n=500)
    whole = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(3))
    one_batch = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(3),
                                   batch_mi=True, batch_size=500)
    assert one_batch == pytest.approx(whole, abs=1e-10)


def test_batch_mi_weights_the_short_last_batch_by_its_size():
    # 10 rows in batches of 4: groups of 4, 4, 2 are averaged with weights 4, 4, 2.
    mu, logvar, _ = gaussian_channel(2.0, 1.0, n=10)
    value = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(4), batch_mi=True, batch_size=4)
    g = torch.Generator().manual_seed(4)
    eps = torch.randn(10, 1, 1, generator=g, dtype=torch.float64)  # the draws the call made
    parts = []
    for rows in (slice(0, 4), slice(4, 8), slice(8, 10)):
        m, lv = mu[rows].double(), logvar[rows].double()
        z = m + eps[rows, 0] * (0.5 * lv).exp()  # (M, 1)
        pairwise = gaussian_log_density(z[:, None], m[None], lv[None])  # (M, M)
        own = pairwise.diagonal()  # log q(z_m | x_m), the code's own posterior
        log_qz = torch.logsumexp(pairwise, dim=1) - math.log(len(m))
        parts.append((own - log_qz).mean().item() * len(m))
    assert value == pytest.approx(sum(parts) / 10, abs=1e-10)


def test_mi_of_a_collapsed_high_dimensional_code_is_near_zero_on_few_sentences():
    # 300 prior-like 32-d posteriors: MI is 0. Pairing log q(z|x) with log q(z) on the same
    # codes cancels their noise; the analytic-entropy variant read 0.28 nats here.
    g = torch.Generator().manual_seed(0)
    mu = 1e-3 * torch.randn(300, 32, generator=g)
    logvar = 1e-3 * torch.randn(300, 32, generator=g)
    assert abs(mutual_information(mu, logvar, generator=torch.Generator().manual_seed(1))) < 0.01
    assert abs(mutual_information(mu, logvar, batch_mi=True)) < 0.01


# --------------------------------------------------------------------------- AU


def posterior_means_with_variances(variances, n=1000):
    """(n, d) means whose dimension j alternates +-sqrt(v_j): population variance v_j exactly."""
    signs = torch.tensor([1.0, -1.0]).repeat(n // 2).unsqueeze(1)
    return signs.double() * torch.tensor(variances, dtype=torch.float64).sqrt()


def test_active_units_counts_dims_whose_posterior_mean_varies_at_least_delta():
    mu = posterior_means_with_variances([0.02, 0.001, 0.02, 0.0, 0.5])
    count, variances = active_units(mu)
    assert count == 3
    assert variances.shape == (5,)


def test_active_units_variance_is_the_unbiased_sample_variance_by_default():
    mu = posterior_means_with_variances([0.02, 0.001], n=10)
    _, unbiased = active_units(mu)
    _, population = active_units(mu, unbiased=False)
    assert torch.allclose(population, torch.tensor([0.02, 0.001], dtype=torch.float64))
    assert torch.allclose(unbiased, population * 10 / 9)


def test_active_units_from_running_sums_match_the_whole_split_estimate():
    mu = posterior_means_with_variances([0.0105, 0.0085, 0.3], n=10) + 5.0  # large mean: cancellation
    want_count, want = active_units(mu)
    halves = mu.split(4)  # batches accumulated as the trainer's validation does
    count, got = active_units_from_sums(sum(h.sum(0) for h in halves), sum(h.pow(2).sum(0) for h in halves), 10)
    assert count == want_count == 2
    assert torch.allclose(got, want)


def test_active_units_threshold_is_configurable():
    mu = posterior_means_with_variances([0.04, 0.02], n=10)
    assert active_units(mu, delta=0.03)[0] == 1
    assert active_units(mu, delta=0.05)[0] == 0


# --------------------------------------------------------------------------- text


def test_corpus_bleu_of_identical_text_is_100_and_of_different_text_less():
    refs = ["the cat sat on the mat .", "a dog barked at the old man ."]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert corpus_bleu(["the cat sat on a mat .", "a dog barked at the man ."], refs) < 100.0


def test_corpus_bleu_does_not_retokenise():
    # 13a tokenisation would split "mat." into "mat ." and score 100; tokenize='none' does not.
    refs = ["the cat sat on the mat ."]
    assert corpus_bleu(["the cat sat on the mat."], refs) < 100.0


def test_corpus_bleu_needs_one_reference_per_hypothesis():
    with pytest.raises(ValueError):
        corpus_bleu(["a b"], ["a b", "c d"])


def test_token_matches_count_only_masked_positions():
    pred = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    target = torch.tensor([[5, 1, 7, 9], [8, 9, 0, 4]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    assert token_matches(pred, target, mask) == (5, 6)


# --------------------------------------------------------------------------- KL without MI


def narrow_posteriors(means: torch.Tensor, logvar: float = -8.0) -> tuple[torch.Tensor, torch.Tensor]:
    return means, torch.full_like(means, logvar)


def test_narrow_posteriors_at_two_places_are_kl_without_mi_and_warned():
    """Two clusters of very narrow posteriors: ~14 nats of KL buy at most log 2 of MI."""
    generator = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (500, 1), generator=generator).double() * 2 - 1
    mu, logvar = narrow_posteriors(0.5 * signs.expand(-1, 4).clone())
    kl = float(gaussian_kl_per_dim(mu, logvar).sum(-1).mean())
    mi = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(1))
    count, _ = active_units(mu)
    assert kl > 14 and mi == pytest.approx(math.log(2), abs=0.01) and count == 4
    warning = latent_warning(kl, mi, count, 500)
    assert warning is not None and warning.startswith("KL without MI")


def test_identical_narrow_posteriors_have_no_active_unit_and_are_warned():
    mu, logvar = narrow_posteriors(torch.zeros(300, 4, dtype=torch.float64))
    kl = float(gaussian_kl_per_dim(mu, logvar).sum(-1).mean())
    count, _ = active_units(mu)
    assert kl > 10 and count == 0
    assert latent_warning(kl, 0.0, count, 300).startswith("no active unit")


def test_a_code_whose_kl_is_its_information_is_not_warned():
    generator = torch.Generator().manual_seed(2)
    mu, logvar = narrow_posteriors(torch.randn(2000, 2, generator=generator, dtype=torch.float64), logvar=-1.0)
    kl = float(gaussian_kl_per_dim(mu, logvar).sum(-1).mean())
    mi = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(3))
    assert latent_warning(kl, mi, active_units(mu)[0], 2000) is None


def test_an_mi_estimate_at_its_log_n_ceiling_is_not_called_kl_without_mi():
    """With N sentences the estimate cannot exceed log N: a large KL beside it is not evidence."""
    assert latent_warning(kl=30.0, mi=math.log(1000) - 0.5, active=16, num_sentences=1000) is None
    assert latent_warning(kl=30.0, mi=math.log(1000) - 1.5, active=16, num_sentences=1000) is not None


def test_an_autoencoders_mi_estimate_reaches_log_n_and_is_called_saturated():
    """Distinct, nearly deterministic codes carry far more than log N nats; the estimate stops there."""
    n = 300
    mu = torch.randn(n, 32, generator=torch.Generator().manual_seed(0)) * 3
    logvar = torch.full((n, 32), -12.0)
    mi = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(1))
    assert mi_ceiling(n) == pytest.approx(math.log(300))
    assert mi == pytest.approx(math.log(n), abs=1e-6) and mi_saturated(mi, n)
    assert not mi_saturated(math.log(n) - 1.5, n)
