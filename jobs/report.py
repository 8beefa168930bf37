"""`frameexit report`: summary.md, summary.json and curve.png from the replay outputs in a directory."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import frameexit
from frameexit.atomic import atomic_write, check_writable_dir
from frameexit.bootstrap import DEFAULT_LEVEL
from frameexit.errors import UsageError
from reports.commit import output_set, settled
from reports.markdown import render_markdown
from reports.plot import plot_curve
from reports.records import (
    REPLAY_FILE,
    SCHEMA_VERSION,
    SUMMARY_FILE,
    Provenance,
    RecordError,
    ReplayRecord,
    Summary,
    SummaryRow,
    VideoResults,
    check_record,
    load_json,
    read_record,
    versions,
)
from reports.schema import SETTING_COLUMNS, SWEEP, VIDEOS, column_problem
from reports.summary import (
    BASELINE_CHECKS,
    CALIBRATION_CHECKS,
    COST_LABELS,
    HIGHER_IS_BETTER,
    Identity,
    baseline_gate,
    baseline_mismatches,
    budget_matched,
    by_policy,
    calibration_mismatches,
    choose_budget,
    cost_metric,
    exactness_summary,
    identity_mismatches,
    interval_lookup,
    paired_comparison,
    pareto_frontier,
    policy_of,
    policy_summary,
    replay_identity,
    setting_of,
    setting_problem,
    significance_test,
    summary_identity,
    with_cost,
    with_intervals,
)
from reports.write import jsonable, write_json

from .config import Job
from .datasets import BY_NAME
from .outputs import (
    CURVE_PNG,
    REPORT_FILES,
    SUMMARY_JSON,
    SUMMARY_MD,
    SWEEP_FILE,
    VIDEOS_FILE,
    checkpoint_names,
    out_paths,
    writing,
)


def default_metric(dataset: str) -> str:
    """The accuracy the frontier, budget and curve use without ``--metric``: the dataset registry's, else ``map``."""
    spec = BY_NAME.get(dataset)
    return spec.accuracy if spec else "map"


class ReportInputError(RecordError):
    """Replay outputs, a calibration run or a baseline that cannot be read (or lack a key of their record)."""


@dataclass(frozen=True)
class ReportResult:
    summary: Summary
    paths: dict[str, str]

    @property
    def regressed(self) -> bool:
        baseline = self.summary["baseline"]
        return bool(baseline) and not baseline["passed"]


@dataclass(frozen=True)
class Baseline:
    """An earlier ``summary.json``, read and checked (:func:`read_baseline`), and where it was read from."""

    path: str
    document: Summary


def _require_replay_outputs(run_dir: str) -> tuple[str, str]:
    """Paths of ``sweep.parquet`` and ``replay.json`` in ``run_dir``; :class:`ReportInputError` if one is missing."""
    settled(run_dir)  # a replay killed while moving its files into place: finish it (or refuse) before reading
    sweep, meta = os.path.join(run_dir, SWEEP_FILE), os.path.join(run_dir, REPLAY_FILE)
    for path in (sweep, meta):
        if not os.path.isfile(path):
            raise ReportInputError(f"{path} not found: run frameexit replay, run or infer with --out {run_dir} first")
    return sweep, meta


def read_run(run_dir: str) -> tuple[list[dict[str, Any]], ReplayRecord]:
    """``(sweep rows with gflops_measured, replay.json)`` of a replay output directory; :class:`ReportInputError`
    when a file cannot be read, or ``replay.json`` lacks a key of :class:`reports.records.ReplayRecord`."""
    sweep, meta = _require_replay_outputs(run_dir)
    try:
        table = pq.read_table(sweep)
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"cannot read the replay outputs in {run_dir}: {exc}") from None
    problem = column_problem(table, SWEEP)
    if problem:
        raise ReportInputError(f"{sweep} is not a frameexit {SWEEP_FILE}: {problem}")
    rows = [with_cost(r) for r in table.to_pylist()]
    replay = read_record(meta, ReplayRecord, error=ReportInputError, what="the replay outputs")
    for where, found in ((sweep, rows), (meta, replay["default_metrics"])):
        _check_settings(where, found, "row" if where == sweep else "default_metrics")
    return rows, replay


