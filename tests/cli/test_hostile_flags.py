"""Every flag of every command given a value of the wrong type or out of range, and every flag that
names a path given a file, a directory, a path under a file or an unwritable one: the command
runs, or says what is wrong in one line with exit status 2. Never a traceback.

The flags are found by walking the parser, so a flag added later is probed too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.helpers_models import offline_and_quiet, run_cli, save_export, tiny_model, word_tokenizer  # noqa: F401
from textvae.cli import build_parser

BAD_VALUES = ["abc", "nan", "inf", "-inf", "-1", "0", "1e999", "", "1.5"]


def commands() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """(command words, its parser) for every leaf command."""
    found = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not sub:
            found.append((words, parser))
            return
        for name, child in sub[0].choices.items():
            walk(child, [*words, name])

    walk(build_parser(), [])
    return found


def options(typed: bool) -> list[tuple[list[str], str]]:
    """(command, option) for every option taking a value; ``typed``: those with a type or choices."""
    out = []
    for words, parser in commands():
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._HelpAction):
                if typed == (action.type is not None or action.choices is not None):
                    out.append((words, action.option_strings[0]))
    return out


TYPED = options(typed=True)
PATHS = [(words, flag) for words, flag in options(typed=False)
         if flag in ("--output", "--plots", "--corpus", "--data-dir", "--tokenizer-dir", "--out", "--from-file")]


def test_the_probe_finds_the_flags():
    found = {(" ".join(words), flag) for words, flag in TYPED + PATHS}
    assert {("evaluate", "--iw-samples"), ("sample", "--temperature"), ("interpolate", "--steps"),
            ("data generate", "--train"), ("evaluate", "--output"), ("data prepare", "--tokenizer-dir")} <= found


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return save_export(tiny_model(word_tokenizer()), tmp_path_factory.mktemp("flags") / "export")


def argv(words: list[str], export: Path, tmp_path: Path) -> list[str]:
    """The command with harmless positionals and options, so that only the probed flag can fail."""
    positional = {"evaluate": [export, "--corpus", "synthetic", "--max-sentences", "2", "--iw-samples", "2",
                               "--no-progress"],
                  "sample": [export, "-n", "1", "--max-length", "3"],
                  "interpolate": [export, "a", "b", "--max-length", "3"],
                  "reconstruct": [export, tmp_path / "in.txt", "--max-length", "3"],
                  "train": ["quickstart", f"output_dir={tmp_path / 'run'}", "train.max_steps=1"],
                  "push": [export, "tester/x"],
                  "data stats": ["synthetic"], "data download": ["synthetic", "--data-dir", tmp_path / "dl"],
                  "data verify": ["ptb", tmp_path], "data prepare": ["quickstart", "data.max_train_lines=20"],
                  "data generate": ["--out", tmp_path / "gen", "--train", "5", "--valid", "5", "--test", "5"]}
    (tmp_path / "in.txt").write_text("the dog .\n")
    return [*words, *positional.get(" ".join(words), [])]


def assert_one_line_or_success(capsys, args: list) -> int:
    status, _, err = run_cli(capsys, *args)
    errors = [line for line in err if line.startswith("textvae: error")]
    assert status in (0, 2), (args, err)
    assert len(errors) == (status == 2), (args, err)
    return status


@pytest.mark.parametrize("words, flag", TYPED, ids=[f"{' '.join(w)} {f}" for w, f in TYPED])
def test_every_typed_flag_refuses_wrong_values_before_it_runs(words, flag, export, tmp_path, capsys, monkeypatch):
    """A value the flag's type rejects stops the command at parse time; one it accepts (an int
    seed of -1) runs the command, which must then succeed or name the problem in one line."""
    monkeypatch.setenv("HF_TOKEN", "")
    action = next(a for w, parser in commands() if w == words for a in parser._actions if flag in a.option_strings)
    for bad in BAD_VALUES:
        args = [*argv(words, export, tmp_path), flag, bad]
        status = assert_one_line_or_success(capsys, args)
        # Not a number, or not finite: never accepted; any other value the flag's own type refuses
        # (1.5 for an int flag, 0 for a positive one) is refused too.
        if flag != "--token" and (bad in ("abc", "nan", "inf", "-inf", "1e999", "") or not accepts(action, bad)):
            assert status == 2, args


def accepts(action: argparse.Action, value: str) -> bool:
    """Whether the flag's own type (not the command) takes ``value``."""
    try:
        parsed = action.type(value) if action.type is not None else value
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return False
    return action.choices is None or parsed in action.choices


KINDS = {"file": lambda t: t / "a-file", "directory": lambda t: t / "a-dir", "under a file": lambda t: t / "a-file" / "x",
         "unwritable": lambda t: Path("/sys/textvae-probe")}


@pytest.mark.parametrize("words, flag", PATHS, ids=[f"{' '.join(w)} {f}" for w, f in PATHS])
@pytest.mark.parametrize("kind", KINDS)
def test_every_path_flag_is_used_or_refused_in_one_line(words, flag, kind, export, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x\n")
    (tmp_path / "a-dir").mkdir()
    value = KINDS[kind](tmp_path)
    if kind == "unwritable" and not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    if (words[0], flag, kind) in (("evaluate", "--plots", "directory"),):
        pytest.skip("a usable value: the evaluation would run, slowly")
    status = assert_one_line_or_success(capsys, [*argv(words, export, tmp_path), flag, value])
    writes = flag in ("--output", "--plots", "--tokenizer-dir", "--out")
    if kind in ("under a file", "unwritable") and writes:
        assert status == 2
