"""The JSON documents frameexit writes, each defined once: ``metrics.json``, ``replay.json``, ``summary.json``.

Each document is a :class:`~typing.TypedDict` (a plain ``dict`` at run time, written as it is). Its writer builds it
through the class; :func:`read_record` checks every key and value type it names, so that a file with a missing or
renamed key, or a value of another type, is an error naming the file and the key, not a ``null`` or a traceback later.

Units: accuracies (``map``, ``top1``) are fractions in [0, 1]; ``gflops`` is the paper convention (per-frame GMACs of
the backbone x frames read, called GFLOPs in the paper); ``gmacs_measured`` is multiply-accumulates counted by
torch's ``FlopCounterMode`` (GFLOPs = 2 x GMACs); costs are per video; thresholds are probabilities in [0, 1]; NaN is
written as ``null``.
"""

import ast
import contextlib
import datetime
import functools
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, TypeVar

import frameexit
from frameexit.errors import FrameExitError

#: ``summary.json``'s ``schema_version``: bumped when a key of the summary changes meaning or a key is added that
#: its readers need. 2: ``videos``, ``video_results`` and ``gflops_per_frame`` (what the baseline gate compares).
#: 3: exit policies (every metric row's ``policy``, ``tau``, ``frames``; ``policies``) and the bootstrap.
SCHEMA_VERSION = 3

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
    return Runtime(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        frameexit=frameexit.__version__,
        torch=package_version("torch"),
        torchvision=package_version("torchvision"),
        python=platform.python_version(),
    )


