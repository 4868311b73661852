"""``textvae encode | attributes | edit | analogy``: use the latent space, not only look at it.

``encode`` writes codes for other tools; ``attributes`` stores the mean code of every
labelled value in the export; ``edit`` and ``analogy`` move codes and decode them. The
work is :mod:`textvae.models.latents`; this module reads files, words errors and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

import torch

from textvae.cli.arguments import MAX_SCALE, export_directory, integer, positive_float_in, seed
from textvae.cli.generate import (
    add_decoding_arguments,
    decoding_options,
    load,
    posterior_kl,
    read_sentences,
    warn_if_unused,
)
from textvae.errors import TextVAEError
from textvae.schema import MAX_BATCH, MAX_COUNT, SEED_MAX

if TYPE_CHECKING:
    import numpy as np

    from textvae.models.latents import AttributeVectors

FORMATS = (".npy", ".npz", ".safetensors", ".parquet")


# --------------------------------------------------------------------------- encode


def codes_file(text: str) -> Path:
    """An output path whose suffix names a supported format."""
    path = Path(text)
    if path.suffix not in FORMATS:
        raise argparse.ArgumentTypeError(f"{text}: the name must end in {', '.join(FORMATS)}")
    return path


def run_encode(args: argparse.Namespace) -> int:
    from textvae.models.latents import encode_in_batches

    extra = [flag for flag, wanted in (("--logvar", args.logvar), ("--sample", args.sample)) if wanted]
    if args.output.suffix == ".npy" and extra:
        raise TextVAEError(f"--output {args.output}: a .npy file holds one array (the means); "
                           f"use .npz, .safetensors or .parquet with {' and '.join(extra)}")
    if not args.output.parent.is_dir():
        raise TextVAEError(f"--output {args.output}: no such directory {args.output.parent}")
    sentences, line_numbers = read_sentences(args.file)
    model, export = load(args)
    mu, logvar = encode_in_batches(model, sentences, args.batch_size, progress=True)
    arrays = {"mu": mu}
    if args.logvar:
        arrays["logvar"] = logvar
    if args.sample:
        noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(args.seed))
        arrays["z"] = mu + (0.5 * logvar).exp() * noise
    write_codes(args.output, {k: v.numpy() for k, v in arrays.items()}, sentences, line_numbers,
                {"checkpoint": str(args.checkpoint), "source": str(args.file)})
    warn_if_unused(model, export, "the codes carry nothing about their sentences", posterior_kl(mu, logvar))
    print(f"wrote {len(sentences):,} codes of {model.config.latent_size} dimensions "
          f"({', '.join(arrays)}) to {args.output}", file=sys.stderr)
    return 0


def write_codes(path: Path, arrays: dict[str, np.ndarray], sentences: list[str], line_numbers: list[int],
                provenance: dict[str, str]) -> None:
    """Write (N, d) arrays named ``mu``/``logvar``/``z`` atomically, in the format of ``path``'s suffix.

    Every format but ``.npy`` (the means alone) also holds ``line``, each row's line number
    in the input, so rows can be matched to lines when blank lines were skipped; Parquet
    also holds the sentences.
    """
    import numpy as np

    from textvae.atomic import staged_file

    lines = np.asarray(line_numbers, dtype=np.int64)
    with staged_file(path) as tmp:
        if path.suffix == ".npy":
            with tmp.open("wb") as handle:  # a file object: np.save would append .npy to a name
                np.save(handle, arrays["mu"])
        elif path.suffix == ".npz":
            with tmp.open("wb") as handle:
                np.savez(handle, line=lines, **arrays)
        elif path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({"line": lines, **arrays}, str(tmp), metadata=provenance)
        else:
            _write_parquet(tmp, arrays, sentences, lines, provenance)


def _write_parquet(path: Path, arrays: dict[str, np.ndarray], sentences: list[str], lines: np.ndarray,
                   provenance: dict[str, str]) -> None:
    """One row per sentence: ``line``, ``text`` and one fixed-size float list column per array."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"line": pa.array(lines), "text": pa.array(sentences, type=pa.string())}
    for name, array in arrays.items():
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])
    table = pa.table(columns).replace_schema_metadata({f"textvae.{k}": v for k, v in provenance.items()})
    pq.write_table(table, path)


# --------------------------------------------------------------------------- attributes


