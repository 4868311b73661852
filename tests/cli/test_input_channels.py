"""The same bytes through every input channel -- a corpus file, standard input, a file given to a
command, a local Hugging Face dataset -- give the same sentences, or the same one-line error.

Line endings of every kind (``\\n``, ``\\r\\n``, a lone ``\\r`` of old Mac files, mixed), a
byte-order mark, a missing final newline, invalid UTF-8, and nothing at all.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from tests.helpers_models import offline_and_quiet, run_cli, save_export, tiny_model, word_tokenizer  # noqa: F401
from textvae.data.reading import hf_split_streams, read_lines
from textvae.errors import TextVAEError

SENTENCES = ["the old dog saw a cat .", "she will not find the boxes .", "a man ran ."]
VALID = {
    "lf": b"the old dog saw a cat .\nshe will not find the boxes .\na man ran .\n",
    "crlf": b"the old dog saw a cat .\r\nshe will not find the boxes .\r\na man ran .\r\n",
    "lone cr": b"the old dog saw a cat .\rshe will not find the boxes .\ra man ran .\r",
    "mixed": b"the old dog saw a cat .\rshe will not find the boxes .\r\na man ran .\n",
    "bom, no final newline": b"\xef\xbb\xbfthe old dog saw a cat .\nshe will not find the boxes .\na man ran .",
    "blank lines": b"\nthe old dog saw a cat .\n\n  \nshe will not find the boxes .\r\n\ra man ran .\n",
}
INVALID = {
    "invalid utf-8 on line 2": (b"the dog .\rthe \xff cat .\n", r":2: not valid UTF-8 \(byte ff\)"),
    "only blank lines": (b"\n \r\n\t\r", "no sentences"),
    "empty": (b"", "no sentences"),
}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return save_export(tiny_model(word_tokenizer()), tmp_path_factory.mktemp("channels") / "export")


def through_file(data: bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    return read_lines(path)[0]


def through_dataset(data: bytes, tmp_path: Path) -> list[str]:
    directory = tmp_path / "dataset"
    directory.mkdir()
    for split in ("train", "validation", "test"):
        (directory / f"{split}.txt").write_bytes(data)
    return list(hf_split_streams(directory, "text", ["train"])["train"].sentences())


def through_command(data: bytes, tmp_path: Path, export: Path, capsys, monkeypatch, stdin: bool) -> list[str]:
    """`textvae reconstruct EXPORT -` (stdin) or `... FILE`: the sources it echoes, or its one error."""
    if stdin:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        source = "-"
    else:
        source = tmp_path / "command.txt"
        source.write_bytes(data)
    status, out, err = run_cli(capsys, "reconstruct", export, source, "--max-length", "3")
    errors = [line for line in err if line.startswith("textvae: error")]
    if status:
        assert status == 2 and len(errors) == 1, err
        raise TextVAEError(errors[0])
    return [line.split("\t")[0] for line in out.splitlines()]


CHANNELS = ["file", "dataset", "stdin", "command file"]


def read(channel: str, data: bytes, tmp_path: Path, export: Path, capsys, monkeypatch) -> list[str]:
    if channel == "file":
        return through_file(data, tmp_path)
    if channel == "dataset":
        return through_dataset(data, tmp_path)
    return through_command(data, tmp_path, export, capsys, monkeypatch, stdin=channel == "stdin")


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("content", VALID)
def test_every_channel_reads_every_line_ending_alike(channel, content, tmp_path, export, capsys, monkeypatch):
    assert read(channel, VALID[content], tmp_path, export, capsys, monkeypatch) == SENTENCES


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("content", INVALID)
def test_every_channel_refuses_bad_input_in_one_line(channel, content, tmp_path, export, capsys, monkeypatch):
    data, pattern = INVALID[content]
    if channel == "dataset" and content.startswith("invalid"):
        pattern = "data.hf_dataset: cannot load .*'utf-8' codec can't decode byte 0xff"  # datasets decodes it
    with pytest.raises(TextVAEError, match=pattern):
        read(channel, data, tmp_path, export, capsys, monkeypatch)
