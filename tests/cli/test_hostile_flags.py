"""Every flag of every command given a value of the wrong type or out of range, and every flag that
names a path given a file, a directory, a path under a file or an unwritable one: the command
runs, or says what is wrong in one line with exit status 2. Never a traceback.

Every integer flag given numbers past any bound (1e9, 10**30, 2**64, -1) and every float flag
extremes (1e308, 1e-308): refused by the flag's own type, in one line naming it, or used with a
meaningful result. Counts that allocate are held to the machine's memory (shrunk here).

The flags are found by walking the parser, so a flag added later is probed too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from tests.helpers_models import offline_and_quiet, run_cli, save_export, tiny_model, word_tokenizer  # noqa: F401
from textvae.cli import build_parser
from textvae.models import generation, memory, modeling_textvae
from textvae.models.latents import ATTRIBUTES_FILE, AttributeVectors
from textvae.schema import SEED_MAX

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
    """A tiny export with attribute vectors (``tense``), so that ``edit`` runs too."""
    path = save_export(tiny_model(word_tokenizer()), tmp_path_factory.mktemp("flags") / "export")
    codes = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    AttributeVectors.fit(codes, {"tense": ["past"] * 10 + ["present"] * 10}).save(path / ATTRIBUTES_FILE)
    return path


def argv(words: list[str], export: Path, tmp_path: Path) -> list[str]:
    """The command with harmless positionals and options, so that only the probed flag can fail."""
    positional = {"evaluate": [export, "--corpus", "synthetic", "--max-sentences", "2", "--iw-samples", "2",
                               "--no-progress"],
                  "sample": [export, "-n", "1", "--max-length", "3"],
                  "interpolate": [export, "a", "b", "--max-length", "3"],
                  "reconstruct": [export, tmp_path / "in.txt", "--max-length", "3"],
                  "edit": [export, "the dog .", "--set", "tense=past", "--max-length", "3"],
                  "analogy": [export, "a", "b", "c", "--max-length", "3"],
                  "encode": [export, tmp_path / "in.txt", "-o", tmp_path / "codes.npy"],
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
    action = action_of(words, flag)
    for bad in BAD_VALUES:
        args = [*argv(words, export, tmp_path), flag, bad]
        status = assert_one_line_or_success(capsys, args)
        # Not a number, or not finite: never accepted; any other value the flag's own type refuses
        # (1.5 for an int flag, 0 for a positive one) is refused too.
        if flag != "--token" and (bad in ("abc", "nan", "inf", "-inf", "1e999", "") or not accepts(action, bad)):
            assert status == 2, args


def action_of(words: list[str], flag: str) -> argparse.Action:
    return next(a for w, parser in commands() if w == words for a in parser._actions if flag in a.option_strings)


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


# --------------------------------------------------------------------------- numbers without bounds


def parsed_type(action: argparse.Action) -> type | None:
    """``int`` or ``float`` when the flag's type turns small numbers into one, else None."""
    for text in ("1", "2", "8", "0.5"):
        try:
            value = action.type(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            continue
        return type(value) if type(value) in (int, float) else None
    return None


INT_FLAGS = [(w, f) for w, f in TYPED if parsed_type(action_of(w, f)) is int]
FLOAT_FLAGS = [(w, f) for w, f in TYPED if parsed_type(action_of(w, f)) is float]
SEED_FLAGS = [(w, f) for w, f in INT_FLAGS if f == "--seed"]
HOSTILE_INTS = ["1e9", str(10**30), str(2**64), "-1"]
EXTREME_FLOATS = ["1e308", "1e-308"]
GENERATING = {"sample", "interpolate", "reconstruct", "edit", "analogy"}


def test_the_probe_finds_the_numeric_flags():
    ints = {(" ".join(w), f) for w, f in INT_FLAGS}
    floats = {(" ".join(w), f) for w, f in FLOAT_FLAGS}
    assert {("sample", "-n"), ("sample", "--seed"), ("sample", "--max-length"), ("interpolate", "--steps"),
            ("edit", "--beam-size"), ("evaluate", "--iw-samples"), ("evaluate", "--max-sentences"),
            ("encode", "--batch-size"), ("attributes", "--min-count"), ("data generate", "--train"),
            ("data generate", "--seed")} <= ints
    assert {("edit", "--strength"), ("sample", "--temperature"), ("sample", "--repetition-penalty"),
            ("sample", "--top-p"), ("evaluate", "--delta")} <= floats
    assert len(SEED_FLAGS) == 8  # five decoding commands, encode, evaluate, data generate


def runnable(words: list[str], export: Path, tmp_path: Path) -> list:
    """:func:`argv` with sentences enough for ``evaluate`` to finish (its factor probes need 4)."""
    return [*argv(words, export, tmp_path), *(["--max-sentences", "8"] if words == ["evaluate"] else [])]


def assert_refused_naming(capsys, args: list, flag: str) -> str:
    """Exit 2, nothing on stdout, one error line naming ``flag`` (a warning may come before it)."""
    status, out, err = run_cli(capsys, *args)
    errors = [line for line in err if line.startswith("textvae: error: ")]
    assert (status, out, len(errors)) == (2, "", 1) and errors[0] == err[-1], (args, err)
    assert flag in errors[0], (args, err)
    return errors[0]


@pytest.mark.parametrize("words, flag", INT_FLAGS, ids=[f"{' '.join(w)} {f}" for w, f in INT_FLAGS])
def test_every_int_flag_refuses_numbers_past_its_bound(words, flag, export, tmp_path, capsys):
    """Refused by the flag's own type -- before any model loads or memory is asked for -- and by
    the command in one line naming the flag: never an overflow or an out-of-memory traceback."""
    action = action_of(words, flag)
    for value in HOSTILE_INTS:
        assert not accepts(action, value), (flag, value)
        assert_refused_naming(capsys, [*argv(words, export, tmp_path), flag, value], f"argument {flag}: ")


@pytest.mark.parametrize("words, flag", SEED_FLAGS, ids=[" ".join(w) for w, _ in SEED_FLAGS])
def test_the_largest_seed_runs_every_command(words, flag, export, tmp_path, capsys):
    """2**32 - 1 (numpy's largest, so accelerate's) is a seed every consumer takes, ``+ 1`` included."""
    status, _, err = run_cli(capsys, *runnable(words, export, tmp_path), flag, SEED_MAX)
    assert status == 0, err
    assert not accepts(action_of(words, flag), str(SEED_MAX + 1))


@pytest.mark.parametrize("words, flag", FLOAT_FLAGS, ids=[f"{' '.join(w)} {f}" for w, f in FLOAT_FLAGS])
def test_every_float_flag_refuses_extremes_or_gives_a_meaningful_result(words, flag, export, tmp_path, capsys):
    """A value past the flag's bound is refused in one line naming it; one it takes runs, and a
    generating command prints a sentence on every line (not the empty lines of overflowed codes)."""
    action = action_of(words, flag)
    for value in EXTREME_FLOATS:
        args = [*runnable(words, export, tmp_path), flag, value]
        if not accepts(action, value):
            assert_refused_naming(capsys, args, f"argument {flag}: ")
            continue
        status, out, err = run_cli(capsys, *args)
        if status == 2:  # a command-level refusal (an option of another strategy): still named
            assert len(err) == 1 and flag in err[0], (args, err)
        else:
            assert status == 0, (args, err)
            assert words[0] not in GENERATING or all(line.strip() for line in out.splitlines()), (args, out)


def test_huge_edit_strength_and_tiny_temperature_are_refused(export, tmp_path, capsys):
    """The probe's cases: an edit to 1e308 printed an empty line with exit 0; a temperature of
    1e-300 failed in torch.multinomial."""
    line = assert_refused_naming(capsys, [*argv(["edit"], export, tmp_path), "--strength", "1e308"], "--strength")
    assert line == "textvae: error: edit: argument --strength: must be at most 1000, got 1e308 (see --help)"
    args = [*argv(["sample"], export, tmp_path), "--decode", "sample", "--temperature", "1e-300"]
    assert assert_refused_naming(capsys, args, "--temperature").endswith("must be at least 0.001, got 1e-300 (see --help)")


@pytest.fixture
def memory_of(monkeypatch):
    """Pretend the machine has ``size`` bytes for one call, once the export is loaded (its weights,
    checked against the whole budget before it is built, are what the machine really holds)."""

    def shrink(size: int) -> None:
        monkeypatch.setattr(modeling_textvae, "require_weight_memory", lambda config, source: None)
        monkeypatch.setattr(memory, "memory_budget", lambda device: size)
        monkeypatch.setattr(generation, "memory_budget", lambda device: size)

    return shrink


def test_decoding_splits_its_rows_to_fit_memory(export, tmp_path, capsys, memory_of, monkeypatch):
    """With room for two rows a call, 5 samples take 3 generate calls and decode as in one."""
    args = ["sample", export, "-n", "5", "--max-length", "3"]
    whole = run_cli(capsys, *args)
    calls = []
    original = generation.TextGenerationMixin.rows_per_generate
    monkeypatch.setattr(generation.TextGenerationMixin, "rows_per_generate",
                        lambda self, *a: calls.append(original(self, *a)) or calls[-1])
    memory_of(2 * tiny_model(word_tokenizer()).decode_bytes_per_row(3))
    split = run_cli(capsys, *args)
    assert calls == [2] and split == whole and len(whole[1].splitlines()) == 5


@pytest.mark.parametrize("words, extra, flag", [
    (["sample"], ["--max-length", "4096", "--decode", "beam", "--beam-size", "64"], "--max-length"),
    (["evaluate"], ["--iw-samples", "100000"], "--iw-samples"),
])
def test_a_count_that_cannot_fit_in_memory_is_refused_before_it_allocates(words, extra, flag, export, tmp_path,
                                                                         capsys, memory_of):
    memory_of(1_000_000)
    line = assert_refused_naming(capsys, [*argv(words, export, tmp_path), *extra], f"textvae: error: {flag}: needs about")
    assert "more than the 977 KiB available on cpu (at most " in line


def test_an_evaluation_batch_whose_logits_cannot_fit_names_batch_size(export, tmp_path, capsys, memory_of):
    memory_of(1000)
    line = assert_refused_naming(capsys, argv(["evaluate"], export, tmp_path), "textvae: error: --batch-size: needs")
    assert line.endswith("(at most 0 sentences fit)")
