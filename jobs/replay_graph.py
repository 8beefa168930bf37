"""The dask graph of a replay: its tasks, how they are wired, and running them on a scheduler.

Per checkpoint head ``i``:

- ``tables-i-s``, per shard: the head's exit tables, read from the cache's stored tables when it holds them for the
  checkpoint (:mod:`cache.exit_tables`, verified against their checksums), else computed: one task per shard
  (``shard-s``) verifies and reads the shard once and runs every such head (:func:`jobs.replay_head.shard_exit_tables`),
  writing the tables to be stored (``written-i``: their checksums); everything else reads these.
- ``exits-i-s`` and ``exits-i``: the class-independent part of each shard's tables (step-0 confidence, gates,
  top-1 hits; small), merged in key order.
- ``pieces-i-s``: each shard's tables cut into the class blocks (views, no copy); ``ap-i-b``, one task per class
  block: the per-class AP of its classes at every setting, from the pieces of every shard. Classes are
  independent, so no task holds more than one block of every video's scores, and each class is sorted once.
- ``sweep-i``: all metrics of the grid from the exits and the AP blocks.
- ``policy-steps-i`` and ``policies-i``: every video's exit step at each setting of the baseline policies
  (:mod:`frameexit.policies`: confidence, fixed frames, oracle), from the exits; their per-class AP is computed by
  the ``ap-i-b`` tasks beside the grid's (one copy of each class block), and all their metrics from it.
- ``rows-i-s`` and ``videos-i``: per-video rows at the settings asked for, per shard, merged in key order.
- ``names-i`` and ``named-i``: the settings a report names (the job's, each policy's points at equal cost, the
  budget's), from the metrics; at each, every video's decision and the bootstrap intervals of mAP and top-1.
- ``deviation-i-s`` and ``deviation-i``: how far each shard's head outputs may be from those on per-step features
  (its probe), and the largest; ``risk-i-s`` and ``risk-i``: the videos whose decision at a setting this
  deviation could change (:mod:`frameexit.exactness`), counted at every setting.

The job's own setting is computed with the grid (its thresholds added when not on it): the AP of a setting does
not depend on the other settings computed with it, bit for bit; nor do results depend on the scheduler, the
workers, the shard size or the class blocks.
"""

from __future__ import annotations

import functools
import itertools
import operator
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask
import numpy as np
from tqdm.dask import TqdmCallback

from cache.exit_tables import read_resampled, read_table, resampled_digest, write_resampled
from cache.manifest import CacheError, ShardMissingError
from frameexit.bootstrap import Bootstrap, Resampled, SettingResampler, resample_weights
from frameexit.exactness import (
    UNKNOWN,
    HeadDeviation,
    Margins,
    Risk,
    RiskTables,
    merge_deviations,
    risk_grid,
    risk_tables,
)
from frameexit.exit_rule import exit_steps_grid
from frameexit.policies import PolicySetting, policy_exit_steps
from frameexit.sweep import (
    ExitTables,
    SweepMetrics,
    VideoExits,
    class_block,
    class_block_ap,
    combine_sweep,
    concat_video_exits,
    policy_average_precision,
    policy_metrics,
    video_exits,
)

from .outputs import NamedResult, named_result
from .progress import progress as progress_bar
from .scheduling import explaining_lost_workers

if TYPE_CHECKING:
    from .model import HeadState


@dataclass(frozen=True)
class TableSource:
    """Where one checkpoint's exit tables come from: ``stored``, the ``(path, sha256)`` of its stored table of each
    shard, read after their checksums match; else its ``head`` run over the shards, each shard's tables written to
    ``store`` (``(path, key)`` per shard) when given."""

    head: HeadState | None = None
    stored: Sequence[tuple[str, str]] | None = None
    store: Sequence[tuple[str, str]] | None = None


@dataclass(frozen=True)
class RiskPart:
    """One shard's videos at risk: counts at every setting, and which videos at the named settings."""

    videos: list[str]
    counts: np.ndarray | None
    masks: np.ndarray


