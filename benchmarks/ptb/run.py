"""The PTB table: baselines and the inverse-Lipschitz VAE trained and evaluated by the same code.

    python benchmarks/ptb/run.py                      # literature sizes (needs a GPU)
    python benchmarks/ptb/run.py --size cpu --jobs 2  # reduced sizes for a CPU, same protocol
    python benchmarks/ptb/run.py --size cpu-small     # a 300-step smoke run of the same
    python benchmarks/ptb/run.py --size gpu-budget --jobs 14 --train-timeout 240 --max-sentences 500 \
        --eval-batch-size 8     # literature sizes, every row at once on one GPU (benchmarks/device/run.sh)
    python benchmarks/ptb/run.py --size cpu --jobs 2 --invlip-lift output_whitened --only lstm-invlip \
        --report benchmarks/ptb/RESULTS-output-lift.md --out-dir runs/ptb-bench-output  # the lift through W

Trains every recipe in ``recipes/ptb/`` (``lstm-invlip`` once per ``--lipschitz`` value, and
once with the wide code that won the latent-path ablation, d = 64 at L = 3), evaluates each
best-validation export on PTB test with ``textvae evaluate``, and writes ``benchmarks/RESULTS.md``
(one row per model with its command, seed, wall time and hardware),
``benchmarks/ptb/kl_mi_vs_L.png`` and interpolations between one pair of test sentences from
the plain VAE and from ``invlip``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEXTVAE = [sys.executable, "-m", "textvae"]
# Reduced sizes for a CPU run: same recipes and protocol, smaller networks, fewer steps.
_SMALL_NETWORK = ["model.embedding_size=64", "model.hidden_size=128", "model.invlip_state_size=32",
                  "model.icnn_hidden_size=64", "data.batch_size=64", "train.eval_batches=20", "train.progress=false"]


def step_budget(steps: int) -> list[str]:
    """Literature sizes on ``steps`` optimiser steps: one GPU shared by every row inside one
    device call. The schedules keep their shares of the budget as at ``--size cpu`` (KL
    warm-up 40 %, the cyclical schedule's cycles over the whole run), 8 validations."""
    return [f"train.max_steps={steps}", f"train.eval_every={max(1, steps // 8)}", "train.eval_batches=20",
            "train.progress=false", f"objective.kl_warmup_steps={steps * 2 // 5}", f"objective.kl_cycle_steps={steps}"]


GPU_BUDGET_STEPS = 1200  # ~0.9 epochs of PTB at batch 32; --budget-steps sets another
SIZES = {
    "full": [],
    "cpu": [*_SMALL_NETWORK, "train.max_steps=2500", "train.eval_every=250", "objective.kl_warmup_steps=1000",
            "objective.kl_cycle_steps=2500"],
    "cpu-small": [*_SMALL_NETWORK, "train.max_steps=300", "train.eval_every=100", "objective.kl_warmup_steps=200",
                  "objective.kl_cycle_steps=300"],
    "gpu-budget": step_budget(GPU_BUDGET_STEPS),
}
BASELINES = ["lstm-lm", "lstm-vae", "lstm-anneal", "lstm-cyclical", "lstm-freebits", "lstm-aggressive",
             "lstm-pretrain-fb", "lstm-bn", "interpolate"]  # interpolate: the shipped rate recipe, not a baseline
# Rows whose own schedule is counted in steps need their own reduced values (the shared ones
# above cover the KL warm-up and cycles). lstm-pretrain-fb: half of the budget is the
# autoencoder phase, as its recipe's 20 + 20 epochs. lstm-aggressive at cpu-small: each of its
# decoder steps costs up to 100 encoder steps (on 2 shared cores no MI check at step 25 came
# within 7 minutes), so it runs 100 decoder steps, at most 30 encoder steps before each (two
# windows of 15), and the MI check every 25 steps; at cpu it keeps the 2,500 steps with the same
# inner cap of 30 and the MI check every 100 steps. RESULTS.md says so beside the row.
ROW_SIZES = {
    "lstm-pretrain-fb": {"cpu": ["objective.pretrain_steps=1250"], "cpu-small": ["objective.pretrain_steps=150"]},
    "lstm-aggressive": {"cpu": ["train.eval_every=100", "train.aggressive_max_inner_steps=30"],
                        "cpu-small": ["train.max_steps=100", "train.eval_every=25", "objective.kl_warmup_steps=67",
                                      "train.aggressive_max_inner_steps=30"],
                        # Validations (the MI switch-off, exports) every 50: its steps are the slowest.
                        "gpu-budget": ["train.eval_every=50", "train.aggressive_max_inner_steps=30"]},
}
# The wide code of the latent-path ablation (benchmarks/README.md, row frozen-d64-L3-15ep, the
# quickstart default): d = 64 at L = 3, the frozen lift.
WIDE = ("d=64, L=3", ["model.latent_size=64", "model.lipschitz=3"])
PAIR = ("the company said it expects to report a loss for the third quarter",
        "mr. smith was named chairman of the board")


def hardware() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model} ({os.cpu_count()} cores)"


