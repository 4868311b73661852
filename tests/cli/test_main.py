"""The command line's own wording: usage errors in one line, library arguments named as flags."""

from __future__ import annotations

import argparse

from textvae.cli import cli_wording, main
from textvae.errors import InvalidArgument, TextVAEError


def test_a_library_argument_set_by_a_flag_is_named_by_the_flag():
    error = InvalidArgument("max_length", "70 is too long")
    assert str(error) == "max_length: 70 is too long"  # the library's own wording
    assert cli_wording(error, argparse.Namespace(max_length=70)) == "--max-length: 70 is too long"
    assert cli_wording(error, argparse.Namespace(steps=3)) == "max_length: 70 is too long"
    assert cli_wording(TextVAEError("plain"), argparse.Namespace(max_length=70)) == "plain"


def test_usage_errors_are_one_line_with_exit_status_2(capsys):
    assert main(["sample", "run", "-n", "zero"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["textvae: error: sample: argument -n: expected an integer, got 'zero' (see --help)"]
    assert main(["no-such-command"]) == 2
    assert capsys.readouterr().err.startswith("textvae: error: argument COMMAND: invalid choice: 'no-such-command'")
