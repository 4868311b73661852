"""What one optimiser step logs: sums over its micro-batches and over the processes.

The objective gives means over one micro-batch. A logged train record must describe the
whole optimiser step, so each micro-batch's means are turned back into sums (times its
sentence count), added up here on the device (no host sync per micro-batch), reduced over
the processes when a record is written, and divided once by the global sentence and token
counts. The likelihood numbers come from :class:`~textvae.evaluation.metrics.LikelihoodTotals`,
as validation's and evaluation's do.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

from textvae.evaluation.metrics import LikelihoodTotals
from textvae.training.objectives import ObjectiveTerms


class StepTotals:
    """This process's sums over one optimiser step's micro-batches: loss, -log p(x|z), KL and
    the weighted KL term (each times its micro-batch's sentences), tokens and sentences."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(6, dtype=torch.float64, device=device)
        self.kl_weight = 0.0

    def add(self, terms: ObjectiveTerms) -> None:
        n = terms.loss.new_tensor(terms.num_sentences, dtype=torch.float64)
        parts = (terms.loss.detach(), terms.rec, terms.kl, terms.kl_term)
        self.sums += torch.stack([*(part.detach().double() * n for part in parts),
                                  terms.num_tokens.double().reshape(()), n])
        self.kl_weight = terms.kl_weight

    def loss_and_tokens(self) -> tuple[float, int]:
        """This process's summed loss and predicted tokens (what the aggressive stopping rule reads)."""
        return float(self.sums[0]), int(self.sums[4])

    def loss(self, accelerator: Accelerator) -> torch.Tensor:
        """() the step's summed loss over every process (a collective: all processes call it)."""
        return accelerator.reduce(self.sums[0].clone(), reduction="sum")

    def record(self, accelerator: Accelerator) -> dict[str, float]:
        """The step's train numbers over every process (a collective: all processes call it)."""
        loss, rec, kl, kl_term, tokens, sentences = accelerator.reduce(self.sums.clone(), reduction="sum").tolist()
        likelihood = LikelihoodTotals(rec, kl, int(tokens), int(sentences)).numbers()
        return {"loss": loss / sentences, "rec": likelihood["rec"], "kl": likelihood["kl"],
                "kl_term": kl_term / sentences, "elbo": likelihood["elbo"], "neg_elbo": likelihood["nll_elbo"],
                "kl_weight": self.kl_weight, "num_sentences": sentences, "num_tokens": tokens,
                "neg_elbo_per_token": (rec + kl) / tokens, "elbo_ppl": likelihood["ppl_elbo"]}
