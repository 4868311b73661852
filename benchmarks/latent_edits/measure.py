"""Edit and analogy success of trained models on the embedded corpus (benchmarks/README.md, "Latent edits").

For each model: the attribute vectors are the mean codes of the 20,000 training sentences
per factor value (what ``textvae attributes EXPORT data/synthetic/train.factors.jsonl
--text data/synthetic/train.txt`` stores); edits and analogies are made on the first 1,000
test sentences and read back by the grammar's parser
(:func:`textvae.evaluation.latent_edits.measure_edits`). Results accumulate in
``results.json`` (a rerun of a model replaces its rows) and the tables go to ``TABLE.md``.

    python benchmarks/latent_edits/measure.py                      # every model of ROWS
    python benchmarks/latent_edits/measure.py --only quickstart
    python benchmarks/latent_edits/measure.py --table              # rewrite TABLE.md only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
TABLE = HERE / "TABLE.md"
CORPUS = ROOT / "data" / "synthetic"

# name -> (export, what it is: overrides of recipes/quickstart.yaml, as benchmarks/latent_edits/train.sh trains it)
ROWS: dict[str, tuple[str, str]] = {
    "quickstart": ("runs/quickstart/final", "the recipe as shipped (`invlip`, d = 64, L = 3, 45 nats asked); `make demo`'s model"),
    "bn-vae": ("runs/latent_edits/bn-vae/final", "`objective.target_rate=null model.latent_path=concat model.posterior_bn_gamma=0.6`"),
    "aggressive": ("runs/latent_edits/aggressive/final",
                   "`objective.target_rate=null model.posterior_bn_gamma=null train.aggressive=true "
                   "train.aggressive_max_inner_steps=30`"),
    "autoencoder": ("runs/latent_edits/autoencoder/final", "`objective.beta=0 objective.target_rate=null model.posterior_bn_gamma=null` "
                    "(no KL: the ceiling)"),
}
STRENGTHS = (1.0, 2.0)
N_TEST = 1000
LABELS = {"tense": "tense", "negation": "negation", "subject_number": "subject number",
          "object_number": "object number"}


def measure(name: str, export: str) -> list[dict]:
    from textvae.data.labels import read_labelled
    from textvae.data.synthetic import load_factors
    from textvae.evaluation.latent_edits import measure_edits
    from textvae.hub.loading import load_model
    from textvae.models.latents import AttributeVectors, encode_in_batches

    model = load_model(ROOT / export)
    train = read_labelled(CORPUS / "train.factors.jsonl", CORPUS / "train.txt")
    vectors = AttributeVectors.fit(encode_in_batches(model, train.sentences, progress=True)[0], train.labels, 10)
    sentences = (CORPUS / "test.txt").read_text(encoding="utf-8").splitlines()[:N_TEST]
    factors = load_factors(CORPUS, "test")[:N_TEST]
    rows = []
    for strength in STRENGTHS:
        start = time.perf_counter()
        report = measure_edits(model, vectors, sentences, factors, strength=strength, progress=True)
        rows.append({"model": name, "export": export, "seconds": round(time.perf_counter() - start, 1),
                     **report.to_dict()})
        print(json.dumps(rows[-1]))
    return rows


def cell(rates: dict) -> str:
    return (f"{100 * rates['success_rate']:.0f} / {100 * rates['kept_rate']:.0f} / "
            f"{100 * rates['kept_reconstruction_rate']:.0f}")


def write_table(results: list[dict]) -> None:
    header = "| model | strength | reconstruction exact | " + " | ".join(LABELS.values()) + " |"
    rule = "|---|---:|---:|" + "---:|" * len(LABELS)
    lines = ["# Latent edits and analogies on the embedded corpus", "",
             "Written by `python benchmarks/latent_edits/measure.py` from `results.json`; the models by "
             "`bash benchmarks/latent_edits/train.sh`. Each cell: success / kept / kept vs. reconstruction, "
             f"in % (first {N_TEST:,} test sentences; definitions in benchmarks/README.md, \"Latent edits and "
             "analogies\").", "",
             "| model | what it is |", "|---|---|"]
    lines += [f"| {name} | {what} |" for name, (_, what) in ROWS.items()]
    for kind, title in (("edits", "Edits: z + strength (mean[target] - mean[current])"),
                        ("analogies", "Analogies: z_C + (z_B - z_A), B = A with one factor changed")):
        lines += ["", f"## {title}", "", header, rule]
        for row in results:
            if kind == "analogies" and row["strength"] != STRENGTHS[0]:
                continue  # an analogy has no strength: one row per model
            strength = f"{row['strength']:g}" if kind == "edits" else "–"
            cells = " | ".join(cell(row[kind][a]) for a in LABELS)
            lines.append(f"| {row['model']} | {strength} | {100 * row['reconstruction_exact']:.1f} | {cells} |")
    TABLE.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(ROWS), help="measure only these models")
    parser.add_argument("--table", action="store_true", help="only rewrite TABLE.md from results.json")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if not args.table:
        for name in args.only or list(ROWS):
            new = measure(name, ROWS[name][0])
            results = [r for r in results if r["model"] != name] + new
            RESULTS.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    order = list(ROWS)
    write_table(sorted(results, key=lambda r: (order.index(r["model"]), r["strength"])))


if __name__ == "__main__":
    main()
