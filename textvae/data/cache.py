"""Built once, opened many times: directories of named arrays, keyed by what they were made from.

Why: a corpus larger than memory is tokenised once; every later run memory-maps the
result instead of reading and encoding the text again. Nothing here knows about tokens,
so anything large and costly to compute can be kept the same way (the hidden states of a
frozen language model, keyed by model, tokenizer and corpus, say).

An entry is the directory ``<root>/<kind>/<key>/``, where ``key`` is a digest of the
JSON ``inputs`` that describe what the entry was made from (settings, and the fingerprint
of each source file, which sees every byte: :func:`file_fingerprint`).
It holds one raw little-endian file per array (``<name>.bin``), any other files the
builder wrote (a tokenizer's JSON), and ``manifest.json``: the inputs, each array's dtype
and shape, each file's size and SHA256, and the builder's own ``meta``.

* **Atomic.** An entry is filled in a private temporary directory beside it and renamed
  into place, so an error, a kill or a full disk leaves nothing under the entry's name.
  Two processes building one key take turns on a lock file, and the second opens what
  the first built (:func:`~textvae.atomic.os_lock`); where the file system has no locks
  both build, the first rename wins and the other copy is discarded.
* **Validated on open.** Every file's size and SHA256 are checked against the manifest
  (hashing runs at about 1.5 GB/s here, 0.4 s for the 10M-sentence PTB cache). A damaged
  entry is reported in one line and rebuilt.
* **Read in place.** :meth:`Entry.array` maps an array read-only (for reading it whole or
  in long runs); :meth:`Entry.rows` reads rows with positioned reads (for gathering
  batches at random). Either way a process holds no more of an array than it reads.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textvae.atomic import OSFailure, current_umask, failures_named, os_lock, reason, write_text
from textvae.errors import TextVAEError

CACHE_ENV = "TEXTVAE_CACHE"
FORMAT = 1
MANIFEST = "manifest.json"
FINGERPRINTS = "fingerprints"  # remembered SHA256s of source files (see file_fingerprint)
SETTLED_NS = 10 * 10**9  # a file unchanged this long has left its file system's clock tick (see status)


class CacheCorrupt(TextVAEError):
    """An entry whose files do not match its manifest (truncated, edited or half-deleted)."""


def cache_root(configured: str | Path | None = None) -> Path:
    """Where entries live: ``configured`` (``data.cache_dir``), else ``$TEXTVAE_CACHE``, else
    ``~/.cache/textvae``."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "textvae"


