"""Every schedule of a run: the learning rate (warm-up, cosine, plateau decay) and the KL and L schedules."""

import math

import pytest
import torch

from textvae.errors import TextVAEError
from textvae.training.builders import build_optimizer
from textvae.training.config import OptimConfig
from textvae.training.schedules import ConstantSchedule, CyclicalSchedule, LinearWarmup, LRSchedule

# The schedules are stepped here without training steps in between.
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")


def schedule(**kwargs) -> tuple[LRSchedule, torch.optim.Optimizer]:
    cfg = OptimConfig(**kwargs)
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2))
    return LRSchedule(cfg, optimizer, total_steps=100), optimizer


def test_plateau_halves_the_rate_after_patience_validations_without_improvement():
    sched, opt = schedule(lr=1.0, scheduler="plateau", plateau_factor=0.5, plateau_patience=1)
    for loss in (10.0, 9.0, 9.5):  # improves, improves, 1 bad validation (= patience)
        sched.validation(loss)
    sched.step()
    assert opt.param_groups[0]["lr"] == 1.0
    sched.validation(9.8)  # 2nd bad validation > patience: decay
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5


def test_plateau_never_goes_below_min_lr():
    sched, opt = schedule(lr=1.0, scheduler="plateau", plateau_factor=0.1, plateau_patience=0, min_lr=0.05)
    sched.validation(1.0)
    for _ in range(5):
        sched.validation(2.0)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_warmup_then_cosine_reaches_min_lr_at_the_end():
    sched, opt = schedule(lr=1.0, scheduler="cosine", warmup_steps=10, min_lr=0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # (0 + 1) / 10
    for _ in range(10):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    for _ in range(90):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert sched.factor(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_schedule_state_round_trips():
    sched, opt = schedule(lr=1.0, scheduler="plateau", plateau_patience=0)
    sched.validation(1.0)
    sched.validation(2.0)
    sched.step()
    other, other_opt = schedule(lr=1.0, scheduler="plateau", plateau_patience=0)
    other.load_state_dict(sched.state_dict())
    other.step()
    sched.step()
    assert other_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize("key, value", [("name", "adagrad"), ("scheduler", "linear")])
def test_unknown_optimiser_or_scheduler_is_named(key, value):
    with pytest.raises(TextVAEError, match=f"optim.{key}"):
        schedule(**{key: value})


# --------------------------------------------------------------------------- KL and L schedules


def test_constant_schedule_is_the_same_at_every_step():
    s = ConstantSchedule(0.7)
    assert [s(t) for t in (0, 1, 10**6)] == [0.7, 0.7, 0.7]


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.1), (5, 0.55), (10, 1.0), (11, 1.0), (10**6, 1.0)],
)
def test_linear_warmup_goes_from_start_to_end_then_stays(step, expected):
    assert LinearWarmup(0.1, 1.0, 10)(step) == pytest.approx(expected)


def test_linear_warmup_with_zero_steps_is_end_from_the_start():
    assert LinearWarmup(0.0, 2.0, 0)(0) == 2.0


@pytest.mark.parametrize(
    ("step", "expected", "where"),
    [
        (0, 0.0, "start of cycle 1"),
        (5, 0.5, "inside the ramp"),
        (10, 1.0, "end of the ramp"),
        (15, 1.0, "plateau"),
        (19, 1.0, "last plateau step"),
        (20, 0.0, "start of cycle 2"),
        (22, 0.2, "ramp of cycle 2"),
        (60, 0.0, "start of the last cycle"),
        (79, 1.0, "plateau of the last cycle"),
        (80, 1.0, "total_steps: stays at end"),
        (1000, 1.0, "far past the end"),
    ],
)
def test_cyclical_schedule_fu_et_al(step, expected, where):
    # 80 steps, 4 cycles of 20, ramp over the first half of each cycle.
    assert CyclicalSchedule(80, 4, 0.5, 1.0)(step) == pytest.approx(expected), where


def test_cyclical_schedule_with_non_integer_cycle_length_restarts_at_exact_cycle_starts():
    s = CyclicalSchedule(10, 3, 1.0, 2.0)  # cycles of 10/3 steps: 0, 3.33, 6.67
    assert s(0) == 0.0
    assert s(3) == pytest.approx(1.8)  # 3 / 3.33 = 0.9 of the first cycle
    assert s(4) == pytest.approx(0.4)  # 0.67 / 3.33 = 0.2 into cycle 2
    assert s(7) == pytest.approx(0.2)  # 0.33 / 3.33 = 0.1 into cycle 3


def test_cyclical_schedule_scales_with_end_value():
    assert CyclicalSchedule(80, 4, 0.5, 0.5)(5) == pytest.approx(0.25)


def test_schedules_are_pure_functions_of_the_step():
    s = CyclicalSchedule(80, 4, 0.5, 1.0)
    forward = [s(t) for t in range(100)]
    backward = [s(t) for t in reversed(range(100))][::-1]
    assert forward == backward
