"""`frameexit infer`: sequential early exit over a split, reading only the frames each video needs, under one exit
policy (:mod:`frameexit.policies`: FrameExit's gates, or a baseline: confidence, fixed frames, oracle)."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cache.inputs import named_digests
from frameexit.atomic import check_writable_dir
from frameexit.bootstrap import SettingResampler, resample_weights
from frameexit.cost import exit_histogram
from frameexit.errors import ConfigError, UsageError
from frameexit.exactness import SAFETY_FACTOR
from frameexit.head import FrameExit
from frameexit.inference import infer_video
from frameexit.metrics import Metrics, evaluate
from frameexit.policies import POLICIES, PolicySetting
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
    Setting,
    SkippedVideo,
    StepCostsRecord,
    runtime,
    versions,
)
from reports.schema import SETTING_COLUMNS
from reports.summary import setting_of
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
    NamedResult,
    baseline_settings,
    bootstrap_record,
    checkpoint_record,
    frameexit_settings,
    metric_columns,
    metric_row,
    named_result,
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

#: ``metrics.json``'s ``units.frames_read``.
FRAMES_READ_UNIT = (
    "frames run through the backbone, over all videos: exit_step + 1 per video; oracle: every step of every video "
    "(it must know whether any step is right before it decides), while mean_frames and the costs count its "
    "exit_step + 1 as for the other policies"
)


@dataclass(frozen=True)
class InferResult:
    """Where the outputs went and what they say (the content of ``metrics.json``)."""

    out_dir: str
    videos_path: str
    metrics_path: str
    metrics: InferMetrics
    sweep_path: str
    replay_path: str


def infer(
    job: Job,
    out_dir: str,
    *,
    device: str = "auto",
    progress: bool | None = None,
    policy: str = "frameexit",
    tau: float | None = None,
    frames: int | None = None,
) -> InferResult:
    """Evaluate the job's checkpoint (exactly one) on its split with sequential early exit, on ``device`` (auto,
    cpu, cuda, cuda:N), under the exit ``policy`` (:func:`policy_setting`: ``frameexit`` at the job's thresholds;
    ``confidence`` at ``tau``, default ``model.first_threshold``; ``fixed`` at ``frames``, default T; ``oracle``).

    Writes ``videos.parquet`` (a row per evaluated video), ``metrics.json`` and the replay files of its one
    setting (``sweep.parquet``, one row; ``replay.json``, no cache, exactness 'exact': this is the sequential
    reference), so that ``frameexit report`` reads the folder as a replay's, as one set (:mod:`jobs.outputs`)
    that replaces the previous one and removes a report there, which would not match it.
    """
    setting = policy_setting(job, policy, tau=tau, frames=frames)
    job.require("checkpoint.init", "data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    if len(job.checkpoints) != 1:
        raise ConfigError(f"infer evaluates one checkpoint, but checkpoint.init lists {len(job.checkpoints)}")
    checkpoint = job.checkpoints[0]
    torch_device = resolve_device(device)

    check_writable_dir(out_dir, "--out")
    seals = (METRICS_FILE, REPLAY_FILE)  # a report's would no longer match the new files
    with writing(out_dir), output_set(out_dir, INFER_FILES, seals=seals, stale=REPORT_FILES) as stage:
        document = _infer_into(job, checkpoint, setting, torch_device, stage, progress)
    p = out_paths(out_dir, INFER_FILES)
    return InferResult(out_dir, p[VIDEOS_FILE], p[METRICS_FILE], document, p[SWEEP_FILE], p[REPLAY_FILE])


def policy_setting(job: Job, policy: str, *, tau: float | None = None, frames: int | None = None) -> PolicySetting:
    """The setting ``infer --policy POLICY [--tau PROB] [--frames K]`` evaluates, checked before any work:
    :class:`UsageError` (exit status 2) for an unknown policy, ``tau`` without ``confidence``, ``frames`` without
    ``fixed``, ``tau`` not a probability, ``frames`` outside 1..T (T: the frames of the job's policy order).
    ``confidence``'s ``tau`` defaults to ``model.first_threshold`` (step 0's rule, at every step), ``fixed``'s
    ``frames`` to T; ``frameexit`` takes the job's thresholds, ``oracle`` nothing."""
    if policy not in POLICIES:
        raise UsageError(f"--policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if tau is not None and policy != "confidence":
        raise UsageError(
            f"--tau is the threshold of --policy confidence, not of --policy {policy}: give --policy confidence, "
            "or leave --tau out"
        )
    if frames is not None and policy != "fixed":
        raise UsageError(
            f"--frames is the setting of --policy fixed, not of --policy {policy}: give --policy fixed, or leave "
            "--frames out"
        )
    n_steps = len(job.model.input_order)
    if policy == "confidence":
        tau = job.model.first_threshold if tau is None else tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (math.isfinite(tau) and 0 <= tau <= 1):
            raise UsageError(f"--tau must be a probability in [0, 1], got {tau!r}")
        return PolicySetting(policy, tau=float(tau))
    if policy == "fixed":
        frames = n_steps if frames is None else frames
        if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= n_steps:
            raise UsageError(
                f"--frames must be a number of frames in 1..{n_steps} (the job's policy order reads {n_steps}), "
                f"got {frames!r}"
            )
        return PolicySetting(policy, frames=frames)
    return PolicySetting(policy)


def setting_columns(job: Job, setting: PolicySetting) -> dict:
    """The setting columns (:data:`reports.schema.SETTING_COLUMNS`) of infer's rows: the job's thresholds for
    ``frameexit``, :func:`jobs.outputs.baseline_settings` of ``setting`` for the others."""
    if setting.policy == "frameexit":
        return frameexit_settings([job.model.first_threshold], [job.model.gate_threshold])
    return baseline_settings([setting])


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
    job: Job,
    checkpoint: str,
    setting: PolicySetting,
    torch_device: torch.device,
    folder: str,
    progress: bool | None,
) -> InferMetrics:
    """:func:`infer`'s evaluation, its files written into ``folder`` (a staging folder); ``metrics.json``."""
    data, model_cfg = job.data, job.model
    dataset = load_job_dataset(data, model_cfg.num_class)
    require_videos(len(dataset.videos), dataset.skipped, data.path_split)
    categories = load_categories(data, dataset.classes)
    model, sha256 = load_model(job, checkpoint, torch_device)  # the file read once: weights and digest
    log.info("evaluating %d videos on %s (%d skipped)", len(dataset.videos), torch_device, len(dataset.skipped))
    done = _evaluate(job, model, setting, dataset, torch_device, progress)
    if len(done.keys) + len(done.skipped) != dataset.n_listed:
        raise RuntimeError(f"accounted for {len(done.keys) + len(done.skipped)} videos of {dataset.n_listed} listed")
    done.skipped.sort(key=lambda s: s.video)
    require_videos(len(done.keys), done.skipped, data.path_split)
    scores = np.stack(done.probs) if done.probs else np.zeros((0, model_cfg.num_class), dtype=np.float32)
    evaluated = evaluate(done.keys, scores, dict(zip(done.keys, done.labels, strict=True)), model_cfg.num_class)
    hidden_dim = model.mlp.layers[0].out_features
    costs = step_costs(job, hidden_dim)
    name = os.path.basename(checkpoint)
    settings = setting_columns(job, setting)
    columns = _metric_columns(job, name, done, evaluated, costs, categories, settings)
    row = metric_row(columns, 0)
    document = _document(
        job, (checkpoint, sha256), setting, torch_device, costs, dataset.n_listed, done, evaluated, row
    )
    # no cache records the dataset files' digests: those of the bytes parsed
    digests = named_digests(data, dataset.digests)
    record = _replay_record(job, checkpoint_record(name, checkpoint, sha256, hidden_dim, costs), document, row, digests)
    record["bootstrap"] = bootstrap_record(job.replay.bootstrap, [name], [[_named(job, row, done, scores)]])
    n = len(done.keys)
    videos = {
        "video": done.keys,
        "exit_step": done.exits,
        "prediction": done.predictions,
        "confidence": done.confidences,
        "labels": done.labels,
        # the setting's columns, its row's of sweep.parquet on every video
        **{key: [row[key]] * n for key in SETTING_COLUMNS},
        "checkpoint": [name] * n,
    }
    sweep = sweep_columns([columns], order_name(model_cfg.input_order), n)
    write_replay_files(folder, sweep, videos, record)
    write_json(out_paths(folder, INFER_FILES)[METRICS_FILE], document)
    return document


