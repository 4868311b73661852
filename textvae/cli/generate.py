"""``textvae interpolate | sample | reconstruct``: look at what a model's latent space does.

Each command loads an export with :func:`~textvae.hub.loading.load_model`, works in
batches (the interpolation points of all pairs, up to :data:`BLOCK` codes, are decoded in one
call, which splits them further only when memory requires) and prints one sentence per line. When the latent code is unused -- a ``latent_path: none`` model, a
posterior with KL ~ 0 on the sentences at hand, or an export whose own reports count 0
active units -- a one-line warning goes to stderr, because the identical lines that
follow are the model's fault, not the command's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from textvae.cli.arguments import (
    MAX_BEAMS,
    MAX_POINTS,
    MAX_SAMPLES,
    MAX_SCALE,
    device,
    export_directory,
    integer,
    positive_float,
    positive_float_in,
    seed,
)
from textvae.errors import TextVAEError
from textvae.schema import MAX_BATCH, MAX_TOKENS, SEED_MAX

if TYPE_CHECKING:
    from textvae.models import TextVAEModel

STRATEGIES = ("greedy", "beam", "sample")
PATHS = ("lerp", "slerp")
# Posterior KL (nats) under which a sentence's code is treated as carrying nothing.
KL_UNUSED = 0.05
REPORT_FILES = ("evaluation.json", "train_summary.json")
# Codes that sample and interpolate decode and print at a time: output streams and memory stays
# flat however many are asked for. Block i's sampled decoding is seeded with --seed + i.
BLOCK = 1024


# --------------------------------------------------------------------------- options


def add_decoding_arguments(parser: argparse.ArgumentParser, default: str = "greedy") -> None:
    parser.add_argument("--decode", default=default, choices=STRATEGIES, help=f"decoding strategy (default: {default})")
    parser.add_argument("--beam-size", type=integer(1, MAX_BEAMS), default=5,
                        help=f"beams for --decode beam (default: 5, at most {MAX_BEAMS})")
    parser.add_argument("--temperature", type=positive_float_in(1 / MAX_SCALE, MAX_SCALE), default=None,
                        help=f"softmax temperature for --decode sample ({1 / MAX_SCALE:g} to {MAX_SCALE:g})")
    parser.add_argument("--top-p", type=nucleus_mass, default=None, help="nucleus mass for --decode sample")
    parser.add_argument("--max-length", type=integer(1, MAX_TOKENS), default=64,
                        help=f"longest decoded sentence in tokens (default: 64, at most {MAX_TOKENS}, and what "
                        "fits in memory)")
    parser.add_argument("--no-repeat-ngram-size", type=integer(1, MAX_TOKENS), default=None, metavar="N",
                        help=f"never repeat an n-gram of N tokens within a sentence (any strategy; at most {MAX_TOKENS})")
    parser.add_argument("--repetition-penalty", type=positive_float_in(1.0, MAX_SCALE), default=None, metavar="P",
                        help=f"divide the odds of tokens already in the sentence by P (1 to {MAX_SCALE:g}; "
                        "> 1 discourages repeats)")
    parser.add_argument("--seed", type=seed, default=0,
                        help=f"seed of prior draws and sampling (default: 0; 0 to {SEED_MAX})")
    parser.add_argument("--device", type=device, default=None, help="cpu or cuda (default: where the model loads)")


def nucleus_mass(text: str) -> float:
    """A probability mass in (0, 1]."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def decoding_options(args: argparse.Namespace) -> dict[str, Any]:
    """Check the decoding flags; return the ``generate()`` options they stand for.

    ``--decode sample`` is ancestral sampling from the whole vocabulary (``top_k=0``
    switches off transformers' default top-50 filter), narrowed only by ``--top-p``. The
    repetition controls are transformers' own logits processors, for every strategy: a
    pretrained LM decoded greedily tends to loop on a phrase.
    """
    def given(*names: str) -> dict[str, Any]:
        return {name: getattr(args, name) for name in names if getattr(args, name) is not None}

    sampling = given("temperature", "top_p")
    repeats = given("no_repeat_ngram_size", "repetition_penalty")
    if args.decode != "sample":
        if sampling:
            raise TextVAEError(f"{' and '.join('--' + k.replace('_', '-') for k in sampling)} only apply to --decode sample")
        return {"num_beams": args.beam_size, **repeats} if args.decode == "beam" else repeats
    return {"do_sample": True, "top_k": 0, **sampling, **repeats}


