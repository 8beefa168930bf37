"""The files each command writes into ``--out``, and how: one writer at a time, every command's files as one set.

``infer`` writes :data:`INFER_FILES` (a replay's three files, of its one setting, and ``metrics.json``), ``replay``
:data:`REPLAY_FILES`, ``report`` :data:`REPORT_FILES` and ``run`` the replay and report files together. Each
command's files replace the previous ones as a set (:func:`reports.commit.output_set`), and the files of another
command that the new set makes meaningless (an earlier report, an ``infer``'s ``metrics.json`` beside a replay's
``replay.json``) go in the same commit: a folder never holds files of two runs that look like one. Metric rows
are computed in one place, :func:`metric_columns`; ``replay.json`` in :func:`replay_record`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from frameexit.atomic import folder_lock
from frameexit.bootstrap import Bootstrap, Interval, Resampled
from frameexit.metrics import category_map
from frameexit.sampling import COARSE_TO_FINE
from reports.commit import settle
from reports.records import (
    METRICS_FILE,
    REPLAY_FILE,
    SUMMARY_FILE,
    BootstrapRecord,
    CheckpointRecord,
    MetricRow,
    NamedInterval,
    ReplayRecord,
    Setting,
    StepCostsRecord,
)
from reports.schema import SETTING_COLUMNS, SWEEP, VIDEOS
from reports.write import write_json, write_table

if TYPE_CHECKING:  # frameexit.sweep imports torch, which frameexit report must not load
    from frameexit.policies import PolicySetting
    from frameexit.step_costs import StepCosts
    from frameexit.sweep import SweepMetrics

    from .config import Job

SWEEP_FILE = "sweep.parquet"
VIDEOS_FILE = "videos.parquet"
SUMMARY_MD, SUMMARY_JSON, CURVE_PNG = REPORT_FILES = ("summary.md", SUMMARY_FILE, "curve.png")
REPLAY_FILES = (SWEEP_FILE, VIDEOS_FILE, REPLAY_FILE)
INFER_FILES = (*REPLAY_FILES, METRICS_FILE)
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


def write_replay_files(folder: str, sweep: Mapping[str, Any], videos: Mapping[str, Any], record: ReplayRecord) -> None:
    """Write :data:`REPLAY_FILES` into ``folder``: the columns of ``sweep.parquet`` and ``videos.parquet``, and
    ``replay.json``."""
    paths = out_paths(folder, REPLAY_FILES)
    write_table(paths[SWEEP_FILE], sweep, SWEEP)
    write_table(paths[VIDEOS_FILE], videos, VIDEOS)
    write_json(paths[REPLAY_FILE], record)


def checkpoint_record(name: str, path: str, sha256: str, hidden_dim: int, costs: StepCosts) -> CheckpointRecord:
    """A checkpoint of ``replay.json``: ``name`` as in the checkpoint column, ``costs`` for its head's width."""
    return CheckpointRecord(
        name=name,
        path=os.path.abspath(path),
        sha256=sha256,
        hidden_dim=hidden_dim,
        gmacs_measured_parts=StepCostsRecord(**costs.__dict__),
    )


def replay_record(
    job: Job, first: Sequence[float], gate: Sequence[float], per_video: str, **fields: Any
) -> ReplayRecord:
    """``replay.json`` of the job's grid of ``first`` x ``gate`` thresholds, its order and own setting; ``fields``:
    the keys that depend on the command (cache, checkpoints, metrics, videos, runtime, ...)."""
    order = job.model.input_order
    return ReplayRecord(
        order=list(order),
        order_name=order_name(order),
        first_thresholds=list(first),
        gate_thresholds=list(gate),
        default_setting=Setting(first_threshold=job.model.first_threshold, gate_threshold=job.model.gate_threshold),
        per_video=per_video,
        n_settings=len(first) * len(gate),
        dataset=job.data.name,
        dataset_files=dataset_files(job),
        backbone=job.model.backbone_name,
        job=job.resolved,
        **fields,
    )


def checkpoint_names(paths: Sequence[str]) -> list[str]:
    """The ``checkpoint`` column's names of checkpoints: file names, or the paths where two share a file name."""
    base = [os.path.basename(p) for p in paths]
    return [b if base.count(b) == 1 else p for b, p in zip(base, paths, strict=True)]


def frameexit_settings(first: npt.ArrayLike, gate: npt.ArrayLike) -> dict[str, Any]:
    """The setting columns (:data:`reports.schema.SETTING_COLUMNS`) of frameexit rows at thresholds ``first`` and
    ``gate`` (one per row)."""
    first, gate = np.asarray(first, dtype=np.float64), np.asarray(gate, dtype=np.float64)
    return {"policy": "frameexit", "first_threshold": first, "gate_threshold": gate, "tau": None, "frames": None}