def run_attributes(args: argparse.Namespace) -> int:
    from textvae.data.labels import read_labelled
    from textvae.models.latents import ATTRIBUTES_FILE, AttributeVectors, encode_in_batches

    local = export_directory(args.checkpoint)
    output = args.output or (local / ATTRIBUTES_FILE if local is not None else None)
    if output is not None and output.exists() and not args.overwrite:
        raise TextVAEError(f"{output} exists: pass --overwrite to replace it, or --output another file")
    data = read_labelled(args.labels, args.text, args.attribute)  # bad labels fail before a model loads
    model, export = load(args)
    if output is None:
        raise TextVAEError(f"{args.checkpoint} is not a local export: give --output FILE for the attribute vectors")
    if data.skipped:
        print(f"note: keys not on every line are not attributes: {', '.join(data.skipped)} "
              f"(name them with --attribute to be told which lines lack them)", file=sys.stderr)
    mu, logvar = encode_in_batches(model, data.sentences, args.batch_size, progress=True)
    # File names only: the vectors travel with the export (`textvae push`), the local layout must not.
    # PureWindowsPath cuts at either separator, so a C:\... path shrinks as /home/... does.
    info = {"labels": PureWindowsPath(args.labels).name,
            "text": None if args.text is None else PureWindowsPath(args.text).name,
            "sentences": len(data.sentences), "min_count": args.min_count}
    vectors = AttributeVectors.fit(mu, data.labels, args.min_count, info)
    vectors.save(output)
    warn_if_unused(model, export, "the means of different values barely differ", posterior_kl(mu, logvar))
    print(f"{len(data.sentences):,} sentences: mean codes of {len(vectors.attributes)} attributes stored in {output}")
    print(summary(vectors, mu, data.labels))
    return 0


def summary(vectors: AttributeVectors, mu: torch.Tensor, labels: dict[str, list[Any]]) -> str:
    """A row per attribute: its values with their counts, and how often the nearest mean
    names a sentence's own value (how far apart the values lie in the code)."""
    from textvae.models.latents import value_name

    rows = ["attribute\tnearest-mean accuracy\tvalues (count)"]
    for attribute in vectors.attributes:
        truth = vectors.indices(attribute, labels[attribute])
        accuracy = (vectors.predict(mu, attribute) == truth).float().mean().item()
        values = ", ".join(f"{value_name(v)} ({n:,})" for v, n in
                           zip(vectors.values[attribute], vectors.counts[attribute], strict=True))
        rows.append(f"{attribute}\t{accuracy:.3f}\t{values}")
    return "\n".join(rows)


# --------------------------------------------------------------------------- edit, analogy


def assignment(text: str) -> tuple[str, str]:
    """``attribute=value``."""
    attribute, sep, value = text.partition("=")
    if not sep or not attribute.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected ATTRIBUTE=VALUE, got {text!r}")
    return attribute.strip(), value.strip()


def pairs(option: str, given: list[tuple[str, str]] | None) -> dict[str, str]:
    """``--set``/``--from`` assignments as a dict; an attribute named twice is refused."""
    out: dict[str, str] = {}
    for attribute, value in given or []:
        if attribute in out:
            raise TextVAEError(f"{option}: attribute '{attribute}' is given twice")
        out[attribute] = value
    return out


def run_edit(args: argparse.Namespace) -> int:
    from textvae.hub.loading import load_attribute_vectors
    from textvae.models.latents import AttributeVectors, edit

    changes, current = pairs("--set", args.set), pairs("--from", args.current)
    options = decoding_options(args)
    model, export = load(args)
    vectors = AttributeVectors.load(args.attributes) if args.attributes else load_attribute_vectors(args.checkpoint)
    for attribute, value in [*changes.items(), *current.items()]:
        vectors.index(attribute, value)  # an unknown attribute or value fails before any decoding
    lines = edit(model, vectors, args.sentences, changes, current, args.strength,
                 max_length=args.max_length, seed=args.seed, **options)
    warn_if_unused(model, export, "edited codes decode like any other", posterior_kl(*model.encode(args.sentences)))
    print("\n".join(lines))
    return 0


