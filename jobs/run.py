"""`frameexit run`: extract (reusing the cache), replay and report in one command."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from frameexit.atomic import check_writable_dir

from .config import Job
from .extract import ExtractOptions, ExtractResult, extract
from .replay import ReplayOptions, ReplayResult, replay
from .report import ReportOptions, ReportResult, check_job_comparable, check_report_options, report

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
    report_options: ReportOptions | None = None,
    progress: bool | None = None,
    on_stage: Callable[[str, Any], None] | None = None,
) -> RunResult:
    """The whole job: every stage's artefacts in ``out_dir`` (the features in the cache).

    ``on_stage(name, result)`` is called after each stage (the CLI prints a line).
    Every option is checked before any work: a mistake in a report option must
    not surface after an hour of extraction.
    """
    check_writable_dir(out_dir, "--out")
    # the baseline is read here: replay removes OUT/summary.json, which may be it (the previous run's report)
    report_options = check_report_options(out_dir, report_options or ReportOptions())
    check_job_comparable(job, report_options)  # a baseline or calibration run of another dataset or checkpoint
    extracted = extract(job, extract_options, progress=progress)
    if on_stage:
        on_stage("extract", extracted)
    # the cache just extracted or verified: no need to compute its key again
    replay_options = dataclasses.replace(replay_options, features=extracted.cache_dir)
    replayed = replay(job, out_dir, replay_options, progress=progress)
    if on_stage:
        on_stage("replay", replayed)
    reported = report(out_dir, report_options)
    if on_stage:
        on_stage("report", reported)
    return RunResult(extracted, replayed, reported)
