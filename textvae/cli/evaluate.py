"""``textvae evaluate CHECKPOINT``: the paper numbers of a trained model on a corpus split.

The split comes from the export's own ``recipe.yaml`` (the corpus and length limit it was
trained with) unless ``--corpus`` names another; it is tokenised with the model's
tokenizer. ``accelerate launch --num_processes N -m textvae evaluate ...`` shares the
sentences among N processes (:func:`textvae.evaluation.corpus.evaluate_split`), with the
numbers of one process. The main process then scores what users look at
(:mod:`textvae.evaluation.generation_quality`): interpolations between test pairs, prior
samples, and their fluency under an independent LM. The Markdown table goes to stdout,
the full results (numbers, protocol, checkpoint identity) to ``--output`` and, for a local
export, to its ``evaluation.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textvae.atomic import ensure_directory, write_text
from textvae.cli.arguments import (
    MAX_IW_SAMPLES,
    MAX_POINTS,
    device,
    export_directory,
    integer,
    positive_float,
    seed,
)
from textvae.data.config import DataConfig
from textvae.data.pipeline import SplitData, SplitSource, split_sources, tokenize_split
from textvae.data.reading import SPLITS
from textvae.errors import TextVAEError
from textvae.evaluation.corpus import MI_VARIANTS
from textvae.schema import MAX_BATCH, MAX_COUNT, SEED_MAX
from textvae.training.recipe import load_recipe

if TYPE_CHECKING:
    import torch

    from textvae.evaluation.corpus import Evaluation
    from textvae.evaluation.fluency import FluencyLM
    from textvae.models import TextVAEModel

# Factors with at most this many classes get a PCA panel (legible legends).
_PCA_MAX_CLASSES = 6
# Caps of --interpolation-pairs and --samples: every pair is steps decodes, and the fluency LM
# reads every decode; 10,000 of either is already minutes of a small model's decoding on a CPU.
MAX_PAIRS = 10_000
MAX_GENERATION_SAMPLES = 10_000


def sample_count(text: str) -> int:
    """``--samples``: 0 (none) or 2 to :data:`MAX_GENERATION_SAMPLES` (self-BLEU compares samples)."""
    value = integer(0, MAX_GENERATION_SAMPLES)(text)
    if value == 1:
        raise argparse.ArgumentTypeError("must be 0 or at least 2 (self-BLEU compares samples with each other), got 1")
    return value


sample_count.__name__ = f"0 or an int in [2, {MAX_GENERATION_SAMPLES}]"


# --------------------------------------------------------------------------- inputs


def recipe_data_config(checkpoint: str, export: Path | None, corpus: str | None) -> DataConfig:
    """The export's ``data:`` section, with ``--corpus`` replacing its corpus."""
    recipe_path = export / "recipe.yaml" if export is not None else _hub_file(checkpoint, "recipe.yaml")
    if recipe_path is not None and recipe_path.is_file():
        cfg = load_recipe(recipe_path).data
    elif corpus is None:
        where = "in the export" if export is not None else "beside the model (not a local export, none on the Hub)"
        raise TextVAEError(f"{checkpoint}: no recipe.yaml {where} to say which corpus to use; pass --corpus NAME_OR_DIR")
    else:
        cfg = DataConfig()
    if corpus is not None:
        cfg = dataclasses.replace(cfg, corpus=corpus, hf_dataset=None)
    return cfg


def _looks_like_hub_id(checkpoint: str) -> bool:
    """``owner/name`` (or ``name``) that is not a local path: load_model will ask the Hub."""
    return not checkpoint.startswith((".", "/", "~")) and checkpoint.count("/") <= 1


