"""Optimiser and learning-rate schedule built from the recipe."""

import math

import pytest
import torch

from textvae.errors import TextVAEError
from textvae.training.builders import build_optimizer
from textvae.training.config import OptimConfig
from textvae.training.schedules import LRSchedule

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
