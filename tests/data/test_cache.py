import errno
import json
import multiprocessing
import os
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


def test_a_full_disk_is_one_line_and_leaves_no_usable_entry(tmp_path, monkeypatch):
    real = cache.EntryWriter.append

    def append(self, name, values):
        if name == "pairs":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, name, values)

    monkeypatch.setattr(cache.EntryWriter, "append", append)
    with pytest.raises(TextVAEError, match=r"no space left on the device while building a test cache entry; "
                                           r"nothing was kept") as info:
        get_or_build(tmp_path, "test", INPUTS, squares)
    assert "\n" not in str(info.value)
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(cache.EntryWriter, "append", real)
    assert get_or_build(tmp_path, "test", INPUTS, squares).array("x")[3] == 9


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
    monkeypatch.setattr(cache, "_locked", lambda path: nullcontext(False))
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


def test_file_fingerprint_sees_same_size_edits_with_the_time_put_back(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * (3 << 20))
    stat = path.stat()
    before = file_fingerprint(path)
    assert file_fingerprint(path) == before
    data = bytearray(path.read_bytes())
    data[-1:] = b"b"  # the last block is always sampled
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = file_fingerprint(path)
    assert after["size"] == before["size"] and after["mtime_ns"] == before["mtime_ns"]
    assert after["sampled_sha256"] != before["sampled_sha256"]
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert file_fingerprint(path)["mtime_ns"] != after["mtime_ns"]


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
