from pathlib import Path

import pytest

from tests.data.conftest import assert_one_line_error
from textvae.data.reading import clean_lines, read_lines
from textvae.errors import TextVAEError


def test_blank_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(" a b \n\n   \nc d\n\n", encoding="utf-8")
    lines, report = read_lines(path)
    assert lines == ["a b", "c d"]
    assert (report.lines_read, report.blank_skipped) == (2, 3)


def test_windows_line_endings_bom_and_missing_final_newline(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffa b\r\nc d".encode())
    assert read_lines(path)[0] == ["a b", "c d"]


def test_undecodable_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(TextVAEError, match=r"bad\.txt:3: not valid UTF-8 \(byte ff\)"):
        read_lines(path)


@pytest.mark.parametrize("content", [b"", b"\n \n\t\n"])
def test_file_without_sentences_is_an_error(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(TextVAEError, match="empty.txt: no sentences"):
        read_lines(path)


def test_missing_file_and_directory_are_errors(tmp_path):
    with pytest.raises(TextVAEError, match="nope.txt: no such file"):
        read_lines(tmp_path / "nope.txt")
    with pytest.raises(TextVAEError, match="is a directory"):
        read_lines(tmp_path)


def test_clean_lines_treats_none_as_blank():
    lines, report = clean_lines(["x", None, " ", "y "], "col")
    assert lines == ["x", "y"] and report.blank_skipped == 2 and report.source == "col"


def test_cli_reports_undecodable_line(cli, tmp_path: Path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\n\xc3\x28 broken\n")
    rc, _, err = cli("data", "stats", path)
    assert_one_line_error(rc, err, f"{path}:2:", "not valid UTF-8")


def test_cli_reports_empty_file(cli, tmp_path: Path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    rc, _, err = cli("data", "stats", path)
    assert_one_line_error(rc, err, str(path), "no sentences")


def test_cli_counts_blank_lines_without_failing(cli, tmp_path: Path):
    path = tmp_path / "gaps.txt"
    path.write_text("a b\n\nc\n\n\nd e f\n", encoding="utf-8")
    rc, out, err = cli("data", "stats", path)
    assert rc == 0 and err == ""
    row = next(line for line in out.splitlines() if line.startswith("gaps.txt"))
    assert row.split()[1:] == ["3", "6", "3"]  # lines, tokens, blank
