"""benchmarks/rate/run.py, checked on CPU in seconds: every row is a valid recipe at the shared
size, the rows reach every method at every rate, and the report and plot are written from
stored rows (a partial table says which rows it holds)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from textvae.training.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rate():
    spec = importlib.util.spec_from_file_location("textvae_rate_benchmark", REPO / "benchmarks" / "rate" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_row_is_a_valid_recipe_at_one_size_and_budget(rate):
    names = [name for name, _, _, _ in rate.rows()]
    assert len(names) == len(set(names)) == 2 + 12 * len(rate.RATES)
    for name, _, recipe, extra in rate.rows():
        loaded = load_recipe(f"ptb/{recipe}", ["data.corpus=ptb", *rate.SIZE, *extra])
        loaded.check()
        assert loaded.train.max_steps == 1000 and loaded.model.hidden_size == 256, name
    targets = {extra[0] for _, _, _, extra in rate.rows() if extra and extra[0].startswith("objective.target_rate")}
    assert targets == {f"objective.target_rate={r}" for r in rate.RATES}


def test_bn_rows_ask_for_their_rate_through_gamma(rate):
    for method in ("BN-VAE", "invlip + BN"):  # the means alone carry the rate, without a target
        gammas = [float(extra[0].split("=")[1]) for _, row_method, _, extra in rate.rows() if row_method == method]
        assert [round(32 * g * g / 2) for g in gammas] == list(rate.RATES), method  # d gamma^2 / 2 nats of means


def test_the_report_and_plot_come_from_the_stored_rows(rate, tmp_path):
    metrics = {"kl": 5.2, "rec": 90.0, "mi_split": 4.0, "mi_ceiling": 8.2, "own_code_gain": 4.5, "active_units": 30,
               "nll_iw": 93.1, "bleu_greedy": 3.5}
    results = [{"name": "ae", "method": "ae", "command": "textvae train ...", "commit": "abc", "train_s": 10.0,
                "metrics": {**metrics, "kl": 150.0, "rec": 60.0}},
               {"name": "beta-0.8", "method": "beta-VAE", "command": "textvae train ...", "commit": "abc",
                "train_s": 11.0, "metrics": metrics}]
    text = rate.render(results, "rate_distortion.png")
    assert "| beta-0.8 | 5.2 | 90 | 4 | 8.2 | 4.5 | 30 | 93.1 | 3.5 | – | – | – | – | – | – | – | 11 | abc |" in text
    assert rate.plot(results, tmp_path / "plot.png") and (tmp_path / "plot.png").stat().st_size > 1000
