"""`frameexit report`: summary.md, summary.json and curve.png from the replay outputs in a directory."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

import frameexit
from frameexit.atomic import atomic_write
from frameexit.errors import FrameExitError
from reports.markdown import render_markdown
from reports.plot import plot_curve
from reports.summary import (
    COST_LABELS,
    HIGHER_IS_BETTER,
    SCHEMA_VERSION,
    choose_budget,
    compare_baseline,
    cost_metric,
    pareto_frontier,
    with_cost,
)
from reports.write import jsonable, write_json

from .replay import REPLAY_FILE, SWEEP_FILE

SUMMARY_MD, SUMMARY_JSON, CURVE_PNG = "summary.md", "summary.json", "curve.png"
#: Exit status of ``frameexit report``/``run`` when the baseline gate fails (1: error, 2: usage error).
REGRESSION_EXIT = 3
ACCURACY = {"activitynet1.3": "map", "minikinetics": "top1"}


class ReportInputError(FrameExitError, ValueError):
    """Replay outputs, a calibration run or a baseline that cannot be read."""


@dataclass(frozen=True)
class ReportResult:
    summary: dict[str, Any]
    paths: dict[str, str]

    @property
    def regressed(self) -> bool:
        baseline = self.summary.get("baseline")
        return bool(baseline) and not baseline["passed"]


def read_run(run_dir: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(sweep rows with gflops_measured, replay.json)`` of a replay output directory."""
    sweep, meta = os.path.join(run_dir, SWEEP_FILE), os.path.join(run_dir, REPLAY_FILE)
    for path in (sweep, meta):
        if not os.path.isfile(path):
            raise ReportInputError(
                f"{path} not found: run frameexit replay (or frameexit run) with --out {run_dir} first"
            )
    try:
        rows = [with_cost(r) for r in pq.read_table(sweep).to_pylist()]
        with open(meta, encoding="utf-8") as handle:
            replay = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"cannot read the replay outputs in {run_dir}: {exc}") from None
    return rows, replay


def read_baseline(path: str) -> list[dict[str, Any]]:
    """The default-setting rows of an earlier ``summary.json``."""
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"cannot read baseline {path}: {exc}") from None
    if (
        not isinstance(doc, dict)
        or doc.get("schema_version") != SCHEMA_VERSION
        or not isinstance(doc.get("default"), list)
    ):
        raise ReportInputError(
            f"{path} is not a frameexit summary.json (schema_version {SCHEMA_VERSION} with 'default')"
        )
    return doc["default"]


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
    replay: dict[str, Any],
    *,
    budget: float | None = None,
    calibration_rows: list[dict[str, Any]] | None = None,
    baseline_rows: list[dict[str, Any]] | None = None,
    max_drop: float | None = None,
    max_cost_rise: float | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` document (see :class:`reports.summary.Summary`)."""
    accuracy = metric or ACCURACY.get(replay.get("dataset"), "map")
    default = [with_cost(r) for r in replay.get("default_metrics", [])]
    cost = cost_metric([*rows, *default])
    skipped = replay.get("skipped", [])
    job = replay.get("job", {})
    data = job.get("data", {})
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "frameexit_version": frameexit.__version__,
        "git_hash": git_hash(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dataset": replay.get("dataset"),
        "accuracy_metric": accuracy,
        "cost_metric": cost,
        "cost_label": COST_LABELS[cost],
        "higher_is_better": HIGHER_IS_BETTER,
        "default": default,
        "frontier": pareto_frontier(rows, accuracy=accuracy, cost=cost),
        "n_settings": len(rows),
        "budget": None,
        "baseline": None,
        "n_videos_listed": replay.get("n_videos_listed"),
        "n_videos_evaluated": replay.get("n_videos"),
        "n_videos_skipped": len(skipped),
        "skipped": skipped,
        "provenance": {
            "cache": replay.get("cache", {}),
            "checkpoints": replay.get("checkpoints", []),
            "dataset_files": {
                k: os.path.abspath(data[k])
                for k in ("path_split", "path_label", "path_classid", "path_frame")
                if data.get(k)
            },
            "order": replay.get("order_name"),
            "versions": {
                k: v
                for k, v in replay.get("runtime", {}).items()
                if k in ("frameexit", "torch", "torchvision", "python")
            },
            "replayed": replay.get("runtime", {}).get("date"),
            "job": job,
        },
    }
    if budget is not None:
        summary["budget"] = choose_budget(rows, budget, accuracy=accuracy, cost=cost, calibration_rows=calibration_rows)
    if baseline_rows is not None:
        summary["baseline"] = compare_baseline(
            default, baseline_rows, max_drop=max_drop, max_cost_rise=max_cost_rise, cost=cost
        )
    return summary


def report(
    run_dir: str,
    *,
    budget: float | None = None,
    calibrate_on: str | None = None,
    baseline: str | None = None,
    max_drop: float | None = None,
    max_cost_rise: float | None = None,
    metric: str | None = None,
) -> ReportResult:
    """Write ``summary.md``, ``summary.json`` and ``curve.png`` into ``run_dir`` from its replay outputs.

    Parameters
    ----------
    run_dir : str
        Holds ``sweep.parquet`` and ``replay.json`` of ``frameexit replay``.
    budget : float, optional
        Cost budget (in the summary's cost metric, GFLOPs per video) for choosing a setting.
    calibrate_on : str, optional
        Another replay output directory (e.g. a held-out split) on which the budget setting is chosen.
    baseline : str, optional
        An earlier ``summary.json`` to compare the job's setting with.
    max_drop, max_cost_rise : float, optional
        Largest accepted accuracy drop (fraction) and cost rise (GFLOPs) against the baseline.
    metric : {'map', 'top1'}, optional
        Accuracy the frontier, budget and curve use (default: mAP for ActivityNet, top-1 for Mini-Kinetics).
    """
    if metric not in (None, "map", "top1"):
        raise ReportInputError(f"metric must be 'map' or 'top1', got {metric!r}")
    if calibrate_on is not None and budget is None:
        raise ReportInputError("--calibrate-on chooses a setting for a budget: give --budget too")
    if (max_drop is not None or max_cost_rise is not None) and baseline is None:
        raise ReportInputError("--max-drop and --max-cost-rise compare against a baseline: give --baseline too")
    paths = {name: os.path.join(run_dir, name) for name in (SUMMARY_MD, SUMMARY_JSON, CURVE_PNG)}
    for stale in paths.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    rows, replay = read_run(run_dir)
    calibration = read_run(calibrate_on)[0] if calibrate_on else None
    baseline_rows = read_baseline(baseline) if baseline else None
    summary = build_summary(
        rows,
        replay,
        budget=budget,
        calibration_rows=calibration,
        baseline_rows=baseline_rows,
        max_drop=max_drop,
        max_cost_rise=max_cost_rise,
        metric=metric,
    )
    if calibrate_on:
        summary["budget"]["calibration_run"] = os.path.abspath(calibrate_on)
    if baseline:
        summary["baseline"]["file"] = os.path.abspath(baseline)
    published = (
        summary["dataset"] == "activitynet1.3"
        and summary["cost_metric"] == "gflops"
        and str(replay.get("backbone", "")).endswith("resnet50")
    )
    figure = plot_curve(summary, rows, published=published)
    with atomic_write(paths[CURVE_PNG]) as handle:
        figure.savefig(handle, format="png")
    with atomic_write(paths[SUMMARY_MD], "w") as handle:
        handle.write(render_markdown(jsonable(summary)))
    write_json(paths[SUMMARY_JSON], summary)
    return ReportResult(summary, paths)
