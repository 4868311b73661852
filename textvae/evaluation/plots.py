"""PNG figures of a model and its training: KL per dimension, curves, latent PCA.

matplotlib is an optional dependency (``pip install textvae[plots]``): it is imported
only when a figure is drawn, with the Agg backend so no display is needed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from textvae.atomic import ensure_directory, write_bytes
from textvae.data.reading import read_json_lines
from textvae.errors import TextVAEError

CURVE_KEYS = (("elbo", "ELBO"), ("rec", "Reconstruction"), ("kl", "KL"))


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or a one-line error saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise TextVAEError("plots need matplotlib: pip install textvae[plots]") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Render to memory, then write atomically: an interrupted write never leaves half a PNG."""
    path = Path(path)
    ensure_directory(path.parent)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    _pyplot().close(fig)
    return write_bytes(path, png.getvalue())


# --------------------------------------------------------------------------- KL bars


def plot_kl_per_dimension(kl_per_dim: Sequence[float], path: str | Path, *, delta_line: float | None = None) -> Path:
    """Bar chart of the mean KL of each latent dimension: collapsed dimensions sit at 0."""
    plt = _pyplot()
    values = [float(v) for v in kl_per_dim]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(values) + 2), 3))
    ax.bar(range(len(values)), values, color="tab:blue")
    if delta_line is not None:
        ax.axhline(delta_line, color="tab:red", linestyle="--", linewidth=1)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats)")
    ax.set_title(f"KL per dimension (total {sum(values):.2f} nats)")
    return _save(fig, path)


# --------------------------------------------------------------------------- curves


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a run's ``metrics.jsonl``, one per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise TextVAEError(f"{path}: no such file (a run directory has metrics.jsonl)")
    return [row for _, row in read_json_lines(path)]


def curve_series(rows: Sequence[dict[str, Any]], key: str, split: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` for rows of ``split``, sorted by step.

    A resumed (or re-run) training appends to the same metrics.jsonl, so a step can
    appear more than once: the last line written for it wins, and the curve never runs
    backwards.
    """
    latest: dict[float, float] = {}
    for r in rows:
        if r.get("split", "train") == split and isinstance(r.get(key), (int, float)) and "step" in r:
            latest[float(r["step"])] = float(r[key])
    steps = sorted(latest)
    return steps, [latest[s] for s in steps]


def plot_training_curves(metrics_path: str | Path, path: str | Path) -> Path:
    """ELBO, reconstruction and KL against the step, train and valid, from ``metrics.jsonl``."""
    rows = read_metrics(metrics_path)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(4 * len(CURVE_KEYS), 3))
    drawn = False
    for ax, (key, label) in zip(axes, CURVE_KEYS, strict=True):
        for split, style in (("train", "-"), ("valid", "o-")):
            steps, values = curve_series(rows, key, split)
            if steps:
                ax.plot(steps, values, style, label=split, markersize=3)
                drawn = True
        ax.set_xlabel("step")
        ax.set_title(label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if not drawn:
        plt.close(fig)
        raise TextVAEError(f"{metrics_path}: no rows with 'step' and any of elbo/rec/kl to plot")
    return _save(fig, path)


# --------------------------------------------------------------------------- PCA


def pca_projection(x: torch.Tensor, components: int = 2) -> torch.Tensor:
    """Project (N, d) points on their top principal components -> (N, components).

    Centred SVD; each component's sign is fixed so its largest-magnitude loading is
    positive, which makes the picture the same from run to run.
    """
    x = x.detach().double().cpu()
    centred = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    basis = vh[:components].T  # (d, components)
    signs = basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)).sign()
    basis = basis * torch.where(signs == 0, 1.0, signs)
    projected = centred @ basis
    if projected.shape[1] < components:  # fewer dimensions than components asked for
        projected = torch.cat([projected, projected.new_zeros(x.shape[0], components - projected.shape[1])], 1)
    return projected


def plot_latent_pca(
    mu: torch.Tensor,
    path: str | Path,
    *,
    colour_by: Sequence[Any] | None = None,
    label: str = "sentence length",
) -> Path:
    """Scatter of the 2-D PCA of posterior means, coloured by a number or a category."""
    return plot_latent_pca_panels(mu, path, {label: colour_by})


def plot_latent_pca_panels(
    mu: torch.Tensor, path: str | Path, colourings: dict[str, Sequence[Any] | None], columns: int = 3
) -> Path:
    """One figure, one panel per colouring (length, tense, ...), all on the same 2-D PCA.

    Numbers get a colour bar, anything else one colour per category with a legend.
    """
    plt = _pyplot()
    points = pca_projection(mu, 2)
    columns = max(1, min(columns, len(colourings)))
    rows = math.ceil(len(colourings) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(colourings):]:
        ax.set_visible(False)
    for ax, (label, values) in zip(axes.flat, colourings.items(), strict=False):
        _scatter(fig, ax, points, values, label)
    return _save(fig, path)


def _scatter(fig, ax, points: torch.Tensor, values: Sequence[Any] | None, label: str) -> None:
    if values is None:
        ax.scatter(points[:, 0], points[:, 1], s=6)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        scatter = ax.scatter(points[:, 0], points[:, 1], c=[float(v) for v in values], s=6, cmap="viridis")
        fig.colorbar(scatter, ax=ax, label=label)
    else:
        categories = sorted({str(v) for v in values})
        for category in categories:
            chosen = torch.tensor([str(v) == category for v in values])
            ax.scatter(points[chosen, 0], points[chosen, 1], s=6, label=category)
        ax.legend(title=label, fontsize="small", markerscale=2, ncol=max(1, math.ceil(len(categories) / 12)))
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"Posterior means by {label}")
