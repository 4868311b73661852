"""The ``textvae data`` commands as users run them: exit status 2 and one line per mistake."""

import subprocess
import sys

from tests.data.conftest import assert_one_line_error


def test_stats_of_a_registered_name(cli):
    rc, out, _ = cli("data", "stats", "synthetic")
    assert rc == 0
    assert out.splitlines()[2].split() == ["train", "20,000", "190,170", "0"]
    assert "word types (train): 172" in out


def test_stats_of_a_corpus_with_a_missing_split(cli, make_corpus):
    d = make_corpus(test=None)
    rc, _, err = cli("data", "stats", d)
    assert_one_line_error(rc, err, str(d), "missing the test split")


def test_stats_of_an_unknown_name(cli):
    rc, _, err = cli("data", "stats", "wikitext")
    assert_one_line_error(rc, err, "unknown corpus 'wikitext'", "ptb, yahoo, yelp, snli, synthetic")


def test_stats_of_a_registered_corpus_that_is_not_downloaded(cli, tmp_path):
    rc, _, err = cli("data", "stats", "yahoo", "--data-dir", tmp_path)
    assert_one_line_error(rc, err, "corpus 'yahoo' not found", str(tmp_path), "textvae data download yahoo")


def test_python_dash_m_prints_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\n")
    proc = subprocess.run([sys.executable, "-m", "textvae", "data", "stats", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"textvae: error: {bad}:2: not valid UTF-8 (byte ff); re-encode it as UTF-8"]