def sh(command: list[str], log: Path, env: dict[str, str] | None = None, timeout: float | None = None) -> float:
    """Run a command, its output going to ``log``; return the wall time; fail loudly.

    Past ``timeout`` seconds the command is killed and ``subprocess.TimeoutExpired`` raised."""
    start = time.time()
    with open(log, "w") as handle:
        result = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"failed ({log}): {shlex.join(command)}")
    return time.time() - start


def size_overrides(size: str, budget_steps: int | None = None) -> list[str]:
    """The overrides every row of ``size`` gets (``budget_steps`` replaces gpu-budget's steps)."""
    return step_budget(budget_steps) if size == "gpu-budget" and budget_steps else SIZES[size]


def row_overrides(recipe: str, size: str, budget_steps: int | None = None) -> list[str]:
    """A row's own reduced values on top of ``size_overrides`` (schedules counted in steps);
    at gpu-budget, lstm-pretrain-fb's autoencoder phase is half of the budget."""
    if recipe == "lstm-pretrain-fb" and size == "gpu-budget":
        return [f"objective.pretrain_steps={(budget_steps or GPU_BUDGET_STEPS) // 2}"]
    return ROW_SIZES.get(recipe, {}).get(size, [])


def runs(lipschitz: list[float], size: str = "full", lift: str | None = None,
         budget_steps: int | None = None) -> list[tuple[str, str, list[str]]]:
    """(row name, recipe, extra overrides); ``lift`` names an ``invlip_lift`` other than the recipes'."""
    rows = [(name, name, row_overrides(name, size, budget_steps)) for name in BASELINES]
    tag, extra = (f" {lift} lift", [f"model.invlip_lift={lift}"]) if lift else ("", [])
    rows += [(f"lstm-invlip{tag} (L={value:g})", "lstm-invlip", [*extra, f"model.lipschitz={value}"])
             for value in lipschitz]
    rows.append((f"lstm-invlip{tag} ({WIDE[0]})", "lstm-invlip", [*extra, *WIDE[1]]))
    rows.append((f"transformer-invlip{tag}", "transformer-invlip", extra))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--lipschitz", type=float, nargs="+", default=[3.0, 10.0, 30.0])
    parser.add_argument("--iw-samples", type=int, default=500)
    parser.add_argument("--max-sentences", type=int, default=None, help="evaluate on the first N test sentences")
    parser.add_argument("--eval-batch-size", type=int, default=64,
                        help="sentences per evaluation forward pass (x 50 samples; smaller when rows share a GPU)")
    parser.add_argument("--budget-steps", type=int, default=None,
                        help=f"--size gpu-budget: optimiser steps per row (default {GPU_BUDGET_STEPS})")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for every row, after the size's and the row's own")
    parser.add_argument("--train-timeout", type=float, default=None, metavar="SECONDS",
                        help="kill a row's training after this long and evaluate its best export so far "
                             "(the row says so); a row with no export yet fails")
    parser.add_argument("--only", nargs="*", help="row names to run (default: all)")
    # The retired lifts (learned, output) rerun at commit 7ac144b.
    parser.add_argument("--invlip-lift", choices=["output_whitened"],
                        help="the invlip rows with this lift instead of their recipes' (row names say so)")
    parser.add_argument("--out-dir", default="runs/ptb-bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="rows trained at the same time (CPU: one per core)")
    parser.add_argument("--report", default="benchmarks/RESULTS.md",
                        help="the Markdown report to write (relative to the repository)")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild RESULTS.md from results.json and each run's test.json (after re-evaluating)")
    args = parser.parse_args()

    out = REPO / args.out_dir / args.size
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        args.invocation = (out / "invocation.txt").read_text().strip()
        results = json.loads((out / "results.json").read_text())
        for row in results:
            row["metrics"] = json.loads((Path(row["run_dir"]) / "test.json").read_text())
        write_report(results, interpolate_pair(results, args), args)
        return
    args.invocation = shlex.join(["python", "benchmarks/ptb/run.py", *sys.argv[1:]])
    (out / "invocation.txt").write_text(args.invocation + "\n")
    rows = [row for row in runs(args.lipschitz, args.size, args.invlip_lift, args.budget_steps)
            if not args.only or row[0] in args.only or row[1] in args.only]
    # Each job gets its share of the cores: oversubscribed torch threads run many times slower.
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // args.jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    # With --only, the new rows replace theirs in an earlier results.json; the rest is kept.
    earlier = json.loads((out / "results.json").read_text()) if args.only and (out / "results.json").is_file() else []
    order = [name for name, _, _ in runs(args.lipschitz, lift=args.invlip_lift)]
    failed = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(train_and_evaluate, *row, out, args, env): row[0] for row in rows}
        results = [row for row in earlier if row["name"] not in {name for name, _, _ in rows}]
        # Stored as each row ends (a run stopped from outside keeps every finished row), in table order.
        for future in as_completed(futures):
            name = futures[future]
            try:
                results.append(future.result())
            except (Exception, SystemExit) as exc:  # one failed row costs its row, not the table
                print(f"== {name}: FAILED: {exc}", flush=True)
                failed.append(name)
                continue
            results.sort(key=lambda row: order.index(row["name"]) if row["name"] in order else len(order))
            (out / "results.json").write_text(json.dumps(results, indent=2))
    if results:
        write_report(results, interpolate_pair(results, args), args)
    if failed:
        raise SystemExit(f"{len(failed)} row(s) failed: {', '.join(failed)} (their logs are in {out})")