def load(args: argparse.Namespace) -> tuple[TextVAEModel, Path | None]:
    """The model of ``args.checkpoint`` (with its tokenizer) and its local export dir, if any."""
    from textvae.hub.loading import load_model

    model = load_model(args.checkpoint, device=args.device)
    if model.tokenizer is None:
        raise TextVAEError(f"{args.checkpoint}: the export has no tokenizer files")
    return model, export_directory(args.checkpoint)


def decode(model: TextVAEModel, z: torch.Tensor, options: dict[str, Any], args: argparse.Namespace,
           block: int = 0) -> list[str]:
    """Decode (N, d) latents; sampling is seeded by ``--seed`` (plus the :data:`BLOCK` number)."""
    return model.decode(z, max_length=args.max_length, seed=args.seed + block, **options)


# --------------------------------------------------------------------------- collapse


def reported_active_units(export: Path | None) -> int | None:
    """The smallest ``active_units`` in the export's evaluation/training reports, if any."""
    if export is None:
        return None
    found: list[int] = []
    for name in REPORT_FILES:
        try:
            _collect(json.loads((export / name).read_text(encoding="utf-8")), "active_units", found)
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def _collect(node: Any, key: str, found: list[int]) -> None:
    """Every integer value of ``key`` at any depth of a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, int) and not isinstance(v, bool):
                found.append(v)
            else:
                _collect(v, key, found)
    elif isinstance(node, list):
        for v in node:
            _collect(v, key, found)


def latent_unused(model: TextVAEModel, export: Path | None, kl: torch.Tensor | None = None) -> str | None:
    """Why the decoder's output cannot depend on the sentence's code, or None if it can.

    ``kl``: (N,) posterior KL of the sentences the command encodes; all below
    :data:`KL_UNUSED` means their codes are indistinguishable from prior draws.
    """
    if not model.has_latent:
        return "the model has no latent path: it is a language model"
    if kl is not None and bool((kl < KL_UNUSED).all()):
        return f"KL(q(z|x) || p(z)) < {KL_UNUSED} nats for every sentence given"
    if reported_active_units(export) == 0:
        return "the export's reports count 0 active units: posterior means barely vary between sentences"
    return None


def warn_if_unused(model: TextVAEModel, export: Path | None, consequence: str, kl: torch.Tensor | None = None) -> None:
    """One line on stderr when :func:`latent_unused` finds a reason."""
    reason = latent_unused(model, export, kl)
    if reason is not None:
        print(f"warning: the latent code is unused ({reason}): {consequence}", file=sys.stderr)


def posterior_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per row: (N, d) -> (N,)."""
    from textvae.estimators import gaussian_kl_per_dim

    return gaussian_kl_per_dim(mu, logvar).sum(-1)


# --------------------------------------------------------------------------- commands


