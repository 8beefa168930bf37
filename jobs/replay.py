"""`frameexit replay`: threshold sweeps over cached features, on dask.

Graph per checkpoint head: one task per shard computes the exit tables
(projection, cumulative max in policy order, all classifiers' softmax, all
gates); one task merges them and ranks every (video, step) score per class;
one task per block of gate thresholds computes the metrics of all its settings.
Results do not depend on the scheduler, the number of workers, the shard size or
the block size. The memory a grid needs is estimated before any work: blocks are
made small enough for the memory available, and a grid that cannot fit is refused.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import platform
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import torch
import torchvision
from dask.callbacks import Callback

import frameexit
from cache.inputs import cheap_inputs, check_job_files, differences, frames_digest
from cache.locate import locate
from cache.manifest import CacheError
from cache.reader import FeatureCache, verify_shard
from cache.shard import file_sha256, read_shard
from frameexit.atomic import check_writable_dir
from frameexit.checkpoint import BACKBONE, backbone_digest, build_model
from frameexit.cost import StepCosts, measure_step_costs, paper_per_frame
from frameexit.errors import ConfigError, UsageError
from frameexit.exit_rule import check_thresholds, exit_steps
from frameexit.head import FrameExit
from frameexit.sampling import COARSE_TO_FINE, policy_order
from frameexit.sweep import (
    ExitTables,
    candidate_ranks,
    concat_tables,
    exit_tables,
    sweep_block_bytes,
    sweep_metrics,
)
from reports.schema import SWEEP, VIDEOS
from reports.write import write_json, write_table

from .config import Job
from .datasets import load_job_dataset
from .model import checkpoint_state
from .progress import progress as progress_bar

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.parquet"
VIDEOS_FILE = "videos.parquet"
REPLAY_FILE = "replay.json"
#: What ``frameexit report`` writes from a replay's outputs: stale once the replay changes.
REPORT_FILES = ("summary.md", "summary.json", "curve.png")
LOCAL_SCHEDULERS = ("sync", "threads")
#: Bytes per row of sweep.parquet while a replay assembles it: the metrics arrays, the Python row
#: (a dozen objects and a list of 10 floats) and the Arrow table; measured at about 1 KB, rounded up.
SWEEP_ROW_BYTES = 1500
#: Bytes per per-video row (videos.parquet): built in a worker, sent here, copied into the columns and the
#: Arrow table; measured at about 300, rounded up.
VIDEO_ROW_BYTES = 500
#: Cache-key inputs a replay over ``--features`` does not compare with the job: the backbone digest is
#: compared per checkpoint (with its own message), the frame listing is what ``--features`` skips, and the
#: storage options do not make the features belong to another dataset.
NOT_COMPARED = ("backbone_digest", "frames_digest", "dtype", "precision", "channels_last")


@dataclass(frozen=True)
class ReplayOptions:
    """How to run a replay.

    Attributes
    ----------
    cache_root : str
        Cache root of ``frameexit extract``; the cache directory is found by key.
    features : str or None
        A cache directory (``<root>/<key>``) to use as it is, skipping the key computation.
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
        Extraction settings the cache was written with (they are part of its key).
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


@dataclass(frozen=True)
class ReplayResult:
    out_dir: str
    sweep_path: str
    videos_path: str
    replay_path: str
    summary: dict[str, Any]


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


def merge_tables(parts: Sequence[ExitTables]) -> tuple[ExitTables, np.ndarray]:
    """Dask task: all shards' tables as one (sorted by key) and the candidate ranks for AP."""
    tables = concat_tables(parts)
    return tables, candidate_ranks(tables.probs)


def sweep_block(merged: tuple[ExitTables, np.ndarray], first: Sequence[float], gate: Sequence[float]):
    """Dask task: metrics of the settings ``gate x first``."""
    tables, ranks = merged
    return sweep_metrics(tables, first, gate, ranks=ranks)


