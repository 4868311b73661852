"""Figures: valid PNG files, the PCA they draw, and one-line errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from textvae.errors import TextVAEError
from textvae.evaluation import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_width=200):
    import matplotlib.image

    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(path).shape
    assert width >= min_width and height >= 100


def known_cloud(n=400, seed=0):
    """Points spread 3x along (1, 1, 0, 0)/sqrt2 and 1x along (0, 0, 1, 0), plus tiny noise."""
    g = torch.Generator().manual_seed(seed)
    a, b = 3 * torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)
    axis1 = torch.tensor([[1.0, 1.0, 0.0, 0.0]]) / 2**0.5
    axis2 = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    return 5.0 + a * axis1 + b * axis2 + 0.01 * torch.randn(n, 4, generator=g)


def test_pca_projection_matches_torch_pca_lowrank_up_to_sign():
    x = known_cloud()
    ours = plots.pca_projection(x, 2)
    u, s, _ = torch.pca_lowrank(x.double(), q=2, center=True)
    reference = u * s  # (N, 2) coordinates on the top two components
    signs = torch.sign((ours * reference).sum(0))
    assert torch.allclose(ours, reference * signs, atol=1e-6)
    # And the components found are the planted axes, largest first.
    assert ours[:, 0].std() == pytest.approx(3.0, rel=0.1)
    assert ours[:, 1].std() == pytest.approx(1.0, rel=0.1)


def test_pca_sign_is_fixed_so_pictures_repeat():
    x = known_cloud()
    assert torch.equal(plots.pca_projection(x), plots.pca_projection(x.clone()))
    # Mirrored data gives the same axes (sign fixed by the loadings), so mirrored points.
    assert torch.allclose(plots.pca_projection(-x), -plots.pca_projection(x), atol=1e-9)


def test_pca_of_a_one_dimensional_latent_pads_the_second_axis():
    projected = plots.pca_projection(torch.randn(10, 1))
    assert projected.shape == (10, 2) and torch.all(projected[:, 1] == 0)


def test_kl_bars_and_pca_scatters_are_png_files(tmp_path):
    assert_png(plots.plot_kl_per_dimension([0.0, 1.5, 0.01, 2.0], tmp_path / "kl.png", delta_line=0.01))
    mu = known_cloud(n=50)
    assert_png(plots.plot_latent_pca(mu, tmp_path / "by_length.png", colour_by=list(range(50))))
    tenses = ["past", "present", "future"] * 16 + ["past", "past"]
    panels = {"length": list(range(50)), "tense": tenses, "negation": [i % 2 == 0 for i in range(50)], "none": None}
    assert_png(plots.plot_latent_pca_panels(mu, tmp_path / "sub" / "panels.png", panels), min_width=1000)


def test_training_curves_from_metrics_jsonl(tmp_path):
    rows = [{"step": s, "split": "train", "elbo": -50 + s, "rec": 45 - s, "kl": 5.0, "lr": 1e-3} for s in (10, 20, 30)]
    rows += [{"step": 20, "split": "valid", "elbo": -40.0, "rec": 36.0, "kl": 4.0, "active_units": 3}]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert plots.curve_series(plots.read_metrics(metrics), "elbo", "valid") == ([20.0], [-40.0])
    assert_png(plots.plot_training_curves(metrics, tmp_path / "curves.png"), min_width=600)


def test_curves_of_a_resumed_run_keep_the_last_value_per_step_in_step_order():
    rows = [{"step": 10, "elbo": -9.0}, {"step": 20, "elbo": -8.0}, {"step": 10, "elbo": -7.0},
            {"step": 5, "elbo": -6.0}, {"step": 30, "split": "valid", "elbo": -1.0}]
    assert plots.curve_series(rows, "elbo", "train") == ([5.0, 10.0, 20.0], [-6.0, -7.0, -8.0])


def test_bad_metrics_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"step": 1, "split": "train", "elbo": -3}\n{"step": 2,\n', encoding="utf-8")
    with pytest.raises(TextVAEError, match=r"metrics.jsonl:2: not a JSON object"):
        plots.plot_training_curves(bad, tmp_path / "x.png")
    with pytest.raises(TextVAEError, match="no such file"):
        plots.read_metrics(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"step": 1, "split": "train", "lr": 0.1}\n', encoding="utf-8")
    with pytest.raises(TextVAEError, match="no rows with 'step'"):
        plots.plot_training_curves(empty, tmp_path / "y.png")


def test_missing_matplotlib_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(TextVAEError, match=r"pip install textvae\[plots\]"):
        plots.plot_kl_per_dimension([1.0], tmp_path / "kl.png")
