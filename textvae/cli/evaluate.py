"""``textvae evaluate CHECKPOINT``: the paper numbers of a trained model on a corpus split.

The split comes from the export's own ``recipe.yaml`` (the corpus and length limit it
was trained with) unless ``--corpus`` names another; it is tokenised with the model's
tokenizer. The Markdown table goes to stdout, the full results (numbers, protocol,
checkpoint identity) to ``--output`` and, for a local export, to its ``evaluation.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from textvae.atomic import write_text
from textvae.errors import TextVAEError
from textvae.training.recipe import DataConfig, load_recipe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from textvae.models import TextVAEModel

SPLITS = ("train", "valid", "test")
# Factors with at most this many classes get a PCA panel (legible legends).
_PCA_MAX_CLASSES = 6


@dataclass
class EvaluationSplit:
    """The sentences of one split, ready for :func:`textvae.evaluation.evaluate`."""

    ids: list[list[int]]
    """``<bos> ... <eos>`` ids from the model's tokenizer."""
    factors: list[dict[str, Any]] | None
    info: dict[str, Any]
    """Where the sentences came from and what the length policy did (goes into the JSON)."""


# --------------------------------------------------------------------------- inputs


def export_directory(checkpoint: str) -> Path | None:
    """The local export directory a checkpoint argument points to (None for a Hub id)."""
    from textvae.hub.loading import resolve_export

    path = Path(resolve_export(checkpoint))
    return path if path.is_dir() else None


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

    from textvae.hub.loading import describe_hub_failure

    try:
        return Path(hf_hub_download(repo_id, filename))
    except RemoteEntryNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 -- offline, unreachable, no such repo, rejected token
        message = describe_hub_failure(exc, repo_id) or f"{repo_id}: could not fetch {filename} ({type(exc).__name__})"
    raise TextVAEError(message)  # outside the handler: the client's exception (and its token) is not chained


@dataclass
class RawSplit:
    lines: list[str]
    factors: list[dict[str, Any]] | None
    source: str


def read_split(cfg: DataConfig, split: str, max_sentences: int | None = None) -> RawSplit:
    """The sentences (and factors, where the corpus ships them) of ``split`` of ``cfg``'s corpus.

    Done before the model is loaded, so a wrong corpus or split fails fast.
    """
    from textvae.data.corpora import resolve_corpus
    from textvae.data.reading import read_hf_splits, read_lines
    from textvae.data.synthetic import factors_path, load_factors

    factors = None
    if cfg.hf_dataset is not None:
        lines, report = read_hf_splits(cfg.hf_dataset, cfg.text_column, [split])[split]
    else:
        path = resolve_corpus(cfg.corpus, cfg.data_dir, [split])[split]
        lines, report = read_lines(path)
        if factors_path(path.parent, split).is_file():
            factors = load_factors(path.parent, split)
            if report.blank_skipped or len(factors) != len(lines):
                raise TextVAEError(f"{factors_path(path.parent, split)}: {len(factors)} rows do not match the "
                                   f"{len(lines) + report.blank_skipped} lines of {path}")
    if max_sentences is not None:
        lines, factors = lines[:max_sentences], factors[:max_sentences] if factors is not None else None
    return RawSplit(lines, factors, report.source)


def tokenize_split(tokenizer: PreTrainedTokenizerFast, raw: RawSplit, cfg: DataConfig, split: str) -> EvaluationSplit:
    """Token ids from the model's own tokenizer, with the recipe's length policy applied."""
    ids = tokenizer(raw.lines, padding=False, truncation=False)["input_ids"]  # the policy cuts below
    ids, factors, truncated, dropped = apply_length_policy(ids, raw.factors, cfg.max_length, cfg.length_policy)
    if not ids:
        raise TextVAEError(f"{raw.source}: no sentence of at most {cfg.max_length} tokens to evaluate")
    info = {"corpus": cfg.hf_dataset or cfg.corpus, "split": split, "source": raw.source,
            "num_sentences": len(ids), "max_length": cfg.max_length, "length_policy": cfg.length_policy,
            "truncated": truncated, "dropped": dropped}
    return EvaluationSplit(ids, factors, info)


def apply_length_policy(
    ids: list[list[int]], factors: list[dict] | None, max_length: int, policy: str
) -> tuple[list[list[int]], list[dict] | None, int, int]:
    """The recipe's ``truncate``/``drop`` rule for sentences over ``max_length`` tokens
    (BOS/EOS not counted), as training applied it: (ids, factors, truncated, dropped)."""
    limit = max_length + 2
    if policy == "truncate":
        long_rows = [i for i, row in enumerate(ids) if len(row) > limit]
        for i in long_rows:
            ids[i] = ids[i][: limit - 1] + [ids[i][-1]]
        return ids, factors, len(long_rows), 0
    keep = [i for i, row in enumerate(ids) if len(row) <= limit]
    kept_factors = [factors[i] for i in keep] if factors is not None else None
    return [ids[i] for i in keep], kept_factors, 0, len(ids) - len(keep)


