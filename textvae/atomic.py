"""Write files and directories so that a crash leaves the old version or the new one, never half.

``tempfile`` creates private files (0600) and directories (0700); what we rename into
place gets the permissions an ordinary ``open``/``mkdir`` would have given it. A target
that cannot be written (a file where a directory should be, a read-only or full disk) is
one :class:`~textvae.errors.TextVAEError` naming the path, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from textvae.errors import TextVAEError


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cannot(path: Path, exc: OSError, doing: str = "write") -> TextVAEError:
    return TextVAEError(f"{path}: cannot {doing} ({exc.strerror or str(exc) or type(exc).__name__})")


def ensure_directory(path: str | Path, what: str = "directory") -> Path:
    """``path`` as a writable directory (created with its parents when missing).

    ``what`` names the option that chose it (``output_dir``, ``--plots``) in the error,
    which says whether the path is a file, cannot be created, or cannot be written to.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TextVAEError(f"{what} {path}: is a file, expected a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise TextVAEError(f"{what} {path}: not a writable directory ({exc.strerror or type(exc).__name__})") from None
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


@contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path for a writer that wants a file name (a Parquet or
    NumPy writer); on success it is renamed over ``path``, on an exception removed. An
    ``OSError`` on the way (a full disk, a read-only directory) is one line naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise TextVAEError(f"{path}: is a directory, expected a file")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise _cannot(path, exc) from None
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
    if directory.exists() and not directory.is_dir():
        raise TextVAEError(f"{directory}: is a file, expected a directory")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    except OSError as exc:
        raise _cannot(directory, exc) from None
    os.chmod(tmp, 0o777 & ~current_umask())
    old = tmp.with_name(tmp.name + ".old")
    try:
        try:  # an OSError while the directory is filled or swapped in is a failed write (a full disk)
            yield tmp
            if directory.exists():
                os.replace(directory, old)
            os.replace(tmp, directory)
        except OSError as exc:
            raise _cannot(directory, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def remove_staged(target: str | Path) -> None:
    """Remove what a killed :func:`write_bytes` or :func:`staged_directory` left beside ``target``."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for leftover in target.parent.glob(f".{target.name}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