def baseline_settings(settings: Sequence[PolicySetting]) -> dict[str, Any]:
    """The setting columns of the rows of baseline policies' ``settings`` (:func:`frameexit.policies.policy_settings`)."""
    return {
        "policy": [s.policy for s in settings],
        "first_threshold": None,
        "gate_threshold": None,
        "tau": [s.tau for s in settings],
        "frames": [s.frames for s in settings],
    }


def metric_columns(
    metrics: SweepMetrics,
    index: tuple[np.ndarray, np.ndarray],
    settings: Mapping[str, Any],
    *,
    checkpoint: str,
    costs: StepCosts,
    per_frame: float | None,
    categories: Mapping[str, Sequence[int]] | None,
    at_risk: np.ndarray | None,
) -> dict[str, Any]:
    """The columns of :class:`reports.records.MetricRow` (``sweep.parquet``'s less ``order`` and ``n_videos``) of
    one checkpoint at ``n`` settings of its metrics' grid: arrays (or lists) of ``n`` values, ``None`` for a column
    of nulls. ``index``: the ``(gate, first)`` indices of the settings in ``metrics``' arrays (a baseline policy's
    metrics: ``(setting, 0)``); ``settings``: their setting columns (:func:`frameexit_settings`,
    :func:`baseline_settings`); ``at_risk``: videos at risk at every setting of the grid, ``None`` when unknown."""
    frames = metrics.mean_frames[index]
    hist = metrics.exit_histogram[index]
    return {
        "checkpoint": checkpoint,
        **{name: settings[name] for name in SETTING_COLUMNS},
        "map": metrics.map[index],
        "top1": metrics.top1[index],
        "gflops": frames * per_frame if per_frame is not None else None,
        "gmacs_measured": _policy_gmacs(costs, hist, settings["policy"]),
        "mean_frames": frames,
        "exit_histogram": hist,
        "map_per_category": _category_maps(metrics.ap, index, categories),
        "n_at_risk": at_risk[index] if at_risk is not None else None,
    }


def _policy_gmacs(costs: StepCosts, hist: np.ndarray, policy: str | Sequence[str]) -> np.ndarray:
    """Each row's mean measured GMACs per video under its exit policy (one for every row, or one per row)."""
    if isinstance(policy, str):
        return costs.mean_video_gmacs(hist, policy)
    policies = np.asarray(policy, dtype=object)
    out = np.empty(len(hist))
    for name in dict.fromkeys(policy):
        rows = policies == name
        out[rows] = costs.mean_video_gmacs(hist[rows], name)
    return out


@dataclass(frozen=True)
class NamedResult:
    """One named setting of one checkpoint (:func:`reports.summary.named_settings`): its bootstrap intervals, the
    resampled mAP (what a later run pairs with) and every video's decision there, videos in key order."""

    setting: dict[str, Any]  # policy and its thresholds (reports.summary.setting_of)
    map: Interval | None  # None without resamples
    top1: Interval | None
    map_resampled: np.ndarray  # (resamples,) float64
    exit_step: np.ndarray  # (n_videos,) int64
    prediction: np.ndarray  # int64
    confidence: np.ndarray  # float64 (a float32 value)


def named_result(
    setting: Mapping[str, Any],
    steps: np.ndarray,
    scores: np.ndarray,
    bootstrap: Bootstrap,
    resampled: Resampled | None,
) -> NamedResult:
    """The :class:`NamedResult` of a setting from every video's exit step and probabilities there (rows in key
    order) and the setting's metrics in the bootstrap's resamples of those videos (``None``: no resamples)."""
    prediction = scores.argmax(axis=1) if len(scores) else np.zeros(0, dtype=np.int64)
    intervals: tuple[Interval | None, Interval | None] = (None, None)
    maps = np.zeros(0)
    if resampled is not None:
        intervals, maps = resampled.intervals(bootstrap.level), resampled.map
    return NamedResult(
        setting=dict(setting),
        map=intervals[0],
        top1=intervals[1],
        map_resampled=maps,
        exit_step=np.asarray(steps, dtype=np.int64),
        prediction=prediction.astype(np.int64),
        confidence=scores[np.arange(len(scores)), prediction].astype(np.float64),
    )


