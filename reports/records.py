"""The JSON documents frameexit writes, each defined once: ``metrics.json``, ``replay.json``, ``summary.json``.

Each document is a :class:`~typing.TypedDict` (a plain ``dict`` at run time,
so it is written with :func:`reports.write.write_json` as it is). Its writer
builds it through the class and its reader reads it with :func:`read_record`,
which checks every key the class names, nested documents included: a file
with a missing or renamed key is an error naming the file and the key, not a
value that silently becomes ``null``.

Units: accuracies (``map``, ``top1``) are fractions in [0, 1]; ``gflops`` is
the paper convention (per-frame GMACs of the backbone x frames read, called
GFLOPs in the paper); ``gmacs_measured`` is multiply-accumulates counted by
torch's ``FlopCounterMode`` (GFLOPs = 2 x GMACs); costs are per video;
thresholds are probabilities in [0, 1]; NaN is written as ``null``.
"""

import datetime
import json
import os
import platform
import types
import typing
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, TypeVar

import frameexit
from frameexit.errors import FrameExitError

#: ``summary.json``'s ``schema_version``: bumped when a key of the summary changes meaning or a key is added that
#: its readers need. 2: ``videos``, ``video_results`` and ``gflops_per_frame`` (what the baseline gate compares).
SCHEMA_VERSION = 2

#: File names of the documents, by record class name (named in errors).
METRICS_FILE = "metrics.json"
REPLAY_FILE = "replay.json"
SUMMARY_FILE = "summary.json"


class RecordError(FrameExitError, ValueError):
    """A frameexit JSON document that cannot be read: missing, not JSON, or without a key its record defines."""


# ---------------------------------------------------------------------------------------------- shared blocks


class Versions(TypedDict):
    """The software that wrote a document."""

    frameexit: str  # frameexit.__version__
    torch: str  # torch.__version__
    torchvision: str  # torchvision.__version__
    python: str  # platform.python_version()


class Runtime(Versions):
    """When and with what a document was written: the block ``infer``, ``replay`` and ``extract`` record."""

    date: str  # when the document was written: ISO 8601, UTC, to the second


def runtime() -> Runtime:
    """The date (now, UTC) and the versions of frameexit, torch, torchvision and Python."""
    import torch  # here: reading a record needs no torch
    import torchvision

    return Runtime(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        frameexit=frameexit.__version__,
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        python=platform.python_version(),
    )


def versions(block: Runtime) -> Versions:
    """The versions of a runtime block, without its date."""
    return Versions(**{k: block[k] for k in Versions.__annotations__})  # type: ignore[typeddict-item]


class StepCostsRecord(TypedDict):
    """Measured GMACs of each part of the network (:class:`frameexit.cost.StepCosts`)."""

    backbone: float  # GMACs of one frame through the truncated backbone
    projection: float  # GMACs of one frame's features through the projection
    classifier: float  # GMACs of one classifier on pooled features
    gate: float  # GMACs of one gate


class MetricRow(TypedDict):
    """The metrics of one checkpoint at one setting: a row of ``sweep.parquet`` (less ``order`` and ``n_videos``)
    and an entry of ``replay.json``'s ``default_metrics``."""

    checkpoint: str  # checkpoint file name (the path as given where two checkpoints share a file name)
    first_threshold: float  # step-0 exit threshold (probability)
    gate_threshold: float  # gate exit threshold (probability)
    map: float  # mean average precision, fraction in [0, 1]; NaN (null) without any positive label
    top1: float  # top-1 accuracy, fraction in [0, 1] of the videos with a label
    gflops: float | None  # mean GFLOPs per video, paper convention; null for backbones without a paper figure
    gmacs_measured: float  # mean measured GMACs per video, backbone + head
    mean_frames: float  # mean frames read per video (exit_step + 1)
    exit_histogram: list[float]  # share of the videos exiting at each step (0-based), sums to 1
    # mAP of each category of classes (data.path_category, e.g. HVU's scene, object, ...), fractions in [0, 1],
    # null for a category without a positive video; null without categories (absent in files before 0.1 wrote it)
    map_per_category: NotRequired[dict[str, float | None] | None]
    # videos whose exit step or prediction at this setting lie close enough to a threshold or a tie that the
    # deviation of the cached features from sequential inference's could change them (ExactnessRecord); 0 for
    # exact features; null when the deviation is unknown (absent in files before 0.1 wrote it)
    n_at_risk: NotRequired[int | None]


