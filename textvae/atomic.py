"""Write files and directories so that a crash leaves the old version or the new one, never half.

``tempfile`` creates private files (0600) and directories (0700); what we rename into
place gets the permissions an ordinary ``open``/``mkdir`` would have given it.

Every operating-system error met on the way -- a full disk or quota, a file grown past
the size limit, a read-only or unwritable directory, a name longer than the file system
takes, a file where a directory should be -- is one :class:`OSFailure` naming the path,
never a traceback: :func:`failures_named` is the one place that turns them into it, and
every writer here runs under it. Rust libraries (tokenizers, safetensors) report the same
errors as exceptions of their own worded ``... (os error N)``; :func:`as_os_error` reads
those too. :func:`os_lock` is the one OS lock (filelock's): a training's hold on its
``output_dir`` and a cache entry's builders taking turns.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from textvae.errors import TextVAEError

# A staged sibling is named ``.NAME.<random>`` (``.old`` added while swapping): the name is
# cut to this many bytes so that the sibling of a name the file system takes fits too
# (NAME_MAX is 255 bytes on common file systems).
_STAGED_NAME_BYTES = 200
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def as_os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` that ``exc`` stands for: itself, or the one a Rust library words as
    ``... (os error N)`` in an exception of its own; ``None`` when it stands for none."""
    if isinstance(exc, OSError):
        return exc
    found = None if isinstance(exc, TextVAEError) else _RUST_OS_ERROR.search(str(exc))
    return OSError(int(found[1]), os.strerror(int(found[1]))) if found else None


def reason(exc: OSError) -> str:
    """What went wrong, in the operating system's words (``No space left on device``)."""
    return exc.strerror or str(exc) or type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """``PATH: reason`` (both paths of a rename), or the reason alone when no path came with it."""
    paths = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
    return f"{' -> '.join(paths)}: {reason(exc)}" if paths else reason(exc)


class OSFailure(TextVAEError):
    """An operating-system ``error`` met while writing (reading, deleting) ``path``, as one line."""

    def __init__(self, path: Path, error: OSError, doing: str = "write") -> None:
        super().__init__(f"{path}: cannot {doing} ({reason(error)})")
        self.path, self.error = path, error


@contextmanager
def failures_named(path: str | Path, doing: str = "write") -> Iterator[None]:
    """Run a block that writes (or ``doing``) ``path``: any OS error inside it (see
    :func:`as_os_error`) leaves as one :class:`OSFailure` naming ``path``; others pass unchanged."""
    try:
        yield
    except TextVAEError:
        raise
    except Exception as exc:
        error = as_os_error(exc)
        if error is None:
            raise
        raise OSFailure(Path(path), error, doing) from None


def ensure_directory(path: str | Path, what: str = "directory") -> Path:
    """``path`` as a writable directory (created with its parents when missing).

    ``what`` names the option that chose it (``output_dir``, ``--plots``) in the error,
    which says whether the path is a file, cannot be created, or cannot be written to.
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise TextVAEError(f"{what} {path}: is a file, expected a directory")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise TextVAEError(f"{what} {path}: not a writable directory ({reason(exc)})") from None
    return path


def write_text(path: str | Path, text: str) -> Path:
    """:func:`write_bytes` of ``text`` in UTF-8, line endings as given."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary sibling, then rename it over ``path``."""
    with staged_file(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def _staged_prefix(target: Path) -> str:
    """The name prefix of ``target``'s staged siblings (``.NAME.``, NAME cut to fit)."""
    return f".{os.fsdecode(os.fsencode(target.name)[:_STAGED_NAME_BYTES])}."


@contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path for a writer that wants a file name (a Parquet or
    NumPy writer); on success it is renamed over ``path``, on an exception removed. An
    OS error on the way (a full disk, a read-only directory) is one line naming ``path``."""
    path = Path(path)
    tmp = None
    try:
        with failures_named(path):
            if path.is_dir():
                raise TextVAEError(f"{path}: is a directory, expected a file")
            fd, tmp = tempfile.mkstemp(prefix=_staged_prefix(path), dir=path.parent)
            os.close(fd)
            yield Path(tmp)
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def staged_directory(directory: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling to fill; on success it replaces ``directory``.

    On an exception the temporary directory is removed and ``directory`` is untouched. A
    killed process leaves only a hidden ``.NAME.*`` sibling (:func:`remove_staged` clears it).
    """
    directory = Path(directory)
    if directory.name in ("", ".", "..") or directory.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise TextVAEError(f"'{directory}': the current directory or one above it cannot be replaced; name a new directory")
    tmp = None
    try:
        with failures_named(directory):  # an error while the directory is filled or swapped in is a failed write
            if directory.exists() and not directory.is_dir():
                raise TextVAEError(f"{directory}: is a file, expected a directory")
            directory.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=_staged_prefix(directory), dir=directory.parent))
            os.chmod(tmp, 0o777 & ~current_umask())
            yield tmp
            if directory.exists():
                os.replace(directory, tmp.with_name(tmp.name + ".old"))
            os.replace(tmp, directory)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(tmp.with_name(tmp.name + ".old"), ignore_errors=True)


def remove_path(path: Path) -> None:
    """Delete ``path`` without following links: a link or a file is unlinked (a link's
    target is untouched), a directory removed with what it holds (links inside unlinked)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def remove_staged(target: str | Path) -> None:
    """Remove what a killed :func:`write_bytes` or :func:`staged_directory` left beside ``target``."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    prefix = _staged_prefix(target)
    for leftover in target.parent.iterdir():
        if leftover.name.startswith(prefix):
            with suppress(OSError):  # one that cannot go does no harm: the next write stages beside it
                remove_path(leftover)


class LockHeld(Exception):
    """Another process holds the lock that :func:`os_lock` was asked not to wait for."""


@contextmanager
def os_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an OS lock on ``path`` for the block; yields whether it is held.

    filelock's ``FileLock`` (an ``flock`` on Unix), so a killed holder's lock is released by the
    OS. A file system without locks (some NFS mounts) or a folder where the lock file cannot be
    written (a read-only cache) yields False: the caller goes on unlocked, knowing it. With
    ``wait=False`` a lock another process holds raises :class:`LockHeld` at once. The file stays
    after release, and its content is the holder's to write: removing it would race a process
    waiting on it, and filelock's soft-lock fallback is off, since a marker file that a killed
    process leaves behind would lock the folder for good.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(path, timeout=-1 if wait else 0, thread_local=False, preserve_lock_file=True,
                    fallback_to_soft=False)
    try:
        lock.acquire()
    except Timeout:
        raise LockHeld(str(path)) from None
    except OSError:
        held = False
    else:
        held = True
    try:
        yield held
    finally:
        if held:
            lock.release()
