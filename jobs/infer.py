"""`frameexit infer`: sequential early exit over a split, reading only the frames each video needs."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cache.inputs import named_digests
from frameexit.atomic import check_writable_dir
from frameexit.cost import exit_histogram
from frameexit.errors import ConfigError
from frameexit.exactness import SAFETY_FACTOR
from frameexit.head import FrameExit
from frameexit.inference import infer_video
from frameexit.metrics import Metrics, evaluate
from frameexit.sampling import clip_indices
from frameexit.step_costs import StepCosts
from frameexit.sweep import SweepMetrics
from reports.commit import output_set
from reports.records import (
    INFER_SCHEDULER,
    METRICS_FILE,
    REPLAY_FILE,
    SEQUENTIAL_REFERENCE,
    CheckpointExactness,
    CheckpointRecord,
    ExactnessRecord,
    InferCheckpoint,
    InferDataset,
    InferMetrics,
    InferRuntime,
    InferUnits,
    MetricRow,
    ReplayRecord,
    ReplayRuntime,
    SkippedVideo,
    StepCostsRecord,
    runtime,
    versions,
)
from reports.write import write_json

from .config import Job
from .datasets import Dataset, Skipped, load_categories, load_job_dataset, require_videos
from .frames import FrameReadError, check_frame, read_frame, step_input
from .model import load_model, paper_per_step, resolve_device, step_costs
from .outputs import (
    INFER_FILES,
    REPORT_FILES,
    SWEEP_FILE,
    VIDEOS_FILE,
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
from .process import exact_fp32
from .progress import progress as progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferResult:
    """Where the outputs went and what they say (the content of ``metrics.json``)."""

    out_dir: str
    videos_path: str
    metrics_path: str
    metrics: InferMetrics
    sweep_path: str
    replay_path: str


def infer(job: Job, out_dir: str, *, device: str = "auto", progress: bool | None = None) -> InferResult:
    """Evaluate the job's checkpoint (exactly one) on its split with sequential early exit, on ``device`` (auto,
    cpu, cuda, cuda:N).

    Writes ``videos.parquet`` (a row per evaluated video), ``metrics.json`` and the replay files of its one
    setting (``sweep.parquet``, one row; ``replay.json``, no cache, exactness 'exact': this is the sequential
    reference), so that ``frameexit report`` reads the folder as a replay's, as one set (:mod:`jobs.outputs`)
    that replaces the previous one and removes a report there, which would not match it.
    """
    job.require("checkpoint.init", "data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    if len(job.checkpoints) != 1:
        raise ConfigError(f"infer evaluates one checkpoint, but checkpoint.init lists {len(job.checkpoints)}")
    checkpoint = job.checkpoints[0]
    torch_device = resolve_device(device)

    check_writable_dir(out_dir, "--out")
    seals = (METRICS_FILE, REPLAY_FILE)  # a report's would no longer match the new files
    with writing(out_dir), output_set(out_dir, INFER_FILES, seals=seals, stale=REPORT_FILES) as stage:
        document = _infer_into(job, checkpoint, torch_device, stage, progress)
    p = out_paths(out_dir, INFER_FILES)
    return InferResult(out_dir, p[VIDEOS_FILE], p[METRICS_FILE], document, p[SWEEP_FILE], p[REPLAY_FILE])


@dataclass
class _Evaluated:
    """Per evaluated video (in split order): its decision and labels; the videos skipped; the loop's seconds."""

    keys: list[str] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)
    predictions: list[int] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0


