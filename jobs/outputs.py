"""The files each command writes into ``--out``, and how: one writer at a time, every command's files as one set.

``infer`` writes :data:`INFER_FILES`, ``replay`` :data:`REPLAY_FILES`,
``report`` :data:`REPORT_FILES` (from the replay files beside them) and ``run``
the replay and report files together. Each command's files replace the previous
ones as a set (:func:`reports.commit.output_set`), and the files of another
command that the new set makes meaningless (the report of an earlier replay,
an ``infer``'s ``videos.parquet`` under a replay's ``replay.json``) go in the
same commit: a folder never holds files of two runs that look like one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence

import numpy.typing as npt

from frameexit.atomic import folder_lock
from frameexit.metrics import category_map
from reports.commit import settle
from reports.records import METRICS_FILE, REPLAY_FILE, SUMMARY_FILE

SWEEP_FILE = "sweep.parquet"
VIDEOS_FILE = "videos.parquet"
SUMMARY_MD, SUMMARY_JSON, CURVE_PNG = REPORT_FILES = ("summary.md", SUMMARY_FILE, "curve.png")
INFER_FILES = (VIDEOS_FILE, METRICS_FILE)
REPLAY_FILES = (SWEEP_FILE, VIDEOS_FILE, REPLAY_FILE)
#: Every file a frameexit command writes into ``--out``: what a killed writer's temporary files may be named after.
ALL_FILES = tuple(dict.fromkeys((*INFER_FILES, *REPLAY_FILES, *REPORT_FILES)))


@contextlib.contextmanager
def writing(out_dir: str) -> Iterator[None]:
    """Hold ``out_dir``'s lock (:class:`~frameexit.atomic.BusyError` at once if another command holds it), after
    finishing what a killed writer committed there and removing what it left half written."""
    busy = f"another frameexit command is writing --out {out_dir}; wait for it to finish or choose another --out"
    with folder_lock(out_dir, busy):
        settle(out_dir, ALL_FILES)
        yield


def out_paths(out_dir: str, names: Sequence[str]) -> dict[str, str]:
    """``{name: out_dir/name}``."""
    return {name: os.path.join(out_dir, name) for name in names}


def checkpoint_names(paths: Sequence[str]) -> list[str]:
    """The names of checkpoints in the ``checkpoint`` column of the output files: file names, or the paths as
    given where two checkpoints share a file name."""
    base = [os.path.basename(p) for p in paths]
    return [b if base.count(b) == 1 else p for b, p in zip(base, paths, strict=True)]


def category_maps(ap: npt.ArrayLike, categories: Mapping[str, Sequence[int]] | None) -> dict[str, float] | None:
    """``map_per_category`` of a record (:class:`reports.records.MetricRow`): :func:`frameexit.metrics.category_map`
    of one setting's per-class AP, as floats (NaN is written as null); ``None`` without categories."""
    if categories is None:
        return None
    return {name: float(value) for name, value in category_map(ap, categories).items()}