def digest(inputs: Any) -> str:
    """A short stable digest (128 bits of SHA256) of JSON-serialisable ``inputs``."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_fingerprint(path: str | Path, root: Path | None = None) -> dict[str, Any]:
    """What identifies a file's content: its path, its size and the SHA256 of every byte.

    Hashing reads the whole file: 0.8-1.3 s for the 1.2 GB 10M-sentence corpus from the
    page cache, 2.1 s from disk (``benchmarks/README.md``, "The corpus key"). With
    ``root`` (the cache root) the hash is remembered under ``root/fingerprints``, keyed by
    the file's :func:`status`, and read back (in well under a millisecond) for as long as
    that status is unchanged, which is as long as the bytes are.
    """
    path = Path(path).resolve()
    with failures_named(path, "read"):
        seen = status(path)
        memo = root / FINGERPRINTS / f"{digest(seen)}.json" if root is not None else None
        sha256 = _recall(memo)
        if sha256 is None:
            started = time.time_ns()
            sha256 = sha256_file(path)
            if memo is not None and seen[-1] < started - SETTLED_NS and status(path) == seen:
                _remember(memo, sha256)
    return {"path": str(path), "size": seen[2], "sha256": sha256}


def status(path: Path) -> list[int]:
    """Device, inode, size, modification and change time (ns): unchanged only while the bytes are.

    Why that holds: every change to a file's bytes (a write, a truncation, a write through
    a mapping once flushed) sets its change time ``st_ctime`` to the current time, and so
    does every change of its modification time (``touch``, ``os.utime``), which is how an
    editor or a copy restores an old ``st_mtime``; unlike ``st_mtime``, no system call sets
    ``st_ctime`` back (only resetting the clock or editing the raw disk would). A file
    replaced by another (renamed over it, deleted and written anew) has another inode, or
    the same number with a new change time. The one gap is the file system's clock tick
    (1-10 ms on Linux, 1-2 s on FAT and some network file systems): an edit within the
    tick of the last change can leave ``st_ctime`` as it was. So :func:`file_fingerprint`
    remembers a hash only for a file last changed :data:`SETTLED_NS` before it began
    reading, with the same status after the read as before: any later edit comes after
    that read began and gets a later change time.
    """
    seen = os.stat(path)
    return [seen.st_dev, seen.st_ino, seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns]


def _recall(memo: Path | None) -> str | None:
    """The SHA256 remembered in ``memo``, if a sound one is there."""
    try:
        sha256 = json.loads(memo.read_text(encoding="utf-8"))["sha256"] if memo is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sha256 if isinstance(sha256, str) and len(sha256) == 64 else None


def _remember(memo: Path, sha256: str) -> None:
    """Keep ``sha256`` in ``memo``; a cache folder that cannot take it only costs the next run a hash."""
    with suppress(OSError, TextVAEError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_text(memo, json.dumps({"sha256": sha256}) + "\n")


def sha256_file(path: str | Path) -> str:
    """The SHA256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class EntryWriter:
    """Fills a new entry: arrays grow by :meth:`append`; other files go into :attr:`directory`.

    Each array keeps the dtype and the trailing shape of its first chunk; chunks are
    written as they come (little-endian), so an array never has to fit in memory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._arrays: dict[str, dict[str, Any]] = {}
        self._handles: dict[str, Any] = {}
        self._hashes: dict[str, Any] = {}

    def append(self, name: str, values: np.ndarray) -> None:
        """Add rows to array ``name`` (created by the first call, even with zero rows)."""
        values = np.asarray(values)
        values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        spec = self._arrays.get(name)
        if spec is None:
            spec = self._arrays[name] = {"file": f"{name}.bin", "dtype": values.dtype.str,
                                         "shape": [0, *values.shape[1:]]}
            self._handles[name] = (self.directory / spec["file"]).open("wb")
            self._hashes[name] = hashlib.sha256()
        elif values.dtype.str != spec["dtype"] or list(values.shape[1:]) != spec["shape"][1:]:
            raise ValueError(f"array {name}: chunk {values.dtype.str} {values.shape} does not continue "
                             f"{spec['dtype']} {spec['shape']}")
        data = memoryview(values).cast("B")
        self._handles[name].write(data)
        self._hashes[name].update(data)
        spec["shape"][0] += len(values)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()

    def manifest(self, inputs: Any, meta: dict[str, Any]) -> dict[str, Any]:
        """The manifest of everything written: arrays (hashed as they were written) and files."""
        self.close()
        known = {spec["file"]: self._hashes[name].hexdigest() for name, spec in self._arrays.items()}
        files = {}
        for path in sorted(p for p in self.directory.rglob("*") if p.is_file()):
            relative = path.relative_to(self.directory).as_posix()
            files[relative] = {"size": path.stat().st_size, "sha256": known.get(relative) or sha256_file(path)}
        return {"format": FORMAT, "inputs": inputs, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "arrays": self._arrays, "files": files, "meta": meta}


class ArrayFile:
    """One array of an entry, read with positioned reads (``os.pread``) instead of a mapping.

    Why: reading through a mapping maps 64 KiB around every page it touches (the kernel's
    fault-around), so rows gathered at random from a large memory-mapped array add to the
    process's RSS batch after batch, up to the array's size. Positioned reads leave RSS
    flat, at one system call per slice. Supports ``len``, an int index and contiguous
    slices along the first axis, each returning a new (read-only) array.
    """

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), tuple(shape)
        self._row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:]))
        self._file: Any = None

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, position: int, size: int) -> bytes:
        if self._file is None:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 -- kept open for every read
        if hasattr(os, "pread"):
            return os.pread(self._file.fileno(), size, position)
        self._file.seek(position)  # Windows has no pread
        return self._file.read(size)

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if not isinstance(key, slice):
            index = key + len(self) if key < 0 else key
            if not 0 <= index < len(self):
                raise IndexError(f"row {key} of {len(self)}")
            return self[index : index + 1][0]
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise IndexError("only contiguous slices are read from an array file")
        count = max(stop - start, 0)
        data = self._read(start * self._row_bytes, count * self._row_bytes) if count else b""
        if len(data) != count * self._row_bytes:
            raise CacheCorrupt(f"{self.path}: shorter than its manifest says; delete the entry to rebuild it")
        return np.frombuffer(data, self.dtype).reshape((count, *self.shape[1:]))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}  # a copy in another process opens its own


@dataclass
class Entry:
    """An opened, validated entry."""

    path: Path
    manifest: dict[str, Any]
    built_in_s: float | None = None
    """Seconds this process spent building it; ``None`` when it was already there."""

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest["meta"]

    @property
    def size_bytes(self) -> int:
        return sum(f["size"] for f in self.manifest["files"].values())

    def array(self, name: str) -> np.ndarray:
        """Array ``name``, memory-mapped read-only (an empty array has no file to map): for
        reading whole, or in long sequential runs."""
        spec = self.manifest["arrays"][name]
        shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        if 0 in shape:
            return np.empty(shape, dtype)
        return np.memmap(self.path / spec["file"], dtype=dtype, mode="r", shape=shape)

    def rows(self, name: str) -> ArrayFile:
        """Array ``name`` for reading a few rows at a time, at random (see :class:`ArrayFile`)."""
        spec = self.manifest["arrays"][name]
        return ArrayFile(self.path / spec["file"], np.dtype(spec["dtype"]), tuple(spec["shape"]))

    def describe(self) -> str:
        """``PATH (12.3 MB, built in 4.1 s)`` or ``PATH (12.3 MB, reused)``."""
        how = "reused" if self.built_in_s is None else f"built in {self.built_in_s:.1f} s"
        return f"{self.path} ({self.size_bytes / 1e6:,.1f} MB, {how})"


def open_entry(path: str | Path, *, verify: bool = True) -> Entry:
    """Open the entry at ``path``; raise :class:`CacheCorrupt` naming what does not match.

    Sizes are always checked, SHA256 sums when ``verify`` (reading with ``read``, so the
    bytes never count towards this process's memory).
    """
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CacheCorrupt(f"{path}: unreadable {MANIFEST} ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not {"arrays", "files", "meta"} <= set(manifest):
        raise CacheCorrupt(f"{path}: {MANIFEST} is not a textvae cache manifest of format {FORMAT}")
    for name, expected in manifest["files"].items():
        file = path / name
        size = file.stat().st_size if file.is_file() else None
        if size != expected["size"]:
            found = "missing" if size is None else f"{size:,} bytes"
            raise CacheCorrupt(f"{path}: {name} is {found}, expected {expected['size']:,} bytes")
        if verify and sha256_file(file) != expected["sha256"]:
            raise CacheCorrupt(f"{path}: {name} does not match its SHA256")
    for name, spec in manifest["arrays"].items():
        need = int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
        if manifest["files"].get(spec["file"], {}).get("size") != need:
            raise CacheCorrupt(f"{path}: array {name} needs {need:,} bytes in {spec['file']}")
    return Entry(path, manifest)


def _discard(path: Path) -> None:
    """Move ``path`` out of the way with one rename, then delete it."""
    if not path.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, aside / path.name)
    shutil.rmtree(aside, ignore_errors=True)


def _warn(message: str) -> None:
    print(f"textvae: warning: {message}", file=sys.stderr)


def get_or_build(root: Path, kind: str, inputs: dict[str, Any], build: Callable[[EntryWriter], dict[str, Any]], *,
                 verify: bool = True, warn: Callable[[str], None] = _warn) -> Entry:
    """The entry of ``inputs`` under ``root/kind``: opened if it is there and sound, else built.

    ``build(writer)`` fills the entry through an :class:`EntryWriter` and returns its ``meta``
    (JSON). A damaged entry is reported through ``warn`` in one line and rebuilt. An OS
    error while it is written (a full disk or quota, a file too large, a read-only or
    unwritable folder) raises :class:`~textvae.errors.TextVAEError` in one line naming
    the cache folder, and nothing is kept.
    """
    directory = Path(root) / kind
    key = digest(inputs)
    final = directory / key
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TextVAEError(f"{directory}: cannot create the cache there ({exc.strerror}); set data.cache_dir "
                           f"or ${CACHE_ENV} to a writable directory") from None
    with os_lock(directory / f".{key}.lock") as exclusive:
        if final.exists():
            try:
                return open_entry(final, verify=verify)
            except CacheCorrupt as exc:
                warn(f"damaged cache entry, rebuilding it: {exc}")
                _discard(final)
        if exclusive:  # no one else is building this key: a temporary folder is a killed builder's
            for stale in directory.glob(f".{key}.*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        started = time.perf_counter()
        tmp = None
        try:  # every OS error while the entry is written (a full disk, a file too large) is a failed build
            with failures_named(directory):
                tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=directory))
                writer = EntryWriter(tmp)
                try:
                    manifest = writer.manifest(inputs, build(writer))
                    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
                finally:
                    writer.close()
                os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp made it private
                try:
                    os.rename(tmp, final)
                except OSError as exc:  # another process without the lock got there first: keep its copy
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    return open_entry(final, verify=verify)
        except OSFailure as exc:
            if not exc.path.is_relative_to(directory):  # not the cache's own failure: reading the corpus, say
                raise
            raise TextVAEError(f"{directory}: cannot build a {kind} cache entry there ({reason(exc.error)}); nothing "
                               f"was kept (free space, or set data.cache_dir or ${CACHE_ENV} to a writable "
                               "directory)") from None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    entry = open_entry(final, verify=False)  # just written and hashed
    entry.built_in_s = time.perf_counter() - started
    return entry


def entries(root: Path) -> list[Entry]:
    """Every entry under ``root`` (any kind), opened without hashing; damaged ones are skipped.

    Only directories with a cache manifest count, so other things kept under the same
    root (``~/.cache/textvae/data``, the downloaded corpora) are never listed or cleared.
    """
    found = []
    for manifest in sorted(Path(root).glob(f"*/*/{MANIFEST}")):
        try:
            found.append(open_entry(manifest.parent, verify=False))
        except CacheCorrupt:
            continue
    return found


def clear(root: Path) -> tuple[int, int]:
    """Delete every entry under ``root``; return how many entries and bytes went.

    A process reading an entry keeps its open files (they go when it closes them); one
    building an entry is left alone (its temporary folder is not an entry yet).
    """
    gone = entries(root)
    for entry in gone:
        _discard(entry.path)
    shutil.rmtree(Path(root) / FINGERPRINTS, ignore_errors=True)  # the remembered hashes of source files
    return len(gone), sum(entry.size_bytes for entry in gone)