def shard_risk(
    tables: RiskTables,
    deviation: HeadDeviation,
    first: Sequence[float],
    gate: Sequence[float],
    named: Sequence[tuple[int, int]],
) -> RiskPart:
    """Dask task: one shard's videos at risk at every setting, under the deviation of the whole cache."""
    if deviation.status == UNKNOWN:
        return RiskPart(list(tables.videos), None, np.zeros((len(named), len(tables.videos)), dtype=bool))
    counts, masks = risk_grid(tables, Margins.of(deviation), first, gate, named)
    return RiskPart(list(tables.videos), counts, masks)


def merge_risk(parts: Sequence[RiskPart], deviation: HeadDeviation) -> Risk:
    """Dask task: the shards' videos at risk as one :class:`frameexit.exactness.Risk`, videos in key order."""
    videos = [v for p in parts for v in p.videos]
    order = np.argsort(np.asarray(videos, dtype=object), kind="stable")
    unknown = deviation.status == UNKNOWN or any(p.counts is None for p in parts)
    return Risk(
        deviation=deviation,
        margins=None if unknown else Margins.of(deviation),
        counts=None if unknown else np.sum([p.counts for p in parts], axis=0, dtype=np.int64),
        videos=[videos[i] for i in order],
        masks=np.concatenate([p.masks for p in parts], axis=1)[:, order],
    )


def class_pieces(tables: ExitTables, bounds: tuple[int, ...]) -> tuple[ExitTables, ...]:
    """Dask task: one shard's tables cut into the class blocks ``[bounds[b], bounds[b + 1])`` (views)."""
    return tuple(
        ExitTables(tables.videos, tables.labels[:, lo:hi], tables.probs[:, :, lo:hi], tables.gates)
        for lo, hi in itertools.pairwise(bounds)
    )


def block_ap(
    pieces: Sequence[ExitTables],
    exits: VideoExits,
    first: Sequence[float],
    gate: Sequence[float],
    policy_steps: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Dask task: per-class AP of one class block (its columns of every shard's tables) at every setting of the
    grid, shape (n_gate, n_first, n_block), and at the baseline policies' exit steps ``policy_steps`` (n_settings,
    n_videos), shape (n_settings, n_block) (``None`` without them): the block is copied once for both."""
    block = class_block(pieces, slice(None))
    grid = class_block_ap(block, exits, first, gate)
    if policy_steps is None or not len(policy_steps):
        return grid, None
    return grid, policy_average_precision(block.probs, block.labels, policy_steps)


def baseline_metrics(
    exits: VideoExits, steps: np.ndarray, ap_blocks: Sequence[np.ndarray | None]
) -> SweepMetrics | None:
    """Dask task: the baseline settings' metrics (:func:`frameexit.sweep.policy_metrics`); ``None`` without any."""
    if not len(steps):
        return None
    return policy_metrics(exits, steps, [b for b in ap_blocks if b is not None])


def baseline_steps(exits: VideoExits, settings: Sequence[PolicySetting]) -> np.ndarray:
    """Dask task: every video's exit step at each baseline policy setting, (n_settings, n_videos)."""
    return policy_exit_steps(settings, exits.top_probs, exits.hits)


@dataclass(frozen=True)
class VideoRows:
    """Per-video decisions at some settings, arrays of shape (n_settings, n_videos)."""

    videos: list[str]  # keys, sorted
    labels: list[list[int]]  # ground-truth class indices of each video
    exit_step: np.ndarray  # int64, 0-based
    prediction: np.ndarray  # int64: the class of the top probability at the exit step
    confidence: np.ndarray  # float64: that probability (a float32 value)


def shard_video_rows(
    tables: ExitTables, settings: Sequence[tuple[float, float]], baselines: Sequence[PolicySetting] = ()
) -> VideoRows:
    """Dask task: each video's exit step, prediction and confidence at each ``(first, gate)`` setting, then at each
    baseline policy setting (a video's exit under every policy depends on its own outputs only)."""
    n = len(tables.videos)
    steps = np.zeros((0, n), dtype=np.int64)
    if settings:
        # each distinct threshold once: the grid of them, then each setting's (gate, first) entry
        first, at_first = np.unique([ft for ft, _ in settings], return_inverse=True)
        gate, at_gate = np.unique([gt for _, gt in settings], return_inverse=True)
        steps = exit_steps_grid(tables.confidence0, tables.gates, first, gate)[at_gate, at_first]
    # the top class and its probability at every step, then picked at each setting's exit step
    predictions = tables.probs.argmax(axis=2)
    confidences = tables.probs.max(axis=2)
    if baselines:
        hits = tables.labels[np.arange(n)[:, None], predictions]
        steps = np.concatenate([steps, policy_exit_steps(baselines, confidences, hits)])
    confidences = confidences.astype(np.float64)
    rows = np.arange(n)[None, :]
    return VideoRows(
        videos=list(tables.videos),
        labels=[np.flatnonzero(row).tolist() for row in tables.labels],
        exit_step=steps,
        prediction=predictions[rows, steps],
        confidence=confidences[rows, steps],
    )


def merge_video_rows(parts: Sequence[VideoRows]) -> VideoRows:
    """Dask task: the shards' per-video rows as one, videos in key order."""
    videos = [v for p in parts for v in p.videos]
    order = np.argsort(np.asarray(videos, dtype=object), kind="stable")
    labels = [label for p in parts for label in p.labels]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts], axis=1)[:, order]

    return VideoRows(
        videos=[videos[i] for i in order],
        labels=[labels[i] for i in order],
        exit_step=cat("exit_step"),
        prediction=cat("prediction"),
        confidence=cat("confidence"),
    )