def code_version() -> str:
    """The commit the rows were trained with (``-dirty`` with uncommitted changes).

    ``TEXTVAE_CODE_VERSION`` names it where the checkout has no git (the device machine gets
    the working tree without ``.git``; ``benchmarks/device/prepare.sh`` records it)."""
    if os.environ.get("TEXTVAE_CODE_VERSION"):
        return os.environ["TEXTVAE_CODE_VERSION"]

    def git(*command: str) -> str:
        try:
            return subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True).stdout.strip()
        except OSError:  # no git on this machine
            return ""

    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("-dirty" if git("status", "--porcelain") else "")


def train_and_evaluate(name: str, recipe: str, extra: list[str], out: Path, args: argparse.Namespace,
                       env: dict[str, str]) -> dict:
    """One row of the table: train the recipe, evaluate its best export on PTB test."""
    slug = name.replace(" ", "").replace("(", "-").replace(")", "").replace("=", "")
    run_dir = out / slug
    shown = run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir  # commands run in REPO
    train_cmd = [*TEXTVAE, "train", f"recipes/ptb/{recipe}.yaml", f"output_dir={shown}", f"seed={args.seed}",
                 "train.overwrite=true", *size_overrides(args.size, args.budget_steps), *extra, *args.set]
    eval_cmd = [*TEXTVAE, "evaluate", str(run_dir), "--split", "test", "--iw-samples", str(args.iw_samples),
                "--batch-size", str(args.eval_batch_size), "--output", str(run_dir / "test.json"), "--no-progress"]
    if args.max_sentences:
        eval_cmd += ["--max-sentences", str(args.max_sentences)]
    print(f"== {name}: {shlex.join(train_cmd[2:])}", flush=True)
    cut = None
    try:
        train_s = sh(train_cmd, run_dir.with_suffix(".train.log"), env, timeout=args.train_timeout)
    except subprocess.TimeoutExpired:
        train_s = args.train_timeout
        cut = cut_note(run_dir)
        if not (run_dir / "final").is_dir():
            raise SystemExit(f"{name}: killed after {train_s:.0f} s before its first export ({cut})") from None
        print(f"== {name}: killed after {train_s:.0f} s ({cut}); evaluating its best export", flush=True)
    eval_s = sh(eval_cmd, run_dir.with_suffix(".eval.log"), env)
    print(f"== {name}: done (train {train_s:.0f} s, evaluate {eval_s:.0f} s)", flush=True)
    return {"name": name, "recipe": recipe, "command": shlex.join(["textvae", *train_cmd[3:]]), "commit": code_version(),
            "train_s": train_s, "eval_s": eval_s, "threads": env["OMP_NUM_THREADS"], "cut": cut,
            "metrics": json.loads((run_dir / "test.json").read_text()), "run_dir": str(run_dir)}


def cut_note(run_dir: Path) -> str:
    """How far a killed training run got: its last logged step and the best export's step."""
    def last_step(path: Path) -> int | None:
        lines = path.read_text().splitlines() if path.is_file() else []
        return json.loads(lines[-1])["step"] if lines else None

    summary = run_dir / "final" / "train_summary.json"
    best = json.loads(summary.read_text())["best_step"] if summary.is_file() else None
    return f"last logged step {last_step(run_dir / 'metrics.jsonl')}, best export at step {best}"


def interpolate_pair(results: list[dict], args: argparse.Namespace) -> dict[str, str]:
    """The same two test sentences interpolated by the plain VAE and by every invlip model
    (``--jobs`` at a time: each is mostly the start of a process)."""
    def interpolate(row: dict) -> str:
        done = subprocess.run([*TEXTVAE, "interpolate", row["run_dir"], *PAIR, "--steps", "6"],
                              cwd=REPO, capture_output=True, text=True)
        warnings = [line for line in done.stderr.splitlines() if line.startswith(("warning:", "error:"))]
        return "\n".join([done.stdout.strip(), *warnings]).strip()

    chosen = [row for row in results if row["name"] == "lstm-vae" or "invlip" in row["name"]]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return dict(zip([row["name"] for row in chosen], pool.map(interpolate, chosen), strict=True))


def write_report(results: list[dict], interpolations: dict[str, str], args: argparse.Namespace) -> None:
    from report import render  # the script's own folder is on sys.path

    text = render(results, interpolations, invocation=args.invocation, size=args.size, iw_samples=args.iw_samples, hardware=hardware(),
                  date=datetime.date.today().isoformat(), seed=args.seed, max_sentences=args.max_sentences,
                  plot_name=f"{Path(args.report).stem.lower()}-kl_mi_vs_L.png" if args.report != "benchmarks/RESULTS.md"
                  else "kl_mi_vs_L.png")
    (REPO / args.report).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
