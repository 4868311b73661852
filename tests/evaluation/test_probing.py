"""Linear factor probes: planted information is found, absent information is not."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tests.helpers_models import offline_and_quiet  # noqa: F401 (autouse fixture)
from textvae.errors import TextVAEError
from textvae.evaluation.probing import (
    encode_factors,
    fit_probes,
    plugin_mutual_information,
    probe_factors,
)

TENSES = ("past", "present", "future")


def planted(n: int = 600, d: int = 8, seed: int = 0):
    """Means that encode tense (dims 0-2) and negation (dim 3) but not 'colour'."""
    rng = random.Random(seed)
    factors = [{"tense": rng.choice(TENSES), "negation": rng.random() < 0.3, "colour": rng.choice("rgbk")}
               for _ in range(n)]
    mu = 0.3 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    for i, f in enumerate(factors):
        mu[i, TENSES.index(f["tense"])] += 2.0
        mu[i, 3] += 1.5 if f["negation"] else -1.5
    return mu, factors


def test_planted_factors_are_decoded_and_an_absent_one_stays_at_chance():
    mu, factors = planted()
    probes = probe_factors(mu, factors)
    for name in ("tense", "negation"):
        assert probes[name]["accuracy"] > 0.97, probes[name]
        assert probes[name]["accuracy"] > probes[name]["chance"] + 0.2
        # Almost all of the factor's entropy is recovered.
        assert probes[name]["ce_gain_nats"] > 0.8 * probes[name]["entropy_nats"]
        assert probes[name]["mi_plugin_nats"] == pytest.approx(probes[name]["entropy_nats"], abs=0.1)
    colour = probes["colour"]
    assert abs(colour["accuracy"] - colour["chance"]) < 0.08
    assert colour["ce_gain_nats"] < 0.03
    assert colour["mi_plugin_nats"] < 0.05


def test_a_collapsed_code_probes_at_chance_whatever_it_wiggles():
    # A collapsed encoder's means still move by ~1e-3 with the sentence: nothing a
    # decoder could use at posterior noise 1, and the probe must not read it either.
    mu, factors = planted()
    probes = probe_factors(mu * 1e-3, factors)
    for name, probe in probes.items():
        assert probe["accuracy"] == pytest.approx(probe["chance"], abs=0.02), name
        assert abs(probe["ce_gain_nats"]) < 0.01, name


def test_probes_are_reproducible_and_the_seed_picks_the_split():
    mu, factors = planted(n=200)
    assert probe_factors(mu, factors, seed=1) == probe_factors(mu, factors, seed=1)
    assert probe_factors(mu, factors, seed=1) != probe_factors(mu, factors, seed=2)


def test_fitting_all_factors_at_once_equals_fitting_each_alone():
    mu, factors = planted(n=300)
    _, classes, labels = encode_factors(factors)
    sizes = [len(c) for c in classes]
    x = mu.double()
    weight, bias = fit_probes(x, labels, sizes)
    for f, size in enumerate(sizes):
        w_alone, b_alone = fit_probes(x, labels[:, f : f + 1], [size])
        assert torch.allclose(weight[:, f, :size], w_alone[:, 0, :size], atol=1e-3)
        assert torch.allclose(bias[f, :size], b_alone[0, :size], atol=1e-3)


def test_missing_keys_become_a_class_and_constant_factors_are_dropped():
    factors = [{"extension": "pp", "place": "park", "lang": "en"}, {"extension": "none", "lang": "en"}] * 3
    names, classes, labels = encode_factors(factors)
    assert names == ["extension", "place"]
    assert classes[1] == ["<absent>", "park"]
    assert labels[:2].tolist() == [[1, 1], [0, 0]]


def test_plugin_mutual_information_known_answers():
    y = torch.tensor([[0], [1], [0], [1]])
    assert float(plugin_mutual_information(y, y, 2)) == pytest.approx(math.log(2))  # a perfect copy: H(Y)
    independent = torch.tensor([[0], [0], [1], [1]])
    assert float(plugin_mutual_information(y, independent, 2)) == pytest.approx(0.0, abs=1e-12)
    # Joint [[1/2, 0], [1/4, 1/4]]: I = 1/2 log(4/3) + 1/4 log(2/3) + 1/4 log 2.
    true, pred = torch.tensor([[0], [0], [1], [1]]), torch.tensor([[0], [0], [0], [1]])
    expected = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    assert float(plugin_mutual_information(true, pred, 2)) == pytest.approx(expected)


def test_mismatched_inputs_are_user_errors():
    mu, factors = planted(n=10)
    with pytest.raises(TextVAEError, match="9 factor rows"):
        probe_factors(mu, factors[:9])
    with pytest.raises(TextVAEError, match="at least 4 sentences"):
        probe_factors(mu[:3], factors[:3])


# --------------------------------------------------------------------------- end to end

E2E_STEPS = 300


def train_quickstart(tmp_path, latent_path: str):
    from textvae.training.loop import train
    from textvae.training.recipe import load_recipe, resolve_recipe_path

    # The plain ELBO: the recipe's rate target and BN would keep any path from collapsing.
    overrides = [f"output_dir={tmp_path / latent_path}", f"model.latent_path={latent_path}",
                 "objective.target_rate=null", "model.posterior_bn_gamma=null",
                 f"train.max_steps={E2E_STEPS}", f"train.eval_every={E2E_STEPS}", "train.progress=false"]
    return train(load_recipe(resolve_recipe_path("quickstart"), overrides))


@pytest.mark.slow
def test_quickstart_concat_collapses_to_chance_probes_and_invlip_does_not(tmp_path, capsys):
    """Train the quickstart recipe, without the rate it asks, twice for 300 steps; ``textvae
    evaluate`` the runs.

    Same data, sizes, optimiser and seed: only the latent path differs. The concat model
    collapses (KL ~ 0) and its posterior means carry nothing about any factor; the
    inverse-Lipschitz path keeps KL > 0 and its means predict the factors above chance.
    """
    import json

    from tests.helpers_models import run_cli

    probes, results = {}, {}
    for latent_path in ("concat", "invlip"):
        run = train_quickstart(tmp_path, latent_path)
        out = tmp_path / f"{latent_path}.json"
        code, _, _ = run_cli(capsys, "evaluate", run, "--max-sentences", 1000, "--iw-samples", 2,
                             "--output", out, "--no-progress")
        assert code == 0
        results[latent_path] = json.loads(out.read_text(encoding="utf-8"))
        probes[latent_path] = results[latent_path]["probes"]

    assert results["concat"]["kl"] < 0.01 and results["concat"]["active_units"] == 0
    for name, probe in probes["concat"].items():
        assert probe["accuracy"] == pytest.approx(probe["chance"], abs=0.01), name
        assert probe["ce_gain_nats"] < 0.005, name

    # Measured at 300 steps: KL 0.37 nats, a gain on every factor (0.013 to 0.09 nats, 0.57
    # in all), tense 0.52 vs chance 0.36, object number 0.68 vs 0.50. Margins leave room.
    assert results["invlip"]["kl"] > 0.1
    gains = {name: probe["ce_gain_nats"] for name, probe in probes["invlip"].items()}
    assert sum(gains.values()) > 0.3, gains
    assert sum(gain > 0.01 for gain in gains.values()) >= len(gains) // 2, gains
    assert sum(p["ce_gain_nats"] for p in probes["concat"].values()) < 0.01
    for factor in ("tense", "object_number"):
        probe = probes["invlip"][factor]
        assert probe["accuracy"] > probe["chance"] + 0.1, (factor, probe)

    # The collapsed run's interpolations come with the warning; the invlip run's do not.
    for latent_path, warned in (("concat", True), ("invlip", False)):
        code, _, err = run_cli(capsys, "interpolate", tmp_path / latent_path, "the old dog saw a small cat .",
                               "she will not find the red boxes .", "--steps", 3)
        assert code == 0 and any(line.startswith("warning: the latent code is unused") for line in err) == warned