def _check_settings(path: str, rows: list[Any], what: str) -> None:
    """:class:`ReportInputError` naming the first row of ``path`` whose setting is not its policy's."""
    for i, row in enumerate(rows):
        problem = setting_problem(row)
        if problem:
            name = os.path.basename(path)
            raise ReportInputError(f"{path} is not a frameexit {name}: {what} {i}: {problem}")


def read_video_results(run_dir: str, replay: ReplayRecord) -> tuple[list[str], dict[str, VideoResults | None], int]:
    """``(videos, video_results, n_labelled)`` of ``summary.json`` from ``videos.parquet`` in a replay output
    directory: the evaluated video keys, sorted; per checkpoint, its exit step and hit for each at the job's
    setting (``None`` where ``videos.parquet`` has no row at it: ``--per-video all`` on a grid without it); how
    many have a label (top-1's denominator). Only the rows of one setting are read. :class:`ReportInputError`
    when the file is missing or unreadable, or its videos are not the ones ``replay.json`` counts.
    """
    path = os.path.join(run_dir, VIDEOS_FILE)
    if not os.path.isfile(path):
        raise ReportInputError(f"{path} not found: run frameexit replay, run or infer with --out {run_dir} again")
    # the job's setting: frameexit's thresholds, or the policy infer ran (JSON 1 is 1.0 here)
    setting = setting_of(replay["default_setting"])
    columns = ["checkpoint", "video", "exit_step", "prediction", "labels"]

    def rows_at(setting: Mapping[str, Any]) -> list[dict[str, Any]]:
        filters = [
            (k, "==", float(v) if isinstance(v, (int, float)) and k != "frames" else v) for k, v in setting.items()
        ]
        table = pq.read_table(path, columns=columns, filters=filters)
        problem = column_problem(table, VIDEOS, columns)
        if problem:
            raise ReportInputError(f"{path} is not a frameexit {VIDEOS_FILE}: {problem}")
        return table.to_pylist()

    try:
        problem = column_problem(pq.read_schema(path).empty_table(), VIDEOS, [*columns, *SETTING_COLUMNS])
        if problem:  # the setting's columns are filtered on: of another type, they would match nothing
            raise ReportInputError(f"{path} is not a frameexit {VIDEOS_FILE}: {problem}")
        rows = rows_at(setting)
        if not rows:  # every setting's rows but the job's: the videos are those of any one setting
            first = pq.ParquetFile(path).read_row_group(0, columns=list(SETTING_COLUMNS))
            if first.num_rows:
                rows = [dict(r, exit_step=None) for r in rows_at(setting_of(first.slice(0, 1).to_pylist()[0]))]
    except ReportInputError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ReportInputError(f"cannot read the per-video results {path}: {exc}") from None
    by_checkpoint: dict[str, dict[str, tuple[int, bool | None]]] = {}
    for r in rows:
        hit = r["prediction"] in r["labels"] if r["labels"] else None
        by_checkpoint.setdefault(r["checkpoint"], {})[r["video"]] = (r["exit_step"], hit)
    videos = sorted({key for per_video in by_checkpoint.values() for key in per_video})
    n_labelled = len({r["video"] for r in rows if r["labels"]})
    if len(videos) != replay["n_videos"]:
        raise ReportInputError(
            f"{path} holds {len(videos)} videos, {os.path.join(run_dir, REPLAY_FILE)} counts {replay['n_videos']}: "
            f"they are not of one replay; run frameexit replay with --out {run_dir} again"
        )
    results: dict[str, VideoResults | None] = {}
    for row in replay["default_metrics"]:
        name = row["checkpoint"]
        per_video = by_checkpoint.get(name, {})
        if sorted(per_video) != videos:
            raise ReportInputError(f"{path} holds other videos for checkpoint {name} than for the others: replay again")
        steps = [per_video[key][0] for key in videos]
        results[name] = (
            None
            if any(step is None for step in steps)
            else VideoResults(exit_step=steps, hit=[per_video[key][1] for key in videos])  # type: ignore[misc]
        )
    return videos, results, n_labelled