def package_version(package: str) -> str:
    """``package.__version__``, without importing a package not imported yet (a replay that reads stored exit tables
    never imports torch): the ``__version__`` line of its ``version.py`` (torch's and torchvision's say
    ``2.14.1+cu130`` where their distribution's metadata says ``2.14.1``), else the distribution's version."""
    module = sys.modules.get(package)
    if module is not None:
        return str(module.__version__)
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        with contextlib.suppress(OSError), open(os.path.join(folder, "version.py"), encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("__version__"):
                    return str(ast.literal_eval(line.split("=", 1)[1].strip()))
    return importlib.metadata.version(package)


def versions(block: Runtime) -> Versions:
    """The versions of a runtime block, without its date."""
    return Versions(**{k: block[k] for k in Versions.__annotations__})  # type: ignore[typeddict-item]


class StepCostsRecord(TypedDict):
    """Measured GMACs of each part of the network (:class:`frameexit.step_costs.StepCosts`)."""

    backbone: float  # GMACs of one frame through the truncated backbone
    projection: float  # GMACs of one frame's features through the projection
    classifier: float  # GMACs of one classifier on pooled features
    gate: float  # GMACs of one gate


class MetricRow(TypedDict):
    """The metrics of one checkpoint at one setting: a row of ``sweep.parquet`` (less ``order`` and ``n_videos``)
    and an entry of ``replay.json``'s ``default_metrics``. Its keys and types are those of the columns of
    :data:`reports.schema.SWEEP` (``| None`` where a column is nullable; checked by a test)."""

    checkpoint: str  # checkpoint file name (the path as given where two checkpoints share a file name)
    policy: str  # exit policy: frameexit, confidence, fixed or oracle (frameexit.policies)
    first_threshold: float | None  # frameexit: step-0 exit threshold (probability); null for the other policies
    gate_threshold: float | None  # frameexit: gate exit threshold (probability); null for the other policies
    tau: float | None  # confidence: its threshold (probability); null for the other policies
    frames: int | None  # fixed: the frames every video reads; null for the other policies
    map: float | None  # mean average precision, fraction in [0, 1]; NaN (null) without any positive label
    top1: float | None  # top-1 accuracy, fraction in [0, 1] of the videos with a label; NaN (null) without one
    gflops: float | None  # mean GFLOPs per video, paper convention; null for backbones without a paper figure
    gmacs_measured: float | None  # mean measured GMACs per video, backbone + head; NaN (null) without videos
    mean_frames: float | None  # mean frames read per video (exit_step + 1); NaN (null) without videos
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
    # the bootstrap's percentile interval [low, high] of map and top1 (replay.json's bootstrap), where the replay
    # computed one at this setting; absent otherwise
    map_interval: NotRequired[list[float | None] | None]
    top1_interval: NotRequired[list[float | None] | None]


class SkippedVideo(TypedDict):
    """A listed video that was not evaluated."""

    video: str  # split-file key
    reason: str  # why, e.g. no frame folder


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
    # frames decoded and run through the backbone, over all videos: exit_step + 1 per video, but every step of
    # every video for --policy oracle (it must know whether any step is right before it decides)
    frames_read: int


class InferUnits(TypedDict):
    """The units of the headline metrics, in words, written into the file for its readers."""

    map: str
    top1: str
    gflops: str
    gmacs_measured: str
    frames_read: NotRequired[str]  # runtime.frames_read: what it counts (the oracle runs every step)


class InferMetrics(TypedDict):
    """``metrics.json`` of ``frameexit infer``: one checkpoint at the job's own setting."""

    map: float | None  # fraction in [0, 1], mean over the classes with a positive video; NaN (null) if none
    top1: float | None  # fraction in [0, 1] of the videos with a label; NaN (null) without one
    gflops: float | None  # mean GFLOPs per video, paper convention; null for backbones without a paper figure
    gflops_per_frame: float | None  # the paper's per-frame GMACs of the backbone; null if it has none
    gmacs_measured: float  # mean measured GMACs per video, backbone + head
    gmacs_measured_parts: StepCostsRecord  # measured GMACs per part
    mean_frames: float  # mean frames read per video (exit_step + 1)
    exit_histogram: list[float]  # share of the videos exiting at each step (0-based)
    ap_per_class: list[float | None]  # average precision of each class (line of the class list); NaN (null) if none
    map_per_category: dict[str, float | None] | None  # mAP of each category of data.path_category; null without one
    n_videos: int  # videos evaluated
    n_videos_labelled: int  # of those, videos with at least one label
    n_videos_listed: int  # videos the split file lists
    skipped: list[SkippedVideo]  # listed videos not evaluated, with the reason
    first_threshold: float  # model.first_threshold (probability); the frameexit policy's
    gate_threshold: float  # model.gate_threshold (probability); the frameexit policy's
    # infer --policy: the exit policy evaluated, frameexit (the gates, at the two thresholds above), confidence,
    # fixed or oracle (frameexit.policies); absent in files written before it was recorded: frameexit
    policy: NotRequired[str]
    tau: NotRequired[float | None]  # --policy confidence: its threshold (probability); null for the other policies
    frames: NotRequired[int | None]  # --policy fixed: the frames every video read; null for the other policies
    input_order: list[int]  # the policy order: sampled-frame position read at each step
    checkpoint: InferCheckpoint
    dataset: InferDataset
    backbone: str  # model.backbone.name
    runtime: InferRuntime
    units: InferUnits


# ---------------------------------------------------------------------------------------------- replay.json


#: ``replay.json``'s exactness reference and scheduler in the replay files ``frameexit infer`` writes beside
#: ``metrics.json`` (a replay of its one setting, read by ``frameexit report``): no cache, no deviation.
SEQUENTIAL_REFERENCE = "this is the sequential reference: frameexit infer's own run"
INFER_SCHEDULER = "none: frameexit infer, one video at a time"


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
    """The job's own setting: frameexit's thresholds (``replay``), or the policy ``infer`` ran."""

    first_threshold: float  # step-0 exit threshold (probability)
    gate_threshold: float  # gate exit threshold (probability)
    policy: NotRequired[str]  # infer --policy: the exit policy evaluated (absent: frameexit)
    tau: NotRequired[float | None]  # infer --policy confidence: its threshold
    frames: NotRequired[int | None]  # infer --policy fixed: the frames every video read


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
    # the dask scheduler: threads, sync, an address, or "local cluster of N processes"; INFER_SCHEDULER for infer's
    scheduler: str
    # where the heads ran: "cpu" or "cuda (<GPU name>)" (replay --head-device; absent before it existed)
    head_device: NotRequired[str]


class NamedInterval(TypedDict):
    """The bootstrap intervals of one checkpoint at one setting a report names."""

    checkpoint: str  # as in the checkpoint column
    setting: dict[
        str, Any
    ]  # policy and its thresholds (reports.summary.setting_of), e.g. {"policy": "fixed", "frames": 4}
    map: list[float | None] | None  # [low, high]: percentile interval of mAP (fractions); null without resamples
    top1: list[float | None] | None  # [low, high] of top-1


class BootstrapRecord(TypedDict):
    """``replay.json``'s ``bootstrap``: a seeded bootstrap over videos (resamples drawn per video, labels and
    predictions together; frameexit.bootstrap) at the settings a report names (reports.summary.named_settings)."""

    resamples: int  # resamples drawn (replay.bootstrap_resamples; 0: no intervals)
    level: float  # of the percentile intervals, e.g. 0.95
    seed: int  # of numpy.random.default_rng: the same seed and videos give the same resamples
    intervals: list[NamedInterval]  # per checkpoint and named setting, the job's setting first
    # per checkpoint: the mAP of each resample at the job's setting, what a later run pairs with (resample b of
    # two runs over the same videos with the same seed holds the same videos)
    map_resampled: dict[str, list[float | None]]


class ReplayRecord(TypedDict):
    """``replay.json`` of ``frameexit replay``: what was replayed, over what, and the job's setting. ``frameexit
    infer`` writes one too, of its one setting: ``cache`` null, ``dataset_digests`` set, ``exactness`` exact with
    reference :data:`SEQUENTIAL_REFERENCE`."""

    cache: CacheRecord | None  # the feature cache replayed over; null for infer's (no cache: the frames themselves)
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
    # SHA-256 of the split file, label file and class list, by cache input name (split_digest, labels_digest,
    # classes_digest): infer's, which has no cache.inputs to record them (a replay's are there)
    dataset_digests: NotRequired[dict[str, str]]
    # bootstrap intervals at the named settings (absent before 0.1 wrote it, and in infer's)
    bootstrap: NotRequired[BootstrapRecord]


# ---------------------------------------------------------------------------------------------- summary.json


class Provenance(TypedDict):
    cache: CacheRecord | None  # the feature cache replayed over (replay.json's); null for a report of infer's outputs
    checkpoints: list[CheckpointRecord]  # replay.json's, with SHA-256
    dataset_files: dict[str, str]  # absolute paths of the dataset files, as the replay recorded them
    order: str  # the policy order's name (replay.json's order_name)
    versions: Versions  # of the replay
    replayed: str  # date of the replay: ISO 8601, UTC
    job: dict[str, Any]  # the resolved job of the replay
    dataset_digests: NotRequired[dict[str, str]]  # replay.json's, where it has them (infer's)


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
    # per checkpoint, the exit policies side by side at equal cost (reports.summary.policy_points): checkpoint,
    # full_t (accuracy reading every frame), points (per policy: at_job_cost, within_one_point; rows with
    # intervals); frontiers (per policy, its Pareto frontier); empty when the replay swept frameexit alone
    policies: NotRequired[list[dict[str, Any]]]
    # replay.json's bootstrap (resamples, level, seed, map_resampled at the job's setting); null without one
    bootstrap: NotRequired[dict[str, Any] | None]


# ---------------------------------------------------------------------------------------------- reading

R = TypeVar("R")

#: Deepest nesting of a frameexit document read: ours are at most about 40 levels deep (the job's free-form
#: values are bounded at 32 levels by :mod:`jobs.config`); deeper is refused before any code walks it.
MAX_DEPTH = 64


def read_record(
    path: str | os.PathLike, record: type[R], *, error: type[RecordError] = RecordError, what: str | None = None
) -> R:
    """Read the JSON document at ``path`` (:func:`load_json`) and check it against ``record`` (:func:`check_record`);
    raises ``error`` naming the file, and the key where one does not fit."""
    document = load_json(path, error=error, what=what)
    check_record(document, record, str(path), error=error)
    return document


def load_json(path: str | os.PathLike, *, error: type[RecordError] = RecordError, what: str | None = None) -> Any:
    """The JSON document at ``path``; ``error`` naming the file when it cannot be read, parsed or is too deep."""
    where = f"{what + ' ' if what else ''}{path}"
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {where}: {exc}") from None
    except RecursionError:  # json's parser recurses once per level: '[' * 100000 ends here
        raise error(f"cannot read {where}: JSON nested too deeply (more than {MAX_DEPTH} levels)") from None


def check_record(document: Any, record: type, where: str, *, error: type[RecordError] = RecordError) -> None:
    """Raise ``error`` naming ``where`` and the key when ``document`` does not fit ``record``.

    One walk, driven by the record's type hints: every required key present, every key present of its type, nested
    records, lists and maps included (``float`` a finite number; ``X | None`` also null; ``Any`` anything); nothing
    nested deeper than :data:`MAX_DEPTH`; keys the record does not name are allowed. One line, e.g. ``summary.json is
    not a frameexit summary.json: default[0].map is not a finite number or null (got "high")``.
    """
    problem = _too_deep(document) or _check_value(document, record, "")
    if problem is not None:
        raise error(f"{where} is not a frameexit {_FILES.get(record, record.__name__)}: {problem}")


def _too_deep(document: Any) -> str | None:
    """Where ``document`` nests deeper than :data:`MAX_DEPTH`, walked without recursion (``None`` if it does not)."""
    stack: list[tuple[Any, int, str]] = [(document, 0, "")]
    while stack:
        value, depth, name = stack.pop()
        if depth > MAX_DEPTH:
            return f"{name} is nested more than {MAX_DEPTH} levels deep"
        if isinstance(value, Mapping):
            stack.extend((item, depth + 1, _key(name, key)) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{name}[{i}]") for i, item in enumerate(value))
    return None


def _key(name: str, key: Any) -> str:
    """The path of ``key`` under ``name``: ``a.b`` for a name-like key, ``a['x y']`` for any other."""
    if isinstance(key, str) and key.isidentifier():
        return f"{name}.{key}" if name else key
    return f"{name}[{key!r}]"


#: JSON types in words, for the expected side of an error.
_EXPECTED = {str: "a string", int: "an integer", float: "a finite number", bool: "true or false"}


def _expected(hint: Any) -> str:
    """What a value of type ``hint`` looks like in JSON, in words."""
    if hint is type(None):
        return "null"
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_expected(a) for a in typing.get_args(hint))
    if typing.is_typeddict(hint) or hint is dict or typing.get_origin(hint) is dict:
        return "a JSON object"
    if hint is list or typing.get_origin(hint) is list:
        return "a JSON list"
    return _EXPECTED.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value: Any) -> str:
    """``value`` as a short piece of JSON for an error: scalars as written (strings cut), containers named."""
    if isinstance(value, Mapping):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON list"
    text = json.dumps(value)  # a scalar: null, true, 1.5, NaN, "text"
    return text if len(text) <= 40 else text[:36] + '..."'


