"""`frameexit run`: extract (reusing the cache), replay and report in one command."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from frameexit.atomic import check_writable_dir
from frameexit.errors import FrameExitError
from reports.commit import output_set
from reports.records import METRICS_FILE, REPLAY_FILE

from .config import Job
from .extract import ExtractOptions, ExtractResult, extract
from .model import checkpoint_file
from .outputs import REPLAY_FILES, REPORT_FILES, SUMMARY_JSON, SWEEP_FILE, VIDEOS_FILE, out_paths, writing
from .replay import ReplayOptions, ReplayResult, check_replay_options, replay_into
from .report import ReportOptions, ReportResult, check_job_comparable, check_report_options, report_into
from .scheduling import CUDA_SCHEDULER


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
    """The whole job: every stage's artefacts in ``out_dir`` (the features in the cache), the replay's and the
    report's files as one set (:mod:`jobs.outputs`); ``on_stage(name, result)`` after each stage (the CLI prints a
    line). Every option is checked before any work: a report option's mistake must not surface after an hour."""
    check_writable_dir(out_dir, "--out")
    if replay_options.scheduler == CUDA_SCHEDULER:  # extraction's dask-cuda cluster; the heads go by --head-device
        replay_options = dataclasses.replace(replay_options, scheduler="threads")
    check_replay_options(replay_options)
    # the baseline is read here, before anything runs: it may be OUT/summary.json, which this run replaces
    report_options = check_report_options(out_dir, report_options or ReportOptions())
    # the checks need the checkpoint's SHA-256: read it once, for them and for extraction
    read = _read_checkpoint(job) if report_options.baseline or report_options.calibrate_on else None
    digests = {job.checkpoints[0]: read[1]} if read else None
    check_job_comparable(job, report_options, digests)  # a baseline or calibration run of another dataset or checkpoint
    names = (*REPLAY_FILES, *REPORT_FILES)
    # the lock is taken before extracting: a second run into the same --out is refused before an hour of work
    with writing(out_dir):
        extracted = extract(job, extract_options, progress=progress, checkpoint_read=read)
        if on_stage:
            on_stage("extract", extracted)
        # replay and report write one set: a report that fails leaves the previous replay and report together
        with output_set(out_dir, names, seals=(REPLAY_FILE, SUMMARY_JSON), stale=(METRICS_FILE,)) as stage:
            # the cache just extracted or verified, the class list and the head extract read: none is read again
            handed = dict(cache=extracted.cache, classes=extracted.classes, first=extracted.head)
            # the setting the report chooses at its budget gets its intervals and per-video rows in the replay
            named = dataclasses.replace(replay_options, budget=report_options.budget)
            record = replay_into(job, stage, named, progress=progress, **handed)
            summary = report_into(stage, stage, report_options)
    paths = out_paths(out_dir, names)
    replayed = ReplayResult(out_dir, paths[SWEEP_FILE], paths[VIDEOS_FILE], paths[REPLAY_FILE], record)
    reported = ReportResult(summary, out_paths(out_dir, REPORT_FILES))
    if on_stage:
        on_stage("replay", replayed)
        on_stage("report", reported)
    return RunResult(extracted, replayed, reported)


def _read_checkpoint(job: Job) -> tuple[dict, str] | None:
    """:func:`jobs.model.checkpoint_file` of the job's one checkpoint, or None where extraction will refuse it
    (it says why, in its own words and order)."""
    if len(job.checkpoints) != 1:
        return None
    try:
        return checkpoint_file(job, job.checkpoints[0])
    except (OSError, FrameExitError):
        return None
