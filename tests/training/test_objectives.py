"""Free bits and the loss/diagnostics of :mod:`textvae.training.objectives` (its schedules: test_schedules.py)."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from textvae.errors import TextVAEError
from textvae.training.config import ObjectiveConfig
from textvae.training.objectives import Objective, free_bits_kl, mmd_to_prior
from textvae.training.schedules import Delayed, LinearWarmup


def make_output(rec_ll, kl_per_dim, num_tokens, requires_grad=False):
    """A stand-in for TextVAEOutput with the attributes the objective reads."""
    rec = torch.tensor(rec_ll, dtype=torch.float64, requires_grad=requires_grad)
    kpd = torch.tensor(kl_per_dim, dtype=torch.float64, requires_grad=requires_grad)
    return SimpleNamespace(
        rec_log_likelihood=rec,
        kl_per_dim=kpd,
        kl=kpd.sum(dim=1),
        num_tokens=torch.tensor(num_tokens),
        z=torch.zeros(len(rec_ll), 2),
    )


# --------------------------------------------------------------------------- free bits


def test_free_bits_dim_mode_clamps_each_dimension_batch_mean():
    # batch-mean KL per dim: [0.1, 2.0, 0.6]; lambda = 0.5 -> 0.5 + 2.0 + 0.6
    kpd = torch.tensor([[0.0, 1.0, 0.2], [0.2, 3.0, 1.0]])
    assert free_bits_kl(kpd, 0.5, "dim").item() == pytest.approx(3.1)


def test_free_bits_total_mode_clamps_the_batch_mean_total():
    kpd = torch.tensor([[0.0, 1.0, 0.2], [0.2, 3.0, 1.0]])  # totals 1.2, 4.2 -> mean 2.7
    assert free_bits_kl(kpd, 2.0, "total").item() == pytest.approx(2.7)
    assert free_bits_kl(kpd, 5.0, "total").item() == pytest.approx(5.0)


def test_free_bits_dim_mode_gradient_is_zero_below_lambda_and_one_above():
    kpd = torch.tensor([[0.1, 2.0, 0.6]], requires_grad=True)
    free_bits_kl(kpd, 0.5, "dim").backward()
    assert kpd.grad.tolist() == [[0.0, 1.0, 1.0]]


def test_free_bits_dim_mode_gradient_per_sentence_is_one_over_batch():
    kpd = torch.tensor([[0.0, 1.0], [0.2, 3.0]], requires_grad=True)  # means 0.1, 2.0
    free_bits_kl(kpd, 0.5, "dim").backward()
    assert kpd.grad.tolist() == [[0.0, 0.5], [0.0, 0.5]]


def test_free_bits_total_mode_gradient_switches_off_below_the_target_rate():
    kpd = torch.tensor([[0.1, 0.2]], requires_grad=True)
    free_bits_kl(kpd, 1.0, "total").backward()
    assert kpd.grad.tolist() == [[0.0, 0.0]]
    kpd.grad = None
    free_bits_kl(kpd, 0.2, "total").backward()
    assert kpd.grad.tolist() == [[1.0, 1.0]]


def test_free_bits_sentence_mode_clamps_every_sentence_and_dimension_at_lambda_over_d():
    # Li et al.'s fb=2: lambda = 1 nat for z, so 0.5 per dimension of each sentence.
    kpd = torch.tensor([[0.1, 2.0], [0.7, 0.2]], requires_grad=True)
    value = free_bits_kl(kpd, 1.0, "sentence")
    assert value.item() == pytest.approx(((0.5 + 2.0) + (0.7 + 0.5)) / 2)
    value.backward()
    assert kpd.grad.tolist() == [[0.0, 0.5], [0.5, 0.0]]  # no KL gradient below lambda / d


def test_free_bits_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        free_bits_kl(torch.zeros(1, 2), 0.5, "group")


# --------------------------------------------------------------------------- objective


def objective(total_steps=100, **cfg):
    return Objective.from_config(ObjectiveConfig(**cfg), total_steps)


def test_loss_weights_kl_by_beta_but_elbo_is_reported_at_beta_one():
    out = make_output([-10.0, -20.0], [[1.0, 0.0], [2.0, 1.0]], [4, 6])  # KL 1, 3
    terms = objective(beta=0.5)(out, step=0)
    assert terms.loss.item() == pytest.approx(15.0 + 0.5 * 2.0)
    assert terms.kl_weight == 0.5
    assert terms.rec.item() == pytest.approx(15.0)
    assert terms.kl.item() == pytest.approx(2.0)
    assert terms.neg_elbo.item() == pytest.approx(17.0)
    assert terms.elbo.item() == pytest.approx(-17.0)


def test_per_token_numbers_divide_the_negative_elbo_by_predicted_tokens():
    out = make_output([-10.0, -20.0], [[1.0, 0.0], [2.0, 1.0]], [4, 6])
    terms = objective()(out, step=0)
    assert terms.num_tokens.item() == 10
    assert terms.num_sentences == 2
    assert terms.neg_elbo_per_token.item() == pytest.approx(3.4)
    assert terms.elbo_ppl.item() == pytest.approx(math.exp(3.4)) and terms.kl_weight == 1.0


def test_loss_follows_the_linear_warmup_by_step():
    out = make_output([-10.0], [[4.0]], [3])
    obj = objective(kl_schedule="linear", kl_start=0.0, beta=1.0, kl_warmup_steps=10)
    assert obj(out, 0).loss.item() == pytest.approx(10.0)
    assert obj(out, 5).loss.item() == pytest.approx(12.0)
    assert obj(out, 10).loss.item() == pytest.approx(14.0)


def test_cyclical_config_spans_total_steps_unless_cycle_steps_is_set():
    assert objective(total_steps=40, kl_schedule="cyclical", kl_cycles=2).kl_weight(10) == 1.0
    obj = objective(total_steps=40, kl_schedule="cyclical", kl_cycles=2, kl_cycle_steps=80)
    assert obj.kl_weight(10) == pytest.approx(0.5)


def test_free_bits_change_the_loss_but_not_the_reported_kl():
    out = make_output([-10.0], [[0.1, 2.0]], [3], requires_grad=True)
    terms = objective(free_bits=0.5, free_bits_mode="dim")(out, step=0)
    assert terms.loss.item() == pytest.approx(10.0 + 2.5)
    assert terms.kl_term.item() == pytest.approx(2.5)
    assert terms.kl.item() == pytest.approx(2.1)
    terms.loss.backward()
    assert out.kl_per_dim.grad.tolist() == [[0.0, 1.0]]
    assert out.rec_log_likelihood.grad.tolist() == [-1.0]


def test_diagnostics_are_detached_and_loss_is_not():
    out = make_output([-10.0], [[1.0]], [3], requires_grad=True)
    terms = objective()(out, step=0)
    assert terms.loss.requires_grad
    assert not any(t.requires_grad for t in (terms.rec, terms.kl, terms.elbo, terms.elbo_ppl))


def test_delayed_schedule_holds_its_value_then_runs_from_its_own_step_zero():
    s = Delayed(LinearWarmup(0.1, 1.0, 10), delay=5, before=0.0)
    assert [s(t) for t in (0, 4, 5, 10, 15)] == pytest.approx([0.0, 0.0, 0.1, 0.55, 1.0])


def test_pretrain_steps_train_an_autoencoder_then_start_the_kl_annealing():
    obj = objective(pretrain_steps=4, kl_schedule="linear", kl_start=0.0, kl_warmup_steps=2, free_bits=3.0,
                    free_bits_mode="total")
    out = make_output([-10.0], [[1.0, 1.0]], [3])
    assert [obj(out, t).loss.item() for t in (0, 3)] == [10.0, 10.0]  # reconstruction alone, free bits too
    assert [obj.kl_weight(t) for t in (4, 5, 6)] == [0.0, 0.5, 1.0]
    assert [obj.pretraining(t) for t in (3, 4)] == [True, False]
    assert [obj.starts_vae_phase(t) for t in (0, 3, 4, 5)] == [False, False, True, False]


def test_pretraining_never_restarts_without_pretrain_steps():
    obj = objective()
    assert not any(obj.starts_vae_phase(t) or obj.pretraining(t) for t in range(3))


def test_cyclical_schedule_spans_the_vae_phase_after_pretraining():
    obj = objective(total_steps=100, pretrain_steps=20, kl_schedule="cyclical", kl_cycles=1, kl_cycle_ratio=1.0)
    assert [obj.kl_weight(t) for t in (20, 60, 99)] == pytest.approx([0.0, 0.5, 79 / 80])


def test_pretraining_for_the_whole_run_is_an_error():
    with pytest.raises(TextVAEError, match="objective.pretrain_steps': 100 leaves no step"):
        objective(total_steps=100, pretrain_steps=100)


def test_word_dropout_is_exposed_from_the_config():
    assert objective(word_dropout=0.3).word_dropout == 0.3


def test_objective_has_no_state_that_a_checkpoint_would_need():
    obj = objective(kl_schedule="cyclical")
    out = make_output([-10.0], [[1.0]], [3])
    assert obj(out, 37).loss.item() == objective(kl_schedule="cyclical")(out, 37).loss.item()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kl_schedule", "cosine"),
        ("free_bits_mode", "group"),
        ("beta", -1.0),
        ("kl_warmup_steps", -1),
        ("kl_cycles", 0),
        ("kl_cycle_ratio", 0.0),
        ("kl_cycle_ratio", 1.5),
        ("free_bits", -0.1),
        ("word_dropout", 1.5),
        ("pretrain_steps", -1),
    ],
)
def test_invalid_config_raises_naming_the_key(field, value):
    with pytest.raises(TextVAEError, match=f"objective.{field}"):
        objective(**{field: value})


def test_unknown_schedule_error_lists_the_known_ones():
    with pytest.raises(TextVAEError, match="objective.kl_schedule': expected one of 'constant', 'linear', 'cyclical', got 'sigmoid'"):
        objective(kl_schedule="sigmoid")


def test_cyclical_schedule_with_no_steps_is_an_error():
    with pytest.raises(TextVAEError, match="objective.kl_schedule"):
        objective(total_steps=0, kl_schedule="cyclical")


def test_every_config_field_is_used_or_validated():
    # Guards against a recipe key being added without the objective learning about it.
    known = {
        "beta", "kl_schedule", "kl_start", "kl_warmup_steps", "kl_cycles", "kl_cycle_ratio",
        "kl_cycle_steps", "kl_cycle_zero_ratio", "free_bits", "free_bits_mode", "word_dropout", "pretrain_steps", "target_rate",
        "mmd_weight", "mmd_kernel",
    }
    assert {f.name for f in dataclasses.fields(ObjectiveConfig)} == known


# --------------------------------------------------------------------------- rate and aggregate posterior


@pytest.mark.parametrize("kl_rows, expected_gradient", [([[1.0, 0.0], [2.0, 1.0]], -0.5), ([[9.0, 0.0], [8.0, 1.0]], 0.5)],
                         ids=["below-target", "above-target"])
def test_a_target_rate_holds_the_batch_kl_from_both_sides(kl_rows, expected_gradient):
    out = make_output([-10.0, -20.0], kl_rows, [4, 6], requires_grad=True)
    terms = objective(target_rate=5.0)(out, step=0)
    mean_kl = sum(map(sum, kl_rows)) / 2
    assert terms.kl_term.item() == pytest.approx(abs(mean_kl - 5.0))
    assert terms.kl.item() == pytest.approx(mean_kl)  # the true KL is reported, as always
    terms.loss.backward()
    assert out.kl_per_dim.grad.flatten().tolist() == pytest.approx([expected_gradient] * 4)


def test_a_target_rate_and_free_bits_are_refused_together():
    with pytest.raises(TextVAEError, match="objective.free_bits"):
        ObjectiveConfig(target_rate=5.0, free_bits=2.0)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_near_zero_for_prior_codes_and_grows_with_a_shift(kernel):
    generator = torch.Generator().manual_seed(0)
    draws = [float(mmd_to_prior(torch.randn(256, 8, generator=generator), kernel, generator)) for _ in range(20)]
    assert abs(sum(draws) / len(draws)) < 2e-3  # unbiased: 0 in expectation
    shifted = [float(mmd_to_prior(torch.randn(256, 8, generator=generator) + shift, kernel, generator))
               for shift in (0.5, 1.0, 3.0)]
    assert 0.01 < shifted[0] < shifted[1] < shifted[2]


def test_mmd_pulls_the_codes_toward_the_prior_and_is_added_with_its_weight():
    z = (torch.randn(64, 4, generator=torch.Generator().manual_seed(1)) + 2.0).requires_grad_()
    out = make_output([-10.0] * 64, [[0.5, 0.5]] * 64, [4] * 64)
    out.z = z
    torch.manual_seed(0)
    terms = objective(mmd_weight=100.0)(out, step=0)
    torch.manual_seed(0)
    assert terms.loss.item() == pytest.approx(10.0 + 1.0 + 100.0 * float(mmd_to_prior(z.detach())), rel=1e-5)
    terms.loss.backward()
    assert float((z.grad * z.detach().mean(0)).sum()) > 0  # descending the loss moves the codes back to 0