def setting_exit_steps(exits: VideoExits, setting: dict[str, Any]) -> np.ndarray:
    """Every video's exit step (key order) at one setting of any policy, frameexit's thresholds or a baseline's,
    from the merged video exits: the sweep's own functions, so the steps are the sweep's."""
    if setting["policy"] == "frameexit":
        first, gate = [setting["first_threshold"]], [setting["gate_threshold"]]
        return exit_steps_grid(exits.confidence0, exits.gates, first, gate)[0, 0]
    baseline = PolicySetting(setting["policy"], tau=setting.get("tau"), frames=setting.get("frames"))
    return policy_exit_steps([baseline], exits.top_probs, exits.hits)[0]


@dataclass(frozen=True)
class ResampledStore:
    """Where a replay keeps each named setting's bootstrap resamples (:func:`cache.exit_tables.read_resampled`), and
    the digest of the bootstrap's code they are keyed by besides their inputs."""

    directory: str
    code: str


def named_bootstrap(
    parts: Sequence[ExitTables],
    exits: VideoExits,
    settings: Sequence[dict[str, Any]],
    bootstrap: Bootstrap,
    store: ResampledStore | None = None,
) -> list[NamedResult]:
    """Dask task: at each named setting, every video's decision and the bootstrap of mAP and top-1 over videos
    (:mod:`frameexit.bootstrap`): the exit steps from the merged ``exits``, the probabilities there from every
    shard's tables; one setting's scores (videos x classes) at a time. With ``store``, a setting's resamples
    kept there from the same probabilities, labels and resamples are read instead, and those computed are kept."""
    videos = [v for p in parts for v in p.videos]
    order = np.argsort(np.asarray(videos, dtype=object), kind="stable")
    position = np.empty(len(videos), dtype=np.int64)  # each concatenated row's place in key order
    position[order] = np.arange(len(videos))
    starts = np.cumsum([0, *(len(p.videos) for p in parts)])
    labels = np.concatenate([p.labels for p in parts])[order]
    resampler = None
    out = []
    for setting in settings:
        steps = setting_exit_steps(exits, setting)
        shard_steps = steps[position]
        scores = np.concatenate(
            [
                p.probs[np.arange(len(p.videos)), shard_steps[lo:hi]]
                for p, lo, hi in zip(parts, starts[:-1], starts[1:], strict=True)
            ]
        )[order]
        resampled = None
        if bootstrap.resamples:
            digest = kept = None
            if store is not None:
                digest = resampled_digest(scores, labels, bootstrap.resamples, bootstrap.seed, store.code)
                kept = read_resampled(store.directory, digest)
            if kept is not None:
                resampled = Resampled(*kept)
            else:
                if resampler is None:  # what the resamples of these videos share, computed once
                    weights = resample_weights(len(videos), bootstrap.resamples, bootstrap.seed)
                    resampler = SettingResampler(labels, weights)
                resampled = resampler(scores)
                if store is not None:
                    write_resampled(store.directory, digest, resampled.map, resampled.top1)
        out.append(named_result(setting, steps, scores, bootstrap, resampled))
    return out


