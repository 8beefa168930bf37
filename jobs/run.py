"""`frameexit run`: extract (reusing the cache), replay and report in one command."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from frameexit.atomic import check_writable_dir

from .config import Job
from .extract import ExtractOptions, ExtractResult, extract
from .replay import ReplayOptions, ReplayResult, replay
from .report import ReportResult, check_report_options, read_baseline, report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    extract: ExtractResult
    replay: ReplayResult
    report: ReportResult


def run(
    job: Job,
    out_dir: str,
    *,
    extract_options: ExtractOptions,
    replay_options: ReplayOptions,
    budget: float | None = None,
    calibrate_on: str | None = None,
    baseline: str | None = None,
    max_drop: float | None = None,
    max_cost_rise: float | None = None,
    metric: str | None = None,
    progress: bool | None = None,
    on_stage=None,
) -> RunResult:
    """The whole job: every stage's artefacts in ``out_dir`` (the features in the cache).

    ``on_stage(name, result)`` is called after each stage (the CLI prints a line).
    Every option is checked before any work: a mistake in a report option must
    not surface after an hour of extraction.
    """
    check_writable_dir(out_dir, "--out")
    check_report_options(
        out_dir,
        budget=budget,
        calibrate_on=calibrate_on,
        baseline=baseline,
        max_drop=max_drop,
        max_cost_rise=max_cost_rise,
        metric=metric,
    )
    if isinstance(baseline, str):
        # replay removes OUT/summary.json, which may be the baseline (the previous run's report): read it first
        baseline = read_baseline(baseline)
    extracted = extract(job, extract_options, progress=progress)
    if on_stage:
        on_stage("extract", extracted)
    # the cache just extracted or verified: no need to compute its key again
    replay_options = dataclasses.replace(replay_options, features=extracted.cache_dir)
    replayed = replay(job, out_dir, replay_options, progress=progress)
    if on_stage:
        on_stage("replay", replayed)
    reported = report(
        out_dir,
        budget=budget,
        calibrate_on=calibrate_on,
        baseline=baseline,
        max_drop=max_drop,
        max_cost_rise=max_cost_rise,
        metric=metric,
    )
    if on_stage:
        on_stage("report", reported)
    return RunResult(extracted, replayed, reported)
