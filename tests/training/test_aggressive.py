"""He et al. (2019)'s aggressive inference-network training: the switch and the inner loop."""

from __future__ import annotations

import pytest
import torch

from tests.models import pad_batch, random_sentences, tiny_model
from textvae.training.aggressive import (
    AggressiveInference,
    decoder_parameters,
    encoder_parameters,
    encoder_updates,
    gradients_off,
    step_except,
)


def test_aggressive_phase_ends_at_the_first_validation_whose_mi_fell():
    switch = AggressiveInference(enabled=True)
    seen = []
    for mi in [0.5, 1.0, 1.2, 1.1, 1.5, 2.0]:
        switch.validation(mi)
        seen.append(switch.active)
    assert seen == [True, True, True, False, False, False]  # never switched back on


def test_a_first_mi_below_zero_ends_the_phase_at_once():
    switch = AggressiveInference(enabled=True)  # He et al. start from pre_mi = 0
    switch.validation(-0.01)
    assert not switch.active


def test_a_disabled_switch_is_never_active():
    switch = AggressiveInference(enabled=False)
    switch.validation(3.0)
    assert not switch.active


def test_the_switch_round_trips_through_its_state_dict():
    switch = AggressiveInference(enabled=True)
    switch.validation(0.7)
    other = AggressiveInference(enabled=True)
    other.load_state_dict(switch.state_dict())
    assert other == switch


def run_loop(losses: list[float], max_steps: int = 100, check_every: int = 3) -> tuple[int, int]:
    """The inner loop on a stub backward returning ``losses`` (per token) in turn -> (steps, fresh draws)."""
    model = tiny_model(0)
    calls = iter(losses)
    drawn = []
    steps = encoder_updates(model, lambda batches: (next(calls), 1), [{}], lambda: drawn.append(1) or [{}],
                            lambda frozen: None, max_steps, check_every)
    return steps, len(drawn)


def test_inner_loop_stops_after_the_first_window_that_is_worse_than_the_one_before():
    # Windows of 3: 9, 6, 7 (worse) -> stop after 9 steps.
    steps, drawn = run_loop([3, 3, 3, 2, 2, 2, 3, 2, 2, 0, 0, 0])
    assert (steps, drawn) == (9, 8)  # the first step reuses the decoder step's batches


def test_an_equal_window_does_not_stop_the_loop():
    steps, _ = run_loop([1.0] * 6 + [2.0] * 3, max_steps=9)
    assert steps == 9  # 3, 3 (not worse), then 6 worse at the cap


def test_inner_loop_stops_at_the_cap_while_the_loss_keeps_falling():
    steps, drawn = run_loop([100 - t for t in range(20)], max_steps=7)
    assert (steps, drawn) == (7, 6)


def inner_loop(latent_path: str, skip_decoder_gradients: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer, int]:
    """Four encoder steps of a tiny model on one batch (seeded, so two calls see the same noise)."""
    model = tiny_model(0, latent_path=latent_path).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids, mask = pad_batch(random_sentences(24, [3, 5, 8, 2], 0))
    batch = {"input_ids": ids, "attention_mask": mask}

    def backward(batches):
        out = model(**batches[0])
        loss = (out.kl - out.rec_log_likelihood).mean()
        loss.backward()
        return float(loss.detach()) * len(out.kl), int(out.num_tokens.sum())

    torch.manual_seed(1)
    steps = encoder_updates(model, backward, [batch], lambda: [batch], lambda frozen: step_except(optimizer, frozen),
                            max_steps=4, check_every=2, skip_decoder_gradients=skip_decoder_gradients)
    return model, optimizer, steps


@pytest.mark.parametrize("skip_decoder_gradients", [False, True])
def test_inner_steps_change_only_encoder_parameters_and_leave_decoder_moments_alone(skip_decoder_gradients):
    before = {name: p.detach().clone() for name, p in tiny_model(0, latent_path="concat").named_parameters()}
    model, optimizer, steps = inner_loop("concat", skip_decoder_gradients)
    assert steps >= 2
    encoder = {id(p) for p in encoder_parameters(model)}
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        if id(param) in encoder:
            assert changed, name
        else:
            assert not changed, name
            assert param not in optimizer.state, name
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # switched back on after the loop


@pytest.mark.parametrize("latent_path", ["invlip", "concat"])
def test_skipping_decoder_gradients_gives_the_same_encoder_updates(latent_path):
    full, _, steps_full = inner_loop(latent_path, skip_decoder_gradients=False)
    fast, _, steps_fast = inner_loop(latent_path, skip_decoder_gradients=True)
    assert steps_full == steps_fast
    for (name, a), b in zip(full.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_gradients_off_restores_the_flags_even_after_an_error():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2), requires_grad=False)]
    with pytest.raises(RuntimeError), gradients_off(params):
        assert not any(p.requires_grad for p in params)
        raise RuntimeError
    assert [p.requires_grad for p in params] == [True, False]


@pytest.mark.parametrize("latent_path", ["invlip", "concat"])
def test_encoder_and_decoder_parameters_partition_the_model(latent_path):
    model = tiny_model(0, latent_path=latent_path)
    encoder, decoder = encoder_parameters(model), decoder_parameters(model)
    assert len(encoder) + len(decoder) == len(list(model.parameters()))
    assert {id(p) for p in encoder}.isdisjoint(id(p) for p in decoder)