def _named(job: Job, row: MetricRow, done: _Evaluated, scores: np.ndarray) -> NamedResult:
    """The bootstrap intervals at infer's one setting, as replay computes them at its named settings: the videos in
    key order (the resamples' order), labels and predictions together."""
    order = np.argsort(np.asarray(done.keys, dtype=object), kind="stable")
    labels = np.zeros((len(done.keys), job.model.num_class), dtype=bool)
    for i, classes in enumerate(done.labels):
        labels[i, classes] = True
    boot = job.replay.bootstrap
    resampler = None
    if boot.resamples:
        resampler = SettingResampler(labels[order], resample_weights(len(order), boot.resamples, boot.seed))
    steps = np.asarray(done.exits, dtype=np.int64)[order]
    return named_result(setting_of(row), steps, scores[order], boot, resampler(scores[order]) if resampler else None)


def _metric_columns(
    job: Job,
    name: str,
    done: _Evaluated,
    evaluated: Metrics,
    costs: StepCosts,
    categories: dict[str, tuple[int, ...]] | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The metric columns of infer's one setting (:func:`jobs.outputs.metric_columns`, a grid of one setting, no
    video at risk; ``settings``: its setting columns, :func:`setting_columns`): what ``metrics.json``,
    ``sweep.parquet`` and ``replay.json`` say of it."""
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
        settings,
        checkpoint=name,
        costs=costs,
        per_frame=paper_per_step(job),
        categories=categories,
        at_risk=np.zeros((1, 1), dtype=np.int64),
    )


def _evaluate(
    job: Job,
    model: FrameExit,
    setting: PolicySetting,
    dataset: Dataset,
    torch_device: torch.device,
    progress: bool | None,
) -> _Evaluated:
    """Sequential early exit on every video of ``dataset`` under ``setting``; a video with an unreadable frame is
    skipped."""
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
                    **_policy_arguments(setting, video.labels),
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


def _policy_arguments(setting: PolicySetting, labels: Sequence[int]) -> dict[str, Any]:
    """:func:`frameexit.inference.infer_video`'s arguments of a baseline policy (none for frameexit's gates, which
    keep their call as it was): its setting, and the video's labels for the oracle."""
    if setting.policy == "frameexit":
        return {}
    own = {"confidence": {"tau": setting.tau}, "fixed": {"frames": setting.frames}, "oracle": {"labels": labels}}
    return {"policy": setting.policy, **own[setting.policy]}


