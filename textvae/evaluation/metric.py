"""Evaluation metrics shipped with textvae.

:func:`load_metric` loads the ``textvae_metrics`` Hugging Face ``evaluate`` module from
this package's own folder, so it works offline (``evaluate.load("bleu")``-style names
would need the Hub). ``evaluate`` is imported only when called: importing it takes
seconds and pulls in ``datasets``/``pyarrow``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import evaluate

METRIC_PATH = Path(__file__).parent / "textvae_metrics.py"


def load_metric(config_name: str | None = None, **kwargs: Any) -> evaluate.EvaluationModule:
    """``evaluate.load`` of the bundled ``textvae_metrics`` module.

    Args:
        config_name: ``None``/``"default"`` (ELBO numbers), ``"iw"`` (also
            ``iw_log_likelihood`` inputs and ``nll_iw``/``ppl_iw`` outputs), ``"latent"``
            (KL, MI and active units from posterior ``mu``/``logvar``) or
            ``"reconstruction"`` (BLEU and exact matches of reconstructions).
        **kwargs: Passed to ``evaluate.load`` (e.g. ``keep_in_memory=True``,
            ``num_process``/``process_id`` for distributed evaluation).
    """
    import evaluate

    return evaluate.load(str(METRIC_PATH), config_name, **kwargs)


__all__ = ["METRIC_PATH", "load_metric"]