@dataclass
class Graph:
    """A replay's dask tasks and the keys of the results kept, per checkpoint ``i``. Keys carry a token of their
    own: on a shared dask scheduler, another client's ``sweep-0`` must not be taken for ours."""

    tables: dict[str, Any] = field(default_factory=dict)  # per shard and checkpoint: its exit tables
    blocks: dict[str, Any] = field(default_factory=dict)  # per class block and checkpoint: its AP
    outputs: dict[str, Any] = field(default_factory=dict)  # every task whose result is kept, by key
    sweeps: list[str] = field(default_factory=list)  # [i]: SweepMetrics of the grid (and the job's setting)
    policies: list[str] = field(default_factory=list)  # [i]: SweepMetrics (n_settings, 1) of the baseline settings
    videos: list[str] = field(default_factory=list)  # [i]: VideoRows
    risks: list[str] = field(default_factory=list)  # [i]: frameexit.exactness.Risk over the grid
    named: list[str] = field(default_factory=list)  # [i]: list of NamedResult (with name_settings)
    written: dict[int, str] = field(default_factory=dict)  # {i: key}: SHA-256 of each table stored for checkpoint i


def class_bounds(num_class: int, block: int) -> tuple[int, ...]:
    """Starts of the class blocks of at most ``block`` classes, and ``num_class``: ``(0, block, ..., num_class)``."""
    return (*range(0, num_class, max(block, 1)), num_class)