def _hub_file(repo_id: str, filename: str) -> Path | None:
    """A file of a Hub repo, or None when the repo has none; a failing Hub is one line."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    from textvae.hub.loading import cache_only_if_unreachable, describe_hub_failure

    hub_kwargs, unreachable = cache_only_if_unreachable({})
    try:
        return Path(hf_hub_download(repo_id, filename, **hub_kwargs))
    except RemoteEntryNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 -- offline, unreachable, no such repo, rejected token
        message = (describe_hub_failure(exc, repo_id, unreachable=unreachable)
                   or f"{repo_id}: could not fetch {filename} ({type(exc).__name__})")
    raise TextVAEError(message)  # outside the handler: the client's exception (and its token) is not chained


def split_source(cfg: DataConfig, split: str) -> SplitSource:
    """Where ``split`` is read from, found before the model is loaded (a wrong corpus or split
    fails fast)."""
    return split_sources(cfg, [split])[1][split]


def split_info(cfg: DataConfig, split: SplitData) -> dict[str, Any]:
    """Where the sentences came from and what the length policy did (goes into the JSON)."""
    report = split.report
    return {"corpus": cfg.hf_dataset or cfg.corpus, "split": report.split, "source": report.source,
            "num_sentences": len(split.ids), "max_length": cfg.max_length, "length_policy": cfg.length_policy,
            "truncated": report.truncated, "dropped": report.dropped}


# --------------------------------------------------------------------------- outputs


def non_finite(value: Any, where: str = "") -> list[str]:
    """The keys (``kl_per_dim[3]``, ``probes.subject``) of every NaN or infinite number in ``value``."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where or 'value'}={value}"]
    if isinstance(value, dict):
        return [bad for key, item in value.items() for bad in non_finite(item, f"{where}.{key}" if where else str(key))]
    if isinstance(value, (list, tuple)):
        return [bad for i, item in enumerate(value) for bad in non_finite(item, f"{where}[{i}]")]
    return []


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> Path:
    """Write JSON through a temporary file and a rename: readers never see half a file, and
    nothing but finite numbers (JSON has no NaN)."""
    path = Path(path)
    ensure_directory(path.parent)
    return write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_plots(model: TextVAEModel, split: SplitData, evaluation: Evaluation, export: Path | None,
                directory: Path) -> list[Path]:
    """KL per dimension, PCA of the posterior means the evaluation kept (a panel for the
    length and one for each factor with few classes), training curves when the run's
    metrics.jsonl is there."""
    from textvae.evaluation import plots

    written = []
    if model.has_latent:
        written.append(plots.plot_kl_per_dimension(evaluation.results["kl_per_dim"], directory / "kl_per_dim.png"))
        colourings: dict[str, list] = {"sentence length": (split.ids.lengths - 2).tolist()}
        for name in sorted({k for row in split.factors or [] for k in row}):
            values = [row.get(name) for row in split.factors]
            if 1 < len({str(v) for v in values}) <= _PCA_MAX_CLASSES:
                colourings[name] = values
        written.append(plots.plot_latent_pca_panels(evaluation.mu, directory / "latent_pca.png", colourings))
    for metrics in ([export / "metrics.jsonl", export.parent / "metrics.jsonl"] if export is not None else []):
        if metrics.is_file() and metrics.stat().st_size > 0:
            try:  # the training log only decorates the results: a damaged one costs its figure, not the rest
                written.append(plots.plot_training_curves(metrics, directory / "training_curves.png"))
            except TextVAEError as exc:
                print(f"warning: no training curves: {exc}", file=sys.stderr)
            break
    return written


# --------------------------------------------------------------------------- command


def check_output_paths(args: argparse.Namespace) -> None:
    """``--output`` and ``--plots`` can be written, checked before the model is evaluated."""
    if args.output:
        if Path(args.output).is_dir():
            raise TextVAEError(f"--output {args.output}: is a directory, expected a JSON file")
        ensure_directory(Path(args.output).parent, "--output")
    if args.plots:
        ensure_directory(args.plots, "--plots")


