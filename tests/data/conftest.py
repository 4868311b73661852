"""Fixtures for the data-layer tests: tiny corpora, the CLI, and a hermetic environment."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from textvae.cli import main

PTB_DIR = Path(os.environ["TEXTVAE_DATA"]) / "ptb"  # read before `hermetic` unsets it (tests/conftest.py)


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory, monkeypatch):
    """No corpus search outside the test's own folders, no network for the Hub."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("TEXTVAE_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture
def ptb_dir() -> Path:
    if not (PTB_DIR / "train.txt").is_file():
        pytest.skip(f"PTB not present at {PTB_DIR}")
    return PTB_DIR


@pytest.fixture
def make_corpus(tmp_path) -> Callable[..., Path]:
    """``make_corpus(train=..., valid=..., test=...)``: text (str) or raw bytes per split."""

    def make(name: str = "corpus", **splits: str | bytes) -> Path:
        directory = tmp_path / name
        directory.mkdir(parents=True)
        defaults = {"train": "a b c\nb c d\n", "valid": "a b\n", "test": "c d\n"}
        for split, content in {**defaults, **splits}.items():
            if content is None:
                continue
            path = directory / f"{split}.txt"
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return directory

    return make


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """Run ``textvae ARGS`` in-process; return (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    """Exit status 2 and a single ``textvae: error:`` line containing every needle."""
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("textvae: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
