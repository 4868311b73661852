"""The rate-distortion table on PTB: every method at rates around 5, 15 and 40 nats.

    python benchmarks/rate/run.py                         # every row, one at a time (hours on 2 cores)
    python benchmarks/rate/run.py --only ae lm beta-0.3   # some rows; stored rows are kept
    python benchmarks/rate/run.py --report-only           # rebuild RESULTS.md and the plots

One network size and step budget for every row (:data:`SIZE`: embedding 128, LSTM 256,
latent 32, batch 64, 1,000 steps, about 10 min a row with its evaluation alone on 2 cores). Each method
reaches a rate by its own knob: beta (beta-VAE), lambda (free bits on the total KL),
gamma (BN-VAE: the batch-mean KL of the means is d gamma^2 / 2), the word-dropout rate or
L (invlip), or ``objective.target_rate`` (the KL held at the target, |KL - C|) for the
rows that combine a mechanism with a rate (BN + latent logits + target is the
``ptb/interpolate`` recipe's design at the table's size); invlip + BN reaches it by BN-VAE's gamma. The autoencoder (beta = 0, with BN on the means:
without it the code is one point for every sentence) of the same size and budget is the
distortion ceiling, the LM the likelihood reference.

Every row is trained, evaluated on PTB test (K = 50 importance samples, the interpolation
and diversity measures of ``textvae evaluate``) and stored in ``runs/rate-bench/rows.jsonl``
as it ends, so a run stopped from outside keeps its rows and the next run skips them.
``benchmarks/rate/RESULTS.md`` and ``rate_distortion.png`` are written from the stored rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shlex
import sys
from pathlib import Path

from textvae.atomic import write_text

REPO = Path(__file__).resolve().parents[2]
_PTB = importlib.util.spec_from_file_location("ptb_run", REPO / "benchmarks" / "ptb" / "run.py")
ptb = importlib.util.module_from_spec(_PTB)
_PTB.loader.exec_module(ptb)

SIZE = ["model.embedding_size=128", "model.hidden_size=256", "model.latent_size=32", "model.invlip_state_size=32",
        "model.icnn_hidden_size=64", "model.encoder_bidirectional=true", "model.dropout_input=0.1",
        "model.dropout_output=0.1", "data.batch_size=64", "train.max_steps=1000", "train.eval_every=250",
        "train.eval_batches=20", "train.progress=false", "objective.kl_warmup_steps=300"]
"""The network and budget of every row: the autoencoder study's best small design (a bidirectional
encoder, dropout 0.1; ``benchmarks/ptb/AUTOENCODER.md``), 1,000 steps of batch 64 (~1.5 epochs)."""
EVALUATE = ["--max-sentences", "1000"]
"""Every row is scored on the first 1,000 PTB test sentences (K = 50): the whole split at K = 50 would
double a row's time."""
RATES = (5, 15, 40)
# The knob of each method at each rate: beta and word dropout reach a rate only through
# training, so theirs are the values expected to land near it (the table reports the rate reached).
BETA = {5: 0.8, 15: 0.4, 40: 0.1}
DROPOUT = {5: 0.3, 15: 0.5, 40: 0.7}
LIPSCHITZ = {5: 3.0, 15: 10.0, 40: 30.0}


def rows() -> list[tuple[str, str, str, list[str]]]:
    """(row name, method, recipe under recipes/ptb/, overrides) of every row, in table order."""
    table = [("lm", "lm", "lstm-lm", []), ("ae", "ae", "lstm-vae", ["objective.beta=0", "model.posterior_bn_gamma=1.0"])]
    for rate in RATES:
        target = [f"objective.target_rate={rate}"]
        gamma = math.sqrt(2 * rate / 32)  # BN-VAE: the means alone carry the rate; with a target, at most 1
        table += [
            (f"beta-{BETA[rate]:g}", "beta-VAE", "lstm-vae", [f"objective.beta={BETA[rate]}"]),
            (f"freebits-{rate}", "free bits", "lstm-freebits",
             [f"objective.free_bits={rate}", "objective.free_bits_mode=total"]),
            (f"bn-{gamma:.2f}", "BN-VAE", "lstm-bn", [f"model.posterior_bn_gamma={gamma:.4f}"]),
            (f"worddrop-{DROPOUT[rate]:g}", "word dropout", "lstm-vae", [f"objective.word_dropout={DROPOUT[rate]}"]),
            (f"target-{rate}", "target rate", "lstm-vae", target),
            (f"invlip-L{LIPSCHITZ[rate]:g}", "invlip", "lstm-invlip", [f"model.lipschitz={LIPSCHITZ[rate]}"]),
            (f"invlip-target-{rate}", "invlip + target", "lstm-invlip", target),
            (f"invlip-worddrop-target-{rate}", "invlip + word dropout + target", "lstm-invlip",
             [*target, "objective.word_dropout=0.5"]),
            (f"invlip-mmd-target-{rate}", "invlip + MMD + target", "lstm-invlip", [*target, "objective.mmd_weight=500"]),
            (f"invlip-bn-target-{rate}", "invlip + BN + target", "lstm-invlip", [*target, f"model.posterior_bn_gamma={min(gamma, 1.0):.4f}"]),
            (f"invlip-bn-{gamma:.2f}", "invlip + BN", "lstm-invlip", [f"model.posterior_bn_gamma={gamma:.4f}"]),
            (f"bn-logits-target-{rate}", "BN + latent logits + target", "lstm-vae",
             [*target, f"model.posterior_bn_gamma={min(gamma, 1.0):.4f}", "model.latent_logits=true"]),
        ]
    return table