def run_analogy(args: argparse.Namespace) -> int:
    from textvae.models.latents import analogy

    options = decoding_options(args)
    model, export = load(args)
    print(analogy(model, args.a, args.b, args.c, max_length=args.max_length, seed=args.seed, **options)[0])
    kl = posterior_kl(*model.encode([args.a, args.b, args.c]))
    warn_if_unused(model, export, "the analogy decodes like any other code", kl)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "encode", help="write the codes of a file's sentences (.npy, .npz, .safetensors or .parquet)",
        description="Writes each non-blank line's posterior mean (mu), in order; blank lines are skipped and "
        "reported. Every format but .npy also holds `line`, each row's line number in FILE.")
    p.add_argument("checkpoint", help="an export directory, a run directory or a Hub repo id")
    p.add_argument("file", metavar="FILE|-", help="one sentence per line ('-': stdin)")
    p.add_argument("--output", "-o", type=codes_file, required=True, metavar="CODES",
                   help=f"the file to write; its suffix names the format ({', '.join(FORMATS)})")
    p.add_argument("--logvar", action="store_true", help="also write the posterior log-variances (logvar)")
    p.add_argument("--sample", action="store_true", help="also write one draw z ~ q(z|x) per sentence (z)")
    p.add_argument("--seed", type=seed, default=0, help=f"seed of --sample (default: 0; 0 to {SEED_MAX})")
    add_batch_arguments(p)
    p.set_defaults(handler=run_encode)

    p = subparsers.add_parser(
        "attributes", help="store the mean code of every value of labelled attributes in the export",
        description="Reads JSON lines {\"text\": SENTENCE, ATTRIBUTE: VALUE, ...}, or --text FILE with LABELS "
        "aligned line by line (as data/synthetic/test.txt and test.factors.jsonl), and stores, per attribute "
        "and value, the mean posterior mean and its count in the export's attributes.safetensors, which "
        "`textvae edit` reads and `textvae push` uploads.")
    p.add_argument("checkpoint", help="an export directory, a run directory or a Hub repo id (then --output)")
    p.add_argument("labels", metavar="LABELS.jsonl", help="one JSON object of labels per line")
    p.add_argument("--text", default=None, metavar="FILE", help="the sentences, line i labelled by line i of LABELS")
    p.add_argument("--attribute", action="append", default=None, metavar="NAME",
                   help="an attribute to store (repeat; default: every key on every line)")
    p.add_argument("--min-count", type=integer(1, MAX_COUNT), default=10,
                   help="fewest sentences a value must have (default: 10)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE",
                   help="where to store the vectors (default: EXPORT/attributes.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing attribute-vectors file")
    add_batch_arguments(p)
    p.set_defaults(handler=run_attributes)

    p = subparsers.add_parser(
        "edit", help="change an attribute of sentences by moving their codes between attribute means",
        description="Decodes z + strength * (mean[target] - mean[current]) for each sentence, with the means "
        "`textvae attributes` stored; the current value is --from, or the nearest mean's.")
    p.add_argument("checkpoint", help="an export directory, a run directory or a Hub repo id")
    p.add_argument("sentences", nargs="+", metavar="SENTENCE")
    p.add_argument("--set", type=assignment, action="append", required=True, metavar="ATTRIBUTE=VALUE",
                   help="the target value (repeat for several attributes)")
    p.add_argument("--from", dest="current", type=assignment, action="append", default=None,
                   metavar="ATTRIBUTE=VALUE", help="the value the sentences have now (default: the nearest mean's)")
    p.add_argument("--strength", type=positive_float_in(0.0, MAX_SCALE), default=1.0,
                   help=f"how far to move (default: 1.0, at most {MAX_SCALE:g})")
    p.add_argument("--attributes", type=Path, default=None, metavar="FILE",
                   help="attribute vectors to use (default: the checkpoint's attributes.safetensors)")
    add_decoding_arguments(p)
    p.set_defaults(handler=run_edit)

    p = subparsers.add_parser("analogy", help="A is to B as C is to ?: decode z_C + (z_B - z_A)",
                              description="Decodes z_C + (z_B - z_A), each z a posterior mean.")
    p.add_argument("checkpoint", help="an export directory, a run directory or a Hub repo id")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("c", metavar="C")
    add_decoding_arguments(p)
    p.set_defaults(handler=run_analogy)


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    from textvae.cli.arguments import device

    parser.add_argument("--batch-size", type=integer(1, MAX_BATCH), default=256,
                        help=f"sentences per batch (default: 256, at most {MAX_BATCH})")
    parser.add_argument("--device", type=device, default=None, help="cpu or cuda (default: where the model loads)")
