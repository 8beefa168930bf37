"""`frameexit report`: summary.md, summary.json and curve.png from the replay outputs in a directory."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import math
import os
import subprocess
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

import frameexit
from frameexit.atomic import atomic_write, check_writable_dir
from frameexit.errors import UsageError
from reports.markdown import render_markdown
from reports.plot import plot_curve
from reports.records import (
    SCHEMA_VERSION,
    SUMMARY_FILE,
    Provenance,
    RecordError,
    ReplayRecord,
    Summary,
    SummaryRow,
    check_record,
    read_record,
    versions,
)
from reports.schema import SWEEP
from reports.summary import (
    COST_LABELS,
    HIGHER_IS_BETTER,
    baseline_mismatches,
    choose_budget,
    compare_baseline,
    cost_metric,
    exactness_summary,
    pareto_frontier,
    with_cost,
)
from reports.write import jsonable, write_json

from .replay import REPLAY_FILE, REPORT_FILES, SWEEP_FILE

SUMMARY_MD, SUMMARY_JSON, CURVE_PNG = REPORT_FILES
#: Exit status of ``frameexit report``/``run`` when the baseline gate fails (1: error, 2: usage error).
REGRESSION_EXIT = 3
ACCURACY = {"activitynet1.3": "map", "minikinetics": "top1"}


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
    """An earlier ``summary.json``, read and checked (:func:`read_baseline`).

    Attributes
    ----------
    path : str
        Where it was read from.
    document : dict
        The whole document (dataset, metrics and provenance are compared with the run's).
    """

    path: str
    document: Summary

    @property
    def rows(self) -> list[SummaryRow]:
        """Its default-setting rows, one per checkpoint."""
        return self.document["default"]


def _require_replay_outputs(run_dir: str) -> tuple[str, str]:
    """Paths of ``sweep.parquet`` and ``replay.json`` in ``run_dir``; :class:`ReportInputError` if one is missing."""
    sweep, meta = os.path.join(run_dir, SWEEP_FILE), os.path.join(run_dir, REPLAY_FILE)
    for path in (sweep, meta):
        if not os.path.isfile(path):
            raise ReportInputError(
                f"{path} not found: run frameexit replay (or frameexit run) with --out {run_dir} first"
            )
    return sweep, meta


def read_run(run_dir: str) -> tuple[list[dict[str, Any]], ReplayRecord]:
    """``(sweep rows with gflops_measured, replay.json)`` of a replay output directory.

    :class:`ReportInputError` when a file cannot be read, or ``replay.json`` lacks a key of
    :class:`reports.records.ReplayRecord` (an older replay: replay again).
    """
    sweep, meta = _require_replay_outputs(run_dir)
    try:
        table = pq.read_table(sweep)
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"cannot read the replay outputs in {run_dir}: {exc}") from None
    missing = [name for name in SWEEP.names if name not in table.column_names]
    if missing:
        raise ReportInputError(f"{sweep} is not a frameexit {SWEEP_FILE}: column {missing[0]!r} is missing")
    rows = [with_cost(r) for r in table.to_pylist()]
    replay = read_record(meta, ReplayRecord, error=ReportInputError, what="the replay outputs")
    return rows, replay


def read_baseline(path: str) -> Baseline:
    """An earlier ``summary.json`` as a :class:`Baseline`; :class:`ReportInputError` if it cannot be one.

    It must have this version's ``schema_version`` and every key of
    :class:`reports.records.Summary`. Read it before anything in its directory
    is replaced: ``frameexit run`` reads it before replay removes the stale
    report of ``--out``, which may be it.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"cannot read baseline {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        raise ReportInputError(
            f"{path} is not a frameexit {SUMMARY_FILE} of schema_version {SCHEMA_VERSION} "
            f"(schema_version {doc.get('schema_version') if isinstance(doc, dict) else None!r})"
        )
    check_record(doc, Summary, path, error=ReportInputError)
    for key in ("dataset", "accuracy_metric", "cost_metric"):
        if not isinstance(doc[key], str):
            raise ReportInputError(f"{path} is not a frameexit {SUMMARY_FILE}: {key} is {doc[key]!r}, not a name")
    return Baseline(path, doc)


@dataclass(frozen=True)
class ReportOptions:
    """What a report chooses and compares: the options of ``frameexit report`` (and of ``run``).

    Attributes
    ----------
    budget : float, optional
        Cost budget (in the summary's cost metric, GFLOPs per video) for choosing a setting.
    calibrate_on : str, optional
        Another replay output directory (e.g. a held-out split) on which the budget setting is chosen.
    baseline : str or Baseline, optional
        An earlier ``summary.json`` (path, or already read with :func:`read_baseline`) to compare the
        job's setting with. It must come from the same dataset, split file, accuracy and cost metric,
        else :class:`ReportInputError`; see :func:`reports.summary.compare_baseline` for the verdict.
    max_drop, max_cost_rise : float, optional
        Largest accepted accuracy drop (fraction) and cost rise (GFLOPs) against the baseline.
    metric : {'map', 'top1'}, optional
        Accuracy the frontier, budget and curve use (default: mAP for ActivityNet, top-1 for Mini-Kinetics).
    """

    budget: float | None = None
    calibrate_on: str | None = None
    baseline: str | Baseline | None = None
    max_drop: float | None = None
    max_cost_rise: float | None = None
    metric: str | None = None


