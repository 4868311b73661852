import errno
import hashlib
import io
import json
import multiprocessing
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from textvae.data import cache
from textvae.data.cache import CacheCorrupt, file_fingerprint, get_or_build, open_entry
from textvae.errors import TextVAEError

INPUTS = {"what": "squares", "n": 10}


def squares(writer, calls: list | None = None) -> dict:
    """A builder: ``x`` in two chunks, a 2-column array, an empty one and a plain file."""
    if calls is not None:
        calls.append(1)
    writer.append("x", np.arange(4, dtype=np.int32) ** 2)
    writer.append("x", np.arange(4, 10, dtype=np.int32) ** 2)
    writer.append("pairs", np.ones((3, 2), dtype=np.float32))
    writer.append("nothing", np.empty(0, dtype=np.int64))
    (writer.directory / "notes.txt").write_text("hello\n")
    return {"rows": 10}


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "test").iterdir() if not p.name.endswith(".lock"))


def test_built_once_then_memory_mapped(tmp_path):
    calls = []
    first = get_or_build(tmp_path, "test", INPUTS, lambda w: squares(w, calls))
    again = get_or_build(tmp_path, "test", INPUTS, lambda w: squares(w, calls))
    assert calls == [1] and first.path == again.path and first.path.parent == tmp_path / "test"
    assert first.built_in_s is not None and again.built_in_s is None
    assert "reused" in again.describe() and str(again.path) in again.describe()
    x = again.array("x")
    assert isinstance(x, np.memmap) and x.dtype == np.int32 and x.tolist() == [i * i for i in range(10)]
    assert again.array("pairs").shape == (3, 2) and again.array("nothing").shape == (0,)
    assert (again.path / "notes.txt").read_text() == "hello\n" and again.meta == {"rows": 10}
    assert again.size_bytes == sum(p.stat().st_size for p in again.path.iterdir() if p.name != "manifest.json")
    assert leftovers(tmp_path) == [first.path.name]


def test_other_inputs_give_another_entry(tmp_path):
    a = get_or_build(tmp_path, "test", INPUTS, squares)
    b = get_or_build(tmp_path, "test", {**INPUTS, "n": 11}, squares)
    assert a.path != b.path


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_a_damaged_entry_is_reported_in_one_line_and_rebuilt(tmp_path, damage):
    entry = get_or_build(tmp_path, "test", INPUTS, squares)
    target = entry.path / "x.bin"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-4])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[5] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete":
        target.unlink()
    else:
        (entry.path / "manifest.json").write_text("{not json")
    with pytest.raises(CacheCorrupt):
        open_entry(entry.path)
    warnings, calls = [], []
    rebuilt = get_or_build(tmp_path, "test", INPUTS, lambda w: squares(w, calls), warn=warnings.append)
    assert calls == [1] and len(warnings) == 1 and "\n" not in warnings[0]
    assert str(entry.path) in warnings[0]
    assert rebuilt.array("x").tolist() == [i * i for i in range(10)]
    assert leftovers(tmp_path) == [entry.path.name]


def test_a_failing_build_leaves_nothing(tmp_path):
    def broken(writer):
        squares(writer)
        raise TextVAEError("corpus.txt:3: not valid UTF-8")

    with pytest.raises(TextVAEError, match="corpus.txt:3"):
        get_or_build(tmp_path, "test", INPUTS, broken)
    assert leftovers(tmp_path) == []


OS_ERRORS = [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
             errno.ENAMETOOLONG]


def rust_worded(code: int) -> Exception:
    """How tokenizers and safetensors report an OS error: an exception of their own."""
    return Exception(f"I/O error: {os.strerror(code)} (os error {code})")


@pytest.mark.parametrize("where", ["array write", "file write (Rust wording)"])
@pytest.mark.parametrize("code", OS_ERRORS, ids=errno.errorcode.get)
def test_every_os_error_while_building_is_one_line_and_leaves_no_usable_entry(tmp_path, monkeypatch, code, where):
    real_open = Path.open

    def failing_open(self, mode="r", *args, **kwargs):  # the array file's writes fail
        if self.suffix == ".bin" and "w" in mode:
            raise OSError(code, os.strerror(code))
        return real_open(self, mode, *args, **kwargs)

    def failing_build(writer):  # a library saving into the entry fails
        squares(writer)
        raise rust_worded(code)

    if where == "array write":
        monkeypatch.setattr(Path, "open", failing_open)
    with pytest.raises(TextVAEError) as info:
        get_or_build(tmp_path, "test", INPUTS, failing_build if where != "array write" else squares)
    assert str(info.value) == (f"{tmp_path / 'test'}: cannot build a test cache entry there ({os.strerror(code)}); "
                               "nothing was kept (free space, or set data.cache_dir or $TEXTVAE_CACHE to a writable "
                               "directory)")
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    assert get_or_build(tmp_path, "test", INPUTS, squares).array("x")[3] == 9


