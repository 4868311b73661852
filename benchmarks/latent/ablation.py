"""Ablation of latent-path designs on the embedded corpus (issue "A latent that carries the sentence").

Every row is ``benchmarks/latent/base.yaml`` (the quickstart recipe as it was before this
ablation: d = 16, L = 4, 6 epochs) plus the overrides named in ``ROWS``, trained by
``textvae train`` and evaluated by ``textvae evaluate --iw-samples 50`` on the test split
(10,000 sentences: the whole-split MI estimate cannot exceed log N, 6.9 nats for 1,000).
Results accumulate in ``benchmarks/latent/results.json`` (a rerun of a row replaces it)
and the Markdown table is written to ``benchmarks/latent/TABLE.md``.

    python benchmarks/latent/ablation.py                     # every row
    python benchmarks/latent/ablation.py --only lm --only frozen-L4 --jobs 2
    python benchmarks/latent/ablation.py --table             # rewrite TABLE.md only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
TABLE = HERE / "TABLE.md"
RUNS = ROOT / "runs" / "latent"
BASE = "benchmarks/latent/base.yaml"

RETIRED_AT = "7ac144b"
"""The last commit with the options of the retired designs below: ``git checkout 7ac144b`` reruns their rows."""
RETIRED = {"learned-L4", "plausible-L4", "ctx-plausible-k24-L4", "ctx-rot8-frozen-L4", "frozen-L4-Lanneal",
           "frozen-L4-both-anneal", "ctx-rot8-d64-L3", "lidvae-L4", "frozen-outer-L4"}
"""Rows of designs that lost this ablation and whose options were removed: kept in the table, not run here."""

# name -> overrides of benchmarks/latent/base.yaml, in the table's order.
ROWS: dict[str, list[str]] = {
    "lm": ["model.latent_path=none"],
    "frozen-L4": ["model.invlip_lift=frozen", "model.lipschitz=4"],
    "frozen-L8": ["model.invlip_lift=frozen", "model.lipschitz=8"],
    "frozen-L16": ["model.invlip_lift=frozen", "model.lipschitz=16"],
    "learned-L4": ["model.invlip_lift=learned", "model.lipschitz=4"],
    "plausible-L4": ["model.invlip_lift=plausible", "model.lipschitz=4"],
    # z alone through the map, the decoder state as the convex network's context
    "ctx-frozen-L4": ["model.invlip_state_in_lift=false", "model.invlip_state_size=64", "model.lipschitz=4"],
    "ctx-plausible-k24-L4": ["model.invlip_state_in_lift=false", "model.invlip_state_size=64",
                             "model.invlip_lift=plausible", "model.invlip_top_k=24", "model.lipschitz=4"],
    "ctx-rot8-frozen-L4": ["model.invlip_state_in_lift=false", "model.invlip_state_size=64",
                           "model.invlip_rotations=8", "model.lipschitz=4"],
    # capacity, encoder and schedule, on the frozen design
    "frozen-L4-15ep": ["model.lipschitz=4", "train.epochs=15"],
    "frozen-L4-bienc": ["model.lipschitz=4", "model.encoder_bidirectional=true"],
    "frozen-L4-wide": ["model.lipschitz=4", "model.invlip_state_size=64", "model.icnn_hidden_size=256"],
    "frozen-L4-klanneal": ["model.lipschitz=4", "objective.kl_schedule=linear", "objective.kl_start=0.0",
                           "objective.kl_warmup_steps=1000"],
    "frozen-L4-Lanneal": ["model.lipschitz=4", "objective.lipschitz_start=0.5", "objective.lipschitz_warmup_steps=1000"],
    "frozen-L4-both-anneal": ["model.lipschitz=4", "objective.kl_schedule=linear", "objective.kl_start=0.0",
                              "objective.kl_warmup_steps=1000", "objective.lipschitz_start=0.5",
                              "objective.lipschitz_warmup_steps=1000"],
    "frozen-d32-L4": ["model.lipschitz=4", "model.latent_size=32"],
    "frozen-d64-L2": ["model.lipschitz=2", "model.latent_size=64"],
    "frozen-d64-L3": ["model.lipschitz=3", "model.latent_size=64"],
    "frozen-d128-L2": ["model.lipschitz=2", "model.latent_size=128"],
    "frozen-d128-L3": ["model.lipschitz=3", "model.latent_size=128"],
    "ctx-d128-L2": ["model.lipschitz=2", "model.latent_size=128", "model.invlip_state_in_lift=false",
                    "model.invlip_state_size=64"],
    "frozen-d64-L6": ["model.lipschitz=6", "model.latent_size=64"],
    "frozen-d64-L3-15ep": ["model.lipschitz=3", "model.latent_size=64", "train.epochs=15"],
    "frozen-d64-L2.5-15ep": ["model.lipschitz=2.5", "model.latent_size=64", "train.epochs=15"],
    "ctx-rot8-d64-L3": ["model.lipschitz=3", "model.latent_size=64", "model.invlip_state_in_lift=false",
                        "model.invlip_state_size=64", "model.invlip_rotations=8"],
    # encoder-side help beside the constraint (He et al. 2019; Li et al. 2019)
    # aggressive, at most 30 encoder steps before each decoder step (He et al.: 100, which took
    # 4 minutes for 40 decoder steps here)
    "frozen-d64-L3-aggressive": ["model.lipschitz=3", "model.latent_size=64", "train.aggressive=true",
                                 "train.aggressive_max_inner_steps=30"],
    "frozen-d64-L3-aggressive-15ep": ["model.lipschitz=3", "model.latent_size=64", "train.aggressive=true",
                                      "train.aggressive_max_inner_steps=30", "train.epochs=15"],
    "frozen-d64-L4-aggressive-15ep": ["model.lipschitz=4", "model.latent_size=64", "train.aggressive=true",
                                      "train.aggressive_max_inner_steps=30", "train.epochs=15"],
    # at L = 6 the amortisation gap is 3.9 nats (benchmarks/latent/gaps.py): does the encoder catch up?
    "frozen-d64-L6-aggressive": ["model.lipschitz=6", "model.latent_size=64", "train.aggressive=true",
                                 "train.aggressive_max_inner_steps=30"],
    "frozen-d64-L3-pretrain-15ep": ["model.lipschitz=3", "model.latent_size=64", "train.epochs=20",
                                    "objective.pretrain_steps=1565"],
    # LIDVAE's text decoder: a trained lift and a second Brenier map on the vocabulary
    "lidvae-L4": ["model.lipschitz=4", "model.invlip_lift=learned", "model.invlip_outer_map=true"],
    "frozen-outer-L4": ["model.lipschitz=4", "model.invlip_outer_map=true"],
}
PROBED = ("subject", "verb", "object")


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "textvae"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_row(name: str, threads: int, iw_samples: int) -> dict:
    """Train and evaluate one row; returns its record for results.json."""
    run_dir = RUNS / name
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    train = [sys.executable, "-m", "textvae", "train", BASE, f"output_dir={run_dir}",
             "train.progress=false", "train.overwrite=true", *ROWS[name]]
    RUNS.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(RUNS / f"{name}.train.log", "w") as log:
        subprocess.run(train, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    train_s = time.time() - start
    out = RUNS / f"{name}.eval.json"
    evaluate = [sys.executable, "-m", "textvae", "evaluate", str(run_dir), "--iw-samples", str(iw_samples),
                "--no-progress", "--output", str(out)]
    start = time.time()
    with open(RUNS / f"{name}.eval.log", "w") as log:
        subprocess.run(evaluate, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    eval_s = time.time() - start
    result = json.loads(out.read_text())
    return {
        "command": f"textvae train {BASE} " + " ".join(ROWS[name]),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "threads": threads,
        "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1),
        **{key: result.get(key) for key in ("nll_iw", "kl", "mi_split", "active_units", "bleu_greedy",
                                            "exact_match_greedy", "next_token_tv_posterior",
                                            "next_token_tv_prior")},
        "probes": {f: result["probes"][f]["accuracy"] for f in PROBED if f in result.get("probes", {})},
        "num_sentences": result["protocol"]["num_sentences"],
    }


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def write_table(results: dict) -> str:
    lm = results.get("lm", {}).get("nll_iw")
    lines = [
        "| row | overrides of benchmarks/latent/base.yaml | IW-NLL | Δ LM | KL | MI | AU | BLEU | TV post / prior "
        "| probe subj / verb / obj | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    ordered = [n for n in ROWS if n in results] + [n for n in results if n not in ROWS]
    for name, row in ((n, results[n]) for n in ordered):
        label = f"{name} (retired: rerun at {RETIRED_AT})" if name in RETIRED else name
        probes = " / ".join(fmt(row["probes"].get(f), ".2f") for f in PROBED) if row.get("probes") else "–"
        delta = fmt(row["nll_iw"] - lm, "+.2f") if lm is not None and row.get("nll_iw") is not None else "–"
        tv = f"{fmt(row.get('next_token_tv_posterior'), '.3f')} / {fmt(row.get('next_token_tv_prior'), '.3f')}"
        lines.append(
            f"| {label} | `{' '.join(ROWS.get(name, ['?']))}` | {fmt(row['nll_iw'], '.2f')} | {delta} "
            f"| {fmt(row['kl'], '.2f')} | {fmt(row['mi_split'], '.2f')} | {row['active_units']} "
            f"| {fmt(row['bleu_greedy'], '.1f')} | {tv} | {probes} | {row['train_seconds']:.0f} |"
        )
    table = "\n".join(lines) + "\n"
    TABLE.write_text(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(set(ROWS) - RETIRED), help="run only these rows (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="rows trained at once (each gets its share of threads)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all")
    parser.add_argument("--iw-samples", type=int, default=50)
    parser.add_argument("--table", action="store_true", help="only rewrite TABLE.md from results.json")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if not args.table:
        names = args.only or [name for name in ROWS if name not in RETIRED]
        threads = max(1, args.threads // args.jobs)
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {name: pool.submit(run_row, name, threads, args.iw_samples) for name in names}
            for name, future in futures.items():  # a failed row is reported; the others are kept
                try:
                    record = future.result()
                except subprocess.CalledProcessError as exc:
                    print(f"{name}: failed ({exc}); see {RUNS / name}.*.log", flush=True)
                    continue
                results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
                results[name] = record
                RESULTS.write_text(json.dumps(results, indent=1) + "\n")
                print(f"{name}: done", flush=True)
    print(write_table(results))


if __name__ == "__main__":
    main()