def read_pairs(path: str) -> list[tuple[str, str]]:
    """``sentence A<TAB>sentence B`` per line (blank lines skipped)."""
    from textvae.data.reading import decode_lines

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TextVAEError(f"--from-file {path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    pairs = []
    for line_no, line in enumerate(decode_lines(data, path), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != 2 or not all(parts):
            raise TextVAEError(f"{path}:{line_no}: expected two sentences separated by a tab")
        pairs.append((parts[0], parts[1]))
    if not pairs:
        raise TextVAEError(f"{path}: no sentence pairs")
    return pairs


def interpolation_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The sentence pairs of ``interpolate``: its two sentences, or those of ``--from-file``."""
    if args.from_file is not None:
        if args.sentence_a is not None:
            raise TextVAEError("give either two sentences or --from-file PAIRS.tsv, not both")
        return read_pairs(args.from_file)
    if args.sentence_a is None or args.sentence_b is None:
        raise TextVAEError("interpolate needs two sentences (or --from-file PAIRS.tsv)")
    return [(args.sentence_a, args.sentence_b)]


def run_interpolate(args: argparse.Namespace) -> int:
    from textvae.models.generation import interpolation_path

    pairs = interpolation_pairs(args)
    options = decoding_options(args)
    model, export = load(args)
    pairs_per_block = max(1, BLOCK // args.steps)
    kls = []
    for block, first in enumerate(range(0, len(pairs), pairs_per_block)):
        group = pairs[first : first + pairs_per_block]
        mu, logvar = model.encode([s for pair in group for s in pair])  # (2P, d)
        kls.append(posterior_kl(mu, logvar))
        z = torch.cat([interpolation_path(a, b, args.steps, args.path) for a, b in mu.view(len(group), 2, -1)])
        lines = decode(model, z, options, args, block)
        for p in range(len(group)):
            if first + p:
                print()
            print("\n".join(lines[p * args.steps : (p + 1) * args.steps]), flush=True)
    warn_if_unused(model, export, "the interpolation points decode alike", torch.cat(kls))
    return 0


def run_sample(args: argparse.Namespace) -> int:
    options = decoding_options(args)
    model, export = load(args)
    warn_if_unused(model, export, "samples from the prior differ only through the decoder's own sampling")
    generator = torch.Generator().manual_seed(args.seed)
    for block, start in enumerate(range(0, args.n, BLOCK)):
        z = torch.randn(min(BLOCK, args.n - start), model.config.latent_size, generator=generator)
        print("\n".join(decode(model, z.to(model.device), options, args, block)), flush=True)
    return 0


def read_sentences(file: str) -> tuple[list[str], list[int]]:
    """The non-blank lines of ``file`` (``-``: stdin), stripped, and their 1-based line numbers.

    Skipped blank lines are reported on stderr, so that a user who lines the output up
    with the input knows where the rows stop matching.
    """
    from textvae.data.reading import clean_lines, decode_lines, read_raw_lines

    # Standard input as bytes, decoded as a file is: line endings alike, invalid UTF-8 named.
    if file == "-":  # a replaced sys.stdin (a StringIO) has text only
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        raw = decode_lines(data, "<stdin>")
    else:
        raw = read_raw_lines(file)
    source = "<stdin>" if file == "-" else file
    sentences, _ = clean_lines(raw, source)
    numbers = [n for n, line in enumerate(raw, 1) if line.strip()]
    blank = [n for n, line in enumerate(raw, 1) if not line.strip()]
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
        print(f"note: {source}: {len(blank):,} blank line{'s' * (len(blank) > 1)} skipped (line {shown}): "
              f"{len(sentences):,} sentences follow the other lines in order", file=sys.stderr)
    return sentences, numbers


def run_reconstruct(args: argparse.Namespace) -> int:
    options = decoding_options(args)
    sentences, _ = read_sentences(args.file)
    model, export = load(args)
    kls = []
    for start in range(0, len(sentences), args.batch_size):
        batch = sentences[start : start + args.batch_size]
        mu, logvar = model.encode(batch)
        kls.append(posterior_kl(mu, logvar))
        for source, output in zip(batch, decode(model, mu, options, args), strict=True):
            print(f"{source}\t{output}")
    warn_if_unused(model, export, "reconstructions do not depend on their sentences' codes", torch.cat(kls))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "interpolate",
        help="decode points on the path between two sentences' posterior means",
        description="Prints one decoded sentence per point, from sentence A's reconstruction to "
        "sentence B's. With --from-file, one block per pair, separated by blank lines.",
    )
    p.add_argument("checkpoint", help="an export directory, a run directory or a Hub repo id")
    p.add_argument("sentence_a", nargs="?", default=None, metavar="SENTENCE_A")
    p.add_argument("sentence_b", nargs="?", default=None, metavar="SENTENCE_B")
    p.add_argument("--steps", type=integer(2, MAX_POINTS), default=8,
                   help=f"points on the path, ends included (default: 8, at most {MAX_POINTS:,})")
    p.add_argument("--path", default="lerp", choices=PATHS, help="straight line or great circle (default: lerp)")
    p.add_argument("--from-file", default=None, metavar="PAIRS.tsv", help="sentence pairs, tab-separated, one per line")
    add_decoding_arguments(p)
    p.set_defaults(handler=run_interpolate)

    p = subparsers.add_parser("sample", help="decode codes drawn from the prior N(0, I)")
    p.add_argument("checkpoint", help="an export directory, a run directory or a Hub repo id")
    p.add_argument("-n", type=integer(1, MAX_SAMPLES), default=10,
                   help=f"how many sentences (default: 10, at most {MAX_SAMPLES:,}; printed {BLOCK:,} at a time)")
    add_decoding_arguments(p)
    p.set_defaults(handler=run_sample)

    p = subparsers.add_parser("reconstruct", help="encode sentences and decode their posterior means")
    p.add_argument("checkpoint", help="an export directory, a run directory or a Hub repo id")
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="one sentence per line (default: stdin)")
    p.add_argument("--batch-size", type=integer(1, MAX_BATCH), default=64,
                   help=f"sentences per batch (default: 64, at most {MAX_BATCH})")
    add_decoding_arguments(p)
    p.set_defaults(handler=run_reconstruct)
