"""Output sets: the files one command writes into a folder replace the previous ones as a set, or not at all.

A command writes its files into a staging folder ``.frameexit-new-XXXXXXXX`` inside the output folder (same file
system: every later step is a rename). Once all of them are written and fsynced, a plan (``commit.json``: the files,
the seals moved last, the earlier files they make stale) is written there and the staging folder is renamed
``.frameexit-ready-XXXXXXXX``: that rename is the commit point. The files are then moved into the output folder: the
previous *seals* (the files a reader checks first, ``summary.json``, ``replay.json``, ``metrics.json``) are removed
first and the new ones moved in last, so that at no moment does a mix of old and new files hold a seal.

What a failure or a kill leaves:

- before the commit point: the previous files as they were, and at most a ``.frameexit-new-*`` folder that the next
  writer (:func:`settle`) removes;
- after it: a ``.frameexit-ready-*`` folder (the marker) and not every seal, or the complete new set; :func:`settle`
  finishes the moves, and a reader that finds the marker finishes them too or refuses (:func:`settled`).

Leftover temporary files of the atomic writers (``.NAME.XXXXXXXX.tmp``, from a killed writer) are removed by
:func:`settle` as well. Callers hold the folder's lock (:func:`frameexit.atomic.folder_lock`) around
:func:`output_set`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence

from frameexit.atomic import TMP_SUFFIX, BusyError, folder_lock, fsync_dir
from frameexit.errors import OutputError, reporting_disk_full

from .write import write_json

NEW_PREFIX = ".frameexit-new-"
READY_PREFIX = ".frameexit-ready-"
PLAN = "commit.json"
# mkstemp's random part: 8 characters of [a-z0-9_]
_TMP_RANDOM = re.compile(r"^[a-z0-9_]{8}$")


class PendingCommitError(OutputError):
    """A folder holds a committed but unfinished output set that this process may not finish."""


@contextlib.contextmanager
def output_set(folder: str, names: Sequence[str], *, seals: Sequence[str], stale: Iterable[str] = ()) -> Iterator[str]:
    """A staging folder to write ``names`` into; on success they replace ``folder``'s previous files as a set.

    When the body returns, the set is committed and moved in (module docstring), the ``seals`` (some of
    ``names``) last in their order; ``stale`` names files of ``folder`` the new set makes meaningless (the
    report of an earlier replay), removed in the same commit. When the body raises, the staging folder is
    removed and ``folder`` is left as it was. The caller holds ``folder``'s lock.
    """
    if not seals or set(seals) - set(names):
        raise ValueError(f"the seals {list(seals)} are not some of the files {list(names)}")
    settle(folder, names)
    stage = tempfile.mkdtemp(prefix=NEW_PREFIX, dir=folder)
    try:
        # a full disk met while staging is one line naming the folder; the previous files stay as they were
        with reporting_disk_full(folder):
            yield stage
        missing = [name for name in names if not os.path.isfile(os.path.join(stage, name))]
        if missing:
            raise RuntimeError(f"output set of {folder} incomplete: {missing} not written")  # a bug, not an input
        plan = {"files": list(names), "seals": list(seals), "stale": sorted(set(stale) - set(names))}
        ready = os.path.join(folder, READY_PREFIX + os.path.basename(stage)[len(NEW_PREFIX) :])
        with reporting_disk_full(folder):
            write_json(os.path.join(stage, PLAN), plan)
            os.rename(stage, ready)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    fsync_dir(folder)  # the commit point is durable: from here on the new set wins, even after a crash
    _finish(folder, ready)


def _finish(folder: str, ready: str) -> None:
    """Move a committed set's files from ``ready`` into ``folder``; idempotent, so a rerun may finish it."""
    try:
        with open(os.path.join(ready, PLAN)) as handle:
            plan = json.load(handle)
        files, seals, stale = (list(plan[key]) for key in ("files", "seals", "stale"))
        unsafe = [n for n in (*files, *seals, *stale) if not _plain_name(n)]
        if unsafe or not seals:
            raise ValueError(f"not a plain file name: {unsafe[0]!r}" if unsafe else "no seal")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{ready} is not a frameexit output set ({exc}); move it away") from None
    staged = [name for name in files if os.path.isfile(os.path.join(ready, name))]
    if seals[0] in staged:
        # not one seal moved yet: the previous seals go first, so a reader never finds one beside a mix of files
        for name in (*seals, *stale):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
        fsync_dir(folder)
    for name in [n for n in staged if n not in seals] + [n for n in seals if n in staged]:
        os.replace(os.path.join(ready, name), os.path.join(folder, name))
    fsync_dir(folder)
    shutil.rmtree(ready, ignore_errors=True)


def _plain_name(name: object) -> bool:
    # the plan is read from the folder: a name in it must not lead out of the folder
    return isinstance(name, str) and name not in ("", ".", "..") and os.path.basename(name) == name and "\0" not in name


def _is_leftover_tmp(entry: str, names: Iterable[str]) -> bool:
    # only the atomic writers' names for our own files: another tool's dot-files are not ours to remove
    for name in names:
        prefix = f".{name}."
        if entry.startswith(prefix) and entry.endswith(TMP_SUFFIX):
            return bool(_TMP_RANDOM.match(entry[len(prefix) : -len(TMP_SUFFIX)]))
    return False


def remove_leftovers(folder: str, names: Iterable[str]) -> None:
    """Remove the temporary files (``.NAME.XXXXXXXX.tmp``) killed atomic writers of ``names`` left in ``folder``.
    The caller holds the lock of what it writes there."""
    names = tuple(names)
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if _is_leftover_tmp(entry, names) and os.path.isfile(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def settle(folder: str, names: Iterable[str] = ()) -> None:
    """Finish the committed output sets in ``folder`` and remove the leftovers of killed writers: staging
    folders never committed and temporary files of the atomic writers of ``names``. The caller holds the lock.
    """
    try:
        entries = sorted(os.listdir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        path = os.path.join(folder, entry)
        if entry.startswith(READY_PREFIX) and os.path.isdir(path):
            _finish(folder, path)
        elif entry.startswith(NEW_PREFIX) and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
    remove_leftovers(folder, names)


def pending(folder: str) -> list[str]:
    """The committed output sets of ``folder`` not yet moved into it (a writer was killed while moving them)."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    return sorted(os.path.join(folder, e) for e in entries if e.startswith(READY_PREFIX))


def settled(folder: str) -> None:
    """Make sure ``folder`` holds no half-moved output set before reading it: finish one under the folder's
    lock, or raise :class:`PendingCommitError` (:class:`BusyError` while another process writes it)."""
    if not pending(folder):
        return
    busy = f"another frameexit command is writing {folder}; read it once that command has finished"
    try:
        with folder_lock(folder, busy):
            settle(folder)
    except BusyError:
        raise
    except OSError as exc:
        raise PendingCommitError(
            f"{folder} holds an output set whose writer was killed while moving it into place "
            f"({', '.join(os.path.basename(p) for p in pending(folder))}), and it cannot be finished from here "
            f"({exc}): run the frameexit command that writes {folder} again"
        ) from None
