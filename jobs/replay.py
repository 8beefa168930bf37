"""`frameexit replay`: threshold sweeps over cached features, on dask.

Graph per checkpoint head: one task per shard computes the exit tables
(projection, cumulative max in policy order, all classifiers' softmax, all
gates); one task merges them and ranks every (video, step) score per class;
one task per block of gate thresholds computes the metrics of all its settings.
Results do not depend on the scheduler, the number of workers or the shard size.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import torch
import torchvision
from dask.callbacks import Callback

import frameexit
from cache.manifest import CacheError
from cache.reader import FeatureCache, verify_shard
from cache.shard import file_sha256, read_shard
from frameexit.checkpoint import BACKBONE, backbone_digest, build_model
from frameexit.cost import measure_step_costs, paper_per_frame
from frameexit.errors import ConfigError
from frameexit.exit_rule import check_thresholds, exit_steps
from frameexit.sampling import COARSE_TO_FINE, policy_order
from frameexit.sweep import ExitTables, candidate_ranks, concat_tables, exit_tables, sweep_metrics
from reports.schema import SWEEP, VIDEOS
from reports.write import write_json, write_table

from .config import Job
from .extract import ExtractOptions, locate_cache
from .model import checkpoint_state
from .progress import progress as progress_bar

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.parquet"
VIDEOS_FILE = "videos.parquet"
REPLAY_FILE = "replay.json"
LOCAL_SCHEDULERS = ("sync", "threads")


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
        Gate thresholds per sweep task (default: enough blocks to keep every worker busy).
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

_HEADS: dict[str, Any] = {}


def shard_exit_tables(path: str, sha256: str, head_key: str, head_state: dict, order: tuple[int, ...]) -> ExitTables:
    """Dask task: verify and read one shard, return its exit tables for one head."""
    verify_shard(path, sha256)
    model = _HEADS.get(head_key)
    if model is None:
        model = build_model(head_state, backbone_name=None, path=head_key)
        _HEADS.clear()
        _HEADS[head_key] = model
    shard = read_shard(path)
    return exit_tables(model, shard.features, order, videos=shard.videos, labels=shard.labels)


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
    skipped videos) into ``out_dir``, once everything is computed; stale copies
    are removed first.
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

    paths = {name: os.path.join(out_dir, name) for name in (SWEEP_FILE, VIDEOS_FILE, REPLAY_FILE)}
    for stale in paths.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)

    cache = _open_cache(job, options)
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
        heads.append((checkpoint, file_sha256(checkpoint), head_state))
    names = _checkpoint_names([c for c, _, _ in heads])

    settings_all = [(ft, gt) for gt in gate for ft in first]
    per_video_settings = settings_all if options.per_video == "all" else [default]
    n_shards = len(cache.manifest.shards)
    shards = [(os.path.join(cache.directory, e.name), e.sha256) for e in cache.manifest.shards]
    with _scheduler(options) as (kind, client):
        workers = len(client.scheduler_info()["workers"]) if client is not None else (os.cpu_count() or 1)
        block = options.gate_block or max(1, math.ceil(len(gate) / max(2 * workers, 1)))
        blocks = [gate[i : i + block] for i in range(0, len(gate), block)]
        tables_tasks, outputs = {}, {}
        for i, (_, sha, head_state) in enumerate(heads):
            # the head weights (tens of MB) travel once per worker, not once per task
            if client is not None:
                head = client.scatter(head_state, broadcast=True, hash=False)
            else:
                head = dask.delayed(head_state, name=f"head-{i}-{sha[:16]}", traverse=False)
            parts = [
                dask.delayed(shard_exit_tables)(
                    path, digest, f"{sha}:{order}", head, order, dask_key_name=f"tables-{i}-{s}"
                )
                for s, (path, digest) in enumerate(shards)
            ]
            tables_tasks.update({f"tables-{i}-{s}": p for s, p in enumerate(parts)})
            merged = dask.delayed(merge_tables)(parts, dask_key_name=f"merge-{i}")
            for b, gate_block in enumerate(blocks):
                outputs[f"sweep-{i}-{b}"] = dask.delayed(sweep_block)(
                    merged, first, gate_block, dask_key_name=f"sweep-{i}-{b}"
                )
            outputs[f"videos-{i}"] = dask.delayed(per_video_rows)(
                merged, per_video_settings, dask_key_name=f"videos-{i}"
            )
            outputs[f"default-{i}"] = dask.delayed(sweep_block)(
                merged, [default[0]], [default[1]], dask_key_name=f"default-{i}"
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
                f"sweep-{i}-{b}": len(g) * len(first) for i in range(len(heads)) for b, g in enumerate(blocks)
            },
        )

    costs = measure_step_costs(
        job.model.backbone_name,
        input_size=job.data.preprocessing.crop,
        num_class=job.model.num_class,
        truncate_modules=job.model.truncate_modules,
        hidden_dim=int(next(iter(heads))[2]["mlp.layers.0.weight"].shape[0]),
    )
    per_frame = paper_per_frame(job.model.backbone_name)
    sweep_cols = {k: [] for k in SWEEP.names}
    videos_cols = {k: [] for k in VIDEOS.names}
    n_videos = None
    for i, name in enumerate(names):
        for b, gate_block in enumerate(blocks):
            m = results[f"sweep-{i}-{b}"]
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
        rows = results[f"videos-{i}"]
        n_videos = len(rows["video"]) // max(len(per_video_settings), 1)
        for key in rows:
            videos_cols[key] += rows[key]
        videos_cols["checkpoint"] += [name] * len(rows["video"])
    sweep_cols["n_videos"] = [n_videos or 0] * len(sweep_cols["checkpoint"])
    default_metrics = []
    for i, name in enumerate(names):
        m = results[f"default-{i}"]
        frames, hist = float(m.mean_frames[0, 0]), m.exit_histogram[0, 0]
        default_metrics.append(
            {
                "checkpoint": name,
                "first_threshold": default[0],
                "gate_threshold": default[1],
                "map": float(m.map[0, 0]),
                "top1": float(m.top1[0, 0]),
                "gflops": frames * per_frame if per_frame is not None else None,
                "gmacs_measured": _mean_gmacs(costs, frames, float(hist[0])),
                "mean_frames": frames,
                "exit_histogram": hist.tolist(),
            }
        )

    os.makedirs(out_dir, exist_ok=True)
    write_table(paths[SWEEP_FILE], sweep_cols, SWEEP)
    write_table(paths[VIDEOS_FILE], videos_cols, VIDEOS)
    summary = {
        "cache": {
            "directory": os.path.abspath(cache.directory),
            "key": cache.manifest.key,
            "inputs": cache.manifest.inputs,
        },
        "checkpoints": [
            {"name": n, "path": os.path.abspath(c), "sha256": sha} for n, (c, sha, _) in zip(names, heads, strict=True)
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
        "gmacs_measured_parts": costs.__dict__,
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
    if options.features:
        return FeatureCache.open(options.features)
    job.require("data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    extract_options = ExtractOptions(
        cache_root=options.cache_root,
        dtype=options.dtype,
        precision=options.precision,
        channels_last=options.channels_last,
    )
    _, key, _, _ = locate_cache(job, extract_options)
    directory = os.path.join(options.cache_root, key)
    if not os.path.isdir(directory):
        raise CacheError(
            f"no feature cache for this job under {options.cache_root} (key {key}, for the backbone of "
            f"{job.checkpoints[0]}); run frameexit extract with the same job and checkpoint first"
        )
    return FeatureCache.open(directory)


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