class SummaryRow(MetricRow):
    """A metric row of ``summary.json`` (``default``): with the measured cost in GFLOPs."""

    gflops_measured: float | None  # 2 x gmacs_measured: measured GFLOPs per video; null when not measured


class SkippedVideo(TypedDict):
    """A listed video that was not evaluated."""

    video: str  # split-file key
    reason: str  # why, e.g. no frame folder


def category_maps(ap: Any, categories: Mapping[str, Any] | None) -> dict[str, float | None] | None:
    """``map_per_category`` of a record: :func:`frameexit.metrics.category_map` of one setting's per-class AP."""
    if categories is None:
        return None
    from frameexit.metrics import category_map

    return {name: float(value) for name, value in category_map(ap, categories).items()}


# ---------------------------------------------------------------------------------------------- metrics.json


class InferCheckpoint(TypedDict):
    path: str  # absolute path of the checkpoint file
    sha256: str  # hex SHA-256 of its bytes


class InferDataset(TypedDict):
    name: str  # data.name of the job
    split: str  # absolute path of the split file (data.path_split)
    labels: str  # absolute path of the label file (data.path_label)
    classes: str  # absolute path of the class list (data.path_classid)
    frames: str  # absolute path of the frame root (data.path_frame)
    categories: str | None  # absolute path of the Tag,Category file (data.path_category); null without one


class InferRuntime(Runtime):
    device: str  # torch device the videos ran on, e.g. cpu or cuda:0
    seconds: float  # wall-clock seconds of the loop over the videos
    frames_read: int  # frames decoded and run through the backbone, over all videos


class InferUnits(TypedDict):
    """The units of the headline metrics, in words, written into the file for its readers."""

    map: str
    top1: str
    gflops: str
    gmacs_measured: str


class InferMetrics(TypedDict):
    """``metrics.json`` of ``frameexit infer``: one checkpoint at the job's own setting."""

    map: float  # fraction in [0, 1], mean over the classes with a positive video; NaN (null) if none
    top1: float  # fraction in [0, 1] of the videos with a label
    gflops: float | None  # mean GFLOPs per video, paper convention; null for backbones without a paper figure
    gflops_per_frame: float | None  # the paper's per-frame GMACs of the backbone; null if it has none
    gmacs_measured: float  # mean measured GMACs per video, backbone + head
    gmacs_measured_parts: StepCostsRecord  # measured GMACs per part
    mean_frames: float  # mean frames read per video (exit_step + 1)
    exit_histogram: list[float]  # share of the videos exiting at each step (0-based)
    ap_per_class: list[float]  # average precision of each class (line of the class list), NaN (null) without positives
    map_per_category: dict[str, float | None] | None  # mAP of each category of data.path_category; null without one
    n_videos: int  # videos evaluated
    n_videos_labelled: int  # of those, videos with at least one label
    n_videos_listed: int  # videos the split file lists
    skipped: list[SkippedVideo]  # listed videos not evaluated, with the reason
    first_threshold: float  # model.first_threshold (probability)
    gate_threshold: float  # model.gate_threshold (probability)
    input_order: list[int]  # the policy order: sampled-frame position read at each step
    checkpoint: InferCheckpoint
    dataset: InferDataset
    backbone: str  # model.backbone.name
    runtime: InferRuntime
    units: InferUnits


# ---------------------------------------------------------------------------------------------- replay.json


class CacheRecord(TypedDict):
    directory: str  # absolute path of the feature cache directory
    key: str  # the cache key (the directory's name under the cache root)
    inputs: dict[str, Any]  # what the key was computed from, as the manifest records it (dataset, file digests, ...)


