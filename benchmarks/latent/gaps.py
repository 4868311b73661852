"""Where the NLL of an informative latent goes: the bound's looseness, split into its parts.

For a trained export, on the first ``--sentences`` lines of a test file, this prints

* the amortised ELBO (the training objective, with the encoder's q(z|x));
* the importance-weighted bound at several K (the protocol's K = 50, then more): how far
  K = 50 is from log p(x), i.e. how much of a "gap to the LM" is the estimate's, not the model's;
* on the first ``--svi-sentences`` of them, the ELBO with q(z|x) re-optimised per sentence
  (a diagonal Gaussian, as the encoder's, by ``--svi-steps`` Adam steps from the encoder's
  output). ELBO(optimised) - ELBO(amortised) is the *amortisation gap* (Cremer et al. 2018):
  what an encoder that kept up with its decoder would gain, the gap He et al.'s aggressive
  training is meant to close.

    python benchmarks/latent/gaps.py runs/latent/frozen-d64-L6/final
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from textvae.data.batching import Collator
from textvae.estimators import gaussian_kl_per_dim, iw_log_likelihood
from textvae.models import TextVAEModel

ROOT = Path(__file__).resolve().parents[2]


def elbo(model: TextVAEModel, input_ids: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor,
         logvar: torch.Tensor, samples: int) -> torch.Tensor:
    """Monte-Carlo ELBO with the analytic KL, per sentence: (B,), differentiable w.r.t. mu and logvar."""
    z = model.reparameterize(mu, logvar, samples)  # (B, K, d)
    logits = model.prefix_logits(input_ids, z)  # (B, K, T-1, V), the decoder run once per sentence
    targets, target_mask = input_ids[:, 1:].unsqueeze(1), mask[:, 1:].unsqueeze(1)
    rec = model._sequence_log_likelihood(logits, targets.expand(-1, samples, -1), target_mask)
    return rec.mean(1) - gaussian_kl_per_dim(mu, logvar).sum(-1)


def optimised_elbo(model: TextVAEModel, input_ids: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor,
                   logvar: torch.Tensor, steps: int, samples: int = 16, lr: float = 0.02) -> torch.Tensor:
    """The ELBO after fitting (mu, logvar) of each sentence by SVI from the encoder's values."""
    mu, logvar = mu.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([mu, logvar], lr=lr)
    for _ in range(steps):
        loss = -elbo(model, input_ids, mask, mu, logvar, samples).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return torch.stack([elbo(model, input_ids, mask, mu, logvar, samples) for _ in range(4)]).mean(0)


@torch.no_grad()
def iw_bounds(model: TextVAEModel, input_ids: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor,
              logvar: torch.Tensor, ks: list[int]) -> dict[int, torch.Tensor]:
    """IW estimates of log p(x) at each K, the smaller K on a prefix of the same samples."""
    z = model.reparameterize(mu, logvar, max(ks))
    log_px_z = model.log_likelihood(input_ids, z, mask)  # (B, K), in memory-bounded blocks
    return {k: iw_log_likelihood(log_px_z[:, :k], z[:, :k], mu, logvar) for k in ks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export")
    parser.add_argument("--test-file", default=str(ROOT / "data" / "synthetic" / "test.txt"))
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--k", type=int, nargs="+", default=[50, 500, 2000])
    parser.add_argument("--svi-sentences", type=int, default=40)
    parser.add_argument("--svi-steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = TextVAEModel.from_pretrained(args.export).eval()
    model.requires_grad_(False)
    lines = Path(args.test_file).read_text().splitlines()[: args.sentences]
    batch = Collator(model.config.pad_token_id)(model.tokenizer(lines)["input_ids"])
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    mu, logvar = model.encode_ids(input_ids, mask)
    with torch.no_grad():
        amortised = elbo(model, input_ids, mask, mu, logvar, samples=50)
    bounds = iw_bounds(model, input_ids, mask, mu, logvar, args.k)
    n = args.svi_sentences
    fitted = optimised_elbo(model, input_ids[:n], mask[:n], mu[:n], logvar[:n], args.svi_steps)

    print(f"{args.export}: {len(lines)} sentences (SVI on the first {n}), nats per sentence")
    print(f"  -ELBO, amortised q(z|x): {-amortised.mean():.2f}")
    for k, value in bounds.items():
        print(f"  IW-NLL, K = {k}: {-value.mean():.2f}")
    print(f"  on the SVI sentences: -ELBO amortised {-amortised[:n].mean():.2f}, "
          f"optimised {-fitted.mean():.2f}: amortisation gap {(fitted - amortised[:n]).mean():.2f}")


if __name__ == "__main__":
    main()
