"""The command line: the top layer, the only one that knows about flags and exit codes.

It owns argument parsing (one module per command group, each exposing
``register(subparsers)``), the wording of errors in terms of flags, and printing. This
module collects the groups, runs the chosen handler and turns a
:class:`~textvae.errors.TextVAEError`, or an ``OSError`` that reached it unworded, into
one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable
from typing import Any

from textvae.atomic import os_error_line
from textvae.errors import InvalidArgument, RetiredOptionWarning, TextVAEError

# Modules that add sub-commands; imported lazily so `textvae --help` stays fast.
COMMAND_MODULES = (
    "textvae.cli.data",
    "textvae.cli.train",
    "textvae.cli.evaluate",
    "textvae.cli.generate",
    "textvae.cli.latents",
    "textvae.cli.push",
)


# Positional lists of key=value recipe overrides (``train``, ``data prepare``).
OVERRIDE_ARGUMENTS = ("overrides", "items")


class OneLineErrors(argparse.ArgumentParser):
    """argparse with its usage errors in the one-line form of every other error (exit status 2)."""

    def error(self, message: str):
        command = self.prog.removeprefix("textvae").strip()
        self.exit(2, f"textvae: error: {command + ': ' if command else ''}{message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="textvae",
        description="Train, evaluate and share sentence VAEs whose decoders do not collapse.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def cli_wording(exc: TextVAEError, args: argparse.Namespace) -> str:
    """The error as the command line says it: a bad library argument that one of this
    command's flags set is named by that flag (``max_length`` -> ``--max-length``)."""
    if isinstance(exc, InvalidArgument) and exc.name in vars(args):
        return f"--{exc.name.replace('_', '-')}: {exc.problem}"
    return str(exc)


def one_line_warnings(default: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints textvae's own warnings as one line, as its errors are,
    and hands any other to ``default``."""

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, RetiredOptionWarning):
            print(f"textvae: warning: {message}", file=sys.stderr)
        else:
            default(message, category, *args, **kwargs)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # key=value overrides after a flag (`train R --resume-inexact a.b=1`) belong with the others
            overrides = next((v for k, v in vars(args).items() if k in OVERRIDE_ARGUMENTS), None)
            if overrides is None or any(item.startswith("-") or "=" not in item for item in extra):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            overrides.extend(extra)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return int(exc.code or 0)
    # Commands draw their own progress bars; transformers' load/save bars are noise here.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warnings(warnings.showwarning)
            return int(args.handler(args) or 0)
    except TextVAEError as exc:
        print(f"textvae: error: {cli_wording(exc, args)}", file=sys.stderr)
        return 2
    except OSError as exc:  # one no layer worded (a path too long even to look up): the path and the reason
        print(f"textvae: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("textvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
