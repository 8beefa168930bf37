"""`frameexit replay`: threshold sweeps over cached features, on dask (the graph: :mod:`jobs.replay_graph`).

The memory a grid needs is estimated before any work (:mod:`jobs.memory`): class blocks are made small enough
for the memory available, and a grid that cannot fit is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from cache.exactness import BATCHED, UNKNOWN, summarize
from cache.exit_tables import TablesCorruptError
from cache.manifest import CacheError, FeatureCache
from frameexit.atomic import check_writable_dir
from frameexit.errors import ConfigError
from frameexit.exactness import EXACT, SAFETY_FACTOR, Risk
from frameexit.exit_rule import check_thresholds
from frameexit.policies import PolicySetting, policy_settings
from frameexit.step_costs import StepCosts
from frameexit.sweep import SweepMetrics
from reports.commit import output_set
from reports.records import (
    METRICS_FILE,
    REPLAY_FILE,
    CacheRecord,
    CheckpointExactness,
    ExactnessRecord,
    MetricRow,
    ReplayRecord,
    ReplayRuntime,
    runtime,
)
from reports.schema import VIDEOS
from reports.summary import cost_metric, named_settings, setting_of, with_cost

from .config import Job
from .datasets import load_categories
from .memory import available_memory, limit_fragmentation, memory_estimate, plan_memory
from .outputs import (
    REPLAY_FILES,
    REPORT_FILES,
    SWEEP_FILE,
    VIDEOS_FILE,
    NamedResult,
    baseline_settings,
    bootstrap_record,
    checkpoint_names,
    checkpoint_record,
    frameexit_settings,
    metric_columns,
    metric_row,
    order_name,
    out_paths,
    replay_record,
    sweep_columns,
    write_replay_files,
    writing,
)
from .replay_graph import TableSource, VideoRows, build_graph, compute_distributed, compute_local, cpu_workers
from .replay_inputs import (
    ReplayHead,
    finish_storing,
    head_device,
    refuse_tables,
    replay_inputs,
    resampled_store,
    stores_tables,
    storing,
)
from .scheduling import CUDA_SCHEDULER, dask_client

if TYPE_CHECKING:
    from .model import HeadState

#: Bytes of scores an AP task copies at most by default (its classes' columns of every video and step).
BLOCK_BYTES = 150 * 10**6


@dataclass(frozen=True)
class ReplayOptions:
    """How to run a replay; what it computes is the job's (its ``replay`` keys, the policy order
    ``model.adaptive.input_order``, and the ``extract`` keys of the cache it reads)."""

    cache_root: str  # extract's: the cache is <root>/<key>, the key computed from the job (cache.find)
    features: str | None = None  # a cache directory to use instead; its manifest's inputs must equal the job's
    scheduler: str = "threads"  # threads, sync (dask's local schedulers) or a dask.distributed scheduler's address
    workers: int | None = None  # start a local dask cluster of this many worker processes instead
    # classes per AP task (default: enough to keep every worker busy, each task holding at most about 150 MB of
    # scores; smaller where memory requires it; results do not depend on it)
    class_block: int | None = None
    # read the frames the steps use and refuse a cache whose manifest records other frames (another listing, or
    # other bytes: frames re-prepared under the same split file); without it no frame is read
    verify_frames: bool = False
    # auto: each checkpoint's exit tables read from the cache where stored there, else computed and stored;
    # off: computed, nothing read or stored (cache.exit_tables)
    exit_tables: str = "auto"
    # where the heads run: auto (CUDA when available, as infer's --device), cpu, cuda or cuda:N (float64 on a GPU:
    # other kernels, so the last bits of the tables may differ from the CPU's; kept apart, named in replay.json)
    head_device: str = "auto"
    # a cost budget (the report's cost metric): the setting a report would choose at it, under each policy, is named
    # too, with its bootstrap intervals and per-video rows (frameexit run --budget passes the report's)
    budget: float | None = None


@dataclass(frozen=True)
class ReplayResult:
    out_dir: str
    sweep_path: str
    videos_path: str
    replay_path: str
    summary: ReplayRecord  # what replay.json holds


def replay(job: Job, out_dir: str, options: ReplayOptions, *, progress: bool | None = None) -> ReplayResult:
    """Sweep the exit thresholds of every checkpoint of ``job`` over its feature cache: ``sweep.parquet``,
    ``videos.parquet`` and ``replay.json`` into ``out_dir``, as one set that replaces an earlier replay's and
    removes its report (:mod:`jobs.outputs`). Everything that needs no computation is checked first."""
    _check_grid(job)
    check_replay_options(options)
    check_writable_dir(out_dir, "--out")
    stale = (METRICS_FILE, *REPORT_FILES)
    with writing(out_dir), output_set(out_dir, REPLAY_FILES, seals=(REPLAY_FILE,), stale=stale) as stage:
        record = replay_into(job, stage, options, progress=progress)
    paths = out_paths(out_dir, REPLAY_FILES)
    return ReplayResult(out_dir, paths[SWEEP_FILE], paths[VIDEOS_FILE], paths[REPLAY_FILE], record)


def check_replay_options(options: ReplayOptions) -> None:
    """Refuse a ``--head-device`` that is not there, and ``--scheduler cuda`` (extraction's dask-cuda cluster: a
    replay's heads reach a GPU by ``--head-device``)."""
    head_device(options.head_device)
    if options.scheduler == CUDA_SCHEDULER:
        raise ConfigError(
            "--scheduler cuda is for extraction (one dask-cuda worker per GPU); a replay runs its heads on a GPU with "
            "--head-device cuda, on dask's threads or a cluster"
        )


def _check_grid(job: Job) -> _Grid:
    """The grid of the job, checked: thresholds are probabilities, and the sweep rows fit in memory."""
    job.require("checkpoint.init")
    first, gate = job.replay.first_thresholds, job.replay.gate_thresholds
    default = (job.model.first_threshold, job.model.gate_threshold)
    for ft in (*first, default[0]):
        check_thresholds(ft, default[1])
    for gt in gate:
        check_thresholds(default[0], gt)
    baselines = tuple(
        policy_settings(job.replay.policies, job.replay.confidence_thresholds, len(job.model.input_order))
    )
    for tau in job.replay.confidence_thresholds:
        check_thresholds(tau, default[1])  # tau is a probability, checked as a first threshold
    grid = _Grid(first, gate, default, job.model.input_order, job.replay.per_video, baselines)
    # the sweep rows alone can exceed any memory (10^5 x 10^5 thresholds): refuse before touching anything
    plan_memory(**grid.memory_args(job), n_videos=0, concurrency=1, class_block=1, limit=available_memory())
    return grid


def replay_into(
    job: Job,
    folder: str,
    options: ReplayOptions,
    *,
    progress: bool | None = None,
    cache: FeatureCache | None = None,
    classes: Sequence[str] | None = None,
    first: HeadState | None = None,
) -> ReplayRecord:
    """The sweep of :func:`replay`, its three files written into ``folder`` (a staging folder); returns
    ``replay.json``'s record. ``cache``, ``classes`` and ``first`` (the first checkpoint's head): those an
    extraction in this process just read (:mod:`jobs.run`); without them they are found from the job."""
    grid = _check_grid(job)
    cache, classes, heads = replay_inputs(job, options, cache=cache, classes=classes, first=first)
    categories = load_categories(job.data, classes)
    n_videos = cache.manifest.usable_videos()
    largest_block = plan_memory(
        **grid.memory_args(job),
        n_videos=n_videos,
        # sweep tasks that run at once on this machine's memory (a remote cluster's use its own machines')
        concurrency=options.workers or ((os.cpu_count() or 1) if options.scheduler == "threads" else 1),
        class_block=options.class_block or job.model.num_class,
        limit=available_memory(),
    )
    limit_fragmentation(memory_estimate(**grid.memory_args(job), n_videos=n_videos).tables)
    names = checkpoint_names([h.name for h in heads])
    costs = [h.costs for h in heads]
    outputs = _Outputs(grid, names, costs, heads[0].paper_per_step, categories)
    name = functools.partial(_name_settings, outputs, options.budget)
    while True:
        try:
            sweeps = _sweep(job, grid, heads, cache, options, largest_block, name, progress=progress)
            break
        except TablesCorruptError as exc:
            # never read silently: the set is forgotten and its checkpoint's head runs again, its tables stored anew
            refused = refuse_tables(heads, exc)
            refuse = {i for i, h in enumerate(heads) if h.stored is None} | {refused}
            cache, classes, heads = replay_inputs(
                job, options, cache=cache, classes=classes, first=first, refuse=refuse
            )
    metrics, rows, risks, baselines, named = sweeps
    outputs = dataclasses.replace(outputs, risks=risks)
    sweep = outputs.sweep_columns(metrics, baselines, n_videos)
    videos = _video_columns(rows, grid, names, cache, n_videos, named)
    manifest = cache.manifest
    scheduler = options.scheduler if not options.workers else f"local cluster of {options.workers} processes"
    record = replay_record(
        job,
        grid.first,
        grid.gate,
        grid.per_video,
        cache=CacheRecord(directory=os.path.abspath(cache.directory), key=manifest.key, inputs=manifest.inputs),
        checkpoints=[
            checkpoint_record(n, h.name, h.sha256, h.hidden_dim, c) for n, h, c in zip(names, heads, costs, strict=True)
        ],
        default_metrics=outputs.default_metrics(metrics),
        n_videos=n_videos,
        n_videos_listed=manifest.n_listed,
        skipped=manifest.all_skipped(),
        gflops_per_frame=outputs.per_frame,
        runtime=ReplayRuntime(**runtime(), scheduler=scheduler, head_device=head_device(options.head_device)[1]),
        n_videos_labelled=sum(1 for labels in rows[0].labels if labels),  # the same for every checkpoint
        exactness=_exactness_record(cache, names, risks),
        bootstrap=bootstrap_record(job.replay.bootstrap, names, named),
    )
    write_replay_files(folder, sweep, videos, record)
    return record


def _name_settings(
    outputs: _Outputs, budget: float | None, i: int, metrics: SweepMetrics, baselines: SweepMetrics | None
) -> list[dict[str, Any]]:
    """Dask task: the settings a report of checkpoint ``i`` names (:func:`reports.summary.named_settings`), from
    the rows its sweep.parquet and replay.json will hold."""
    rows = outputs.rows(i, metrics, baselines)
    default = with_cost(outputs.default_row(i, metrics))
    return named_settings(rows, default, cost=cost_metric([*rows, default]), budget=budget)


@dataclass(frozen=True)
class _Grid:
    """The settings a replay evaluates, checked: the grid, the job's own setting and the policy order."""

    first: tuple[float, ...]
    gate: tuple[float, ...]
    default: tuple[float, float]  # (first, gate) of the job
    order: tuple[int, ...]
    per_video: str
    baselines: tuple[PolicySetting, ...] = ()  # the baseline policies' settings (frameexit.policies)

    @property
    def per_video_settings(self) -> list[tuple[float, float]]:
        """The ``(first, gate)`` with per-video rows: the grid's (gate-major) with ``per_video='all'``, else the
        job's own."""
        return [(ft, gt) for gt in self.gate for ft in self.first] if self.per_video == "all" else [self.default]

    @property
    def per_video_baselines(self) -> tuple[PolicySetting, ...]:
        """The baseline policy settings with per-video rows: all of them with ``per_video='all'``."""
        return self.baselines if self.per_video == "all" else ()

    @property
    def computed(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The first and gate thresholds the sweep computes: the grid's, then the job's own if not among them."""
        first = self.first if self.default[0] in self.first else (*self.first, self.default[0])
        gate = self.gate if self.default[1] in self.gate else (*self.gate, self.default[1])
        return first, gate

    @property
    def default_index(self) -> tuple[int, int]:
        """``(gate, first)`` indices of the job's own setting in :attr:`computed`."""
        first, gate = self.computed
        return gate.index(self.default[1]), first.index(self.default[0])

    def memory_args(self, job: Job) -> dict[str, Any]:
        """The grid's arguments of :func:`plan_memory` / :func:`memory_estimate`."""
        return dict(
            n_first=len(self.first),
            n_gate=len(self.gate),
            n_checkpoints=len(job.checkpoints),
            num_class=job.model.num_class,
            per_video_all=self.per_video == "all",
            n_steps=len(self.order),
            n_baseline=len(self.baselines),
        )


def _sweep(
    job: Job,
    grid: _Grid,
    heads: Sequence[ReplayHead],
    cache: FeatureCache,
    options: ReplayOptions,
    largest_block: int,
    name_settings: Any,
    *,
    progress: bool | None,
) -> tuple[list[SweepMetrics], list[VideoRows], list[Risk], list[SweepMetrics | None], list[list[NamedResult]]]:
    """Build the graph and compute it on the scheduler of ``options``: per checkpoint, the metrics of the computed
    grid (:attr:`_Grid.computed`), the per-video rows, the videos at risk (named at the job's setting) and the
    metrics of the baseline policies' settings (``None`` without any), and the results at the named settings
    (``name_settings``, :func:`jobs.replay_graph.build_graph`). The exit tables of each checkpoint are read from
    the cache when stored there, else computed and stored (:mod:`jobs.replay_inputs`)."""
    n_class, n_steps = job.model.num_class, len(grid.order)
    first, gate = grid.computed
    with (
        storing(cache, heads, stores_tables(options)) as writers,
        dask_client(options.scheduler, options.workers) as client,
    ):
        block = options.class_block or default_class_block(
            n_class, len(cache.manifest.planned()), n_steps, cpu_workers(client)
        )
        block = min(block, largest_block)  # smaller blocks give the same numbers (tested), in less memory
        sources = [
            TableSource(
                head=h.state,
                stored=h.stored.files if h.stored is not None else None,
                store=list(zip(w.paths, [h.inputs.key] * len(w.paths), strict=True)) if w is not None else None,
            )
            for h, w in zip(heads, writers, strict=True)
        ]
        graph = build_graph(
            sources,
            cache.shards(),
            order=grid.order,
            first=first,
            gate=gate,
            row_settings=grid.per_video_settings,
            row_baselines=grid.per_video_baselines,
            num_class=n_class,
            class_block_size=block,
            client=client,
            named=[grid.default_index],
            baselines=grid.baselines,
            name_settings=name_settings,
            bootstrap=job.replay.bootstrap,
            resampled=resampled_store(cache, options),
            # dask's threaded scheduler runs a task per core: torch's threads shared among the head passes
            head_threads=1 if client is None and options.scheduler == "threads" else None,
            head_device=head_device(options.head_device)[0],
        )
        if client is None:
            results = compute_local(options.scheduler, graph, progress=progress)
        else:
            results = compute_distributed(client, graph, progress=progress)
        for i, writer in enumerate(writers):
            if writer is not None:
                finish_storing(writer, heads[i], results[graph.written[i]])
    keys = (graph.sweeps, graph.videos, graph.risks, graph.policies, graph.named)
    return tuple([results[key] for key in names] for names in keys)


def default_class_block(num_class: int, n_videos: int, n_steps: int, workers: int) -> int:
    """Classes per AP task: at least two tasks per worker, each copying at most about 150 MB of scores."""
    by_workers = math.ceil(num_class / max(2 * workers, 1))
    by_memory = BLOCK_BYTES // max(4 * n_videos * n_steps, 1)
    return int(max(1, min(num_class, by_workers, by_memory)))


@dataclass(frozen=True)
class _Outputs:
    """Turns the computed metrics into the rows of ``sweep.parquet`` and ``replay.json``, per checkpoint ``i``."""

    grid: _Grid
    names: Sequence[str]  # checkpoint names, as in the checkpoint column
    costs: Sequence[StepCosts]  # measured GMACs per part, per checkpoint
    per_frame: float | None  # the paper's per-frame GMACs of the backbone
    categories: dict[str, tuple[int, ...]] | None  # classes of each category (data.path_category)
    risks: Sequence[Risk] | None = None  # videos at risk over the computed grid, per checkpoint (None: not yet)

    def _at_risk(self, i: int) -> np.ndarray | None:
        return self.risks[i].counts if self.risks is not None else None

    def _frameexit_columns(self, i: int, metrics: SweepMetrics, gate: np.ndarray, first: np.ndarray) -> dict:
        """Checkpoint ``i``'s :func:`jobs.outputs.metric_columns` at entries ``[gate, first]`` of the computed grid."""
        computed_first, computed_gate = (np.asarray(t, dtype=np.float64) for t in self.grid.computed)
        settings = frameexit_settings(computed_first[first], computed_gate[gate])
        return self._columns(i, metrics, (gate, first), settings, self._at_risk(i))

    def _baseline_columns(self, i: int, baselines: SweepMetrics) -> dict[str, Any]:
        n_baseline = len(self.grid.baselines)
        at = (np.arange(n_baseline), np.zeros(n_baseline, dtype=np.int64))
        # exact features: no decision can differ from infer's, under any policy; otherwise the risk rule, written
        # for the gates' thresholds, does not count them (null)
        exact = self.risks is not None and self.risks[i].deviation.status == EXACT
        at_risk = np.zeros((n_baseline, 1), dtype=np.int64) if exact else None
        return self._columns(i, baselines, at, baseline_settings(self.grid.baselines), at_risk)

    def _columns(self, i: int, metrics: SweepMetrics, index: tuple, settings: dict, at_risk) -> dict[str, Any]:
        return metric_columns(
            metrics,
            index,
            settings,
            checkpoint=self.names[i],
            costs=self.costs[i],
            per_frame=self.per_frame,
            categories=self.categories,
            at_risk=at_risk,
        )

    def parts(self, i: int, metrics: SweepMetrics, baselines: SweepMetrics | None) -> list[dict[str, Any]]:
        """Checkpoint ``i``'s columns of ``sweep.parquet``: the grid's (gate-major), then the baseline settings'."""
        gate, first = np.divmod(np.arange(len(self.grid.gate) * len(self.grid.first)), len(self.grid.first))
        parts = [self._frameexit_columns(i, metrics, gate, first)]
        return parts + ([self._baseline_columns(i, baselines)] if baselines is not None else [])

    def rows(self, i: int, metrics: SweepMetrics, baselines: SweepMetrics | None) -> list[dict[str, Any]]:
        """Checkpoint ``i``'s rows of ``sweep.parquet`` as the report reads them (:func:`reports.summary.with_cost`)."""
        parts = self.parts(i, metrics, baselines)
        return [with_cost(metric_row(part, k)) for part in parts for k in range(len(part["mean_frames"]))]

    def default_row(self, i: int, metrics: SweepMetrics) -> MetricRow:
        """Checkpoint ``i``'s metric row at the job's own setting."""
        g, f = self.grid.default_index
        return metric_row(self._frameexit_columns(i, metrics, np.array([g]), np.array([f])), 0)

    def sweep_columns(
        self, metrics: Sequence[SweepMetrics], baselines: Sequence[SweepMetrics | None], n_videos: int
    ) -> dict[str, Any]:
        """The columns of ``sweep.parquet``: per checkpoint, :meth:`parts`."""
        parts = [p for i, m in enumerate(metrics) for p in self.parts(i, m, baselines[i])]
        return sweep_columns(parts, order_name(self.grid.order), n_videos)

    def default_metrics(self, metrics: Sequence[SweepMetrics]) -> list[MetricRow]:
        """Per checkpoint, the metric row of the job's own setting."""
        return [self.default_row(i, m) for i, m in enumerate(metrics)]


def _video_columns(
    rows: Sequence[VideoRows],
    grid: _Grid,
    names: Sequence[str],
    cache: FeatureCache,
    n_videos: int,
    named: Sequence[Sequence[NamedResult]] = (),
) -> dict[str, Any]:
    """The columns of ``videos.parquet``: per checkpoint, setting and video (in key order), with the checkpoint; the
    per-video settings' rows, then those of the named settings not among them (a later run pairs with these)."""
    settings = np.asarray(grid.per_video_settings, dtype=np.float64).reshape(-1, 2)
    baselines = grid.per_video_baselines
    columns: dict[str, list] = {k: [] for k in VIDEOS.names}
    for name, r in zip(names, rows, strict=True):
        if len(r.videos) != n_videos:
            # the shards were verified against the manifest, so only a hand-edited manifest gets here
            raise CacheError(
                f"the manifest of {cache.directory} counts {n_videos} videos with features, its shards hold "
                f"{len(r.videos)}; run frameexit extract again"
            )
        n, n_settings = len(r.videos), len(settings) + len(baselines)
        n_rows = n_settings * n
        own = baseline_settings(baselines)
        columns["policy"] += ["frameexit"] * len(settings) * n + [p for p in own["policy"] for _ in range(n)]
        # one setting column per policy's threshold, null on the rows of the other policies
        for column, values in (("first_threshold", settings[:, 0]), ("gate_threshold", settings[:, 1])):
            columns[column].append(_with_nulls(np.repeat(values, n), len(baselines) * n, pa.float64()))
        for column, kind in (("tau", pa.float64()), ("frames", pa.int64())):
            theirs = pa.array([v for v in own[column] for _ in range(n)], kind)
            columns[column].append(pa.concat_arrays([pa.nulls(len(settings) * n, kind), theirs]))
        columns["video"] += r.videos * n_settings
        columns["exit_step"].append(r.exit_step.ravel())
        columns["prediction"].append(r.prediction.ravel())
        columns["confidence"].append(r.confidence.ravel())
        columns["labels"] += r.labels * n_settings
        columns["checkpoint"] += [name] * n_rows
    for name, r, results in zip(names, rows, named, strict=False):
        _named_video_columns(columns, name, r, grid, results)
    return {k: _concat(v) for k, v in columns.items()}


def _named_video_columns(
    columns: dict[str, list], name: str, rows: VideoRows, grid: _Grid, results: Sequence[NamedResult]
) -> None:
    """Append to ``columns`` the per-video rows of the named settings ``results`` that the per-video settings lack."""
    have = [{"policy": "frameexit", "first_threshold": ft, "gate_threshold": gt} for ft, gt in grid.per_video_settings]
    have += [setting_of({"policy": b.policy, "tau": b.tau, "frames": b.frames}) for b in grid.per_video_baselines]
    n = len(rows.videos)
    for r in results:
        if r.setting in have:
            continue
        have.append(r.setting)
        columns["policy"] += [r.setting["policy"]] * n
        for key, kind in (
            ("first_threshold", pa.float64()),
            ("gate_threshold", pa.float64()),
            ("tau", pa.float64()),
            ("frames", pa.int64()),
        ):
            value = r.setting.get(key)
            columns[key].append(pa.nulls(n, kind) if value is None else pa.array([value] * n, kind))
        columns["video"] += rows.videos
        columns["exit_step"].append(r.exit_step)
        columns["prediction"].append(r.prediction)
        columns["confidence"].append(r.confidence)
        columns["labels"] += rows.labels
        columns["checkpoint"] += [name] * n


def _concat(parts: list) -> Any:
    """A column of every checkpoint's parts: numpy arrays, Arrow arrays or list items."""
    if parts and isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    if parts and isinstance(parts[0], pa.Array):
        return pa.concat_arrays(parts)
    return parts


def _with_nulls(values: np.ndarray, n_null: int, kind: pa.DataType) -> pa.Array:
    """``values`` then ``n_null`` nulls, as one Arrow array of ``kind``."""
    mask = np.concatenate([np.zeros(len(values), dtype=bool), np.ones(n_null, dtype=bool)])
    return pa.array(np.concatenate([values, np.zeros(n_null, dtype=values.dtype)]), kind, mask=mask)


def _exactness_record(cache: FeatureCache, names: Sequence[str], risks: Sequence[Risk]) -> ExactnessRecord:
    """``replay.json``'s ``exactness``: how far the features are from sequential inference's, and per
    checkpoint the videos whose decision at the job's setting that could change."""
    manifest = cache.manifest
    summary = summarize(manifest.inputs.get("batching", BATCHED), [e.probe for e in manifest.shards])
    checkpoints = []
    for name, risk in zip(names, risks, strict=True):
        margins, deviation = risk.margins, risk.deviation
        known = deviation.status != UNKNOWN
        at_risk = risk.at_risk(0)
        checkpoints.append(
            CheckpointExactness(
                checkpoint=name,
                status=deviation.status,
                probs_max_abs_deviation=deviation.probs if known else None,
                gates_max_abs_deviation=deviation.gates if known else None,
                first_margin=margins.first if margins else None,
                gate_margin=margins.gate if margins else None,
                top2_margin=margins.top2 if margins else None,
                n_at_risk=len(at_risk) if at_risk is not None else None,
                at_risk=at_risk,
            )
        )
    status = UNKNOWN if any(c["status"] == UNKNOWN for c in checkpoints) else summary["status"]
    return ExactnessRecord(
        status=status,
        batching=summary["batching"],
        effective=summary["effective"],
        reference="frameexit infer's backbone on the extraction device: one step per forward pass, fp32, contiguous",
        safety_factor=SAFETY_FACTOR,
        probe_videos=summary["probe_videos"],
        feature_max_abs_deviation=summary["max_abs_deviation"],
        feature_max_rel_deviation=summary["max_rel_deviation"],
        checkpoints=checkpoints,
    )