def _scalar_fits(value: Any, hint: type) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # JSON has no NaN: frameexit writes it as null, and its records say where (float | None)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint)


@functools.cache
def _hints(record: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a record, once: a list of a thousand records is checked against one."""
    return typing.get_type_hints(record)


def _alike(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the JSON type of ``hint`` (an object, a list, a scalar that fits), not looking inside."""
    origin = typing.get_origin(hint) or hint
    if typing.is_typeddict(hint) or origin is dict:
        return isinstance(value, Mapping)
    if origin is list:
        return isinstance(value, list)
    return not isinstance(origin, type) or _scalar_fits(value, origin)


def _check_value(value: Any, hint: Any, name: str) -> str | None:
    """The first way ``value`` (at key path ``name``) does not fit type ``hint``, in words; ``None`` if it fits."""
    where = name or "the document"
    args = typing.get_args(hint)
    if hint is Any:
        return None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if type(None) in args and (value is None or (isinstance(value, float) and math.isnan(value))):
            return None  # NaN is null once written (reports.write.jsonable): a record in memory holds NaN
        # the alternatives of value's JSON type (an object, a list, a string, ...): a problem inside names its key
        alike = [a for a in args if a is not type(None) and _alike(value, a)]
        problems = [_check_value(value, a, name) for a in alike]
        if not alike:
            return f"{where} is not {_expected(hint)} (got {_shown(value)})"
        return None if None in problems else problems[0]
    if typing.is_typeddict(hint):
        if not isinstance(value, Mapping):
            return f"{where} is not a JSON object (got {_shown(value)})"
        for key, item_hint in _hints(hint).items():  # in the record's order: the first problem is reported
            if key in value:
                problem = _check_value(value[key], item_hint, _key(name, key))
                if problem is not None:
                    return problem
            elif key in hint.__required_keys__:  # type: ignore[attr-defined]
                return f"key {_key(name, key)!r} is missing"
        return None
    origin = typing.get_origin(hint) or hint
    if origin is list or origin is dict:
        if not isinstance(value, list if origin is list else Mapping):
            return f"{where} is not {_expected(origin)} (got {_shown(value)})"
        if origin is list:
            items = ((item, args[0], f"{name}[{i}]") for i, item in enumerate(value if args else ()))
        else:
            items = ((item, args[1], f"{name}[{key!r}]") for key, item in (value.items() if len(args) == 2 else ()))
        return next((p for p in (_check_value(*item) for item in items) if p is not None), None)
    if isinstance(origin, type) and not _scalar_fits(value, origin):
        return f"{where} is not {_expected(hint)} (got {_shown(value)})"
    return None


_FILES = {InferMetrics: METRICS_FILE, ReplayRecord: REPLAY_FILE, Summary: SUMMARY_FILE}