def test_a_read_only_cache_still_opens_its_entries(tmp_path, monkeypatch):
    built = get_or_build(tmp_path, "test", INPUTS, squares)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # the lock file cannot be created or opened for writing
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert get_or_build(tmp_path, "test", INPUTS, squares).path == built.path


def test_an_unwritable_root_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TextVAEError, match="cannot create the cache there"):
        get_or_build(blocker / "cache", "test", INPUTS, squares)


def test_killed_builders_leave_temporary_folders_that_the_next_build_removes(tmp_path):
    entry = get_or_build(tmp_path, "test", INPUTS, squares)
    stale = entry.path.parent / f".{entry.path.name}.abc.tmp"
    stale.mkdir()
    (entry.path / "x.bin").unlink()
    get_or_build(tmp_path, "test", INPUTS, squares, warn=lambda _: None)
    assert not stale.exists()


def test_losing_the_race_without_a_lock_keeps_the_winners_copy(tmp_path, monkeypatch):
    """Where flock is unavailable two builders race; the second rename fails and its copy goes."""
    monkeypatch.setattr(cache, "os_lock", lambda path: nullcontext(False))
    calls = []

    def slow(writer):  # another process finishes the same entry while this one builds
        if not calls:
            calls.append("outer")
            winner = get_or_build(tmp_path, "test", INPUTS, lambda w: squares(w, calls))
            calls.append(winner.path)
        return squares(writer)

    entry = get_or_build(tmp_path, "test", INPUTS, slow)
    assert calls[-1] == entry.path and leftovers(tmp_path) == [entry.path.name]
    assert entry.array("x")[-1] == 81


def _build_in_process(root: str, queue) -> None:
    import time

    def build(writer):
        queue.put(os.getpid())
        time.sleep(0.5)
        return squares(writer)

    queue.put(str(get_or_build(Path(root), "test", INPUTS, build).path))