def train_and_evaluate(name: str, method: str, recipe: str, extra: list[str], out: Path,
                       args: argparse.Namespace) -> dict:
    """One row: train, then ``textvae evaluate`` on PTB test with every measure."""
    run_dir = out / name
    shown = run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir
    train_cmd = [*ptb.TEXTVAE, "train", f"recipes/ptb/{recipe}.yaml", f"output_dir={shown}", f"seed={args.seed}",
                 "train.overwrite=true", *SIZE, *extra, *args.set]
    eval_cmd = [*ptb.TEXTVAE, "evaluate", str(run_dir), "--split", "test", "--iw-samples", str(args.iw_samples),
                "--output", str(run_dir / "test.json"), "--no-progress", *EVALUATE, *args.evaluate]
    print(f"== {name}: {shlex.join(train_cmd[3:])}", flush=True)
    # not with_suffix: row names hold dots (bn-0.97), and two rows would share one log
    train_s = ptb.sh(train_cmd, out / f"{name}.train.log")
    eval_s = ptb.sh(eval_cmd, out / f"{name}.eval.log")
    print(f"== {name}: done (train {train_s:.0f} s, evaluate {eval_s:.0f} s)", flush=True)
    return {"name": name, "method": method, "command": shlex.join(["textvae", *train_cmd[3:]]), "commit": ptb.code_version(),
            "hardware": ptb.hardware(), "train_s": train_s, "eval_s": eval_s,
            "metrics": json.loads((run_dir / "test.json").read_text())}


def stored(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# --------------------------------------------------------------------------- report

COLUMNS = (("rate (KL)", "kl"), ("distortion", "rec"), ("MI", "mi_split"), ("MI ceiling", "mi_ceiling"),
           ("own-code gain", "own_code_gain"), ("AU", "active_units"), ("IW-NLL", "nll_iw"),
           ("BLEU", "bleu_greedy"), ("BLEU start", "interpolation_bleu_start"), ("BLEU end", "interpolation_bleu_end"),
           ("monotone", "interpolation_monotone"), ("steps that change", "interpolation_step_change"),
           ("fluency ratio, interpolations", "fluency_ratio_interpolation"),
           ("fluency ratio, samples", "fluency_ratio_samples"), ("distinct-2", "samples_distinct_2"))


def render(results: list[dict], plot: str | None) -> str:
    """RESULTS.md: how the rows were made, the table, what the plot shows."""
    lines = ["# Rate and distortion on PTB", "",
             "Produced by `python benchmarks/rate/run.py` (`--report-only` rebuilds this file). Every row: "
             f"`{' '.join(SIZE)}` on `recipes/ptb/*`, seed 0; evaluated on PTB test, K = 50. Rows are listed as "
             "they were stored; a row that is not here was not run.", "",
             "| row | " + " | ".join(label for label, _ in COLUMNS) + " | train s | commit |",
             "| --- | " + " | ".join("---:" for _ in COLUMNS) + " | ---: | --- |"]
    for row in results:
        cells = [_cell(row["metrics"].get(key)) for _, key in COLUMNS]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {row['train_s']:.0f} | {row['commit']} |")
    lines += ["", "Commands:", ""] + [f"- {row['name']}: `{row['command']}`" for row in results]
    if plot:
        lines += ["", f"![distortion, IW-NLL and BLEU against the rate]({plot})"]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot(results: list[dict], path: Path) -> bool:
    """Distortion, IW-NLL and BLEU against the rate, one curve per method, the autoencoder (and on
    IW-NLL the LM) marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    curves: dict[str, list[dict]] = {}
    for row in results:
        curves.setdefault(row["method"], []).append(row["metrics"])
    for axis, (key, label) in zip(axes, (("rec", "distortion (nats)"), ("nll_iw", "IW-NLL (nats)"),
                                         ("bleu_greedy", "reconstruction BLEU")), strict=True):
        for name, points in curves.items():
            points = sorted((p for p in points if p.get(key) is not None), key=lambda p: p["kl"])
            if name == "ae":
                for p in points:
                    axis.axhline(p[key], color="black", linestyle="--", label="autoencoder (ceiling)")
            elif name == "lm":  # the likelihood every rate is paid against, on the IW-NLL panel only
                for p in points if key == "nll_iw" else ():
                    axis.axhline(p[key], color="grey", linestyle=":", label="LM")
            elif points:
                axis.plot([p["kl"] for p in points], [p[key] for p in points], marker="o", label=name)
        axis.set_xlabel("rate: KL (nats / sentence)")
        axis.set_ylabel(label)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_report(results: list[dict]) -> None:
    here = REPO / "benchmarks" / "rate"
    drawn = plot(results, here / "rate_distortion.png")
    write_text(here / "RESULTS.md", render(results, "rate_distortion.png" if drawn else None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="row names to run (default: every row not stored yet)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every row")
    parser.add_argument("--evaluate", nargs=argparse.REMAINDER, default=[],
                        help="further `textvae evaluate` flags, last on the line (e.g. --max-sentences 500)")
    parser.add_argument("--iw-samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="runs/rate-bench")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out = REPO / args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    store = out / "rows.jsonl"
    if not args.report_only:
        order = [row[0] for row in rows()]
        done = {row["name"] for row in stored(store)}
        for name, method, recipe, extra in rows():
            if (args.only and name not in args.only) or (not args.only and name in done):
                continue
            row = train_and_evaluate(name, method, recipe, extra, out, args)
            kept = sorted([*(r for r in stored(store) if r["name"] != name), row], key=lambda r: order.index(r["name"]))
            write_text(store, "".join(json.dumps(r) + "\n" for r in kept))  # each row stored as it ends
    write_report(stored(store))
    sys.stdout.write((REPO / "benchmarks" / "rate" / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
