"""One exception hierarchy for everything a user can get wrong.

Each class also inherits the matching builtin, so callers that already catch
``ValueError`` or ``FileNotFoundError`` keep working. ``cli.py`` turns any
:class:`FrameExitError` into a one-line ``Error: ...`` message and exit code 1
(:class:`UsageError`: exit code 2, as click's own usage errors), and so any
error a full disk caused (:func:`disk_full_error`); any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator


class FrameExitError(Exception):
    """Base class of every error caused by the user's input or environment."""


class ConfigError(FrameExitError, ValueError):
    """A job file or override names an unknown key or holds a value of the wrong type."""


class DatasetError(FrameExitError, ValueError):
    """An annotation, class-list or split file cannot be used as it is."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file named in the job does not exist."""


class CheckpointError(FrameExitError, ValueError):
    """A checkpoint cannot be loaded or does not fit the configured model."""


class BackboneError(FrameExitError, ValueError):
    """A backbone name is unknown or its weights are not available offline."""


class ThresholdError(FrameExitError, ValueError):
    """An exit threshold outside the range in which it means anything."""


class UsageError(FrameExitError, ValueError):
    """Options that contradict each other or cannot mean anything (exit code 2), found before any work."""


class OutputError(FrameExitError, OSError):
    """An output or cache directory that cannot be created or written to."""


class TrainingError(FrameExitError, FloatingPointError):
    """Training met or produced NaN or infinite values (non-finite features, a diverged loss); no head comes out."""


class WorkerLostError(FrameExitError, RuntimeError):
    """A worker process (a DataLoader's, a dask worker) died while it ran a task: killed by a signal, most often
    the out-of-memory killer's SIGKILL."""


class DiskFullError(OutputError):
    """Writing an output or cache file failed for lack of space (ENOSPC), of quota (EDQUOT) or over the file size
    limit (EFBIG); nothing half written is left where a rerun would trust it."""


#: The errno values of a full disk, a full quota and a file larger than the file system or ulimit allows.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# libraries that wrap the OSError in their own text: h5py ("errno = 28, error message = ..."), pyarrow ("[errno 28]")
_WRAPPED_ERRNO = re.compile(r"errno\s*=?\s*(\d+)", re.I)


def _disk_full_errno(exc: BaseException) -> int | None:
    """The errno of a full disk behind ``exc``, following its cause and (unless suppressed) its context, or None.

    torch.save reports a failed write as ``RuntimeError: ... unexpected pos``, with the OSError as its context.
    """
    for current in exception_chain(exc):
        if isinstance(current, OSError):
            if current.errno in DISK_FULL_ERRNOS:
                return current.errno
            for found in _WRAPPED_ERRNO.findall(str(current)):
                if int(found) in DISK_FULL_ERRNOS:
                    return int(found)
    return None


def disk_full_error(exc: BaseException, path: str | os.PathLike | None = None) -> DiskFullError | None:
    """A one-line :class:`DiskFullError` for ``exc`` if a full disk caused it, else None.

    The message names ``path`` (the file, or folder, being written), else the file the error itself names, e.g.
    ``no space left on device writing /cache/KEY/shard-00003.h5: free some space (or write elsewhere) and run
    again``.
    """
    if isinstance(exc, DiskFullError):
        return exc
    code = _disk_full_errno(exc)
    if code is None:
        return None
    reason = disk_full_reason(code)
    if path is None:
        path = next((e.filename for e in exception_chain(exc) if isinstance(e, OSError) and e.filename), None)
    where = f" writing {os.fspath(path)}" if path is not None else " writing an output file"
    full = DiskFullError(f"{reason}{where}: free some space (or write elsewhere) and run again")
    full.errno = code  # set after: OSError(code, text) would print as "[Errno 28] text"
    return full


def disk_full_reason(code: int) -> str:
    """The system's words for a full-disk errno, to go inside a sentence (``no space left on device``)."""
    reason = os.strerror(code)
    return reason[:1].lower() + reason[1:]


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its cause or (unless suppressed, as by ``raise ... from None``) its context, and so on."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


@contextlib.contextmanager
def reporting_disk_full(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk met in the body into a :class:`DiskFullError` naming ``path``; other errors pass as they are.

    Wrap the writing of one file (or of a folder's files, naming the folder): its writer must leave nothing
    half written (:mod:`frameexit.atomic`), so that the one line is all a rerun needs to know.
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        full = disk_full_error(exc, path)
        if full is None:
            raise
        raise full from None