def _infer_into(
    job: Job, checkpoint: str, torch_device: torch.device, folder: str, progress: bool | None
) -> InferMetrics:
    """:func:`infer`'s evaluation, its files written into ``folder`` (a staging folder); ``metrics.json``."""
    data, model_cfg = job.data, job.model
    dataset = load_job_dataset(data, model_cfg.num_class)
    require_videos(len(dataset.videos), dataset.skipped, data.path_split)
    categories = load_categories(data, dataset.classes)
    model, sha256 = load_model(job, checkpoint, torch_device)  # the file read once: weights and digest
    log.info("evaluating %d videos on %s (%d skipped)", len(dataset.videos), torch_device, len(dataset.skipped))
    done = _evaluate(job, model, dataset, torch_device, progress)
    if len(done.keys) + len(done.skipped) != dataset.n_listed:
        raise RuntimeError(f"accounted for {len(done.keys) + len(done.skipped)} videos of {dataset.n_listed} listed")
    done.skipped.sort(key=lambda s: s.video)
    require_videos(len(done.keys), done.skipped, data.path_split)
    scores = np.stack(done.probs) if done.probs else np.zeros((0, model_cfg.num_class), dtype=np.float32)
    evaluated = evaluate(done.keys, scores, dict(zip(done.keys, done.labels, strict=True)), model_cfg.num_class)
    hidden_dim = model.mlp.layers[0].out_features
    costs = step_costs(job, hidden_dim)
    name = os.path.basename(checkpoint)
    columns = _metric_columns(job, name, done, evaluated, costs, categories)
    row = metric_row(columns, 0)
    document = _document(job, (checkpoint, sha256), torch_device, costs, dataset.n_listed, done, evaluated, row)
    # no cache records the dataset files' digests: those of the bytes parsed
    digests = named_digests(data, dataset.digests)
    record = _replay_record(job, checkpoint_record(name, checkpoint, sha256, hidden_dim, costs), document, row, digests)
    n = len(done.keys)
    videos = {
        "video": done.keys,
        "exit_step": done.exits,
        "prediction": done.predictions,
        "confidence": done.confidences,
        "labels": done.labels,
        "policy": ["frameexit"] * n,
        "first_threshold": [model_cfg.first_threshold] * n,
        "gate_threshold": [model_cfg.gate_threshold] * n,
        "tau": [None] * n,
        "frames": [None] * n,
        "checkpoint": [name] * n,
    }
    sweep = sweep_columns([columns], order_name(model_cfg.input_order), n)
    write_replay_files(folder, sweep, videos, record)
    write_json(out_paths(folder, INFER_FILES)[METRICS_FILE], document)
    return document


def _metric_columns(
    job: Job,
    name: str,
    done: _Evaluated,
    evaluated: Metrics,
    costs: StepCosts,
    categories: dict[str, tuple[int, ...]] | None,
) -> dict[str, Any]:
    """The metric columns of the job's setting (:func:`jobs.outputs.metric_columns`, a grid of one setting, no
    video at risk): what ``metrics.json``, ``sweep.parquet`` and ``replay.json`` say of it."""
    exits = np.asarray(done.exits, dtype=np.int64)
    one = SweepMetrics(
        map=np.array([[evaluated.map]]),
        top1=np.array([[evaluated.top1]]),
        mean_frames=np.array([[(exits + 1).mean() if len(exits) else np.nan]], dtype=np.float64),
        exit_histogram=exit_histogram(exits, job.data.num_frames)[None, None],
        ap=np.asarray(evaluated.ap, dtype=np.float64)[None, None],
    )
    return metric_columns(
        one,
        (np.array([0]), np.array([0])),
        frameexit_settings([job.model.first_threshold], [job.model.gate_threshold]),
        checkpoint=name,
        costs=costs,
        per_frame=paper_per_step(job),
        categories=categories,
        at_risk=np.zeros((1, 1), dtype=np.int64),
    )


def _evaluate(
    job: Job, model: FrameExit, dataset: Dataset, torch_device: torch.device, progress: bool | None
) -> _Evaluated:
    """Sequential early exit on every video of ``dataset``; a video with an unreadable frame is skipped."""
    data, model_cfg = job.data, job.model
    done = _Evaluated(skipped=list(dataset.skipped))
    started = time.perf_counter()
    bar = progress_bar(dataset.videos, desc="infer", total=len(dataset.videos), enabled=progress)
    for video in bar:
        # the files each step reads: its sampled frame, or the clip around it (3D backbones)
        files = clip_indices(len(video.frames), data.num_frames, model_cfg.clip_length, model_cfg.clip_stride)
        decoded: dict[int, torch.Tensor] = {}

        def reader(position: int, _frames=video.frames, _files=files, _decoded=decoded) -> torch.Tensor:
            for j in _files[position].tolist():
                if j not in _decoded:
                    _decoded[j] = read_frame(_frames[j], data.preprocessing)
            return step_input([_decoded[j] for j in _files[position].tolist()], model_cfg.clips)

        try:
            # as extract's default --precision fp32, so that per-step extraction equals these features bit for bit
            with exact_fp32():
                decision = infer_video(
                    model,
                    reader,
                    model_cfg.input_order,
                    first_threshold=model_cfg.first_threshold,
                    gate_threshold=model_cfg.gate_threshold,
                    device=torch_device,
                )
            # extract caches all sampled frames, so it skips a video with any unreadable one; decoding the
            # frames after the exit (without the backbone) makes both paths evaluate the same videos
            unread = {int(j) for p in model_cfg.input_order[decision.exit_step + 1 :] for j in files[p]}
            for index in sorted(unread - set(decoded)):
                check_frame(video.frames[index])
        except FrameReadError as exc:
            done.skipped.append(Skipped(video.key, str(exc)))
            continue
        done.keys.append(video.key)
        done.exits.append(decision.exit_step)
        done.predictions.append(decision.prediction)
        done.confidences.append(decision.confidence)
        done.probs.append(decision.probs)
        done.labels.append(list(video.labels))
    done.seconds = time.perf_counter() - started
    return done


