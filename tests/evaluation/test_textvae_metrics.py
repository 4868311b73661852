"""The bundled ``evaluate`` module loads offline and agrees with the plain estimators.

``evaluate`` is imported in a child process started with the Hub switched off
(``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1`` and an unreachable endpoint), so a load
that silently needed the network fails here instead of passing on a connected machine.
The child runs once per test session, even under pytest-xdist (importing ``evaluate``
takes seconds): the first worker to get the lock runs it, the others read its result.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from filelock import FileLock

from textvae.estimators import perplexity

REC = [-10.0, -20.0, -7.5]
KL = [1.0, 2.0, 0.5]
TOKENS = [4, 6, 3]
IW = [-10.5, -21.0, -7.75]

CHILD = r"""
import json, sys
from textvae.evaluation.metric import load_metric

rec, kl, tokens, iw = json.loads(sys.argv[1])
out = {}
metric = load_metric(keep_in_memory=True)
out["default"] = metric.compute(rec_log_likelihood=rec, kl=kl, num_tokens=tokens)
metric = load_metric("iw", keep_in_memory=True)
for i in range(len(rec)):  # one sentence per batch: batching must not matter
    metric.add_batch(rec_log_likelihood=rec[i:i + 1], kl=kl[i:i + 1],
                     num_tokens=tokens[i:i + 1], iw_log_likelihood=iw[i:i + 1])
out["iw"] = metric.compute()
mu = [[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]
logvar = [[-4.0, 0.0]] * 4
out["latent"] = load_metric("latent", keep_in_memory=True).compute(mu=mu, logvar=logvar)
out["reconstruction"] = load_metric("reconstruction", keep_in_memory=True).compute(
    predictions=["the dog ran .", "a cat sat"], references=["the dog ran .", "a cat sat down"])
try:
    load_metric("nonsense", keep_in_memory=True)
except ValueError as exc:
    out["bad_config"] = str(exc)
print("RESULT" + json.dumps(out))
"""


def run_child(cache_dir) -> dict:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HOME=str(cache_dir),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([REC, KL, TOKENS, IW])],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="session")
def offline_results(tmp_path_factory):
    if "PYTEST_XDIST_WORKER" not in os.environ:  # not running under xdist
        return run_child(tmp_path_factory.mktemp("hf"))
    shared = tmp_path_factory.getbasetemp().parent  # common to all xdist workers
    result_file = shared / "textvae_metrics_offline.json"
    with FileLock(str(result_file) + ".lock"):
        if not result_file.is_file():
            result_file.write_text(json.dumps(run_child(shared / "hf")))
        return json.loads(result_file.read_text())


def test_metric_loads_offline_and_returns_the_elbo_numbers(offline_results):
    got = offline_results["default"]
    neg_elbo = -sum(REC) + sum(KL)  # 37.5 + 3.5 = 41
    assert got["elbo"] == pytest.approx(-neg_elbo / 3)
    assert got["nll"] == pytest.approx(neg_elbo / 3)
    assert got["rec"] == pytest.approx(37.5 / 3)
    assert got["kl"] == pytest.approx(3.5 / 3)
    assert got["num_sentences"] == 3 and got["num_tokens"] == 13
    assert got["ppl_elbo"] == pytest.approx(perplexity(neg_elbo, 13))
    assert got["ppl_elbo"] == pytest.approx(math.exp(41 / 13))
    assert "ppl_iw" not in got


def test_iw_config_adds_the_importance_weighted_numbers(offline_results):
    got = offline_results["iw"]
    assert got["nll_iw"] == pytest.approx(-sum(IW) / 3)
    assert got["ppl_iw"] == pytest.approx(perplexity(-sum(IW), 13))
    assert got["ppl_elbo"] == pytest.approx(offline_results["default"]["ppl_elbo"])


def test_unknown_config_is_rejected_with_the_known_names(offline_results):
    assert "default, iw, latent, reconstruction" in offline_results["bad_config"]


def test_latent_config_gives_kl_mi_and_active_units(offline_results):
    got = offline_results["latent"]
    # Dim 0: means +-1, variance e^-4; dim 1 is the prior itself (KL 0, mean never varies).
    kl0 = 0.5 * (1.0 + math.exp(-4.0) + 4.0 - 1.0)
    assert got["kl_per_dim"] == pytest.approx([kl0, 0.0])
    assert got["kl"] == pytest.approx(kl0)
    assert got["active_units"] == 1 and got["au_variances"] == pytest.approx([4 / 3, 0.0])
    # Two well-separated posterior modes, each half the data: I(x; z) = log 2.
    assert got["mi"] == pytest.approx(math.log(2), abs=0.02)
    assert got["num_sentences"] == 4


def test_reconstruction_config_gives_bleu_and_exact_matches(offline_results):
    from textvae.estimators import corpus_bleu

    got = offline_results["reconstruction"]
    assert got["exact_match"] == 0.5
    assert got["bleu"] == pytest.approx(corpus_bleu(["the dog ran .", "a cat sat"], ["the dog ran .", "a cat sat down"]))
    assert 0 < got["bleu"] < 100