def resolve_device(name: str | None) -> str | None:
    if name is None:
        return None
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise TextVAEError(f"--device must be cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TextVAEError(f"--device {name}: no CUDA device is available")
    return name


# --------------------------------------------------------------------------- outputs


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> Path:
    """Write JSON through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise TextVAEError(f"{path}: cannot write there ({exc.strerror})") from None


def write_plots(model: TextVAEModel, split: EvaluationSplit, results: dict[str, Any], export: Path | None,
                directory: Path, batch_size: int) -> list[Path]:
    """KL per dimension, PCA of posterior means (a panel for the length and one for each
    factor with few classes), training curves when the run's metrics.jsonl is there."""
    from textvae.evaluation import plots
    from textvae.evaluation.corpus import posterior_parameters

    written = []
    if model.has_latent:
        written.append(plots.plot_kl_per_dimension(results["kl_per_dim"], directory / "kl_per_dim.png"))
        mu, _ = posterior_parameters(model, split.ids, batch_size)
        colourings: dict[str, list] = {"sentence length": [len(row) - 2 for row in split.ids]}
        for name in sorted({k for row in split.factors or [] for k in row}):
            values = [row.get(name) for row in split.factors]
            if 1 < len({str(v) for v in values}) <= _PCA_MAX_CLASSES:
                colourings[name] = values
        written.append(plots.plot_latent_pca_panels(mu, directory / "latent_pca.png", colourings))
    for metrics in ([export / "metrics.jsonl", export.parent / "metrics.jsonl"] if export is not None else []):
        if metrics.is_file() and metrics.stat().st_size > 0:
            written.append(plots.plot_training_curves(metrics, directory / "training_curves.png"))
            break
    return written


# --------------------------------------------------------------------------- command


def run_evaluate(args: argparse.Namespace) -> int:
    from textvae.evaluation.corpus import evaluate, format_markdown
    from textvae.hub.loading import load_model

    if args.split not in SPLITS:
        raise TextVAEError(f"--split must be one of {', '.join(SPLITS)}, got {args.split!r}")
    for option, value in (("--iw-samples", args.iw_samples), ("--batch-size", args.batch_size),
                          ("--max-sentences", args.max_sentences)):
        if value is not None and value < 1:
            raise TextVAEError(f"{option} must be at least 1, got {value}")
    if args.mi not in ("split", "batch"):
        raise TextVAEError(f"--mi must be split or batch, got {args.mi!r}")
    if args.delta <= 0:
        raise TextVAEError(f"--delta must be positive, got {args.delta}")
    device = resolve_device(args.device)
    export = export_directory(args.checkpoint)
    if export is None and not _looks_like_hub_id(args.checkpoint):
        raise TextVAEError(f"checkpoint not found: {args.checkpoint}")
    cfg = recipe_data_config(args.checkpoint, export, args.corpus)
    raw = read_split(cfg, args.split, args.max_sentences)
    model = load_model(args.checkpoint, device=device)
    if model.tokenizer is None:
        raise TextVAEError(f"{args.checkpoint}: the export has no tokenizer files")
    split = tokenize_split(model.tokenizer, raw, cfg, args.split)
    results = evaluate(model, split.ids, iw_samples=args.iw_samples, delta=args.delta,
                       batch_size=args.batch_size, mi=args.mi, seed=args.seed, factors=split.factors,
                       progress=not args.no_progress)
    results["data"] = split.info
    print(format_markdown(results))
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
        for path in write_plots(model, split, results, export, directory, args.batch_size):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="NLL/PPL (ELBO and importance-weighted), KL, MI, active units, BLEU and factor probes",
        description="Evaluate a trained model in the protocol of He et al. (2019) on a corpus split. "
        "Prints a Markdown table; writes the full results as JSON.",
    )
    parser.add_argument("checkpoint", help="an export directory, a run directory (its final/) or a Hub repo id")
    parser.add_argument("--split", default="test", help="train, valid or test (default: test)")
    parser.add_argument("--iw-samples", type=int, default=500, help="importance samples K per sentence (default: 500)")
    parser.add_argument("--delta", type=float, default=0.01, help="active-unit threshold on Var_x E[z_j] (default: 0.01)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass (default: 64)")
    parser.add_argument("--max-sentences", type=int, default=None, help="evaluate only the first N sentences")
    parser.add_argument("--corpus", default=None, metavar="NAME_OR_DIR",
                        help="evaluate on this corpus instead of the one in the export's recipe.yaml")
    parser.add_argument("--mi", default="split",
                        help="which MI estimate the headline 'mi' repeats (both are reported)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the posterior samples (default: 0)")
    parser.add_argument("--output", default=None, metavar="FILE.json", help="also write the results here")
    parser.add_argument("--plots", default=None, metavar="DIR", help="write PNG figures to this directory")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: where the model loads)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_evaluate)
