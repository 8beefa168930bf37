"""`frameexit replay`: threshold sweeps over cached features, on dask.

Graph per checkpoint head: one task per shard computes the exit tables
(projection, cumulative max in policy order, all classifiers' softmax, all
gates); one task merges them;
one task per block of gate thresholds computes the metrics of all its settings.
Results do not depend on the scheduler, the number of workers, the shard size or
the block size. The memory a grid needs is estimated before any work: blocks are
made small enough for the memory available, and a grid that cannot fit is refused.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import torch
from tqdm.dask import TqdmCallback

from cache.find import find_cache
from cache.inputs import frames_digest
from cache.manifest import CacheError
from cache.plan import usable_videos
from cache.reader import FeatureCache, verify_shard
from cache.shard import file_sha256, read_shard
from frameexit.atomic import check_writable_dir
from frameexit.checkpoint import BACKBONE, backbone_digest, build_model
from frameexit.cost import StepCosts, paper_per_frame
from frameexit.errors import ConfigError
from frameexit.exit_rule import check_thresholds, exit_steps
from frameexit.head import FrameExit
from frameexit.sampling import COARSE_TO_FINE, policy_order
from frameexit.sweep import (
    ExitTables,
    SweepMetrics,
    concat_tables,
    exit_tables,
    sweep_metrics,
)
from reports.records import (
    REPLAY_FILE,
    CacheRecord,
    CheckpointRecord,
    MetricRow,
    ReplayRecord,
    ReplayRuntime,
    Setting,
    StepCostsRecord,
    runtime,
)
from reports.schema import SWEEP, VIDEOS
from reports.write import write_json, write_table

from .config import Job
from .datasets import load_job_dataset
from .memory import available_memory, plan_memory
from .model import checkpoint_state, step_costs
from .progress import progress as progress_bar
from .scheduling import LOCAL_SCHEDULERS, dask_client

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.parquet"
VIDEOS_FILE = "videos.parquet"
#: What ``frameexit report`` writes from a replay's outputs: stale once the replay changes.
REPORT_FILES = ("summary.md", "summary.json", "curve.png")


@dataclass(frozen=True)
class ReplayOptions:
    """How to run a replay.

    Attributes
    ----------
    cache_root : str
        Cache root of ``frameexit extract``; the cache directory is the one whose manifest records the
        job's inputs (see :mod:`cache.locate`), found without listing the frame folders.
    features : str or None
        A cache directory (``<root>/<key>``) to use instead of searching the root; its recorded
        inputs are still compared with the job.
    first_thresholds, gate_thresholds : tuple of float or None
        The grid; ``None`` takes ``replay.*_thresholds`` of the job (default: the model's own thresholds).
    order : str or None
        ``coarse_to_fine``, ``sequential``, or ``None`` for the job's ``model.adaptive.input_order``.
    per_video : {'default', 'all'}
        Per-video rows for the job's default setting only, or for every setting.
    scheduler : str
        ``threads`` (dask's local threaded scheduler), ``sync``, or the address of a dask.distributed scheduler.
    workers : int or None
        Start a local dask cluster of this many worker processes instead.
    gate_block : int or None
        Gate thresholds per sweep task (default: enough blocks to keep every worker busy); made
        smaller when the memory available requires it (results do not depend on it).
    dtype, precision, channels_last
        Extraction settings the cache was written with: dtype and precision must match the cache's;
        channels_last (a memory format, the same features) only prefers one of two otherwise equal caches.
    verify_frames : bool
        List the frame folders and refuse a cache extracted from another frame listing (frames
        re-prepared under the same split file); without it the frames are not read at all.
    """

    cache_root: str
    features: str | None = None
    first_thresholds: tuple[float, ...] | None = None
    gate_thresholds: tuple[float, ...] | None = None
    order: str | None = None
    per_video: str = "default"
    scheduler: str = "threads"
    workers: int | None = None
    gate_block: int | None = None
    dtype: str = "float32"
    precision: str = "fp32"
    channels_last: bool = False
    verify_frames: bool = False


@dataclass(frozen=True)
class ReplayResult:
    out_dir: str
    sweep_path: str
    videos_path: str
    replay_path: str
    summary: ReplayRecord  # what replay.json holds


# ---------------------------------------------------------------------------------------------- tasks


class HeadState:
    """One checkpoint's head weights as one object for dask, and the head built from them once per process.

    dask takes a dict apart: ``client.scatter(dict)`` makes one future per key, *named by the key*, so the
    heads of several checkpoints (which share every parameter name) overwrote each other on the workers.
    An instance of this class travels whole, under a key of its own. A worker deserializes a scattered
    object once and hands that same instance to each of its tasks (the local schedulers hand every task
    the one instance), so the head built on first use is kept on the instance: one build per checkpoint
    and process, with no module-level cache that could return another checkpoint's head.

    Parameters
    ----------
    name : str
        The checkpoint (named in errors).
    sha256 : str
        Of the checkpoint file.
    state : dict of str to Tensor
        The head's weights (no ``backbone.*``), float32 as stored.
    """

    def __init__(self, name: str, sha256: str, state: dict[str, torch.Tensor]):
        self.name, self.sha256, self.state = name, sha256, state
        self._model: FrameExit | None = None
        self._lock = threading.Lock()

    @property
    def hidden_dim(self) -> int:
        """Width of the projection (4096 in the released checkpoints)."""
        return int(self.state["mlp.layers.0.weight"].shape[0])

    def model(self) -> FrameExit:
        """The head in eval mode (float64), built on first use; threads of one process share it."""
        with self._lock:
            if self._model is None:
                self._model = build_model(self.state, backbone_name=None, path=self.name)
            return self._model

    def __getstate__(self) -> dict[str, Any]:
        # the weights travel; the built head (twice their size in float64) and the lock are rebuilt there
        return {"name": self.name, "sha256": self.sha256, "state": self.state}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["sha256"], state["state"])

    def __repr__(self) -> str:
        return f"HeadState({self.name!r}, sha256={self.sha256[:12]}...)"


def shard_exit_tables(path: str, sha256: str, head: HeadState, order: tuple[int, ...]) -> ExitTables:
    """Dask task: verify and read one shard, return its exit tables for one checkpoint's head."""
    verify_shard(path, sha256)
    shard = read_shard(path)
    return exit_tables(head.model(), shard.features, order, videos=shard.videos, labels=shard.labels)


def merge_tables(parts: Sequence[ExitTables]) -> ExitTables:
    """Dask task: all shards' tables as one (sorted by key)."""
    return concat_tables(parts)


def sweep_block(tables: ExitTables, first: Sequence[float], gate: Sequence[float]):
    """Dask task: metrics of the settings ``gate x first``."""
    return sweep_metrics(tables, first, gate)


def per_video_rows(tables: ExitTables, settings: Sequence[tuple[float, float]]) -> dict[str, list]:
    """Dask task: per-video exit step, prediction and confidence at each (first, gate) setting."""
    n = len(tables.videos)
    labels = [np.flatnonzero(row).tolist() for row in tables.labels]
    out: dict[str, list] = {
        k: [] for k in ("first_threshold", "gate_threshold", "video", "exit_step", "prediction", "confidence", "labels")
    }
    conf0 = tables.confidence0
    for ft, gt in settings:
        steps = exit_steps(conf0, tables.gates, ft, gt)
        probs = tables.probs[np.arange(n), steps]
        prediction = probs.argmax(axis=1)
        out["first_threshold"] += [ft] * n
        out["gate_threshold"] += [gt] * n
        out["video"] += tables.videos
        out["exit_step"] += steps.tolist()
        out["prediction"] += prediction.tolist()
        out["confidence"] += probs[np.arange(n), prediction].astype(np.float64).tolist()
        out["labels"] += labels
    return out


# ---------------------------------------------------------------------------------------------- the stage


def replay(job: Job, out_dir: str, options: ReplayOptions, *, progress: bool | None = None) -> ReplayResult:
    """Sweep the exit thresholds of every checkpoint of ``job`` over its feature cache.

    Writes ``sweep.parquet`` (one row per checkpoint and setting),
    ``videos.parquet`` (per-video rows for the default setting, or every
    setting with ``per_video='all'``) and ``replay.json`` (provenance, grid,
    skipped videos; :class:`reports.records.ReplayRecord`) into ``out_dir``,
    once everything is computed.

    Everything that needs no computation is checked first (options, the
    memory the grid needs, a writable ``out_dir``, the cache against the job,
    every checkpoint's backbone); then the outputs of an earlier replay *and
    its report* (``summary.md``, ``summary.json``, ``curve.png``) are removed,
    so a replay that fails while computing leaves nothing that looks complete.
    """
    grid = _grid(job, options)
    # the sweep rows alone can exceed any memory (10^5 x 10^5 thresholds): refuse before touching anything
    plan_memory(**grid.memory_args(job), n_videos=0, concurrency=1, gate_block=1, limit=available_memory())
    check_writable_dir(out_dir, "--out")
    cache = _open_cache(job, options)
    n_videos = usable_videos(cache.manifest)
    heads = _load_heads(job, cache)
    largest_block = plan_memory(
        **grid.memory_args(job),
        n_videos=n_videos,
        concurrency=_concurrency(options),
        gate_block=options.gate_block or len(grid.gate),
        limit=available_memory(),
    )
    paths = _remove_stale_outputs(out_dir)
    graph, results = _sweep(grid, heads, cache, options, largest_block, progress=progress)

    names = _checkpoint_names([h.name for h in heads])
    by_width = _step_costs(job, heads)
    costs = [by_width[h.hidden_dim] for h in heads]
    per_frame = paper_per_frame(job.model.backbone_name)
    sweep = _sweep_columns(graph, results, grid, names, costs, per_frame, n_videos)
    videos = _video_columns(graph, results, grid, names, cache, n_videos)
    default_metrics = _default_metrics(graph, results, grid, names, costs, per_frame)
    write_table(paths[SWEEP_FILE], sweep, SWEEP)
    write_table(paths[VIDEOS_FILE], videos, VIDEOS)
    record = _replay_record(job, options, grid, cache, n_videos, names, heads, costs, per_frame, default_metrics)
    write_json(paths[REPLAY_FILE], record)
    return ReplayResult(out_dir, paths[SWEEP_FILE], paths[VIDEOS_FILE], paths[REPLAY_FILE], record)


@dataclass(frozen=True)
class _Grid:
    """The settings a replay evaluates, checked: the grid, the job's own setting and the policy order."""

    first: tuple[float, ...]
    gate: tuple[float, ...]
    default: tuple[float, float]  # (first, gate) of the job
    order: tuple[int, ...]
    per_video: str

    @property
    def order_name(self) -> str:
        """The order's name in ``sweep.parquet`` and ``replay.json``: coarse_to_fine, sequential or the positions."""
        if self.order == COARSE_TO_FINE:
            return "coarse_to_fine"
        if self.order == tuple(range(len(self.order))):
            return "sequential"
        return ",".join(map(str, self.order))

    @property
    def settings(self) -> list[tuple[float, float]]:
        """Every ``(first, gate)`` of the grid, in the order of the sweep rows (gate-major)."""
        return [(ft, gt) for gt in self.gate for ft in self.first]

    @property
    def per_video_settings(self) -> list[tuple[float, float]]:
        """The settings with per-video rows: every one with ``per_video='all'``, else the job's own."""
        return self.settings if self.per_video == "all" else [self.default]

    def memory_args(self, job: Job) -> dict[str, Any]:
        """The grid's arguments of :func:`plan_memory` / :func:`memory_estimate`."""
        return dict(
            n_first=len(self.first),
            n_gate=len(self.gate),
            n_checkpoints=len(job.checkpoints),
            num_class=job.model.num_class,
            per_video_all=self.per_video == "all",
            n_steps=len(self.order),
        )


def _grid(job: Job, options: ReplayOptions) -> _Grid:
    """The grid of ``options`` (else of the job), checked: thresholds are probabilities, ``per_video`` is known."""
    job.require("checkpoint.init")
    if options.per_video not in ("default", "all"):
        raise ConfigError(f"per_video must be 'default' or 'all', got {options.per_video!r}")
    first = tuple(options.first_thresholds or job.replay.first_thresholds)
    gate = tuple(options.gate_thresholds or job.replay.gate_thresholds)
    default = (job.model.first_threshold, job.model.gate_threshold)
    for ft in (*first, default[0]):
        check_thresholds(ft, default[1])
    for gt in gate:
        check_thresholds(default[0], gt)
    order = policy_order(options.order or job.model.input_order, job.data.num_frames)
    return _Grid(first, gate, default, order, options.per_video)


def _load_heads(job: Job, cache: FeatureCache) -> list[HeadState]:
    """Every checkpoint's head; :class:`ConfigError` for a checkpoint whose backbone did not make the cache."""
    cache_digest = cache.manifest.inputs.get("backbone_digest")
    heads = []
    for checkpoint in job.checkpoints:
        state = checkpoint_state(job, checkpoint)
        digest = backbone_digest(state)
        if digest != cache_digest:
            raise ConfigError(
                f"checkpoint {checkpoint} has other backbone weights than the feature cache {cache.directory} "
                f"(backbone digest {digest[:12]}..., cache {str(cache_digest)[:12]}...); its heads cannot replay over "
                f"these features: run frameexit extract with --checkpoint.init {checkpoint}"
            )
        head_state = {k: v for k, v in state.items() if not k.startswith(BACKBONE)}
        heads.append(HeadState(checkpoint, file_sha256(checkpoint), head_state))
    return heads


def _concurrency(options: ReplayOptions) -> int:
    """Sweep tasks that run at once on this machine's memory."""
    if options.workers:
        return options.workers
    if options.scheduler in LOCAL_SCHEDULERS:
        return 1 if options.scheduler == "sync" else (os.cpu_count() or 1)
    return 1  # a remote cluster's tasks use its own machines' memory


def _remove_stale_outputs(out_dir: str) -> dict[str, str]:
    """Remove an earlier replay's outputs and its report from ``out_dir``; the paths of all of them, by name."""
    paths = {name: os.path.join(out_dir, name) for name in (SWEEP_FILE, VIDEOS_FILE, REPLAY_FILE, *REPORT_FILES)}
    for stale in paths.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    return paths


# ---------------------------------------------------------------------------------------------- the graph


@dataclass
class _Graph:
    """A replay's dask tasks and the keys of their results, per checkpoint ``i``.

    Keys carry a token of their own: on a shared dask scheduler, another client's ``merge-0`` must not be
    taken for ours.
    """

    n_first: int  # first thresholds of the grid
    blocks: list[tuple[float, ...]]  # the gate thresholds of each sweep task
    tables: dict[str, Any] = field(default_factory=dict)  # per shard and checkpoint: its exit tables
    outputs: dict[str, Any] = field(default_factory=dict)  # every task whose result is kept, by key
    sweeps: list[list[str]] = field(default_factory=list)  # [i][b]: metrics of gate block b
    videos: list[str] = field(default_factory=list)  # [i]: per-video rows
    default: list[str] = field(default_factory=list)  # [i]: metrics at the job's own setting

    def settings_of(self, key: str) -> int:
        """Settings a task computes: those of its gate block for a sweep task, else 0."""
        for keys in self.sweeps:
            if key in keys:
                return len(self.blocks[keys.index(key)]) * self.n_first
        return 0


def _sweep(
    grid: _Grid,
    heads: Sequence[HeadState],
    cache: FeatureCache,
    options: ReplayOptions,
    largest_block: int,
    *,
    progress: bool | None,
) -> tuple[_Graph, dict[str, Any]]:
    """Build the graph and compute it on the scheduler of ``options``: the graph and its results by key."""
    shards = [(os.path.join(cache.directory, e.name), e.sha256) for e in cache.manifest.shards]
    with dask_client(options.scheduler, options.workers) as client:
        workers = len(client.scheduler_info()["workers"]) if client is not None else (os.cpu_count() or 1)
        block = options.gate_block or max(1, math.ceil(len(grid.gate) / max(2 * workers, 1)))
        block = min(block, largest_block)  # smaller blocks give the same numbers (tested), in less memory
        blocks = [grid.gate[i : i + block] for i in range(0, len(grid.gate), block)]
        graph = _build_graph(grid, heads, shards, blocks, client)
        if client is None:
            return graph, _compute_local(options.scheduler, graph, progress=progress)
        n_settings = len(grid.settings) * len(heads)
        return graph, _compute_distributed(client, graph, progress=progress, n_settings=n_settings)


def _build_graph(
    grid: _Grid, heads: Sequence[HeadState], shards: Sequence[tuple[str, str]], blocks: list[tuple[float, ...]], client
) -> _Graph:
    """Per checkpoint: exit tables per shard, one merge, a sweep task per gate block, per-video rows, the default."""
    token = uuid.uuid4().hex[:12]
    graph = _Graph(len(grid.first), blocks)
    for i, head in enumerate(heads):
        # the head weights (tens of MB) travel once per worker, not once per task, as one object
        if client is not None:
            shipped = client.scatter(head, broadcast=True, hash=False)
        else:
            shipped = dask.delayed(head, name=f"head-{i}-{token}", traverse=False)
        parts = []
        for s, (path, digest) in enumerate(shards):
            key = f"tables-{i}-{s}-{token}"
            parts.append(dask.delayed(shard_exit_tables)(path, digest, shipped, grid.order, dask_key_name=key))
            graph.tables[key] = parts[-1]
        merged = dask.delayed(merge_tables)(parts, dask_key_name=f"merge-{i}-{token}")
        graph.sweeps.append([f"sweep-{i}-{b}-{token}" for b in range(len(blocks))])
        for key, gate_block in zip(graph.sweeps[i], blocks, strict=True):
            graph.outputs[key] = dask.delayed(sweep_block)(merged, grid.first, gate_block, dask_key_name=key)
        graph.videos.append(f"videos-{i}-{token}")
        graph.outputs[graph.videos[i]] = dask.delayed(per_video_rows)(
            merged, grid.per_video_settings, dask_key_name=graph.videos[i]
        )
        graph.default.append(f"default-{i}-{token}")
        graph.outputs[graph.default[i]] = dask.delayed(sweep_block)(
            merged, [grid.default[0]], [grid.default[1]], dask_key_name=graph.default[i]
        )
    return graph


def _compute_local(kind: str, graph: _Graph, *, progress: bool | None) -> dict[str, Any]:
    """Compute the graph on dask's local scheduler ``kind``, with one bar of its tasks (tqdm's dask callback)."""
    bar = functools.partial(progress_bar, None, desc="replay tasks", unit="task", enabled=progress)
    with TqdmCallback(tqdm_class=bar):
        values = dask.compute(*graph.outputs.values(), scheduler=kind)
    return dict(zip(graph.outputs, values, strict=True))


def _compute_distributed(client, graph: _Graph, *, progress: bool | None, n_settings: int) -> dict[str, Any]:
    """Compute the graph on a dask.distributed cluster, with a bar of the shards and one of the settings."""
    from distributed import as_completed

    n_shards = len(graph.tables)
    shard_bar = progress_bar(range(n_shards), desc="replay shards", total=n_shards, unit="shard", enabled=progress)
    setting_bar = progress_bar(
        range(n_settings), desc="replay settings", total=n_settings, unit="setting", enabled=progress
    )
    try:
        futures = client.compute(list(graph.tables.values()))
        for future in as_completed(futures):
            future.result()  # raise a task's error here, with its message
            shard_bar.update(1)
        results = client.compute(list(graph.outputs.values()))
        by_future = dict(zip(results, graph.outputs, strict=True))
        values = {}
        for future in as_completed(results):
            key = by_future[future]
            values[key] = future.result()
            if n := graph.settings_of(key):
                setting_bar.update(n)
        return values
    finally:
        shard_bar.close()
        setting_bar.close()


# ---------------------------------------------------------------------------------------------- the outputs


def _step_costs(job: Job, heads: Sequence[HeadState]) -> dict[int, StepCosts]:
    """Measured GMACs per part, by head width: the width changes the projection, gates and classifiers."""
    return {width: step_costs(job, width) for width in {head.hidden_dim for head in heads}}


def _metric_row(
    m: SweepMetrics,
    g: int,
    f: int,
    checkpoint: str,
    setting: tuple[float, float],
    per_frame: float | None,
    costs: StepCosts,
) -> MetricRow:
    """The one place a metric row is made: entry ``[g, f]`` of a sweep task's metrics, at ``setting`` (first, gate)."""
    hist = m.exit_histogram[g, f]
    frames = float(m.mean_frames[g, f])
    return MetricRow(
        checkpoint=checkpoint,
        first_threshold=setting[0],
        gate_threshold=setting[1],
        map=float(m.map[g, f]),
        top1=float(m.top1[g, f]),
        gflops=frames * per_frame if per_frame is not None else None,
        gmacs_measured=costs.mean_video_gmacs(frames, float(hist[0])),
        mean_frames=frames,
        exit_histogram=hist.tolist(),
    )


def _sweep_columns(
    graph: _Graph,
    results: dict[str, Any],
    grid: _Grid,
    names: Sequence[str],
    costs: Sequence[StepCosts],
    per_frame: float | None,
    n_videos: int,
) -> dict[str, list]:
    """The columns of ``sweep.parquet``: a metric row per checkpoint and setting, with the order and video count."""
    columns: dict[str, list] = {k: [] for k in SWEEP.names}
    for i, name in enumerate(names):
        for key, gate_block in zip(graph.sweeps[i], graph.blocks, strict=True):
            m = results[key]
            for g, gt in enumerate(gate_block):
                for f, ft in enumerate(grid.first):
                    for k, value in _metric_row(m, g, f, name, (ft, gt), per_frame, costs[i]).items():
                        columns[k].append(value)
    columns["order"] = [grid.order_name] * len(columns["checkpoint"])
    columns["n_videos"] = [n_videos] * len(columns["checkpoint"])
    return columns


def _default_metrics(
    graph: _Graph,
    results: dict[str, Any],
    grid: _Grid,
    names: Sequence[str],
    costs: Sequence[StepCosts],
    per_frame: float | None,
) -> list[MetricRow]:
    """Per checkpoint, the metric row of the job's own setting."""
    return [
        _metric_row(results[graph.default[i]], 0, 0, name, grid.default, per_frame, costs[i])
        for i, name in enumerate(names)
    ]


def _video_columns(
    graph: _Graph, results: dict[str, Any], grid: _Grid, names: Sequence[str], cache: FeatureCache, n_videos: int
) -> dict[str, list]:
    """The columns of ``videos.parquet``: every checkpoint's per-video rows, with its name."""
    columns: dict[str, list] = {k: [] for k in VIDEOS.names}
    n_settings = len(grid.per_video_settings)
    for i, name in enumerate(names):
        rows = results[graph.videos[i]]
        if len(rows["video"]) != n_videos * n_settings:
            # the shards were verified against the manifest, so only a hand-edited manifest gets here
            raise CacheError(
                f"the manifest of {cache.directory} counts {n_videos} videos with features, its shards hold "
                f"{len(rows['video']) // max(n_settings, 1)}; run frameexit extract again"
            )
        for key in rows:
            columns[key] += rows[key]
        columns["checkpoint"] += [name] * len(rows["video"])
    return columns


def _replay_record(
    job: Job,
    options: ReplayOptions,
    grid: _Grid,
    cache: FeatureCache,
    n_videos: int,
    names: Sequence[str],
    heads: Sequence[HeadState],
    costs: Sequence[StepCosts],
    per_frame: float | None,
    default_metrics: list[MetricRow],
) -> ReplayRecord:
    """``replay.json``: the cache, checkpoints, grid, the job's setting and its metrics, skipped videos, runtime."""
    scheduler = options.scheduler if not options.workers else f"local cluster of {options.workers} processes"
    return ReplayRecord(
        cache=CacheRecord(
            directory=os.path.abspath(cache.directory), key=cache.manifest.key, inputs=cache.manifest.inputs
        ),
        checkpoints=[
            CheckpointRecord(
                name=n,
                path=os.path.abspath(h.name),
                sha256=h.sha256,
                hidden_dim=h.hidden_dim,
                gmacs_measured_parts=StepCostsRecord(**c.__dict__),
            )
            for n, h, c in zip(names, heads, costs, strict=True)
        ],
        order=list(grid.order),
        order_name=grid.order_name,
        first_thresholds=list(grid.first),
        gate_thresholds=list(grid.gate),
        default_setting=Setting(first_threshold=grid.default[0], gate_threshold=grid.default[1]),
        default_metrics=default_metrics,
        per_video=grid.per_video,
        n_settings=len(grid.settings),
        n_videos=n_videos,
        n_videos_listed=cache.manifest.n_listed,
        skipped=cache.manifest.all_skipped(),
        gflops_per_frame=per_frame,
        dataset=job.data.name,
        dataset_files=_dataset_files(job),
        backbone=job.model.backbone_name,
        job=job.resolved,
        runtime=ReplayRuntime(**runtime(), scheduler=scheduler),
    )


def _dataset_files(job: Job) -> dict[str, str]:
    """Absolute paths of the job's dataset files (those it sets), by job key: relative ones are taken from here."""
    keys = ("path_split", "path_label", "path_classid", "path_frame")
    return {k: os.path.abspath(getattr(job.data, k)) for k in keys if getattr(job.data, k)}


# ---------------------------------------------------------------------------------------------- helpers


def _checkpoint_names(paths: Sequence[str]) -> list[str]:
    """File names, or the paths as given where two checkpoints share a file name."""
    base = [os.path.basename(p) for p in paths]
    return [b if base.count(b) == 1 else p for b, p in zip(base, paths, strict=True)]


def _open_cache(job: Job, options: ReplayOptions) -> FeatureCache:
    """The job's cache: ``--features`` as given (checked against the job), else found under the root.

    Neither way lists the frame folders nor computes the key (:func:`cache.find.find_cache`).
    The backbone digest of the first checkpoint and the frame listing are computed
    only when two matching caches differ in them. The memory format
    (``channels_last``) only breaks ties: a cache extracted with ``--channels-last``
    holds the same features.
    """
    if not options.features:
        job.require("data.path_split", "data.path_label", "data.path_classid")
    checkpoint = job.checkpoints[0]

    def backbone() -> str:
        return backbone_digest(checkpoint_state(job, checkpoint))

    def frames() -> str | None:
        if not job.data.path_frame or not os.path.isdir(job.data.path_frame):
            return None
        dataset = load_job_dataset(job.data, job.model.num_class)
        return frames_digest(dataset.videos, job.data.num_frames, job.model.clip_length, job.model.clip_stride)

    verify = {}
    if options.verify_frames:
        job.require("data.path_frame")
        digest = frames()
        if digest is None:
            raise ConfigError(
                f"--verify-frames lists the frame folders, but data.path_frame {job.data.path_frame} is not a directory"
            )
        verify["frames_digest"] = digest

    return find_cache(
        options.cache_root,
        job.data,
        job.model,
        features=options.features,
        dtype=options.dtype,
        precision=options.precision,
        channels_last=options.channels_last,
        resolve={"backbone_digest": backbone, "frames_digest": frames},
        verify=verify,
        hint=f" (for the backbone of {checkpoint})",
    )