def test_two_processes_build_one_copy(tmp_path):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_build_in_process, args=(str(tmp_path), queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    results = [queue.get(timeout=5) for _ in range(queue.qsize())]
    builds = [r for r in results if isinstance(r, int)]
    paths = {r for r in results if isinstance(r, str)}
    assert len(builds) == 1 and len(paths) == 1  # one built, the other waited and opened it
    assert leftovers(tmp_path) == [Path(paths.pop()).name]


def edit_keeping_size_and_mtime(path: Path, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (as long) in place, then put the modification time back,
    as ``touch -r``, ``cp -p`` or a careful editor can."""
    stat = path.stat()
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    with path.open("r+b") as handle:  # in place: the same inode
        handle.write(data.replace(old, new, 1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


@pytest.fixture
def settle(monkeypatch):
    """Files count as settled 50 ms after their last change instead of 10 s; calling this waits that long."""
    monkeypatch.setattr(cache, "SETTLED_NS", 50_000_000)
    return lambda: time.sleep(0.1)


@pytest.fixture
def hashes(monkeypatch) -> list[Path]:
    """The files whose every byte was read to fingerprint them."""
    read, real = [], cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda path: read.append(Path(path)) or real(path))
    return read


@pytest.mark.parametrize("remembered", [False, True], ids=["just written", "hash remembered"])
def test_an_edit_keeping_size_and_mtime_changes_the_fingerprint(tmp_path, settle, hashes, remembered):
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * (100 << 10) + b"dog" + b"a" * (3 << 20))  # 100 KiB in: where a sampled key did not look
    if remembered:
        settle()
    before = file_fingerprint(path, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("fingerprints/*.json")) if remembered else not (tmp_path / "cache").exists()
    assert file_fingerprint(path, tmp_path / "cache") == before
    edit_keeping_size_and_mtime(path, b"dog", b"cow")
    after = file_fingerprint(path, tmp_path / "cache")
    assert after["size"] == before["size"] and after["sha256"] != before["sha256"]
    assert after["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_remembered_hash_is_read_back_while_the_file_is_unchanged(tmp_path, settle, hashes):
    path = tmp_path / "train.txt"
    path.write_text("a b c\n" * 1000)
    settle()
    first = file_fingerprint(path, tmp_path)
    assert file_fingerprint(path, tmp_path) == first and hashes == [path]  # the second read it back
    os.utime(path)  # touched: the status changed, the bytes did not
    assert file_fingerprint(path, tmp_path) == first and hashes == [path, path]  # hashed again, same key


def test_a_file_changed_within_the_settling_time_is_hashed_every_time(tmp_path, hashes):
    path = tmp_path / "train.txt"
    path.write_text("a b c\n")
    file_fingerprint(path, tmp_path)
    file_fingerprint(path, tmp_path)
    assert hashes == [path, path] and not (tmp_path / cache.FINGERPRINTS).exists()


@pytest.mark.parametrize("remembered", [False, True], ids=["just written", "hash remembered"])
def test_a_corpus_edited_in_place_with_size_and_mtime_kept_is_tokenised_again(make_corpus, tmp_path, settle,
                                                                             remembered):
    from textvae.data.config import DataConfig
    from textvae.data.pipeline import prepare_data

    padding = ("x" * 2000 + "\n") * 50  # 4 MB of text; the edit 100 KB in, where a sampled key did not look
    corpus = make_corpus(train=padding + "the dog ran\n" + padding * 40)
    if remembered:
        settle()
    cfg = DataConfig(corpus=str(corpus), cache_dir=str(tmp_path / "cache"))
    first = prepare_data(cfg, splits=("train",), progress=False)
    edit_keeping_size_and_mtime(corpus / "train.txt", b"the dog ran", b"the cow ran")
    again = prepare_data(cfg, splits=("train",), progress=False)
    assert again.splits["train"].cache.path != first.splits["train"].cache.path
    assert again.splits["train"].cache.built_in_s is not None and "cow" in again.tokenizer.get_vocab()


def test_a_disk_error_while_reading_a_corpus_is_one_line_naming_it(tmp_path, monkeypatch):
    from textvae.data import reading

    path = tmp_path / "train.txt"
    path.write_text("a b\n")

    class FailingFile(io.BytesIO):
        def read(self, size=-1):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(reading, "open_text_file", lambda _: FailingFile())
    with pytest.raises(TextVAEError) as info:
        list(reading.file_chunks(path))
    assert str(info.value) == f"{path}: cannot read (Input/output error)"
    with pytest.raises(TextVAEError) as info:  # while a cache entry is built from it: still the corpus's failure
        get_or_build(tmp_path / "cache", "test", INPUTS, lambda writer: list(reading.file_chunks(path)))
    assert str(info.value) == f"{path}: cannot read (Input/output error)"


def test_cache_root_prefers_the_recipe_key_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTVAE_CACHE", str(tmp_path / "env"))
    assert cache.cache_root(str(tmp_path / "key")) == tmp_path / "key"
    assert cache.cache_root() == tmp_path / "env"
    monkeypatch.delenv("TEXTVAE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_root() == tmp_path / ".cache" / "textvae"


def test_the_manifest_records_inputs_arrays_and_hashes(tmp_path):
    entry = get_or_build(tmp_path, "test", INPUTS, squares)
    manifest = json.loads((entry.path / "manifest.json").read_text())
    assert manifest["inputs"] == INPUTS
    assert manifest["arrays"]["x"] == {"file": "x.bin", "dtype": "<i4", "shape": [10]}
    assert set(manifest["files"]) == {"x.bin", "pairs.bin", "nothing.bin", "notes.txt"}


def test_rows_are_read_by_position_like_the_mapping(tmp_path):
    import pickle

    entry = get_or_build(tmp_path, "test", INPUTS, squares)
    rows, mapped = entry.rows("x"), entry.array("x")
    assert len(rows) == 10 and rows[3] == 9 and rows[-1] == 81
    assert rows[2:5].tolist() == mapped[2:5].tolist() and rows[:].tolist() == mapped.tolist()
    assert rows[7:7].shape == (0,) and entry.rows("pairs")[1:3].shape == (2, 2)
    copy = pickle.loads(pickle.dumps(rows))  # what a DataLoader worker receives
    assert copy[4] == 16
    with pytest.raises(IndexError):
        rows[10]
    (entry.path / "x.bin").write_bytes(b"\0" * 8)  # cut short under a reader
    with pytest.raises(CacheCorrupt, match="shorter than its manifest says"):
        entry.rows("x")[0:10]