def read_baseline(path: str) -> Baseline:
    """An earlier ``summary.json`` (this version's ``schema_version``, every key of :class:`reports.records.Summary`)
    as a :class:`Baseline`; :class:`ReportInputError` if it cannot be one. Read it before anything in its directory
    is replaced (``frameexit run``'s new report may replace it)."""
    settled(os.path.dirname(os.path.abspath(path)))  # a report killed while moving its files: finish it first
    if not os.path.isfile(path):
        raise ReportInputError(f"--baseline file not found: {path}")
    doc = load_json(path, error=ReportInputError, what="baseline")
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if isinstance(version, int) and 0 < version < SCHEMA_VERSION:
        lacks = (
            "the videos it evaluated: the gate cannot vouch that this run is compared with the same videos"
            if version < 2
            else "the exit policy of its rows nor the bootstrap a paired comparison needs"
        )
        raise ReportInputError(
            f"baseline {path} is a {SUMMARY_FILE} of schema_version {version}, which does not record {lacks}. Replay "
            f"and report the baseline's run again (frameexit run, or frameexit replay then report, with --out ITS_DIR) "
            f"to write a schema_version {SCHEMA_VERSION} {SUMMARY_FILE}, or make a new baseline"
        )
    if version != SCHEMA_VERSION:
        raise ReportInputError(
            f"{path} is not a frameexit {SUMMARY_FILE} of schema_version {SCHEMA_VERSION} (schema_version {version!r})"
        )
    check_record(doc, Summary, path, error=ReportInputError)  # every key of its type: what follows can index it
    _check_settings(path, doc["default"], "default")
    videos = doc["videos"]
    for name, results in doc["video_results"].items():
        if results is not None and not len(results["exit_step"]) == len(results["hit"]) == len(videos):
            raise ReportInputError(
                f"{path} is not a frameexit {SUMMARY_FILE}: video_results[{name!r}] does not have one entry per video"
            )
    return Baseline(path, doc)


@dataclass(frozen=True)
class ReportOptions:
    """What a report chooses and compares: the options of ``frameexit report`` (and of ``run``); the checks and
    verdicts are :mod:`reports.summary`'s (``identity_mismatches``, ``baseline_gate``)."""

    budget: float | None = None  # cost budget (the summary's cost metric, GFLOPs per video) to choose a setting at
    calibrate_on: str | None = None  # another replay's output directory (e.g. a held-out split) to choose it on
    baseline: str | Baseline | None = None  # an earlier summary.json (or read_baseline's) to compare the job's with
    max_drop: float | None = None  # largest accepted accuracy drop (fraction) against the baseline
    max_cost_rise: float | None = None  # largest accepted cost rise (GFLOPs) against the baseline
    # fail on max_drop only when the paired bootstrap's interval of this level lies wholly above it (None: the
    # point estimate decides)
    significance: float | None = None
    # videos that may differ between the run and the baseline without failing the gate (default 0); top-1 and cost
    # are then compared over the videos both evaluated, mAP is not
    accept_missing: int | None = None
    metric: str | None = None  # map or top1 (default: the dataset's, default_metric)