def check_report_options(out_dir: str, options: ReportOptions) -> ReportOptions:
    """Check every report option that needs no replay output, before any work or deletion.

    Returns ``options`` with the baseline read (a :class:`Baseline`), so that
    a baseline inside ``out_dir`` survives what a later stage writes there.

    Raises :class:`UsageError` (exit status 2) for options that contradict each
    other or mean nothing (a budget or limit that is negative, NaN or infinite;
    ``calibrate_on`` without ``budget`` or naming ``out_dir`` itself; ``max_drop``
    or ``max_cost_rise`` without ``baseline``; an unknown ``metric``);
    :class:`ReportInputError` for a calibration directory without replay outputs
    or a baseline that is not a readable ``summary.json`` (or was made with
    another ``metric``); :class:`~frameexit.errors.OutputError` when ``out_dir``
    cannot be created or written to. ``frameexit run`` calls it before extracting.
    """
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
            raise ReportInputError(_not_comparable(baseline, [_metric_mismatch(baseline, metric)]))
    check_writable_dir(out_dir, "--out")
    return dataclasses.replace(options, baseline=baseline)


def _metric_mismatch(base: Baseline, metric: str) -> str:
    return f"accuracy metric {base.document['accuracy_metric']!r} in the baseline, {metric!r} in this run"


def _not_comparable(base: Baseline, mismatches: list[str]) -> str:
    return (
        f"baseline {base.path} is not comparable with this run: {'; '.join(mismatches)}. Compare with a "
        "baseline of the same dataset, split and metrics (pass --metric to match), or make a new one"
    )


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
    *,
    budget: float | None = None,
    calibration_rows: list[dict[str, Any]] | None = None,
    baseline_rows: list[SummaryRow] | None = None,
    max_drop: float | None = None,
    max_cost_rise: float | None = None,
    metric: str | None = None,
) -> Summary:
    """The ``summary.json`` document (:class:`reports.records.Summary`) of a replay's sweep rows and ``replay.json``."""
    accuracy = metric or ACCURACY.get(replay["dataset"], "map")
    default: list[SummaryRow] = [with_cost(r) for r in replay["default_metrics"]]  # type: ignore[misc]
    cost = cost_metric([*rows, *default])
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
        frontier=pareto_frontier(rows, accuracy=accuracy, cost=cost),
        n_settings=len(rows),
        budget=None,
        baseline=None,
        n_videos_listed=replay["n_videos_listed"],
        n_videos_evaluated=replay["n_videos"],
        n_videos_skipped=len(skipped),
        skipped=skipped,
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
    if budget is not None:
        summary["budget"] = choose_budget(rows, budget, accuracy=accuracy, cost=cost, calibration_rows=calibration_rows)
    summary["exactness"] = exactness_summary(replay, summary["budget"])
    if baseline_rows is not None:
        summary["baseline"] = compare_baseline(
            default, baseline_rows, max_drop=max_drop, max_cost_rise=max_cost_rise, cost=cost
        )
    return summary


def report(run_dir: str, options: ReportOptions = ReportOptions()) -> ReportResult:
    """Write ``summary.md``, ``summary.json`` and ``curve.png`` into ``run_dir`` from its replay outputs.

    Every option is checked first (:func:`check_report_options`) and every input
    read before anything is written; nothing is deleted beforehand: the three
    files are replaced atomically, so a baseline inside ``run_dir`` (the previous
    report) is read intact and a failed report leaves the previous one as it was.
    If writing fails midway, the three files are removed rather than left mixed.

    ``run_dir`` holds ``sweep.parquet`` and ``replay.json`` of ``frameexit replay``;
    ``options`` (:class:`ReportOptions`) the budget, calibration run, baseline and metric.
    """
    options = check_report_options(run_dir, options)
    calibrate_on, base = options.calibrate_on, options.baseline
    paths = {name: os.path.join(run_dir, name) for name in (SUMMARY_MD, SUMMARY_JSON, CURVE_PNG)}
    rows, replay = read_run(run_dir)
    calibration = read_run(calibrate_on)[0] if calibrate_on else None
    summary = build_summary(
        rows,
        replay,
        budget=options.budget,
        calibration_rows=calibration,
        baseline_rows=base.rows if base else None,
        max_drop=options.max_drop,
        max_cost_rise=options.max_cost_rise,
        metric=options.metric,
    )
    if base:
        mismatches = baseline_mismatches(summary, base.document)
        if mismatches:
            raise ReportInputError(_not_comparable(base, mismatches))
        summary["baseline"]["file"] = os.path.abspath(base.path)
    if calibrate_on:
        summary["budget"]["calibration_run"] = os.path.abspath(calibrate_on)
    published = (
        summary["dataset"] == "activitynet1.3"
        and summary["cost_metric"] == "gflops"
        and replay["backbone"].endswith("resnet50")
    )
    figure = plot_curve(summary, rows, published=published)
    png = io.BytesIO()
    figure.savefig(png, format="png")
    markdown = render_markdown(jsonable(summary))
    try:
        with atomic_write(paths[CURVE_PNG]) as handle:
            handle.write(png.getvalue())
        with atomic_write(paths[SUMMARY_MD], "w") as handle:
            handle.write(markdown)
        write_json(paths[SUMMARY_JSON], summary)  # last: what CI reads appears once the others are in place
    except BaseException:
        # a report half old and half new would look complete: leave none
        for path in paths.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        raise
    return ReportResult(summary, paths)