def _document(
    job: Job,
    checkpoint: tuple[str, str],
    torch_device: torch.device,
    costs: StepCosts,
    n_listed: int,
    done: _Evaluated,
    evaluated: Metrics,
    row: MetricRow,
) -> InferMetrics:
    """``metrics.json`` of the evaluated videos: the metric row of the job's setting, per-class AP, costs,
    provenance, units. ``checkpoint``: its path and the SHA-256 of the bytes its weights were read from."""
    data, model_cfg = job.data, job.model
    return InferMetrics(
        map=row["map"],
        top1=row["top1"],
        gflops=row["gflops"],
        gflops_per_frame=paper_per_step(job),
        gmacs_measured=row["gmacs_measured"],
        gmacs_measured_parts=StepCostsRecord(**costs.__dict__),
        mean_frames=row["mean_frames"],
        exit_histogram=row["exit_histogram"],
        ap_per_class=evaluated.ap.tolist(),
        map_per_category=row.get("map_per_category"),
        n_videos=evaluated.n_videos,
        n_videos_labelled=evaluated.n_labelled,
        n_videos_listed=n_listed,
        skipped=[SkippedVideo(video=s.video, reason=s.reason) for s in done.skipped],
        first_threshold=model_cfg.first_threshold,
        gate_threshold=model_cfg.gate_threshold,
        input_order=list(model_cfg.input_order),
        checkpoint=InferCheckpoint(path=os.path.abspath(checkpoint[0]), sha256=checkpoint[1]),
        dataset=InferDataset(
            name=data.name,
            split=os.path.abspath(data.path_split),
            labels=os.path.abspath(data.path_label),
            classes=os.path.abspath(data.path_classid),
            frames=os.path.abspath(data.path_frame),
            categories=os.path.abspath(data.path_category) if data.path_category else None,
        ),
        backbone=model_cfg.backbone_name,
        runtime=InferRuntime(
            **runtime(), device=str(torch_device), seconds=done.seconds, frames_read=sum(done.exits) + len(done.exits)
        ),
        units=InferUnits(
            map="fraction in [0, 1], mean over classes with a positive video",
            top1="fraction in [0, 1] of videos with a label",
            gflops="paper convention: per-frame GMACs of the backbone x frames read; null if the backbone has none",
            gmacs_measured="multiply-accumulates per video (backbone + head), torch FlopCounterMode; GFLOPs = 2 x GMACs",
        ),
    )


def _replay_record(
    job: Job, checkpoint: CheckpointRecord, document: InferMetrics, row: MetricRow, dataset_digests: dict[str, str]
) -> ReplayRecord:
    """``replay.json`` of infer's one setting, so that ``frameexit report`` reads the folder: no feature cache, and
    exact agreement with infer, which it is."""
    model_cfg = job.model
    zero = ("probs_max_abs_deviation", "gates_max_abs_deviation", "first_margin", "gate_margin", "top2_margin")
    exact = CheckpointExactness(
        checkpoint=checkpoint["name"], status="exact", n_at_risk=0, at_risk=[], **dict.fromkeys(zero, 0.0)
    )
    return replay_record(
        job,
        [model_cfg.first_threshold],
        [model_cfg.gate_threshold],
        "default",
        cache=None,
        checkpoints=[checkpoint],
        default_metrics=[row],
        n_videos=document["n_videos"],
        n_videos_listed=document["n_videos_listed"],
        skipped=document["skipped"],
        gflops_per_frame=document["gflops_per_frame"],
        runtime=ReplayRuntime(
            **versions(document["runtime"]), date=document["runtime"]["date"], scheduler=INFER_SCHEDULER
        ),
        n_videos_labelled=document["n_videos_labelled"],
        dataset_digests=dataset_digests,
        exactness=ExactnessRecord(
            status="exact",
            batching="per-step",
            effective="per-step",
            reference=SEQUENTIAL_REFERENCE,
            safety_factor=SAFETY_FACTOR,
            probe_videos=[],
            feature_max_abs_deviation=0.0,
            feature_max_rel_deviation=0.0,
            checkpoints=[exact],
        ),
    )