def bootstrap_record(
    bootstrap: Bootstrap, names: Sequence[str], named: Sequence[Sequence[NamedResult]]
) -> BootstrapRecord:
    """``replay.json``'s ``bootstrap``: the intervals at every named setting of each checkpoint (``names``), and per
    checkpoint the resampled mAP at the job's setting (its first named), what a later run's paired comparison
    needs."""

    def bounds(interval: Interval | None) -> list[float] | None:
        return None if interval is None else [interval.low, interval.high]

    return BootstrapRecord(
        resamples=bootstrap.resamples,
        level=bootstrap.level,
        seed=bootstrap.seed,
        intervals=[
            NamedInterval(checkpoint=name, setting=r.setting, map=bounds(r.map), top1=bounds(r.top1))
            for name, results in zip(names, named, strict=True)
            for r in results
        ],
        map_resampled={
            name: results[0].map_resampled.tolist() for name, results in zip(names, named, strict=True) if results
        },
    )


def order_name(order: Sequence[int]) -> str:
    """A policy order's name in ``sweep.parquet`` and ``replay.json``: coarse_to_fine, sequential or the positions."""
    order = tuple(order)
    if order == COARSE_TO_FINE:
        return "coarse_to_fine"
    if order == tuple(range(len(order))):
        return "sequential"
    return ",".join(map(str, order))


def dataset_files(job: Job) -> dict[str, str]:
    """``replay.json``'s ``dataset_files``: absolute paths (from here) of the job's dataset files set, by job key."""
    keys = ("path_split", "path_label", "path_classid", "path_frame")
    return {k: os.path.abspath(getattr(job.data, k)) for k in keys if getattr(job.data, k)}


def _category_maps(
    ap: np.ndarray, index: tuple[np.ndarray, np.ndarray], categories: Mapping[str, Sequence[int]] | None
) -> dict[str, np.ndarray] | None:
    """:func:`frameexit.metrics.category_map` of the per-class AP of each setting at ``index`` (of ``ap``'s grid), one
    setting at a time: numpy sums a row of a 2-D array in another order than the same row alone, and one setting's
    figures do not depend on the grid around it. ``None`` without categories."""
    if categories is None:
        return None
    out = np.empty((len(categories), len(index[0])), dtype=np.float64)
    for k, (g, f) in enumerate(zip(*index, strict=True)):
        out[:, k] = list(category_map(ap[g, f], categories).values())
    return dict(zip(categories, out, strict=True))


def metric_row(columns: Mapping[str, Any], k: int) -> MetricRow:
    """Row ``k`` of :func:`metric_columns` as a :class:`reports.records.MetricRow` of plain Python values."""

    def value(name: str) -> Any:
        column = columns[name]
        if column is None or isinstance(column, str):
            return column
        if isinstance(column, Mapping):
            return {key: float(values[k]) for key, values in column.items()}
        if isinstance(column, list):
            return column[k]
        return column[k].tolist()  # a number, or the histogram's list

    return MetricRow(**{name: value(name) for name in MetricRow.__annotations__})  # type: ignore[typeddict-item]


def sweep_columns(parts: Sequence[Mapping[str, Any]], order: str, n_videos: int) -> dict[str, pa.Array]:
    """The columns of ``sweep.parquet``: the :func:`metric_columns` of each checkpoint in turn, with the order's name
    (as ``replay.json``'s ``order_name``) and the videos evaluated."""
    arrays: dict[str, list[pa.Array]] = {name: [] for name in SWEEP.names}
    for part in parts:
        n = len(part["mean_frames"])
        for name, column in part.items():
            arrays[name].append(_arrow(column, n, SWEEP.field(name).type))
        arrays["order"].append(pa.array([order] * n, pa.string()))
        arrays["n_videos"].append(pa.array(np.full(n, n_videos, dtype=np.int64)))
    return {name: pa.concat_arrays(chunks) for name, chunks in arrays.items()}


def _arrow(column: Any, n: int, kind: pa.DataType) -> pa.Array:
    """A column of :func:`metric_columns` (``n`` values) as an Arrow array of type ``kind``."""
    if column is None:
        return pa.nulls(n, kind)
    if isinstance(column, list):  # a setting column of several policies: None where a row's policy has none
        return pa.array(column, kind)
    if isinstance(column, str):
        return pa.array([column] * n, kind)
    if pa.types.is_map(kind):  # a category's mAP per setting -> a map per setting, the categories in their order
        names = list(column)
        items = np.stack([column[k] for k in names], axis=1).ravel() if names else np.zeros(0)
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * len(names))
        return pa.MapArray.from_arrays(offsets, pa.array(names * n, pa.string()), pa.array(items, pa.float64()))
    if pa.types.is_list(kind):  # the exit histogram, shape (n, steps)
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * column.shape[1])
        return pa.ListArray.from_arrays(offsets, pa.array(column.ravel(), kind.value_type))
    return pa.array(column, kind)
