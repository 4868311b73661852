from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.data.conftest import assert_one_line_error
from textvae.data.reading import SentenceStream, clean_lines, file_chunks, read_lines
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


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_every_line_ending_ends_a_line(tmp_path, ending):
    path = tmp_path / "t.txt"
    path.write_bytes(ending.join(["a b", "", "c d", "e"]).encode() + ending.encode())
    lines, report = read_lines(path)
    assert lines == ["a b", "c d", "e"] and report.blank_skipped == 1


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.text(alphabet="ab \t\u00e9", max_size=6), max_size=12),
       endings=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=12, max_size=12),
       final=st.booleans(), bom=st.booleans(), chunk=st.integers(1, 9))
def test_chunks_of_any_size_read_what_one_chunk_reads(tmp_path_factory, lines, endings, final, bom, chunk):
    """A chunk boundary may fall anywhere, between the CR and LF of a CRLF too."""
    text = "".join(line + ending for line, ending in zip(lines, endings[: len(lines)], strict=True))
    if lines and not final:  # no break after the last line
        text = text[: -len(endings[len(lines) - 1])]
    path = tmp_path_factory.mktemp("chunks") / "t.txt"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    expected = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if expected[-1] == "":
        expected.pop()
    assert [line for piece in file_chunks(path) for line in piece] == expected
    assert [line for piece in file_chunks(path, chunk_bytes=chunk) for line in piece] == expected


def test_a_bad_byte_far_into_the_file_names_its_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\r\n" * 50 + b"ok\rbad \xff\n" + b"more\n" * 10)
    with pytest.raises(TextVAEError, match=r"bad\.txt:52: not valid UTF-8 \(byte ff\)"):
        list(file_chunks(path, chunk_bytes=16))


def test_a_stream_with_a_limit_yields_the_head_and_counts_everything(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a\n\nb\nc\n\nd\n", encoding="utf-8")
    stream = SentenceStream.from_file(path, limit=2)
    chunks = list(stream)
    assert [s for sentences, _ in chunks for s in sentences] == ["a", "b"]
    assert [n for _, numbers in chunks for n in numbers.tolist()] == [1, 3]
    assert (stream.lines_read, stream.blank_skipped) == (4, 2)