def build_graph(
    sources: Sequence[TableSource],
    shards: Sequence[tuple[str, str]],
    *,
    order: tuple[int, ...],
    first: Sequence[float],
    gate: Sequence[float],
    row_settings: Sequence[tuple[float, float]],
    num_class: int,
    row_baselines: Sequence[PolicySetting] = (),
    class_block_size: int,
    client: Any = None,
    tables: Sequence[Sequence[ExitTables]] | None = None,
    named: Sequence[tuple[int, int]] = (),
    baselines: Sequence[PolicySetting] = (),
    name_settings: Callable[[int, SweepMetrics, SweepMetrics | None], list[dict[str, Any]]] | None = None,
    bootstrap: Bootstrap | None = None,
    resampled: ResampledStore | None = None,
    head_threads: int | None = None,
    head_device: str = "cpu",
) -> Graph:
    """Every task of a replay (see the module docstring), per checkpoint, whose exit tables come from ``sources``
    (:class:`TableSource`); ``shards``: ``(path, sha256)`` of each; ``first`` x ``gate``: the thresholds the sweep
    computes; ``row_settings``: ``(first, gate)`` of the per-video rows, then ``row_baselines`` (baseline policy
    settings); ``client``: a ``distributed.Client`` to scatter the heads to; ``tables``: each checkpoint's shard
    tables when already computed (``bench/replay.py``); ``named``: ``(gate, first)`` indices of the settings whose
    videos at risk are named (:class:`frameexit.exactness.Risk`); ``baselines``: the baseline policies' settings
    (:func:`frameexit.policies.policy_settings`), computed with the same class blocks; ``name_settings(i, sweep,
    baselines)``: the settings of checkpoint ``i`` a report names, from its metrics, whose decisions and bootstrap
    intervals (``bootstrap``) are computed from the tables (``named-i``), or read from ``resampled``;
    ``head_threads``: torch's threads while head passes run in this process (:func:`jobs.process.head_threads`);
    ``head_device``: the torch device the heads run on (``cpu``, ``cuda:N``)."""
    token = uuid.uuid4().hex[:12]
    bounds = class_bounds(num_class, class_block_size)
    given = tables
    graph = Graph()
    run = [i for i, source in enumerate(sources) if source.stored is None] if given is None else []
    read = _head_pass(sources, run, shards, order, client, token, head_threads, head_device)
    for i in range(len(sources)):
        if i in run:
            graph.written[i] = f"written-{i}-{token}"
            digests = [
                dask.delayed(_pick)(r, 1, run.index(i), dask_key_name=f"digest-{i}-{s}-{token}")
                for s, r in enumerate(read)
            ]
            graph.outputs[graph.written[i]] = dask.delayed(list)(digests, dask_key_name=graph.written[i])
        tables, exits, pieces, rows, deviations = [], [], [], [], []
        for s in range(len(shards)):
            key = f"tables-{i}-{s}-{token}"
            if given is not None:
                tables.append(dask.delayed(given[i][s], name=key, traverse=False))
            elif i in run:
                tables.append(dask.delayed(_pick)(read[s], 0, run.index(i), dask_key_name=key))
            else:
                path, digest = sources[i].stored[s]
                tables.append(dask.delayed(read_table)(os.path.abspath(path), digest, dask_key_name=key))
            graph.tables[key] = tables[-1]
            exits.append(dask.delayed(video_exits)(tables[-1], dask_key_name=f"exits-{i}-{s}-{token}"))
            cut = dask.delayed(class_pieces, nout=len(bounds) - 1)
            pieces.append(cut(tables[-1], bounds, dask_key_name=f"pieces-{i}-{s}-{token}"))
            rows.append(
                dask.delayed(shard_video_rows)(
                    tables[-1], row_settings, list(row_baselines), dask_key_name=f"rows-{i}-{s}-{token}"
                )
            )
            # the deviation a shard's tables carry (small: what the merge needs, not the tables)
            carried = dask.delayed(operator.attrgetter("deviation"))
            deviations.append(carried(tables[-1], dask_key_name=f"deviation-{i}-{s}-{token}"))
        deviation = dask.delayed(merge_deviations)(deviations, dask_key_name=f"deviation-{i}-{token}")
        # what the risk rule reads of each shard's tables, so that the tables need not wait for every shard's deviation
        compact = [
            dask.delayed(risk_tables)(t, dask_key_name=f"risk-tables-{i}-{s}-{token}") for s, t in enumerate(tables)
        ]
        risks = [
            dask.delayed(shard_risk)(c, deviation, first, gate, named, dask_key_name=f"risk-{i}-{s}-{token}")
            for s, c in enumerate(compact)
        ]
        graph.risks.append(f"risk-{i}-{token}")
        graph.outputs[graph.risks[i]] = dask.delayed(merge_risk)(risks, deviation, dask_key_name=graph.risks[i])
        merged = dask.delayed(concat_video_exits)(exits, dask_key_name=f"exits-{i}-{token}")
        steps = dask.delayed(baseline_steps)(merged, list(baselines), dask_key_name=f"policy-steps-{i}-{token}")
        aps, policy_aps = [], []
        for b in range(len(bounds) - 1):
            key = f"ap-{i}-{b}-{token}"
            both = dask.delayed(block_ap, nout=2)(
                [p[b] for p in pieces], merged, first, gate, steps if baselines else None, dask_key_name=key
            )
            graph.blocks[key] = both
            aps.append(both[0])
            policy_aps.append(both[1])
        graph.sweeps.append(f"sweep-{i}-{token}")
        graph.outputs[graph.sweeps[i]] = dask.delayed(combine_sweep)(
            merged, aps, first, gate, dask_key_name=graph.sweeps[i]
        )
        graph.policies.append(f"policies-{i}-{token}")
        graph.outputs[graph.policies[i]] = dask.delayed(baseline_metrics)(
            merged, steps, policy_aps, dask_key_name=graph.policies[i]
        )
        if name_settings is not None:
            settings = dask.delayed(name_settings)(
                i, graph.outputs[graph.sweeps[i]], graph.outputs[graph.policies[i]], dask_key_name=f"names-{i}-{token}"
            )
            graph.named.append(f"named-{i}-{token}")
            graph.outputs[graph.named[i]] = dask.delayed(named_bootstrap)(
                tables, merged, settings, bootstrap or Bootstrap(resamples=0), resampled, dask_key_name=graph.named[i]
            )
        graph.videos.append(f"videos-{i}-{token}")
        graph.outputs[graph.videos[i]] = dask.delayed(merge_video_rows)(rows, dask_key_name=graph.videos[i])
    return graph


