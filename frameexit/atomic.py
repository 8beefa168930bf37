"""Atomic file writes: a reader sees the old file or the complete new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO

from .errors import OutputError

TMP_SUFFIX = ".tmp"


def file_mode() -> int:
    """The permission bits ``open(path, 'w')`` would give a new file under the current umask (e.g. 0o644)."""
    # os.umask can only be read by setting it; set it straight back (no thread of ours creates files meanwhile)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def check_writable_dir(path: str | os.PathLike, what: str) -> str:
    """Create directory ``path`` if needed and prove that a file can be written in it, before any work.

    ``what`` names the option it came from (``--out``, ``--cache``) in the
    error. Raises :class:`~frameexit.errors.OutputError`; returns ``path``.
    """
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".frameexit-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"{what} {path} is not a writable directory: {reason}") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path`` to write to; on success it is fsynced and renamed to ``path``.

    For writers that want a file name (h5py). If the body raises, the temporary
    file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TMP_SUFFIX, dir=directory)
    os.close(fd)
    try:
        # mkstemp creates 0600 files; the renamed file must be readable as any other file the user writes
        os.chmod(tmp, file_mode())
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success flush, fsync and rename it to ``path``.

    If the body raises, the temporary file is removed and ``path`` is left as it was.
    """
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()


def fsync_dir(directory: str) -> None:
    # the rename itself is durable only once the directory entry is on disk
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: The lock file of a folder a frameexit command writes (``--out``, FRAMES_DIR).
LOCK_NAME = ".frameexit.lock"


class BusyError(OutputError):
    """Another frameexit process is writing the same folder."""


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike,
    busy: str | None = None,
    lock_name: str = LOCK_NAME,
    error: type[Exception] = BusyError,
) -> Iterator[None]:
    """Hold ``<folder>/<lock_name>`` while writing ``folder``, or raise :class:`BusyError` at once.

    An operating-system lock (``flock``), released when its process dies: a
    killed writer leaves nothing to clean up, and a second writer is told so
    before it touches anything. ``busy`` is the message of that error (default:
    another frameexit command is writing ``folder``), ``error`` its class.
    """
    from filelock import FileLock, Timeout

    folder = os.fspath(folder)
    lock = FileLock(os.path.join(folder, lock_name), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise error(busy or f"another frameexit command is writing {folder}; wait for it to finish") from None
    except OSError as exc:
        raise OutputError(f"cannot lock {folder}: {exc.strerror or type(exc).__name__}") from None
    try:
        yield
    finally:
        lock.release()
