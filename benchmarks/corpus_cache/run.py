"""Scaling of the tokenised-corpus cache: build time and peak RSS, time to the first step, training RSS.

For one corpus size (PTB's train split repeated ``--repeat`` times, written by
``make_corpus.py``) it runs, as separate processes and in this order:

1. ``textvae data prepare recipes/ptb/lstm-invlip.yaml data.corpus=DIR``: the first build (cache empty);
   wall time and peak RSS.
2. ``textvae train recipes/ptb/lstm-invlip.yaml data.corpus=DIR train.max_steps=50 ...``: the second run;
   the time from its start to its first logged training step (the first line of
   ``metrics.jsonl``, polled every 50 ms), its wall time and its peak RSS over the whole
   run (data, model, 50 steps, one validation of 2 batches, the export and a checkpoint).

Peak RSS is ``ru_maxrss`` of the child (``os.wait4``), i.e. what ``/usr/bin/time -v``
reports as "Maximum resident set size". ``--code DIR`` runs another checkout (for
example ``git archive`` of an older commit) through ``PYTHONPATH``; its own cache, if
any, is ignored. Results are appended as JSON lines to ``--results``.

    python benchmarks/corpus_cache/run.py --repeat 24 --work /tmp/cc   # 1.0M sentences
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN_STEPS = 50


def timed(command: list[str], env: dict[str, str], cwd: Path, log: Path,
          first_line_of: Path | None = None) -> dict[str, float]:
    """Run ``command``; wall time, peak RSS (GB) and, when given, when ``first_line_of`` got a line."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        first = None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if first is None and first_line_of is not None and first_line_of.is_file() and first_line_of.stat().st_size:
                first = time.perf_counter() - started
            time.sleep(0.05)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(command)} failed with status {code}; see {log}")
    result = {"wall_s": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3)}
    if first_line_of is not None:
        result["first_step_s"] = round(first, 1) if first is not None else None
    return result


def hash_costs(path: Path, scratch: Path) -> dict[str, float]:
    """What the corpus key costs per run: a full SHA256 (the first run after the file
    changed) and a remembered one (every other run); see ``fingerprint.py``. The hash is
    remembered under ``scratch``, not in the cache the build starts from empty."""
    from fingerprint import costs

    try:
        return costs(path, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, required=True, help="copies of PTB train (24 -> 1.0M sentences)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (corpus, cache, run)")
    parser.add_argument("--code", type=Path, default=None, help="run this checkout instead of the installed textvae")
    parser.add_argument("--label", default="textvae")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the training run")
    parser.add_argument("--results", type=Path, default=HERE / "results.jsonl")
    parser.add_argument("--cleanup", action="store_true", help="delete the corpus and the cache afterwards")
    args = parser.parse_args()

    work = args.work.resolve()
    corpus, cache, run_dir = work / f"ptb-x{args.repeat}", work / "cache", work / "run"
    if not (corpus / "train.txt").is_file():
        subprocess.run([sys.executable, str(HERE / "make_corpus.py"), "--repeat", str(args.repeat), "--out", str(corpus)],
                       check=True)
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "TEXTVAE_CACHE": str(cache), "OMP_NUM_THREADS": str(args.threads),
           "HF_HUB_OFFLINE": "1", "TQDM_MININTERVAL": "5"}
    cwd = work  # the working directory comes first on sys.path: not a checkout, unless --code names one
    if args.code is not None:
        cwd = args.code.resolve()
        env["PYTHONPATH"] = str(cwd)
    textvae = [sys.executable, "-m", "textvae"]
    recipe = str((args.code or HERE.parents[1]).resolve() / "recipes" / "ptb" / "lstm-invlip.yaml")
    data = [f"data.corpus={corpus}"]

    row = {"label": args.label, "sentences": 42068 * args.repeat,
           "corpus_mb": round((corpus / "train.txt").stat().st_size / 1e6)}
    row["fingerprint"] = hash_costs(corpus / "train.txt", work / "fingerprint-costs")
    row["build"] = timed([*textvae, "data", "prepare", recipe, *data], env, cwd, work / "prepare.log")
    row["build"]["sentences_per_s"] = round(row["sentences"] / row["build"]["wall_s"])
    shutil.rmtree(run_dir, ignore_errors=True)
    metrics = run_dir / "metrics.jsonl"
    row["train"] = timed([*textvae, "train", recipe, *data, f"output_dir={run_dir}", f"train.max_steps={TRAIN_STEPS}",
                          "train.log_every=1", "train.eval_batches=2", "train.progress=false"],
                         env, cwd, work / "train.log", first_line_of=metrics)
    row["train"]["steps_logged"] = sum(1 for line in metrics.open() if '"split": "train"' in line)
    row["cache_mb"] = round(sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 1e6) if cache.exists() else 0
    row["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    row["load_avg_1m_after"] = round(os.getloadavg()[0], 2)  # other work on the machine skews the timings
    row["maxrss_self_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    print(json.dumps(row))
    with args.results.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    shutil.rmtree(run_dir, ignore_errors=True)
    if args.cleanup:
        shutil.rmtree(corpus, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
