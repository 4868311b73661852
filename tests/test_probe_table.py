"""``tests/PROBE.md`` stays true: each row's tests exist, and every test of the probe files has a row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PROBE_FILES = ["tests/training/test_resume_safety.py", "tests/training/test_recipe_hostile.py",
               "tests/models/test_integrity.py", "tests/cli/test_input_channels.py", "tests/hub/test_hostile.py",
               "tests/cli/test_hostile_flags.py", "tests/cli/test_recipe_commands.py",
               "tests/test_interrupted_writes.py", "tests/training/test_overwrite.py"]


def rows() -> dict[str, list[str]]:
    """Row id -> the ``file::test`` names in its last column."""
    out = {}
    for line in (TESTS / "PROBE.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("id", "---"):
            out[cells[0]] = re.findall(r"`([^`]+::\w+)`", cells[4])
    return out


ROWS = rows()


def defined_tests(path: str) -> set[str]:
    return set(re.findall(r"^def (test_\w+)", (REPO / path).read_text(encoding="utf-8"), flags=re.M))


@pytest.mark.parametrize("row", ROWS)
def test_every_row_names_tests_that_exist(row):
    text = next(line for line in (TESTS / "PROBE.md").read_text().splitlines() if line.startswith(f"| {row} |"))
    if "**open**" in text:
        assert ROWS[row] == [], "an open row names no test"
        return
    assert ROWS[row], f"row {row} names no test"
    for name in ROWS[row]:
        path, test = name.split("::")
        assert test in defined_tests(path), name


def test_every_probe_test_has_a_row():
    named = {name for names in ROWS.values() for name in names}
    missing = [f"{path}::{test}" for path in PROBE_FILES for test in sorted(defined_tests(path))
               if f"{path}::{test}" not in named]
    assert not missing, f"tests without a row in tests/PROBE.md: {missing}"
