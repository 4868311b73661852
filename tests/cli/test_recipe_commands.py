"""Commands that take a recipe: shipped names everywhere, overrides wherever they are typed,
hostile YAML, and settings this machine cannot run, each refused in one line."""

from __future__ import annotations

import argparse
import time

import pytest
import torch

from tests.cli.test_hostile_flags import commands
from tests.helpers_models import offline_and_quiet, run_cli  # noqa: F401

RECIPE_ARGUMENTS = ("recipe", "items")  # `train RECIPE`, `data prepare [RECIPE] [KEY=VALUE ...]`


def recipe_commands() -> list[list[str]]:
    return [words for words, parser in commands()
            if any(not a.option_strings and a.dest in RECIPE_ARGUMENTS for a in parser._actions
                   if not isinstance(a, argparse._HelpAction))]


def test_the_recipe_commands_are_found():
    assert {"train", "data prepare"} <= {" ".join(words) for words in recipe_commands()}


@pytest.mark.parametrize("words", recipe_commands(), ids=" ".join)
@pytest.mark.parametrize("name", ["quickstart", "ptb/lstm-invlip", "quickstart.yaml"])
def test_every_recipe_command_takes_a_shipped_recipe_name(words, name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing called quickstart here
    status, _, err = run_cli(capsys, *words, name, "optim.lr=-1")  # fails right after the recipe is read
    assert status == 2 and err == ["textvae: error: recipe key 'optim.lr': must be >= 0, got -1.0"]


def test_overrides_after_a_flag_belong_with_the_others(capsys, tmp_path):
    status, _, err = run_cli(capsys, "train", "quickstart", f"output_dir={tmp_path}", "--resume-inexact",
                             "optim.lr=-1")
    assert status == 2 and err == ["textvae: error: recipe key 'optim.lr': must be >= 0, got -1.0"]
    status, _, err = run_cli(capsys, "train", "quickstart", "--resume", "optim.lr=-1")  # not a checkpoint path
    assert status == 2 and err == ["textvae: error: recipe key 'optim.lr': must be >= 0, got -1.0"]
    status, _, err = run_cli(capsys, "train", "quickstart", "--resume", "--bogus")
    assert status == 2 and len(err) == 1 and "unrecognized arguments: --bogus" in err[0]


def test_a_yaml_alias_bomb_is_refused_at_once_in_a_short_line(capsys, tmp_path):
    lines = ["data:", "  corpus:", "    - &a [x, x, x, x, x, x, x, x, x]"]
    for name, previous in zip("bcdefghij", "abcdefghi", strict=True):  # 9^10 strings once expanded
        lines.append(f"    - &{name} [{', '.join([f'*{previous}'] * 9)}]")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    status, _, err = run_cli(capsys, "train", tmp_path / "bomb.yaml")
    assert time.monotonic() - started < 5
    assert status == 2 and len(err) == 1 and err[0].startswith("textvae: error: recipe key 'data.corpus': expected str")
    assert len(err[0]) < 300


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs these")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_this_cpu_cannot_run_is_refused_in_one_line(precision, capsys, tmp_path):
    status, _, err = run_cli(capsys, "train", "quickstart", f"output_dir={tmp_path / 'run'}",
                             f"train.mixed_precision={precision}")
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"textvae: error: recipe key 'train.mixed_precision': {precision}, but ")
    assert err[0].endswith("no GPU is available: use auto or no")
    assert not (tmp_path / "run").exists()
