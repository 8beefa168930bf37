"""`frameexit infer`: sequential early exit over a split, reading only the frames each video needs."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from cache.shard import file_sha256
from frameexit.atomic import check_writable_dir
from frameexit.cost import exit_histogram, paper_gflops
from frameexit.errors import ConfigError
from frameexit.head import FrameExit
from frameexit.inference import infer_video
from frameexit.metrics import evaluate
from frameexit.sampling import clip_indices
from reports.commit import output_set
from reports.records import (
    METRICS_FILE,
    REPLAY_FILE,
    InferCheckpoint,
    InferDataset,
    InferMetrics,
    InferRuntime,
    InferUnits,
    SkippedVideo,
    StepCostsRecord,
    runtime,
)
from reports.schema import VIDEOS
from reports.write import write_json, write_table

from .config import Job
from .datasets import Dataset, Skipped, load_categories, load_job_dataset, require_videos
from .frames import FrameReadError, check_frame, read_frame, step_input
from .model import load_model, paper_per_step, resolve_device, step_costs
from .outputs import INFER_FILES, REPORT_FILES, SWEEP_FILE, VIDEOS_FILE, category_maps, out_paths, writing
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


def infer(job: Job, out_dir: str, *, device: str = "auto", progress: bool | None = None) -> InferResult:
    """Evaluate the job's checkpoint on its split with sequential early exit.

    Writes ``<out_dir>/videos.parquet`` (one row per evaluated video) and
    ``<out_dir>/metrics.json`` once every video is done, as one set
    (:mod:`jobs.outputs`) that replaces the previous one (and removes a
    replay's outputs there, which would not match it): an interrupted or
    failed run leaves the previous files as they were.

    Parameters
    ----------
    job : Job
        Needs ``checkpoint.init`` (exactly one) and the four ``data.path_*`` keys.
    out_dir : str
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
    progress : bool or None
        Progress bar on stderr; ``None`` shows it on a terminal only.
    """
    job.require("checkpoint.init", "data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    if len(job.checkpoints) != 1:
        raise ConfigError(f"infer evaluates one checkpoint, but checkpoint.init lists {len(job.checkpoints)}")
    checkpoint = job.checkpoints[0]
    torch_device = resolve_device(device)

    check_writable_dir(out_dir, "--out")
    stale = (SWEEP_FILE, REPLAY_FILE, *REPORT_FILES)  # a replay's outputs would no longer match videos.parquet
    with writing(out_dir), output_set(out_dir, INFER_FILES, seals=(METRICS_FILE,), stale=stale) as stage:
        document = _infer_into(job, checkpoint, torch_device, stage, progress)
    paths = out_paths(out_dir, INFER_FILES)
    return InferResult(out_dir, paths[VIDEOS_FILE], paths[METRICS_FILE], document)


@dataclass
class _Evaluated:
    """Per evaluated video (in split order): key, exit step, prediction, confidence, probabilities, labels;
    the videos skipped with their reason; the seconds the loop took."""

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
    """:func:`infer`'s evaluation, its two files written into ``folder`` (a staging folder); ``metrics.json``."""
    data, model_cfg = job.data, job.model
    videos_path, metrics_path = (os.path.join(folder, name) for name in INFER_FILES)
    dataset = load_job_dataset(data, model_cfg.num_class)
    require_videos(len(dataset.videos), dataset.skipped, data.path_split)
    categories = load_categories(data)
    model = load_model(job, checkpoint, torch_device)
    log.info("evaluating %d videos on %s (%d skipped)", len(dataset.videos), torch_device, len(dataset.skipped))
    done = _evaluate(job, model, dataset, torch_device, progress)
    if len(done.keys) + len(done.skipped) != dataset.n_listed:
        raise RuntimeError(f"accounted for {len(done.keys) + len(done.skipped)} videos of {dataset.n_listed} listed")
    done.skipped.sort(key=lambda s: s.video)
    require_videos(len(done.keys), done.skipped, data.path_split)
    document = _document(job, checkpoint, torch_device, model, dataset.n_listed, done, categories)
    name = os.path.basename(checkpoint)
    n = len(done.keys)
    columns = {
        "video": done.keys,
        "exit_step": done.exits,
        "prediction": done.predictions,
        "confidence": done.confidences,
        "labels": done.labels,
        "first_threshold": [model_cfg.first_threshold] * n,
        "gate_threshold": [model_cfg.gate_threshold] * n,
        "checkpoint": [name] * n,
    }
    write_table(videos_path, columns, VIDEOS)
    write_json(metrics_path, document)
    return document


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
            # float32 with TF32 off (CUDA's cuDNN allows TF32 by default), as extract's default --precision fp32,
            # so that per-step extraction computes this backbone's features bit for bit
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
    checkpoint: str,
    torch_device: torch.device,
    model: FrameExit,
    n_listed: int,
    done: _Evaluated,
    categories: dict[str, tuple[int, ...]] | None,
) -> InferMetrics:
    """``metrics.json`` of the evaluated videos: metrics, costs, provenance, units."""
    data, model_cfg = job.data, job.model
    keys = done.keys
    exits_arr = np.asarray(done.exits, dtype=np.int64)
    scores = np.stack(done.probs) if done.probs else np.zeros((0, model_cfg.num_class), dtype=np.float32)
    metrics = evaluate(keys, scores, dict(zip(keys, done.labels, strict=True)), model_cfg.num_class)
    costs = step_costs(job, model.mlp.layers[0].out_features)
    per_frame = paper_per_step(job)
    return InferMetrics(
        map=metrics.map,
        top1=metrics.top1,
        gflops=paper_gflops(exits_arr, per_frame),
        gflops_per_frame=per_frame,
        gmacs_measured=float(costs.video_gmacs(exits_arr).mean()) if len(exits_arr) else float("nan"),
        gmacs_measured_parts=StepCostsRecord(**costs.__dict__),
        mean_frames=float((exits_arr + 1).mean()) if len(exits_arr) else float("nan"),
        exit_histogram=exit_histogram(exits_arr, data.num_frames).tolist(),
        ap_per_class=metrics.ap.tolist(),
        map_per_category=category_maps(metrics.ap, categories),
        n_videos=metrics.n_videos,
        n_videos_labelled=metrics.n_labelled,
        n_videos_listed=n_listed,
        skipped=[SkippedVideo(video=s.video, reason=s.reason) for s in done.skipped],
        first_threshold=model_cfg.first_threshold,
        gate_threshold=model_cfg.gate_threshold,
        input_order=list(model_cfg.input_order),
        checkpoint=InferCheckpoint(path=os.path.abspath(checkpoint), sha256=file_sha256(checkpoint)),
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
            **runtime(), device=str(torch_device), seconds=done.seconds, frames_read=int((exits_arr + 1).sum())
        ),
        units=InferUnits(
            map="fraction in [0, 1], mean over classes with a positive video",
            top1="fraction in [0, 1] of videos with a label",
            gflops="paper convention: per-frame GMACs of the backbone x frames read; null if the backbone has none",
            gmacs_measured="multiply-accumulates per video (backbone + head), torch FlopCounterMode; GFLOPs = 2 x GMACs",
        ),
    )