def _head_pass(
    sources: Sequence[TableSource],
    run: Sequence[int],
    shards: Sequence[tuple[str, str]],
    order,
    client,
    token: str,
    threads: int | None,
    device: str,
) -> list[Any]:
    """One task per shard that verifies and reads it once and runs the heads of ``sources[run]`` (none without) on
    ``device``."""
    if not run:
        return []
    # torch is imported only when a head runs: a replay reading stored tables does without it
    from .replay_head import shard_exit_tables

    heads = [sources[i].head for i in run]
    # the head weights (tens of MB) travel once per worker, not once per task, each as one object
    if client is not None:
        shipped = [client.scatter(head, broadcast=True, hash=False) for head in heads]
    else:
        shipped = [
            dask.delayed(head, name=f"head-{i}-{token}", traverse=False) for i, head in zip(run, heads, strict=True)
        ]
    # absolute: a dask worker elsewhere resolves a relative path against its own working directory
    return [
        dask.delayed(shard_exit_tables)(
            os.path.abspath(path),
            digest,
            order,
            [sources[i].store[s] if sources[i].store else None for i in run],
            *shipped,
            threads=threads,
            device=device,
            dask_key_name=f"shard-{s}-{token}",
        )
        for s, (path, digest) in enumerate(shards)
    ]


def _pick(result: tuple, part: int, j: int) -> Any:
    """Dask task: ``result[part][j]`` (a shard task's tables or checksum of the ``j``-th head it ran)."""
    return result[part][j]


def compute_local(kind: str, graph: Graph, *, progress: bool | None) -> dict[str, Any]:
    """Compute the graph on dask's local scheduler ``kind``, with one bar of its tasks (tqdm's dask callback)."""
    bar = functools.partial(progress_bar, None, desc="replay tasks", unit="task", enabled=progress)
    with TqdmCallback(tqdm_class=bar):
        values = dask.compute(*graph.outputs.values(), scheduler=kind)
    return dict(zip(graph.outputs, values, strict=True))


def compute_distributed(client, graph: Graph, *, progress: bool | None) -> dict[str, Any]:
    """Compute the graph on a dask.distributed cluster, with a bar of the shards and one of the class blocks."""
    from distributed import as_completed

    bars = [
        progress_bar(range(len(tasks)), desc=desc, total=len(tasks), unit=unit, enabled=progress)
        for tasks, desc, unit in ((graph.tables, "replay shards", "shard"), (graph.blocks, "replay classes", "block"))
    ]
    held = []  # futures are kept until the end: a released one's result could be dropped and computed again
    # the memory plan (jobs.memory) is this machine's: a worker elsewhere may have less
    advice = "give the workers more memory or run fewer per machine, or lower the grid or the class block"
    try:
        with explaining_lost_workers("running a replay task", advice):
            for tasks, bar in zip((graph.tables, graph.blocks), bars, strict=True):
                futures = client.compute(list(tasks.values()))
                held += futures
                for future in as_completed(futures):
                    future.result()  # raise a task's error here, with its message
                    bar.update(1)
            results = client.compute(list(graph.outputs.values()))
            return dict(zip(graph.outputs, client.gather(results), strict=True))
    except ShardMissingError as exc:
        if not os.path.exists(exc.path):
            raise
        # here, but not where the worker looked: rebuilding the cache would not help
        raise CacheError(
            f"a dask worker cannot find shard {exc.path}, which is there for this process: with --scheduler, the "
            "cache (--cache, --features) must be a folder every worker shares, at the same path"
        ) from None
    finally:
        for bar in bars:
            bar.close()


def cpu_workers(client: Any) -> int:
    """Worker processes of ``client``'s cluster, or this machine's cores for dask's local schedulers."""
    return len(client.scheduler_info()["workers"]) if client is not None else (os.cpu_count() or 1)