def check_memory(model: TextVAEModel, split: SplitData, args: argparse.Namespace) -> None:
    """Refuse ``--iw-samples`` and ``--batch-size`` that cannot fit, before the evaluation allocates.

    A batch draws the noise of all K samples at once, (K, B, d) floats, and its decoder calls hold
    (B, T, V) logits and their log-probabilities (samples come in blocks that keep them to one
    sample's worth; T is the longest sentence).
    """
    from textvae.models.generation import memory_budget, require_memory

    rows = min(args.batch_size, len(split.ids))
    noise = (args.iw_samples if model.has_latent else 1) * model.config.latent_size * 4  # per sentence
    longest = int(split.ids.lengths.max()) if len(split.ids) else 1
    logits = 3 * longest * model.config.vocab_size * 4  # per sentence
    budget = memory_budget(model.device)
    if rows * logits > budget:
        require_memory("batch_size", rows * (noise + logits), model.device,
                       f"at most {budget // (noise + logits):,} sentences fit")
    fit = (budget - rows * logits) // (rows * model.config.latent_size * 4)
    require_memory("iw_samples", rows * (noise + logits), model.device,
                   f"at most {fit:,} samples fit with {rows:,} sentences a batch")


def fluency_lm(args: argparse.Namespace, device: torch.device) -> tuple[FluencyLM | None, str | None]:
    """The LM ``--fluency-lm`` names (default: SmolLM2 where it is cached), or None and why not."""
    from textvae.evaluation.fluency import FluencyLM, default_fluency_lm

    if args.interpolation_pairs == 0 and args.samples == 0:
        return None, "not computed: nothing was generated"
    if args.fluency_lm == "none":
        return None, "not computed: disabled (--fluency-lm none)"
    if args.fluency_lm is None:
        if args.fluency_lm_gguf is not None:
            raise TextVAEError("--fluency-lm-gguf names a file inside --fluency-lm's folder: give --fluency-lm too")
        found = default_fluency_lm()
        if found is None:
            return None, ("skipped: no --fluency-lm given and SmolLM2-135M is not cached (python "
                          "benchmarks/pretrained/fetch_models.py puts it in ~/.cache/textvae/pretrained; needs gguf)")
        return FluencyLM.load(*found, device=device), None
    return FluencyLM.load(args.fluency_lm, args.fluency_lm_gguf, device=device), None