class CheckpointRecord(TypedDict):
    name: str  # as in the checkpoint column: the file name, or the path where two checkpoints share one
    path: str  # absolute path of the checkpoint file
    sha256: str  # hex SHA-256 of its bytes
    hidden_dim: int  # width of the head's projection
    gmacs_measured_parts: StepCostsRecord  # measured GMACs per part, for this head's width


class Setting(TypedDict):
    first_threshold: float  # step-0 exit threshold (probability)
    gate_threshold: float  # gate exit threshold (probability)


class CheckpointExactness(TypedDict):
    """One checkpoint's head on the cache's probed videos, and its videos at risk at the job's setting."""

    checkpoint: str  # as in the checkpoint column
    status: str  # 'exact' (per-step features: deviation 0), 'measured' (from probed videos) or 'unknown'
    probs_max_abs_deviation: float | None  # largest |difference| of any step's class probability, probed videos
    gates_max_abs_deviation: float | None  # largest |difference| of any gate output (probability), probed videos
    first_margin: float | None  # safety_factor x probs_max_abs_deviation: step-0 confidence from first_threshold
    gate_margin: float | None  # safety_factor x gates_max_abs_deviation: a gate output from gate_threshold
    top2_margin: float | None  # 2 x first_margin: top-1 minus top-2 probability at the exit step
    n_at_risk: int | None  # videos at risk at the job's setting; null when unknown
    at_risk: list[str] | None  # their keys, sorted; null when unknown


class ExactnessRecord(TypedDict):
    """How far the cached features are from those ``frameexit infer`` computes, and what that could change.

    A video is at risk at a setting when its step-0 confidence is within ``first_margin`` of
    first_threshold, a gate output at a step it evaluates (up to its exit) within ``gate_margin`` of
    gate_threshold, or its top-2 probability gap at the exit step within ``top2_margin``.
    """

    status: str  # 'exact' (replay equals infer bit for bit), 'measured', or 'unknown' (no probe in the cache)
    batching: str  # the mode asked when extracting (a cache-key input): 'batched' or 'per-step'
    effective: str  # how the backbone ran: 'per-step', 'batched', 'mixed' (shards differ) or 'unknown'
    reference: str  # what the features are compared with, in words
    safety_factor: float  # margins are the largest deviation seen on the probed videos times this
    probe_videos: list[str]  # videos whose steps also ran one per forward pass while extracting
    feature_max_abs_deviation: float | None  # largest |stored - per-step| backbone feature over the probed videos
    feature_max_rel_deviation: float | None  # the same over the video's largest |per-step feature|
    checkpoints: list[CheckpointExactness]  # in the job's order


class ReplayRuntime(Runtime):
    scheduler: str  # the dask scheduler: threads, sync, an address, or "local cluster of N processes"


class ReplayRecord(TypedDict):
    """``replay.json`` of ``frameexit replay``: what was replayed, over what, and the job's setting."""

    cache: CacheRecord  # the feature cache replayed over
    checkpoints: list[CheckpointRecord]  # in the job's order
    order: list[int]  # the policy order: sampled-frame position read at each step
    order_name: str  # coarse_to_fine, sequential, or the positions joined by commas (the sweep's order column)
    first_thresholds: list[float]  # the grid's step-0 thresholds
    gate_thresholds: list[float]  # the grid's gate thresholds
    default_setting: Setting  # the job's own thresholds (model.first_threshold, model.gate_threshold)
    default_metrics: list[MetricRow]  # per checkpoint: the metrics at the job's own setting
    per_video: str  # 'default' (per-video rows at the job's setting) or 'all' (at every setting)
    n_settings: int  # settings per checkpoint: len(first_thresholds) x len(gate_thresholds)
    n_videos: int  # videos replayed (with features in the cache)
    n_videos_listed: int  # videos the split file lists
    skipped: list[SkippedVideo]  # listed videos without features, with the reason
    gflops_per_frame: float | None  # the paper's per-frame GMACs of the backbone; null if it has none
    dataset: str  # data.name of the job
    dataset_files: dict[str, str]  # absolute paths at replay time, by job key (path_split, ...; those set)
    backbone: str  # model.backbone.name
    job: dict[str, Any]  # the resolved job, every key
    runtime: ReplayRuntime
    # of the videos replayed, those with at least one label: top-1's denominator (absent before 0.1 wrote it)
    n_videos_labelled: NotRequired[int]
    # agreement with frameexit infer: deviation of the features and the videos at risk (absent before 0.1 wrote it)
    exactness: NotRequired[ExactnessRecord]


