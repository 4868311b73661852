"""The command line: the top layer, the only one that knows about flags and exit codes.

It owns argument parsing (one module per command group, each exposing
``register(subparsers)``), the wording of errors in terms of flags, and printing. This
module collects the groups, runs the chosen handler and turns a
:class:`~textvae.errors.TextVAEError` into one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from textvae.errors import TextVAEError

# Modules that add sub-commands; imported lazily so `textvae --help` stays fast.
COMMAND_MODULES = (
    "textvae.cli.data",
    "textvae.cli.train",
    "textvae.cli.evaluate",
    "textvae.cli.generate",
    "textvae.cli.push",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textvae",
        description="Train, evaluate and share sentence VAEs whose decoders do not collapse.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Commands draw their own progress bars; transformers' load/save bars are noise here.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return int(args.handler(args) or 0)
    except TextVAEError as exc:
        print(f"textvae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("textvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