def launched_accelerator():
    """An ``Accelerator`` when a launcher (``accelerate launch``, ``torchrun``) started several
    processes, else None: one process evaluates where the model loads, as before."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import parse_flag_from_env

    # Accelerate's own count of the launched processes, with the CPU flag Accelerator() reads too
    # (without it a CPU launch counts one process).
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    return Accelerator() if state.num_processes > 1 else None


def run_evaluate(args: argparse.Namespace) -> int:
    from textvae.evaluation.corpus import evaluate_split, format_markdown
    from textvae.evaluation.generation_quality import evaluate_generation, markdown_rows
    from textvae.hub.loading import load_model

    check_output_paths(args)
    accelerator = launched_accelerator()
    device = args.device or (accelerator.device if accelerator is not None else None)
    export = export_directory(args.checkpoint)
    if export is None and not _looks_like_hub_id(args.checkpoint):
        raise TextVAEError(f"checkpoint not found: {args.checkpoint}")
    cfg = recipe_data_config(args.checkpoint, export, args.corpus)
    source = split_source(cfg, args.split)
    model = load_model(args.checkpoint, device=device)
    if model.tokenizer is None:
        raise TextVAEError(f"{args.checkpoint}: the export has no tokenizer files")
    main = accelerator is None or accelerator.is_main_process
    split = tokenize_split(model.tokenizer, source, cfg, limit=args.max_sentences, progress=main and not args.no_progress)
    lm, note = fluency_lm(args, model.device) if main else (None, None)  # loaded first: a bad name fails fast
    check_memory(model, split, args)
    evaluation = evaluate_split(model, split.ids, iw_samples=args.iw_samples, delta=args.delta,
                                batch_size=args.batch_size, mi=args.mi, seed=args.seed, factors=split.factors,
                                progress=not args.no_progress, accelerator=accelerator)
    if accelerator is not None and not accelerator.is_main_process:
        return 0  # the main process reports and writes
    results = evaluation.results
    results["data"] = split_info(cfg, split)
    evaluate_generation(model, split.ids, evaluation.mu, pairs=args.interpolation_pairs,
                        steps=args.interpolation_steps, samples=args.samples, seed=args.seed,
                        batch_size=args.batch_size, fluency=lm, fluency_note=note,
                        progress=not args.no_progress).add_to(results)
    bad = non_finite(results)
    if bad:
        raise TextVAEError(f"{args.checkpoint}: the evaluation gave non-finite numbers ({', '.join(bad[:4])}"
                           f"{', ...' if len(bad) > 4 else ''}): the model's outputs overflow or are NaN; no results "
                           "were written")
    print("\n".join([format_markdown(results), *markdown_rows(results)]))
    for warning in results["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if args.output:
        print(f"wrote {write_json_atomic(args.output, results)}", file=sys.stderr)
    figure_dirs = [Path(args.plots)] if args.plots else []
    if export is not None:
        print(f"wrote {write_json_atomic(export / 'evaluation.json', results)}", file=sys.stderr)
        # The figures go beside evaluation.json too: `textvae push` uploads them and the card shows them.
        if importlib.util.find_spec("matplotlib") is not None:
            figure_dirs.insert(0, export)
        else:
            print("textvae: note: matplotlib is not installed, so the export gets no figures for its model "
                  "card (pip install textvae[plots])", file=sys.stderr)
    for directory in figure_dirs:
        for path in write_plots(model, split, evaluation, export, directory):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="NLL/PPL (ELBO and importance-weighted), KL, MI, active units, BLEU, factor probes, interpolation, "
        "diversity and fluency of generations",
        description="Evaluate a trained model in the protocol of He et al. (2019) on a corpus split. "
        "Prints a Markdown table; writes the full results as JSON.",
    )
    parser.add_argument("checkpoint", help="an export directory, a run directory (its final/) or a Hub repo id")
    parser.add_argument("--split", default="test", choices=SPLITS, help="the split to evaluate (default: test)")
    parser.add_argument("--iw-samples", type=integer(1, MAX_IW_SAMPLES), default=500,
                        help=f"importance samples K per sentence (default: 500, at most {MAX_IW_SAMPLES:,}, and "
                        "what fits in memory)")
    parser.add_argument("--delta", type=positive_float, default=0.01,
                        help="active-unit threshold on Var_x E[z_j] (default: 0.01)")
    parser.add_argument("--batch-size", type=integer(1, MAX_BATCH), default=64,
                        help=f"sentences per forward pass (default: 64, at most {MAX_BATCH}, and what fits in memory)")
    parser.add_argument("--max-sentences", type=integer(1, MAX_COUNT), default=None,
                        help="evaluate only the first N sentences")
    parser.add_argument("--corpus", default=None, metavar="NAME_OR_DIR",
                        help="evaluate on this corpus instead of the one in the export's recipe.yaml")
    parser.add_argument("--mi", default="split", choices=MI_VARIANTS,
                        help="which MI estimate the headline 'mi' repeats (both are reported)")
    parser.add_argument("--seed", type=seed, default=0,
                        help=f"seed of the posterior samples (default: 0; 0 to {SEED_MAX})")
    parser.add_argument("--interpolation-pairs", type=integer(0, MAX_PAIRS), default=50,
                        help="test pairs whose interpolations are scored (default: 50, at most half the split and "
                        f"{MAX_PAIRS:,}; 0: none)")
    parser.add_argument("--interpolation-steps", type=integer(2, MAX_POINTS), default=8,
                        help="points on each path, ends included (default: 8, as textvae interpolate)")
    parser.add_argument("--samples", type=sample_count, default=100,
                        help=f"prior samples for distinct-2, self-BLEU and fluency (default: 100; 0: none, else "
                        f"2 to {MAX_GENERATION_SAMPLES:,})")
    parser.add_argument("--fluency-lm", default=None, metavar="NAME_OR_PATH",
                        help="causal LM that scores the fluency of the decodes (default: SmolLM2-135M where "
                        "fetch_models.py cached it, else none; 'none': skip)")
    parser.add_argument("--fluency-lm-gguf", default=None, metavar="FILE",
                        help="a GGUF file inside --fluency-lm's folder (needs the gguf package)")
    parser.add_argument("--output", default=None, metavar="FILE.json", help="also write the results here")
    parser.add_argument("--plots", default=None, metavar="DIR", help="write PNG figures to this directory")
    parser.add_argument("--device", type=device, default=None, help="cpu or cuda (default: where the model loads)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_evaluate)
