import functools
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from tests.data.conftest import PTB_DIR, assert_one_line_error
from textvae.data import corpora
from textvae.data.corpora import (
    CORPORA,
    SPLITS,
    Archive,
    CorpusSpec,
    download,
    resolve_corpus,
    verify,
)
from textvae.errors import TextVAEError

FAKE = {"train": b"a b\nc d\ne f\n", "valid": b"a c\n", "test": b"b d\nd e\n"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (root dir, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def register(monkeypatch, spec: CorpusSpec) -> None:
    monkeypatch.setitem(CORPORA, spec.name, spec)


def serve_files(root: Path, base: str, hashes: bool = True) -> dict:
    for split, data in FAKE.items():
        (root / f"fake.{split}.txt").write_bytes(data)
    return {s: (f"{base}/fake.{s}.txt", sha(FAKE[s]) if hashes else None) for s in SPLITS}


def lines_of(data: dict[str, bytes]) -> dict[str, int]:
    return {s: d.count(b"\n") for s, d in data.items()}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- resolving ---------------------------------------------------------------------------

def test_directory_with_plain_split_names(make_corpus):
    d = make_corpus()
    assert resolve_corpus(d) == {s: d / f"{s}.txt" for s in SPLITS}


def test_directory_with_prefixed_split_names(tmp_path):
    for s in SPLITS:
        (tmp_path / f"ptb.{s}.txt").write_text("x\n")
    assert resolve_corpus(tmp_path)["valid"] == tmp_path / "ptb.valid.txt"


def test_missing_split_is_named(make_corpus):
    d = make_corpus(test=None)
    with pytest.raises(TextVAEError, match=r"missing the test split \(expected test.txt"):
        resolve_corpus(d)
    assert set(resolve_corpus(d, splits=("train", "valid"))) == {"train", "valid"}


def test_unknown_name_lists_known_corpora():
    with pytest.raises(TextVAEError, match="unknown corpus 'wiki' .*known: ptb, yahoo, yelp, snli, synthetic"):
        resolve_corpus("wiki")


def test_missing_directory_path_is_reported_as_such(tmp_path):
    with pytest.raises(TextVAEError, match="corpus directory not found"):
        resolve_corpus(str(tmp_path / "nowhere"))


def test_registered_name_found_in_data_dir_then_env(make_corpus, tmp_path, monkeypatch):
    make_corpus("data/yelp")
    assert resolve_corpus("yelp", tmp_path / "data")["train"] == tmp_path / "data" / "yelp" / "train.txt"
    with pytest.raises(TextVAEError, match="corpus 'yelp' not found in .*textvae data download yelp"):
        resolve_corpus("yelp")
    monkeypatch.setenv("TEXTVAE_DATA", str(tmp_path / "data"))
    assert resolve_corpus("yelp")["test"].parent == tmp_path / "data" / "yelp"


def test_registered_name_is_searched_in_data_dir_env_and_cache_only(make_corpus, tmp_path, monkeypatch):
    make_corpus("shared/data/snli")  # where a checkout's ../shared/data would be: not guessed
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    with pytest.raises(TextVAEError, match="corpus 'snli' not found"):
        resolve_corpus("snli")
    assert corpora.search_dirs("mine") == [Path("mine").resolve(), corpora.cache_dir().resolve()]
    make_corpus("home/.cache/textvae/data/snli")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_corpus("snli")["train"] == tmp_path / "home/.cache/textvae/data/snli/train.txt"


def test_synthetic_resolves_to_the_package_data():
    from importlib.resources import files

    expected = Path(str(files("textvae.data.synthetic_corpus"))) / "train.txt"
    assert resolve_corpus("synthetic")["train"] == expected
    assert expected.read_bytes() == (Path(__file__).parents[2] / "data/synthetic/train.txt").read_bytes()


# -- the registry ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CORPORA))
def test_every_corpus_declares_all_splits_and_a_source(name):
    spec = CORPORA[name]
    assert set(spec.lines) == set(SPLITS)
    if name != "synthetic":
        covered = set(spec.files) | set(spec.archive.members if spec.archive else ())
        assert covered == set(SPLITS)


def test_ptb_registry_matches_the_local_copy():
    if not (PTB_DIR / "SHA256SUMS").is_file():
        pytest.skip("no local PTB")
    sums = dict(reversed(line.split()) for line in (PTB_DIR / "SHA256SUMS").read_text().splitlines())
    for split in SPLITS:
        data = (PTB_DIR / f"{split}.txt").read_bytes()
        assert CORPORA["ptb"].files[split][1] == sums[f"{split}.txt"] == sha(data)
        assert CORPORA["ptb"].lines[split] == data.count(b"\n")


# -- downloading -------------------------------------------------------------------------

def test_download_verifies_and_installs(server, tmp_path, monkeypatch, capsys):
    root, base = server
    register(monkeypatch, CorpusSpec("fake", "test", lines_of(FAKE), files=serve_files(root, base)))
    target = download("fake", tmp_path / "data")
    assert {s: (target / f"{s}.txt").read_bytes() for s in SPLITS} == FAKE
    assert leftovers(tmp_path / "data") == ["fake"]
    assert capsys.readouterr().out.count("SHA256 verified") == 3
    assert resolve_corpus("fake", tmp_path / "data")["valid"] == target / "valid.txt"


def test_checksum_mismatch_writes_nothing(server, tmp_path, monkeypatch):
    root, base = server
    files = serve_files(root, base)
    files["test"] = (files["test"][0], sha(b"something else"))
    register(monkeypatch, CorpusSpec("fake", "test", lines_of(FAKE), files=files))
    with pytest.raises(TextVAEError, match=f"fake/test: SHA256 mismatch \\(expected {sha(b'something else')}"):
        download("fake", tmp_path / "data")
    assert leftovers(tmp_path / "data") == []


def test_line_count_mismatch_writes_nothing(server, tmp_path, monkeypatch):
    root, base = server
    register(monkeypatch, CorpusSpec("fake", "test", {**lines_of(FAKE), "train": 4}, files=serve_files(root, base)))
    with pytest.raises(TextVAEError, match="fake/train: 3 lines, expected 4"):
        download("fake", tmp_path / "data")
    assert leftovers(tmp_path / "data") == []


def test_unpinned_files_print_their_hash(server, tmp_path, monkeypatch, capsys):
    root, base = server
    register(monkeypatch, CorpusSpec("fake", "test", lines_of(FAKE), files=serve_files(root, base, hashes=False)))
    download("fake", tmp_path / "data")
    out = capsys.readouterr().out
    assert f"fake/train: SHA256 {sha(FAKE['train'])} (unpinned" in out


def test_labelled_archive_is_unpacked_without_labels(server, tmp_path, monkeypatch):
    root, base = server
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for split, data in FAKE.items():
            labelled = b"".join(b"%d\t" % i + line + b"\n" for i, line in enumerate(data.splitlines()))
            info = tarfile.TarInfo(f"datasets/fake_data/fake.{split}.txt")
            info.size = len(labelled)
            tar.addfile(info, io.BytesIO(labelled))
    (root / "fake.tar.gz").write_bytes(buffer.getvalue())
    archive = Archive(f"{base}/fake.tar.gz", sha(buffer.getvalue()), {s: f"fake.{s}.txt" for s in SPLITS}, labelled=True)
    register(monkeypatch, CorpusSpec("fake", "test", lines_of(FAKE), archive=archive))
    target = download("fake", tmp_path / "data")
    assert {s: (target / f"{s}.txt").read_bytes() for s in SPLITS} == FAKE
    assert leftovers(tmp_path / "data") == ["fake"]


def test_web_page_instead_of_archive_is_rejected(server, tmp_path, monkeypatch):
    root, base = server
    (root / "page.html").write_text("<html>sign in</html>")
    archive = Archive(f"{base}/page.html", None, {s: f"fake.{s}.txt" for s in SPLITS})
    register(monkeypatch, CorpusSpec("fake", "test", lines_of(FAKE), archive=archive))
    with pytest.raises(TextVAEError, match="not a tar or zip archive"):
        download("fake", tmp_path / "data")
    assert leftovers(tmp_path / "data") == []


def test_failure_midway_keeps_earlier_files_out(server, tmp_path, monkeypatch):
    root, base = server
    files = serve_files(root, base)
    files["test"] = (f"{base}/missing.txt", None)  # train and valid succeed first
    register(monkeypatch, CorpusSpec("fake", "test", lines_of(FAKE), files=files))
    with pytest.raises(TextVAEError, match="cannot download .*missing.txt"):
        download("fake", tmp_path / "data")
    assert leftovers(tmp_path / "data") == []


def test_present_corpus_is_verified_not_fetched_again(make_corpus, tmp_path, monkeypatch, capsys):
    directory = make_corpus("data/fake", **FAKE)
    files = {s: ("http://127.0.0.1:9/x", sha((directory / f"{s}.txt").read_bytes())) for s in SPLITS}
    register(monkeypatch, CorpusSpec("fake", "test", lines_of(FAKE), files=files))
    download("fake", tmp_path / "data")
    out = capsys.readouterr().out
    assert "line counts and SHA256 verified" in out and "already present" in out


def test_a_damaged_present_corpus_is_named(make_corpus, tmp_path, monkeypatch):
    directory = make_corpus("data/fake", **FAKE)
    files = {s: ("http://127.0.0.1:9/x", sha((directory / f"{s}.txt").read_bytes())) for s in SPLITS}
    register(monkeypatch, CorpusSpec("fake", "test", lines_of(FAKE), files=files))
    text = (directory / "valid.txt").read_text()
    (directory / "valid.txt").write_text(text.replace("a", "b", 1))
    with pytest.raises(TextVAEError, match=r"valid.txt: SHA256 .* is not the registered .* for fake/valid"):
        download("fake", tmp_path / "data")
    (directory / "valid.txt").write_text(text + "one more line\n")
    with pytest.raises(TextVAEError, match=r"valid.txt: \d+ lines, expected \d+ for fake/valid"):
        verify("fake", directory)


def test_cli_verify_checks_the_shared_ptb(cli):
    if not (PTB_DIR / "SHA256SUMS").is_file():
        pytest.skip("no local PTB")
    rc, out, err = cli("data", "verify", "ptb", PTB_DIR)
    assert rc == 0 and "ptb: line counts and SHA256 verified" in out


def test_cli_download_without_network_is_one_line(cli, tmp_path, monkeypatch):
    # Port 9 (discard) on loopback refuses connections: the offline case, without DNS.
    register(monkeypatch, CorpusSpec("fake", "test", lines_of(FAKE), files={s: (f"http://127.0.0.1:9/{s}", None) for s in SPLITS}))
    rc, _, err = cli("data", "download", "fake", "--data-dir", tmp_path / "data")
    assert_one_line_error(rc, err, "cannot download http://127.0.0.1:9/train")
    assert leftovers(tmp_path / "data") == []


def test_cli_download_unknown_name(cli, tmp_path):
    rc, _, err = cli("data", "download", "wiki", "--data-dir", tmp_path)
    assert_one_line_error(rc, err, "data download: argument NAME: invalid choice: 'wiki'", "'ptb'", "'synthetic'")


def test_cli_verify_names_only_registered_downloads(cli):
    rc, _, err = cli("data", "verify", "synthetic")
    assert_one_line_error(rc, err, "data verify: argument NAME: invalid choice: 'synthetic'", "'ptb'")
    assert "'synthetic'" not in err.split("choose from")[1]
