"""``textvae data``: look at, fetch and generate corpora from the command line."""

from __future__ import annotations

import argparse

from textvae.cli.arguments import MAX_GENERATED, integer, seed
from textvae.data.corpora import CORPORA, download, verify
from textvae.data.stats import corpus_stats
from textvae.data.synthetic import write_corpus


def _stats(args: argparse.Namespace) -> int:
    print(corpus_stats(args.corpus, args.data_dir, args.text_column).render())
    return 0


def _download(args: argparse.Namespace) -> int:
    download(args.name, args.data_dir)
    return 0


def _verify(args: argparse.Namespace) -> int:
    verify(args.name, args.dir)
    return 0


def _generate(args: argparse.Namespace) -> int:
    out = write_corpus(args.out, n_train=args.train, n_valid=args.valid, n_test=args.test, seed=args.seed)
    print(f"synthetic corpus (seed {args.seed}): {args.train:,}/{args.valid:,}/{args.test:,} sentences -> {out}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from textvae.data.pipeline import prepare_data  # imports transformers: only when needed
    from textvae.training.builders import pretrained_tokenizer
    from textvae.training.recipe import load_recipe

    # The first item is the recipe (a file or a shipped name) unless it is already an override.
    has_recipe = bool(args.items) and "=" not in args.items[0]
    recipe = load_recipe(args.items[0] if has_recipe else None, args.items[has_recipe:])
    data = prepare_data(recipe.data, tokenizer_dir=args.tokenizer_dir, tokenizer=pretrained_tokenizer(recipe))
    for split in data.splits.values():
        print(split.report.summary())
        print(f"  cache: {split.cache.describe()}")
    saved = f", saved to {args.tokenizer_dir}" if args.tokenizer_dir else ""
    print(f"tokenizer: {recipe.data.tokenizer}, {len(data.tokenizer):,} entries{saved}")
    if data.tokenizer_cache is not None:
        print(f"  cache: {data.tokenizer_cache.describe()}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from textvae.data.cache import cache_root, clear, entries

    root = cache_root(args.cache_dir)
    if args.clear:
        count, size = clear(root)
        print(f"{root}: removed {count} cache entries ({size / 1e6:,.1f} MB)")
        return 0
    found = entries(root)
    print(f"{root}: {len(found)} cache entries ({sum(e.size_bytes for e in found) / 1e6:,.1f} MB)")
    for entry in found:
        source = entry.meta.get("source", "")
        print(f"  {entry.path.parent.name}/{entry.path.name}  {entry.size_bytes / 1e6:>9,.1f} MB  "
              f"{entry.manifest.get('created', '')}  {source}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data stats``, ``download``, ``verify``, ``prepare``, ``cache`` and ``generate``."""
    data = subparsers.add_parser("data", help="inspect, download or generate corpora")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    stats = actions.add_parser("stats", help="lines, tokens, word types and a length histogram")
    stats.add_argument("corpus", metavar="CORPUS_OR_DIR_OR_FILE",
                       help=f"a registered corpus ({', '.join(CORPORA)}), a corpus directory or one text file")
    stats.add_argument("--data-dir", help="where registered corpora live (default: see `data download`)")
    stats.add_argument("--text-column", default=None, metavar="NAME",
                       help="CORPUS is a local Hugging Face dataset directory; count this column")
    stats.set_defaults(handler=_stats)

    fetch = actions.add_parser("download", help="fetch a registered corpus and verify it")
    fetch.add_argument("name", metavar="NAME", choices=CORPORA, help=", ".join(CORPORA))
    fetch.add_argument("--data-dir", help="target folder (default: $TEXTVAE_DATA or ~/.cache/textvae/data)")
    fetch.set_defaults(handler=_download)

    check = actions.add_parser("verify", help="check a local copy of a registered corpus (line counts, SHA256)")
    downloads = [n for n in CORPORA if n != "synthetic"]  # the generated corpus has nothing to verify
    check.add_argument("name", metavar="NAME", choices=downloads, help=", ".join(downloads))
    check.add_argument("dir", nargs="?", default=None, metavar="DIR",
                       help="the corpus directory (default: where `textvae data stats NAME` finds it)")
    check.set_defaults(handler=_verify)

    prep = actions.add_parser("prepare", help="read and tokenise a recipe's data, report what was skipped or cut")
    prep.add_argument("items", nargs="*", metavar="[RECIPE] [KEY=VALUE ...]",
                      help="a recipe file and/or overrides such as data.corpus=ptb data.max_length=40")
    prep.add_argument("--tokenizer-dir", help="also save the tokenizer here")
    prep.set_defaults(handler=_prepare)

    cache = actions.add_parser("cache", help="list the cached tokenised splits and tokenizers, or clear them")
    cache.add_argument("--clear", action="store_true", help="delete every cache entry (downloaded corpora stay)")
    cache.add_argument("--cache-dir", default=None, metavar="DIR",
                       help="the cache folder (default: $TEXTVAE_CACHE or ~/.cache/textvae)")
    cache.set_defaults(handler=_cache)

    gen = actions.add_parser("generate", help="write the synthetic corpus with its generative factors")
    gen.add_argument("--out", default="data/synthetic", help="output directory (default: data/synthetic)")
    gen.add_argument("--seed", type=seed, default=0)
    sentences = integer(1, MAX_GENERATED)
    gen.add_argument("--train", type=sentences, default=20000,
                     help=f"training sentences (default: 20000; each split at most {MAX_GENERATED:,})")
    gen.add_argument("--valid", type=sentences, default=1000)
    gen.add_argument("--test", type=sentences, default=10000)
    gen.set_defaults(handler=_generate)