# ---------------------------------------------------------------------------------------------- summary.json


class Provenance(TypedDict):
    cache: CacheRecord  # the feature cache replayed over (replay.json's)
    checkpoints: list[CheckpointRecord]  # replay.json's, with SHA-256
    dataset_files: dict[str, str]  # absolute paths of the dataset files, as the replay recorded them
    order: str  # the policy order's name (replay.json's order_name)
    versions: Versions  # of the replay
    replayed: str  # date of the replay: ISO 8601, UTC
    job: dict[str, Any]  # the resolved job of the replay


class VideoResults(TypedDict):
    """One checkpoint's result for each video at the job's setting, in the order of ``Summary.videos``: what
    top-1, frames and cost over a subset of the videos are recomputed from (mAP cannot be: it needs every class's
    score, which is not kept)."""

    exit_step: list[int]  # 0-based step at which each video exited (it read exit_step + 1 frames)
    hit: list[bool | None]  # whether the prediction is one of the video's labels; null for a video without labels


class CheckpointAtRisk(TypedDict):
    """One checkpoint's videos whose decision ``frameexit infer`` could make otherwise (summary.json)."""

    checkpoint: str  # as in the checkpoint column
    status: str  # 'exact', 'measured' or 'unknown' (replay.json's CheckpointExactness)
    n_at_risk: int | None  # videos at risk at the job's setting; null when unknown
    at_risk: list[str] | None  # their keys, sorted
    first_margin: float | None  # probability: a step-0 confidence this close to first_threshold is at risk
    gate_margin: float | None  # probability: a gate output this close to gate_threshold is at risk
    n_at_risk_budget: NotRequired[int | None]  # with --budget: at risk at the setting chosen; null if none or unknown


class SummaryExactness(TypedDict):
    """How far the replay may be from ``frameexit infer`` (from replay.json's ``exactness``)."""

    status: str  # 'exact' (equal decisions bit for bit), 'measured' or 'unknown'
    batching: str  # the extraction mode asked: 'batched' or 'per-step'
    effective: str  # how the backbone ran: 'per-step', 'batched', 'mixed' or 'unknown'
    safety_factor: float  # margins are the deviation seen on the probed videos times this
    n_probe_videos: int  # videos probed while extracting
    feature_max_abs_deviation: float | None  # largest |cached - per-step| backbone feature on the probed videos
    feature_max_rel_deviation: float | None  # the same over the video's largest |per-step feature|
    checkpoints: list[CheckpointAtRisk]


