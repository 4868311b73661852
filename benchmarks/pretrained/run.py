"""The pretrained-backbone table: SmolLM2-135M decoding, all-MiniLM-L6-v2 encoding, by latent path.

    python benchmarks/pretrained/fetch_models.py            # once: the two real models, offline
    python benchmarks/pretrained/run.py --corpus synthetic --train-lines 5000 --test-sentences 500
    python benchmarks/pretrained/run.py --corpus ptb --train-lines 4000 --test-sentences 300 \
        --lifts vocab whitened-full     # benchmarks/pretrained/RESULTS-ptb.md

Trains the recipes of ``recipes/pretrained/`` under the same trainable parts (``frozen`` on a
CPU, so the invlip rows read the LM's states from the state cache): the LM alone (``none``),
Optimus's ``memory`` path with its schedule, and ``invlip`` at each ``--lipschitz`` with each
``--lifts`` design (default: the vocabulary lift and the whitened lift through the LM's own
output layer). Each best-validation
export is evaluated on the first ``--test-sentences`` test sentences with ``textvae evaluate``
(K = ``--iw-samples``). Also measures what the state cache saves per epoch (the same invlip
steps with ``train.state_cache=false``), and decodes interpolations between the PTB pair of
``benchmarks/ptb/run.py`` and between the demo's two sentences. Writes
``benchmarks/pretrained/RESULTS-<corpus>.md`` and the rows as JSON beside the runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the PTB script's helpers
from ptb.run import PAIR as PTB_PAIR  # noqa: E402
from ptb.run import REPO, TEXTVAE, code_version, hardware, sh  # noqa: E402

DEMO_PAIR = ("the old dog saw a small cat .", "she will not find the red boxes .")
# Optimus (Li et al. 2020), GPT-2 117M on PTB with lambda = 0.5: PPL 23.58 (their Table 2).
ANCHOR = ("Optimus (Li et al. 2020) reports PTB PPL 23.58 with GPT-2 (117M), lambda = 0.5: a fine-tuned "
          "1.1B-word-pretrained decoder and BERT encoder on the full training set, per GPT-2 token of "
          "their own preprocessing. Not comparable with these rows: a frozen 135M LM, a training subset, "
          "and per-token PPL over SmolLM2's tokens of Mikolov's lower-cased PTB (with <unk> and N).")


# The invlip designs: (row label, recipe, overrides), each lift named explicitly so a row does
# not follow the recipes' defaults. "Full width": the map's state part fills SmolLM2's width
# (544 + d = 32 is 576), so W A spans every direction W can give the logits. The default path
# (pretrained/invlip) is the whitened full-width row, which won the PTB table. The rows of the
# unwhitened output lift (invlip_lift=output, retired: it lost that table) rerun at commit 7ac144b.
LIFTS = {
    "vocab": ("invlip vocab lift", "invlip-vocab", ["model.invlip_lift=frozen"]),
    "whitened-full": ("invlip whitened output lift, full width", "invlip",
                      ["model.invlip_lift=output_whitened", "model.invlip_state_size=544"]),
}


def rows(lipschitz: list[float], lifts: list[str]) -> list[tuple[str, str, list[str]]]:
    """(row name, recipe under recipes/pretrained/, extra overrides)."""
    out = [("lm (none)", "lm", []), ("memory (Optimus)", "memory", [])]
    for lift in lifts:
        label, recipe, extra = LIFTS[lift]
        out += [(f"{label} (L={value:g})", recipe, [*extra, f"model.lipschitz={value}"]) for value in lipschitz]
    return out


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in name).strip("-").replace("--", "-")


def common(args: argparse.Namespace) -> list[str]:
    return [f"data.corpus={args.corpus}", f"data.max_train_lines={args.train_lines}", f"train.epochs={args.epochs}",
            f"seed={args.seed}", "train.progress=false", "train.overwrite=true", *args.set]


def train_and_evaluate(name: str, recipe: str, extra: list[str], out: Path, args: argparse.Namespace) -> dict:
    run_dir = out / slug(name)
    train_cmd = [*TEXTVAE, "train", f"pretrained/{recipe}", f"output_dir={run_dir}", *common(args), *extra]
    eval_cmd = [*TEXTVAE, "evaluate", str(run_dir), "--split", "test", "--iw-samples", str(args.iw_samples),
                "--max-sentences", str(args.test_sentences), "--batch-size", str(args.eval_batch_size),
                "--output", str(run_dir / "test.json"), "--no-progress"]
    print(f"== {name}: {shlex.join(train_cmd[2:])}", flush=True)
    train_s = sh(train_cmd, run_dir.with_suffix(".train.log"))
    eval_s = sh(eval_cmd, run_dir.with_suffix(".eval.log"))
    print(f"== {name}: done (train {train_s:.0f} s, evaluate {eval_s:.0f} s)", flush=True)
    return {"name": name, "recipe": recipe, "command": shlex.join(["textvae", *train_cmd[3:]]),
            "eval_command": shlex.join(["textvae", *eval_cmd[3:]]), "commit": code_version(), "train_s": train_s,
            "eval_s": eval_s, "metrics": json.loads((run_dir / "test.json").read_text()), "run_dir": str(run_dir),
            "summary": json.loads((run_dir / "final" / "train_summary.json").read_text())}


def tokens_per_second(run_dir: Path) -> float:
    """The median training speed the run logged (cache building and validation not counted)."""
    speeds = sorted(r["tokens_per_s"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                    if r["split"] == "train")
    return speeds[len(speeds) // 2]


def cache_speedup(out: Path, args: argparse.Namespace) -> dict:
    """The same invlip steps with and without the state cache: tokens/s, hence time per epoch."""
    speeds = {}
    for cached in (True, False):
        run_dir = out / f"speed-cache-{'on' if cached else 'off'}"
        command = [*TEXTVAE, "train", "pretrained/invlip", f"output_dir={run_dir}", *common(args),
                   f"train.max_steps={args.speed_steps}", "train.log_every=5", f"train.state_cache={str(cached).lower()}",
                   f"train.eval_every={args.speed_steps}", "train.eval_batches=1"]
        print(f"== speed, state cache {'on' if cached else 'off'}: {shlex.join(command[2:])}", flush=True)
        sh(command, run_dir.with_suffix(".train.log"))
        speeds["on" if cached else "off"] = tokens_per_second(run_dir)
    return {"tokens_per_s_cached": speeds["on"], "tokens_per_s_recomputed": speeds["off"],
            "speedup": speeds["on"] / speeds["off"], "steps": args.speed_steps}


# How each row's interpolations are decoded: plain greedy, and greedy that never repeats a
# 3-gram (a pretrained LM decoded greedily tends to loop on a phrase).
DECODINGS = {"greedy": [], "greedy, no repeated 3-gram": ["--no-repeat-ngram-size", "3"]}
STEPS = 6


def interpolations(results: list[dict], out: Path) -> dict[str, list[str]]:
    """Both pairs from one ``interpolate --from-file`` call per row and decoding (one model load)."""
    pairs = out / "interpolation-pairs.tsv"
    pairs.write_text("".join(f"{a}\t{b}\n" for a, b in (PTB_PAIR, DEMO_PAIR)), encoding="utf-8")
    paths = {}
    for row in results:
        if row["recipe"] == "lm":
            continue
        for decoding, flags in DECODINGS.items():
            done = subprocess.run([*TEXTVAE, "interpolate", row["run_dir"], "--from-file", str(pairs), "--steps", str(STEPS),
                                   "--max-length", "40", *flags], cwd=REPO, capture_output=True, text=True)
            # stdout holds one block per pair; of stderr only textvae's own lines (not the loaders' progress bars)
            notes = [line for line in done.stderr.splitlines() if line.startswith(("warning:", "error:"))]
            # Blocks of STEPS lines, a blank line between: split by position (a decode can be empty).
            lines = done.stdout.split("\n") if done.returncode == 0 else []
            for i, label in enumerate(("PTB pair", "demo pair")):
                start = i * (STEPS + 1)
                paths[f"{row['name']}, {label}, {decoding}"] = [*lines[start : start + STEPS], *notes]
    return paths


def fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render(results: list[dict], speed: dict | None, paths: dict[str, list[str]], args: argparse.Namespace) -> str:
    d = 32
    lines = [f"# Pretrained backbones on {args.corpus}: SmolLM2-135M (frozen) + all-MiniLM-L6-v2", "",
             f"Measured {datetime.date.today().isoformat()} on {hardware()}, commit {code_version()}, with",
             "", "```bash", args.invocation, "```", "",
             f"Training: the first {args.train_lines:,} training sentences, {args.epochs} epoch(s), batch 32, the "
             "LM frozen (the invlip rows read its states from the state cache). Evaluation: the first "
             f"{args.test_sentences} test sentences, K = {args.iw_samples} importance samples (`textvae evaluate`, "
             "He et al.'s protocol). NLL in nats per sentence; PPL per SmolLM2 token and per word.", "",
             "| row | IW-NLL | PPL/token | PPL/word | KL | MI | AU | BLEU | next-token TV (post / prior) | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in results:
        m = row["metrics"]
        tv = f"{fmt(m.get('next_token_tv_posterior'), 3)} / {fmt(m.get('next_token_tv_prior'), 3)}"
        lines.append(f"| {row['name']} | {fmt(m['nll_iw'])} | {fmt(m['ppl_iw'], 1)} | {fmt(m.get('ppl_iw_word'), 1)} | "
                     f"{fmt(m['kl'])} | {fmt(m['mi'])} | {m['active_units']}/{d} | {fmt(m.get('bleu_greedy'), 1)} | "
                     f"{tv} | {row['train_s']:.0f} |")
    lines += ["", "Commands of each row:", ""]
    lines += [f"- {row['name']}: `{row['command']}`, then `{row['eval_command']}`" for row in results]
    if speed:
        lines += ["", "## The state cache", "",
                  f"The same invlip steps ({speed['steps']}) with the LM's states read from the cache: "
                  f"{speed['tokens_per_s_cached']:.0f} tokens/s; recomputing the frozen LM every step: "
                  f"{speed['tokens_per_s_recomputed']:.0f} tokens/s, so every epoch after the first is "
                  f"{speed['speedup']:.1f}x faster (median of the logged steps; the one-off build is in the train logs)."]
    lines += ["", f"## Interpolations ({STEPS} steps, `--max-length 40`)", ""]
    for label, text in paths.items():
        lines += [f"{label}:", "", "```text", *text, "```", ""]
    lines += ["## Published anchor", "", ANCHOR, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="synthetic", help="synthetic, ptb, or a corpus directory")
    parser.add_argument("--train-lines", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--test-sentences", type=int, default=500)
    parser.add_argument("--iw-samples", type=int, default=50)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--lipschitz", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--lifts", nargs="+", choices=sorted(LIFTS), default=["vocab", "whitened-full"])
    parser.add_argument("--speed-steps", type=int, default=30, help="steps of the state-cache speed rows (0: skip)")
    parser.add_argument("--only", nargs="*", help="row names or recipes to run (default: all; none: only the "
                        "speed rows and the report, from the rows stored before)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="runs/pretrained-bench")
    args = parser.parse_args()
    args.invocation = shlex.join(["python", "benchmarks/pretrained/run.py", *sys.argv[1:]])
    out = REPO / args.out_dir / Path(args.corpus).name
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.json"
    # With --only (even empty: no row, only the speed rows and the report), earlier rows are kept.
    earlier = json.loads(store.read_text()) if args.only is not None and store.is_file() else {"rows": [], "speed": None}
    chosen = [r for r in rows(args.lipschitz, args.lifts) if args.only is None or r[0] in args.only or r[1] in args.only]
    results = [r for r in earlier["rows"] if r["name"] not in {name for name, _, _ in chosen}]
    order = [name for name, _, _ in rows(sorted({3.0, 10.0, 30.0, *args.lipschitz}), list(LIFTS))]
    for row in chosen:
        results.append(train_and_evaluate(*row, out, args))
        results.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
        store.write_text(json.dumps({"rows": results, "speed": earlier["speed"]}, indent=2))
    speed = cache_speedup(out, args) if args.speed_steps else earlier["speed"]
    store.write_text(json.dumps({"rows": results, "speed": speed}, indent=2))
    text = render(results, speed, interpolations(results, out), args)
    (REPO / "benchmarks" / "pretrained" / f"RESULTS-{Path(args.corpus).name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