def per_video_rows(merged: tuple[ExitTables, np.ndarray], settings: Sequence[tuple[float, float]]) -> dict[str, list]:
    """Dask task: per-video exit step, prediction and confidence at each (first, gate) setting."""
    tables, _ = merged
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
    skipped videos) into ``out_dir``, once everything is computed.

    Everything that needs no computation is checked first (options, the
    memory the grid needs, a writable ``out_dir``, the cache against the job,
    every checkpoint's backbone); then the outputs of an earlier replay *and
    its report* (``summary.md``, ``summary.json``, ``curve.png``) are removed,
    so a replay that fails while computing leaves nothing that looks complete.
    """
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
    if order == COARSE_TO_FINE:
        order_name = "coarse_to_fine"
    elif order == tuple(range(len(order))):
        order_name = "sequential"
    else:
        order_name = ",".join(map(str, order))
    grid = dict(
        n_first=len(first),
        n_gate=len(gate),
        n_checkpoints=len(job.checkpoints),
        num_class=job.model.num_class,
        per_video_all=options.per_video == "all",
        n_steps=len(order),
    )
    # the sweep rows alone can exceed any memory (10^5 x 10^5 thresholds): refuse before touching anything
    plan_memory(**grid, n_videos=0, concurrency=1, gate_block=1, limit=available_memory())
    check_writable_dir(out_dir, "--out")

    cache = _open_cache(job, options)
    n_videos = _cached_videos(cache)
    cache_digest = cache.manifest.inputs.get("backbone_digest")
    heads: list[HeadState] = []
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
    names = _checkpoint_names([h.name for h in heads])
    if options.workers:
        concurrency = options.workers
    elif options.scheduler in LOCAL_SCHEDULERS:
        concurrency = 1 if options.scheduler == "sync" else (os.cpu_count() or 1)
    else:
        concurrency = 1  # a remote cluster's tasks use its own machines' memory
    largest_block = plan_memory(
        **grid,
        n_videos=n_videos,
        concurrency=concurrency,
        gate_block=options.gate_block or len(gate),
        limit=available_memory(),
    )

    paths = {name: os.path.join(out_dir, name) for name in (SWEEP_FILE, VIDEOS_FILE, REPLAY_FILE, *REPORT_FILES)}
    for stale in paths.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)

    settings_all = [(ft, gt) for gt in gate for ft in first]
    per_video_settings = settings_all if options.per_video == "all" else [default]
    n_shards = len(cache.manifest.shards)
    shards = [(os.path.join(cache.directory, e.name), e.sha256) for e in cache.manifest.shards]
    # graph keys of their own: on a shared dask scheduler, another client's "merge-0" must not be taken for ours
    token = uuid.uuid4().hex[:12]
    with _scheduler(options) as (kind, client):
        workers = len(client.scheduler_info()["workers"]) if client is not None else (os.cpu_count() or 1)
        block = options.gate_block or max(1, math.ceil(len(gate) / max(2 * workers, 1)))
        block = min(block, largest_block)  # smaller blocks give the same numbers (tested), in less memory
        blocks = [gate[i : i + block] for i in range(0, len(gate), block)]
        tables_tasks, outputs = {}, {}
        for i, head in enumerate(heads):
            # the head weights (tens of MB) travel once per worker, not once per task, as one object
            if client is not None:
                shipped = client.scatter(head, broadcast=True, hash=False)
            else:
                shipped = dask.delayed(head, name=f"head-{i}-{token}", traverse=False)
            parts = [
                dask.delayed(shard_exit_tables)(path, digest, shipped, order, dask_key_name=f"tables-{i}-{s}-{token}")
                for s, (path, digest) in enumerate(shards)
            ]
            tables_tasks.update({f"tables-{i}-{s}-{token}": p for s, p in enumerate(parts)})
            merged = dask.delayed(merge_tables)(parts, dask_key_name=f"merge-{i}-{token}")
            for b, gate_block in enumerate(blocks):
                outputs[f"sweep-{i}-{b}-{token}"] = dask.delayed(sweep_block)(
                    merged, first, gate_block, dask_key_name=f"sweep-{i}-{b}-{token}"
                )
            outputs[f"videos-{i}-{token}"] = dask.delayed(per_video_rows)(
                merged, per_video_settings, dask_key_name=f"videos-{i}-{token}"
            )
            outputs[f"default-{i}-{token}"] = dask.delayed(sweep_block)(
                merged, [default[0]], [default[1]], dask_key_name=f"default-{i}-{token}"
            )
        results = _compute(
            kind,
            client,
            tables_tasks,
            outputs,
            progress=progress,
            n_shards=n_shards * len(heads),
            n_settings=len(settings_all) * len(heads),
            block_sizes={
                f"sweep-{i}-{b}-{token}": len(g) * len(first) for i in range(len(heads)) for b, g in enumerate(blocks)
            },
        )

    # measured per checkpoint: the head's width changes the projection, gates and classifiers
    step_costs: dict[int, StepCosts] = {}
    for head in heads:
        if head.hidden_dim not in step_costs:
            step_costs[head.hidden_dim] = measure_step_costs(
                job.model.backbone_name,
                input_size=job.data.preprocessing.crop,
                num_class=job.model.num_class,
                truncate_modules=job.model.truncate_modules,
                hidden_dim=head.hidden_dim,
            )
    per_frame = paper_per_frame(job.model.backbone_name)
    sweep_cols = {k: [] for k in SWEEP.names}
    videos_cols = {k: [] for k in VIDEOS.names}
    for i, name in enumerate(names):
        costs = step_costs[heads[i].hidden_dim]
        for b, gate_block in enumerate(blocks):
            m = results[f"sweep-{i}-{b}-{token}"]
            for g, gt in enumerate(gate_block):
                for f, ft in enumerate(first):
                    hist = m.exit_histogram[g, f]
                    frames = float(m.mean_frames[g, f])
                    sweep_cols["checkpoint"].append(name)
                    sweep_cols["order"].append(order_name)
                    sweep_cols["first_threshold"].append(ft)
                    sweep_cols["gate_threshold"].append(gt)
                    sweep_cols["map"].append(float(m.map[g, f]))
                    sweep_cols["top1"].append(float(m.top1[g, f]))
                    sweep_cols["gflops"].append(frames * per_frame if per_frame is not None else None)
                    sweep_cols["gmacs_measured"].append(_mean_gmacs(costs, frames, float(hist[0])))
                    sweep_cols["mean_frames"].append(frames)
                    sweep_cols["exit_histogram"].append(hist.tolist())
        rows = results[f"videos-{i}-{token}"]
        if len(rows["video"]) != n_videos * len(per_video_settings):
            # the shards were verified against the manifest, so only a hand-edited manifest gets here
            raise CacheError(
                f"the manifest of {cache.directory} counts {n_videos} videos with features, its shards hold "
                f"{len(rows['video']) // max(len(per_video_settings), 1)}; run frameexit extract again"
            )
        for key in rows:
            videos_cols[key] += rows[key]
        videos_cols["checkpoint"] += [name] * len(rows["video"])
    sweep_cols["n_videos"] = [n_videos] * len(sweep_cols["checkpoint"])
    default_metrics = []
    for i, name in enumerate(names):
        m = results[f"default-{i}-{token}"]
        frames, hist = float(m.mean_frames[0, 0]), m.exit_histogram[0, 0]
        default_metrics.append(
            {
                "checkpoint": name,
                "first_threshold": default[0],
                "gate_threshold": default[1],
                "map": float(m.map[0, 0]),
                "top1": float(m.top1[0, 0]),
                "gflops": frames * per_frame if per_frame is not None else None,
                "gmacs_measured": _mean_gmacs(step_costs[heads[i].hidden_dim], frames, float(hist[0])),
                "mean_frames": frames,
                "exit_histogram": hist.tolist(),
            }
        )

    write_table(paths[SWEEP_FILE], sweep_cols, SWEEP)
    write_table(paths[VIDEOS_FILE], videos_cols, VIDEOS)
    summary = {
        "cache": {
            "directory": os.path.abspath(cache.directory),
            "key": cache.manifest.key,
            "inputs": cache.manifest.inputs,
        },
        "checkpoints": [
            {
                "name": n,
                "path": os.path.abspath(h.name),
                "sha256": h.sha256,
                "hidden_dim": h.hidden_dim,
                "gmacs_measured_parts": step_costs[h.hidden_dim].__dict__,
            }
            for n, h in zip(names, heads, strict=True)
        ],
        "order": list(order),
        "order_name": order_name,
        "first_thresholds": list(first),
        "gate_thresholds": list(gate),
        "default_setting": {"first_threshold": default[0], "gate_threshold": default[1]},
        "default_metrics": default_metrics,
        "per_video": options.per_video,
        "n_settings": len(settings_all),
        "n_videos": n_videos,
        "n_videos_listed": cache.manifest.n_listed,
        "skipped": cache.manifest.all_skipped(),
        "gflops_per_frame": per_frame,
        "dataset": job.data.name,
        "backbone": job.model.backbone_name,
        "job": job.resolved,
        "runtime": {
            "scheduler": options.scheduler if not options.workers else f"local cluster of {options.workers} processes",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "frameexit": frameexit.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    }
    write_json(paths[REPLAY_FILE], summary)
    return ReplayResult(out_dir, paths[SWEEP_FILE], paths[VIDEOS_FILE], paths[REPLAY_FILE], summary)


# ---------------------------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory a replay is expected to hold at its peak, in bytes, by part.

    Attributes
    ----------
    sweep_rows : int
        The metrics of every checkpoint and setting, as arrays, Python rows and the Arrow table.
    video_rows : int
        The per-video rows (one per video, setting and checkpoint with ``per_video='all'``).
    tables : int
        Exit tables and candidate ranks of every checkpoint (float32 / int32, videos x steps x classes).
    sweep_tasks : int
        Working memory of the sweep tasks that run at once, each on ``gate_block`` gate thresholds.
    n_settings, n_video_rows : int
        Settings of the grid, and per-video rows, over all checkpoints.
    """

    sweep_rows: int
    video_rows: int
    tables: int
    sweep_tasks: int
    n_settings: int
    n_video_rows: int

    @property
    def total(self) -> int:
        return self.sweep_rows + self.video_rows + self.tables + self.sweep_tasks


def memory_estimate(
    *,
    n_first: int,
    n_gate: int,
    n_checkpoints: int,
    n_videos: int,
    num_class: int,
    per_video_all: bool = False,
    n_steps: int = 10,
    concurrency: int = 1,
    gate_block: int = 1,
) -> MemoryEstimate:
    """What a replay of ``n_first x n_gate`` settings for ``n_checkpoints`` over ``n_videos`` needs (see
    :class:`MemoryEstimate`); ``concurrency`` sweep tasks of ``gate_block`` gate thresholds run at once."""
    settings = n_first * n_gate * n_checkpoints
    video_rows = n_checkpoints * n_videos * (n_first * n_gate if per_video_all else 1)
    block = max(1, min(gate_block, n_gate))
    return MemoryEstimate(
        sweep_rows=settings * SWEEP_ROW_BYTES,
        video_rows=video_rows * VIDEO_ROW_BYTES,
        tables=n_checkpoints * n_videos * n_steps * (num_class * 8 + 4),
        sweep_tasks=concurrency * sweep_block_bytes(n_videos, n_first, block, num_class, n_steps) if n_videos else 0,
        n_settings=settings,
        n_video_rows=video_rows,
    )


def plan_memory(*, limit: int, gate_block: int, **grid: Any) -> int:
    """The largest number of gate thresholds per sweep task (at most ``gate_block``) that fits in ``limit`` bytes.

    Raises :class:`UsageError` with the estimate, the limit and how to shrink the
    grid when even one gate threshold per task does not fit. ``grid`` holds the
    other arguments of :func:`memory_estimate`.
    """
    one = memory_estimate(**grid, gate_block=1)
    if one.total > limit:
        raise UsageError(_too_large(one, limit, **grid))
    if gate_block <= 1:
        return 1
    # memory grows linearly with the block: solve for the largest block that fits
    two = memory_estimate(**grid, gate_block=2)
    per_gate = max(two.total - one.total, 1)
    return int(max(1, min(gate_block, 1 + (limit - one.total) // per_gate)))


def _too_large(estimate: MemoryEstimate, limit: int, **grid: Any) -> str:
    n_first, n_gate, n_videos = grid["n_first"], grid["n_gate"], grid["n_videos"]
    over = f" over {n_videos:,} videos" if n_videos else ""
    parts = [
        f"sweep rows {_size(estimate.sweep_rows)}",
        f"per-video rows {_size(estimate.video_rows)}",
        f"exit tables {_size(estimate.tables)}",
        f"sweep tasks {_size(estimate.sweep_tasks)}",
    ]
    advice = (
        "use fewer thresholds (smaller COUNTs in --first-thresholds / --gate-thresholds START:STOP:COUNT; "
        "e.g. 0.5:1:51 x 0:1:41 is 2,091 settings)"
    )
    if grid.get("per_video_all") and estimate.video_rows > estimate.sweep_rows:
        advice = (
            f"--per-video all writes {estimate.n_video_rows:,} per-video rows (one per video, setting and "
            f"checkpoint): use --per-video default (the job's setting only), or {advice}"
        )
    return (
        f"a grid of {n_first:,} first x {n_gate:,} gate thresholds ({n_first * n_gate:,} settings) for "
        f"{grid['n_checkpoints']} checkpoint(s){over} needs about {_size(estimate.total)} of memory "
        f"({', '.join(parts)}), more than the {_size(limit)} available; {advice}"
    )


def _size(n_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes / 1e3:.1f} kB"


def available_memory() -> int:
    """Memory a replay may use on this machine, in bytes: ``MemAvailable`` (Linux), else the physical memory."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 2**62  # unknown: no limit


# ---------------------------------------------------------------------------------------------- helpers


def _mean_gmacs(costs, mean_frames: float, share_step0: float) -> float:
    """Mean measured GMACs per video from the mean frames read and the share exiting at step 0."""
    if math.isnan(mean_frames):
        return float("nan")
    steps = mean_frames - 1.0  # mean exit step
    return (
        mean_frames * (costs.backbone + costs.projection)
        + costs.classifier
        + steps * costs.gate
        + (1.0 - share_step0) * costs.classifier
    )


def _checkpoint_names(paths: Sequence[str]) -> list[str]:
    """File names, or the paths as given where two checkpoints share a file name."""
    base = [os.path.basename(p) for p in paths]
    return [b if base.count(b) == 1 else p for b, p in zip(base, paths, strict=True)]


def _open_cache(job: Job, options: ReplayOptions) -> FeatureCache:
    """The job's cache: ``--features`` as given (checked against the job), else found under the root.

    Neither way lists the frame folders nor computes the key: the caches under
    the root are matched by the inputs their manifests record
    (:func:`cache.locate.locate`, whose docstring gives the rules). The backbone
    digest of the first checkpoint and the frame listing are computed only when
    two matching caches differ in them. The memory format (``channels_last``) is
    not required to match: it changes which convolution algorithm the backbone
    runs, not what its features are, so a cache extracted with
    ``--channels-last`` is this job's too (a replay has no such option).
    """
    if options.features:
        cache = FeatureCache.open(options.features)
        _check_cache_inputs(job, options, cache)
        return cache
    job.require("data.path_split", "data.path_label", "data.path_classid")
    check_job_files(job.data)
    wanted = cheap_inputs(
        job.data, job.model, dtype=options.dtype, precision=options.precision, channels_last=options.channels_last
    )
    checkpoint = job.checkpoints[0]

    def backbone() -> str:
        return backbone_digest(checkpoint_state(job, checkpoint))

    def frames() -> str | None:
        if not job.data.path_frame or not os.path.isdir(job.data.path_frame):
            return None
        dataset = load_job_dataset(job.data, job.model.num_class)
        return frames_digest(dataset.videos, job.data.num_frames)

    return locate(
        options.cache_root,
        wanted,
        resolve={"backbone_digest": backbone, "frames_digest": frames},
        data=job.data,
        hint=f" (for the backbone of {checkpoint})",
    )


def _check_cache_inputs(job: Job, options: ReplayOptions, cache: FeatureCache) -> None:
    """Raise :class:`CacheError` when a cache given as it is was extracted for another dataset or preprocessing.

    The inputs the manifest records are compared with the job's
    (:func:`cache.inputs.cheap_inputs`: no frame listing, no key): the dataset
    name, the digests of the split, label and class-list files, and the
    backbone, preprocessing and sampling. Inputs a manifest does not record
    (hand-made caches) are not compared, nor those in :data:`NOT_COMPARED`.
    """
    recorded = cache.manifest.inputs
    compared = [k for k in recorded if k not in NOT_COMPARED]
    if not compared:
        return
    job.require("data.path_split", "data.path_label", "data.path_classid")
    check_job_files(job.data)
    wanted = cheap_inputs(
        job.data, job.model, dtype=options.dtype, precision=options.precision, channels_last=options.channels_last
    )
    found = differences(recorded, wanted, compared, job.data)
    if found:
        raise CacheError(
            f"the feature cache {cache.directory} was extracted for other inputs than this job: "
            f"{'; '.join(found)}. Give the cache of this job's dataset, or run frameexit extract with this job"
        )


def _cached_videos(cache: FeatureCache) -> int:
    """Videos with features in the cache; raises :class:`CacheError` naming the cache when there are none."""
    failed = {s["video"] for entry in cache.manifest.shards for s in entry.skipped}
    n_videos = sum(1 for entry in cache.manifest.shards for v in entry.videos if v not in failed)
    if n_videos == 0:
        skipped = cache.manifest.all_skipped()
        reasons = "; ".join(f"{s['video']}: {s['reason']}" for s in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise CacheError(
            f"the feature cache {cache.directory} holds no video to evaluate: {cache.manifest.n_listed} listed in the "
            f"split, {len(skipped)} skipped ({reasons or 'none'}{more}); fix the dataset (frameexit prepare check "
            "lists what is missing) and run frameexit extract again"
        )
    return n_videos


@contextlib.contextmanager
def _scheduler(options: ReplayOptions):
    if options.workers:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=options.workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield "distributed", client
    elif options.scheduler in LOCAL_SCHEDULERS:
        yield options.scheduler, None
    else:
        from distributed import Client

        try:
            client = Client(options.scheduler, timeout=30)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot reach the dask scheduler {options.scheduler!r}: {exc}") from None
        with client:
            yield "distributed", client


def _compute(kind, client, tables_tasks: dict, outputs: dict, *, progress, n_shards, n_settings, block_sizes) -> dict:
    shard_bar = progress_bar(range(n_shards), desc="replay shards", total=n_shards, unit="shard", enabled=progress)
    setting_bar = progress_bar(
        range(n_settings), desc="replay settings", total=n_settings, unit="setting", enabled=progress
    )

    def done(key: str) -> None:
        if key in tables_tasks:
            shard_bar.update(1)
        elif key in block_sizes:
            setting_bar.update(block_sizes[key])

    try:
        if client is None:
            with _Bars(done):
                values = dask.compute(*outputs.values(), scheduler=kind)
            return dict(zip(outputs, values, strict=True))
        from distributed import as_completed

        futures = client.compute(list(tables_tasks.values()))
        for future in as_completed(futures):
            future.result()  # raise a task's error here, with its message
            shard_bar.update(1)
        results = client.compute(list(outputs.values()))
        by_future = dict(zip(results, outputs, strict=True))
        values = {}
        for future in as_completed(results):
            key = by_future[future]
            values[key] = future.result()
            done(key)
        return values
    finally:
        shard_bar.close()
        setting_bar.close()


class _Bars(Callback):
    """Progress of a local dask computation, task by task."""

    def __init__(self, on_done: Callable[[str], None]):
        super().__init__()
        self.on_done = on_done

    def _posttask(self, key, result, dsk, state, worker_id):
        self.on_done(key if isinstance(key, str) else str(key))