def _frames_read(setting: PolicySetting, done: _Evaluated, n_steps: int) -> int:
    """Frames run through the backbone over all videos: ``exit_step + 1`` per video, but every step of every
    video for the oracle, which must know whether any step is right before it decides."""
    if setting.policy == "oracle":
        return n_steps * len(done.exits)
    return sum(done.exits) + len(done.exits)


def _document(
    job: Job,
    checkpoint: tuple[str, str],
    setting: PolicySetting,
    torch_device: torch.device,
    costs: StepCosts,
    n_listed: int,
    done: _Evaluated,
    evaluated: Metrics,
    row: MetricRow,
) -> InferMetrics:
    """``metrics.json`` of the evaluated videos: the metric row of infer's ``setting`` (its policy, beside the job's
    thresholds), per-class AP, costs, provenance, units. ``checkpoint``: its path and the SHA-256 of the bytes its
    weights were read from."""
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
        policy=setting.policy,
        tau=setting.tau,
        frames=setting.frames,
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
            **runtime(),
            device=str(torch_device),
            seconds=done.seconds,
            frames_read=_frames_read(setting, done, len(model_cfg.input_order)),
        ),
        units=InferUnits(
            map="fraction in [0, 1], mean over classes with a positive video",
            top1="fraction in [0, 1] of videos with a label",
            gflops="paper convention: per-frame GMACs of the backbone x frames read; null if the backbone has none",
            gmacs_measured="multiply-accumulates per video (backbone + head), torch FlopCounterMode; GFLOPs = 2 x GMACs",
            frames_read=FRAMES_READ_UNIT,
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
    record = replay_record(
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
    # the policy infer ran beside the job's thresholds (frameexit's, which the other policies do not use)
    record["default_setting"] = Setting(
        first_threshold=model_cfg.first_threshold,
        gate_threshold=model_cfg.gate_threshold,
        policy=document["policy"],
        tau=document["tau"],
        frames=document["frames"],
    )
    return record