class Summary(TypedDict):
    """``summary.json`` of ``frameexit report``. Metrics are fractions in [0, 1]; costs are per video."""

    schema_version: int  # SCHEMA_VERSION: bumped when a key changes meaning
    frameexit_version: str  # of the report
    git_hash: str | None  # commit of the source tree, when it is a git checkout
    created: str  # ISO 8601, UTC
    dataset: str  # data.name of the job
    accuracy_metric: str  # 'map' (ActivityNet) or 'top1' (Mini-Kinetics): what the frontier and budget optimise
    cost_metric: str  # 'gflops' (paper convention) or 'gflops_measured' (2 x measured GMACs) when the backbone has no paper figure
    cost_label: str  # axis / column label of the cost metric, with its unit
    higher_is_better: dict[str, bool]  # per metric: whether more is better
    default: list[SummaryRow]  # per checkpoint: the job's own setting and its metrics
    frontier: list[dict[str, Any]]  # sweep rows (with gflops_measured) on the Pareto frontier, cheapest first
    n_settings: int  # rows of sweep.parquet
    budget: dict[str, Any] | None  # --budget: chosen setting per checkpoint (and calibration run); else null
    # --baseline: per-checkpoint checks, n_compared, regressions, passed, not_compared (metric -> why), videos (which
    # videos each evaluated: n_run, n_baseline, n_common, missing, added, accept_missing, compared_over 'all' or
    # 'common'), file; else null
    baseline: dict[str, Any] | None
    n_videos_listed: int  # videos the split file lists
    n_videos_evaluated: int  # videos replayed
    # of those, videos with at least one label (videos.parquet's): top-1's denominator; mAP counts the others as
    # negatives of every class; null when not known (absent in summaries before 0.1 wrote it)
    n_videos_labelled: NotRequired[int | None]
    n_videos_skipped: int  # listed videos without features
    skipped: list[SkippedVideo]  # with the reason
    # split-file keys of the evaluated videos, sorted: the baseline gate compares these sets (schema_version 2)
    videos: list[str]
    # per checkpoint name: its per-video results at the job's setting (videos.parquet's rows), in the order of
    # videos; null for a replay with --per-video all whose grid lacks the job's setting (schema_version 2)
    video_results: dict[str, VideoResults | None]
    gflops_per_frame: float | None  # the paper's per-frame GMACs of the backbone (replay.json's); null if it has none
    provenance: Provenance
    # agreement with frameexit infer (reports.summary.exactness_summary): status, deviation, videos at risk at
    # the job's setting and at the budget setting; null when the replay did not record it
    exactness: NotRequired[SummaryExactness | None]


# ---------------------------------------------------------------------------------------------- reading

R = TypeVar("R")


def read_record(
    path: str | os.PathLike, record: type[R], *, error: type[RecordError] = RecordError, what: str | None = None
) -> R:
    """Read the JSON document at ``path`` and check that it has every key of ``record`` (nested ones too).

    Raises ``error`` (a :class:`RecordError`): naming the file when it cannot
    be read or is not JSON (``cannot read WHAT PATH: ...``, ``what`` naming the
    document in words), and naming the file and the key (``provenance.cache.key``)
    when a key is missing or a nested document is not an object.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {what + ' ' if what else ''}{path}: {exc}") from None
    check_record(document, record, str(path), error=error)
    return document


def check_record(document: Any, record: type, where: str, *, error: type[RecordError] = RecordError) -> None:
    """Raise ``error`` naming ``where`` and the key when ``document`` lacks a key of ``record`` (recursively)."""
    problem = _missing(document, record, "")
    if problem is not None:
        raise error(f"{where} is not a frameexit {_FILES.get(record, record.__name__)}: {problem}")


def _missing(value: Any, record: type, prefix: str) -> str | None:
    if not isinstance(value, Mapping):
        return f"{prefix.rstrip('.') or 'the document'} is not a JSON object"
    hints = typing.get_type_hints(record)
    for key in (k for k in hints if k in record.__required_keys__):  # type: ignore[attr-defined]
        name = f"{prefix}{key}"
        if key not in value:
            return f"key {name!r} is missing"
        problem = _check_value(value[key], hints[key], name)
        if problem is not None:
            return problem
    return None


def _check_value(value: Any, hint: Any, name: str) -> str | None:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], name) if len(inner) == 1 else None
    if typing.is_typeddict(hint):
        return _missing(value, hint, f"{name}.")
    if typing.get_origin(hint) is list and args and typing.is_typeddict(args[0]):
        if not isinstance(value, list):
            return f"{name} is not a JSON list"
        for i, item in enumerate(value):
            problem = _missing(item, args[0], f"{name}[{i}].")
            if problem is not None:
                return problem
    if typing.get_origin(hint) is dict and len(args) == 2:
        if not isinstance(value, Mapping):
            return f"{name} is not a JSON object"
        for key, item in value.items():
            problem = _check_value(item, args[1], f"{name}[{key!r}]")
            if problem is not None:
                return problem
    return None


_FILES = {InferMetrics: METRICS_FILE, ReplayRecord: REPLAY_FILE, Summary: SUMMARY_FILE}