def check_report_options(out_dir: str, options: ReportOptions) -> ReportOptions:
    """Check every report option that needs no replay output, before any work (``run``: before extracting); return
    ``options`` with the baseline read, so that a baseline inside ``out_dir`` survives what a later stage writes.
    :class:`UsageError` (exit status 2) for options that contradict each other or mean nothing,
    :class:`ReportInputError` for unreadable inputs, :class:`~frameexit.errors.OutputError` for ``out_dir``."""
    budget, calibrate_on, baseline = options.budget, options.calibrate_on, options.baseline
    max_drop, max_cost_rise, metric = options.max_drop, options.max_cost_rise, options.metric
    if metric not in (None, "map", "top1"):
        raise UsageError(f"--metric must be 'map' or 'top1', got {metric!r}")
    for name, value in (("--budget", budget), ("--max-drop", max_drop), ("--max-cost-rise", max_cost_rise)):
        # click's FloatRange(min=0) lets NaN and infinity through: every comparison with NaN is false
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{name} must be a finite number >= 0, got {value}")
    if calibrate_on is not None and budget is None:
        raise UsageError("--calibrate-on chooses a setting for a budget: give --budget too")
    if (max_drop is not None or max_cost_rise is not None) and baseline is None:
        raise UsageError("--max-drop and --max-cost-rise compare against a baseline: give --baseline too")
    if options.significance is not None and max_drop is None:
        raise UsageError("--significance tests a drop beyond --max-drop: give --max-drop (and --baseline) too")
    if options.significance is not None and not 0.0 < options.significance < 1.0:
        raise UsageError(f"--significance must be a level in (0, 1), e.g. 0.95, got {options.significance}")
    if options.accept_missing is not None and baseline is None:
        raise UsageError("--accept-missing accepts videos missing from a baseline: give --baseline too")
    if options.accept_missing is not None and options.accept_missing < 0:
        raise UsageError(f"--accept-missing must be a number of videos >= 0, got {options.accept_missing}")
    if calibrate_on is not None and os.path.realpath(calibrate_on) == os.path.realpath(out_dir):
        raise UsageError(
            "--calibrate-on names the --out directory itself: the setting would be chosen on the videos it is "
            "evaluated on; give another run's directory (e.g. a held-out split), or leave --calibrate-on out"
        )
    if calibrate_on is not None:
        _require_replay_outputs(calibrate_on)
    if baseline is not None:
        baseline = baseline if isinstance(baseline, Baseline) else read_baseline(baseline)
        if metric is not None and baseline.document["accuracy_metric"] != metric:
            mismatch = (
                f"accuracy metric {baseline.document['accuracy_metric']!r} in the baseline, {metric!r} in this run"
            )
            raise ReportInputError(_not_comparable(baseline, [mismatch]))
    check_writable_dir(out_dir, "--out")
    return dataclasses.replace(options, baseline=baseline)


def _not_comparable(base: Baseline, mismatches: list[str]) -> str:
    return (
        f"baseline {base.path} is not comparable with this run: {'; '.join(mismatches)}. Compare with a "
        "baseline of the same dataset, split, checkpoints and metrics (pass --metric to match), or make a new one"
    )


def _not_calibration(run_dir: str, mismatches: list[str]) -> str:
    return (
        f"calibration run {run_dir} cannot choose this run's setting: {'; '.join(mismatches)}. Calibrate on a "
        "replay of the same dataset, class list, checkpoints and policy order over other videos (e.g. held-out "
        "training videos)"
    )


def check_job_comparable(job: Job, options: ReportOptions, digests: Mapping[str, str] | None = None) -> None:
    """What ``frameexit run`` can check of the baseline and calibration run before extracting: the dataset and the
    checkpoints (the same checks the report makes later with every fact, :func:`report`). ``options`` as returned by
    :func:`check_report_options`; ``digests``: the SHA-256 of each checkpoint path already read (the others are
    hashed here). :class:`ReportInputError` naming what differs."""
    if options.baseline is None and options.calibrate_on is None:
        return
    from cache.shard import file_sha256

    # the SHA-256 of the checkpoints that can be read; the others fail later, in extraction
    shas = {}
    for name, path in zip(checkpoint_names(job.checkpoints), job.checkpoints, strict=True):
        if digests and path in digests:
            shas[name] = digests[path]
            continue
        with contextlib.suppress(OSError):
            shas[name] = file_sha256(path)
    ours = Identity(dataset=job.data.name, checkpoints=shas)
    if isinstance(options.baseline, Baseline):
        theirs = summary_identity(options.baseline.document)
        mismatches = identity_mismatches(ours, theirs, BASELINE_CHECKS, "the baseline")
        if mismatches:
            raise ReportInputError(_not_comparable(options.baseline, mismatches))
    if options.calibrate_on is not None:
        _, meta = _require_replay_outputs(options.calibrate_on)
        calibration = read_record(meta, ReplayRecord, error=ReportInputError, what="the calibration run")
        mismatches = identity_mismatches(ours, replay_identity(calibration), CALIBRATION_CHECKS, "the calibration run")
        if mismatches:
            raise ReportInputError(_not_calibration(options.calibrate_on, mismatches))


def git_hash() -> str | None:
    """Commit of the frameexit source tree, when it is a git checkout (else ``None``)."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(frameexit.__file__)))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() or None
    return None


def build_summary(
    rows: list[dict[str, Any]],
    replay: ReplayRecord,
    videos: list[str],
    video_results: dict[str, VideoResults | None],
    *,
    n_labelled: int | None = None,
    budget: float | None = None,
    calibration_rows: list[dict[str, Any]] | None = None,
    metric: str | None = None,
) -> Summary:
    """The ``summary.json`` document (:class:`reports.records.Summary`) of a replay's sweep rows, ``replay.json`` and
    per-video results (:func:`read_video_results`, with ``n_labelled``, the videos with a label), without the
    baseline comparison (:func:`report` adds it)."""
    accuracy = metric or default_metric(replay["dataset"])
    lookup = interval_lookup(replay.get("bootstrap"))
    default: list[SummaryRow] = [with_intervals(with_cost(r), lookup) for r in replay["default_metrics"]]  # type: ignore[misc]
    cost = cost_metric([*rows, *default])
    # the job's policy: frameexit's gates, or the one an infer folder ran; its rows make the frontier and budget
    own = policy_of(default[0]) if default else "frameexit"
    policies = by_policy(rows)
    job_rows = policies.pop(own, [])
    skipped = replay["skipped"]
    summary = Summary(
        schema_version=SCHEMA_VERSION,
        frameexit_version=frameexit.__version__,
        git_hash=git_hash(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        dataset=replay["dataset"],
        accuracy_metric=accuracy,
        cost_metric=cost,
        cost_label=COST_LABELS[cost],
        higher_is_better=HIGHER_IS_BETTER,
        default=default,
        frontier=pareto_frontier(job_rows, accuracy=accuracy, cost=cost),
        n_settings=len(job_rows),
        budget=None,
        baseline=None,
        n_videos_listed=replay["n_videos_listed"],
        n_videos_evaluated=replay["n_videos"],
        n_videos_labelled=n_labelled,
        n_videos_skipped=len(skipped),
        skipped=skipped,
        videos=videos,
        video_results=video_results,
        gflops_per_frame=replay["gflops_per_frame"],
        provenance=Provenance(
            cache=replay["cache"],
            checkpoints=replay["checkpoints"],
            dataset_files=replay["dataset_files"],  # made absolute where the replay ran
            order=replay["order_name"],
            versions=versions(replay["runtime"]),
            replayed=replay["runtime"]["date"],
            job=replay["job"],
        ),
    )
    if "dataset_digests" in replay:  # infer's: no cache records the dataset files' digests
        summary["provenance"]["dataset_digests"] = replay["dataset_digests"]
    if budget is not None:
        calibration = by_policy(calibration_rows or [])

        def choose(policy: str, own: list[dict[str, Any]]) -> dict[str, Any]:
            theirs = calibration.get(policy, []) if calibration_rows is not None else None
            chosen = choose_budget(own, budget, accuracy=accuracy, cost=cost, calibration_rows=theirs)
            for entry in chosen["checkpoints"]:
                entry["evaluated"] = with_intervals(entry.get("evaluated"), lookup)
            return chosen

        summary["budget"] = choose(own, job_rows)
        # each baseline policy with a threshold to choose (the oracle has none)
        summary["budget"]["policies"] = {
            p: choose(p, own)["checkpoints"] for p, own in policies.items() if p in ("confidence", "fixed")
        }
    summary["exactness"] = exactness_summary(replay, summary.get("budget"))
    summary["policies"] = policy_summary(rows, default, accuracy=accuracy, cost=cost, lookup=lookup)
    boot = replay.get("bootstrap")
    summary["bootstrap"] = (
        {k: boot[k] for k in ("resamples", "level", "seed", "map_resampled")} if boot and boot["resamples"] else None
    )
    return summary


def report(run_dir: str, options: ReportOptions = ReportOptions()) -> ReportResult:
    """Write ``summary.md``, ``summary.json`` and ``curve.png`` into ``run_dir`` from its replay outputs.

    Every option is checked and every input read before anything is written: the three files replace the previous
    ones as one set (:mod:`jobs.outputs`), so a baseline inside ``run_dir`` (the previous report) is read intact.
    """
    options = check_report_options(run_dir, options)
    with writing(run_dir), output_set(run_dir, REPORT_FILES, seals=(SUMMARY_JSON,)) as stage:
        summary = report_into(run_dir, stage, options)
    return ReportResult(summary, out_paths(run_dir, REPORT_FILES))


def report_into(run_dir: str, folder: str, options: ReportOptions) -> Summary:
    """The report of :func:`report` on the replay outputs in ``run_dir``, its three files written into
    ``folder`` (a staging folder); ``options`` as :func:`check_report_options` returns them."""
    calibrate_on, base = options.calibrate_on, options.baseline
    rows, replay = read_run(run_dir)
    videos, video_results, n_labelled = read_video_results(run_dir, replay)
    calibration = None
    if calibrate_on:
        calibration, calibration_replay = read_run(calibrate_on)
        theirs = read_video_results(calibrate_on, calibration_replay)[0]
        mismatches = calibration_mismatches(
            replay_identity(replay), videos, replay_identity(calibration_replay), theirs
        )
        if mismatches:
            raise ReportInputError(_not_calibration(calibrate_on, mismatches))
    summary = build_summary(
        rows,
        replay,
        videos,
        video_results,
        n_labelled=n_labelled,
        budget=options.budget,
        calibration_rows=calibration,
        metric=options.metric,
    )
    if base:
        mismatches = baseline_mismatches(summary, base.document)
        if mismatches:
            raise ReportInputError(_not_comparable(base, mismatches))
        level = options.significance or (summary["bootstrap"] or {}).get("level") or DEFAULT_LEVEL
        paired = paired_comparison(summary, base.document, level=level)
        test = None
        if options.significance is not None and options.max_drop is not None:
            test = significance_test(paired, options.max_drop)
        summary["baseline"] = baseline_gate(
            summary,
            base.document,
            max_drop=options.max_drop,
            max_cost_rise=options.max_cost_rise,
            accept_missing=options.accept_missing or 0,
            significant=test,
        )
        summary["baseline"]["significance"] = options.significance
        summary["baseline"]["paired"] = paired
        frameexit_rows = [r for r in rows if policy_of(r) == "frameexit"]
        summary["baseline"]["budget_matched"] = budget_matched(
            frameexit_rows, base.document, accuracy=summary["accuracy_metric"], cost=summary["cost_metric"]
        )
        summary["baseline"]["file"] = os.path.abspath(base.path)
    if calibrate_on:
        summary["budget"]["calibration_run"] = os.path.abspath(calibrate_on)
    spec = BY_NAME.get(summary["dataset"])
    published = (
        spec is not None
        and spec.published_curve
        and summary["cost_metric"] == "gflops"
        and replay["backbone"].endswith("resnet50")
    )
    figure = plot_curve(summary, rows, published=published)
    paths = out_paths(folder, REPORT_FILES)
    with atomic_write(paths[CURVE_PNG]) as handle:
        figure.savefig(handle, format="png")
    with atomic_write(paths[SUMMARY_MD], "w") as handle:
        handle.write(render_markdown(jsonable(summary)))
    write_json(paths[SUMMARY_JSON], summary)
    return summary
