"""Job files: the official FrameExit YAML configs (or any file in their format) plus overrides.

Validated against :data:`SCHEMA` (a :class:`~frameexit.errors.ConfigError` names the key). Overrides use the
official syntax (``--data.path_frame DIR``, ``--model.first_threshold=0.9``), values read as YAML. Relative
paths are relative to the working directory, as in the official code.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any

import yaml

from cache.inputs import BATCHING_OPTIONS, DTYPES, PRECISIONS
from frameexit.backbone_names import is_clip_backbone
from frameexit.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, Bootstrap
from frameexit.errors import ConfigError
from frameexit.exit_rule import DEFAULT_GATE_THRESHOLD, check_thresholds
from frameexit.policies import POLICIES
from frameexit.preprocess_params import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from frameexit.sampling import COARSE_TO_FINE, policy_order
from frameexit.train_config import TrainConfig, config_problem

from .datasets import BY_NAME
from .grid import parse_grid

PREPROCESSING_ORDER = ("to_tensor", "resize", "crop_center", "normalize")
#: pytorchvideo's evaluation transform (X3D): normalise, then short-side resize and centre crop.
PYTORCHVIDEO_ORDER = ("to_tensor", "normalize", "resize", "crop_center")


@dataclass(frozen=True)
class Field:
    """One leaf of the job schema: its type, default and whether the user must give it."""

    kind: str  # 'bool' | 'int' | 'float' | 'str' | 'floats' | 'ints' | 'strs' | 'any'
    default: Any = None
    required: bool = False
    choices: tuple = ()
    doc: str = ""


#: Every key a job file may hold. Keys marked "official" are those of the official configs.
SCHEMA: dict[str, Any] = {
    "help": Field("bool", False, doc="official; ignored"),
    "checkpoint": {
        "init": Field("strs", None, doc="FrameExit checkpoint file (official DataParallel format)"),
    },
    "data": {
        "name": Field("str", required=True, choices=tuple(BY_NAME), doc="dataset; picks the label-file reader"),
        "path_frame": Field("str", None, doc="root of the frame folders <root>/<video key>/*.jpeg"),
        "path_split": Field("str", None, doc="split file, one video key per line"),
        "path_label": Field("str", None, doc="ActivityNet JSON, Mini-Kinetics CSV or HVU CSV"),
        "path_classid": Field("str", None, doc="class list, one name per line"),
        "path_category": Field("str", None, doc="Tag,Category CSV: mAP per category of classes (ours; HVU)"),
        "key_format": Field("str", None, doc="HVU video keys from the CSV fields (ours; Kinetics style)"),
        "preprocessing": {
            "to_tensor": Field("bool", True),
            "resize": Field("int", 224, doc="shorter side after resizing, pixels"),
            "crop_center": Field("int", 224, doc="side of the centre crop, pixels"),
            "normalize": {
                "mean": Field("floats", list(IMAGENET_MEAN)),
                "std": Field("floats", list(IMAGENET_STD)),
            },
        },
        "preprocessing_label": {
            "video_multihot_labels": Field("any", "", doc="official; labels are always multi-hot"),
            "one_hot_encoding": Field("int", None, doc="official; must equal model.num_class"),
        },
        "num_frames": Field("int", 10, doc="T, frames sampled per video"),
        "num_workers": Field("int", 0, doc="frame-decoding worker processes"),
        "shuffle": Field("bool", False, doc="official; ignored (videos run in key order)"),
    },
    "model": {
        "first_threshold": Field("float", required=True, doc="exit at step 0 if top probability > this"),
        "gate_threshold": Field("float", DEFAULT_GATE_THRESHOLD, doc="exit at a gate if s_t < this (ours)"),
        "backbone": {
            "type": Field("str", "2d", choices=("2d", "3d"), doc="2d: a step reads a frame; 3d: a clip"),
            "name": Field("str", required=True, doc="torchvision.<model> (2d) or pytorchvideo.x3d_s (3d)"),
            "clip_length": Field("int", None, doc="3d: frames per clip (X3D-S: 13)"),
            "clip_stride": Field("int", None, doc="3d: frame files between consecutive clip frames"),
            "pretrained": Field("bool", False, doc="published weights when no checkpoint gives the backbone"),
            "requires_grad": Field("bool", False, doc="official; ignored at inference"),
            "truncate_modules": Field("int", -1, doc="keep children[:truncate_modules]"),
            "output_dim": Field("int", required=True, doc="feature length of the truncated backbone"),
        },
        "pooling": {"name": Field("str", "max", choices=("max",))},
        "name": Field("str", "adaptive", choices=("adaptive",)),
        "adaptive": {"input_order": Field("ints", list(COARSE_TO_FINE), doc="policy order of the sampled frames")},
        "num_class": Field("int", 200),
    },
    "train": {
        "epochs_classifier": Field("int", 20, doc="stage 1 epochs (projection + classifiers)"),
        "epochs_gates": Field("int", 10, doc="stage 2 epochs (gates)"),
        "batch_size": Field("int", 64, doc="videos per mini-batch"),
        "lr": Field("float", 1e-3, doc="Adam learning rate, stage 1"),
        "lr_gates": Field("float", 1e-3, doc="Adam learning rate, stage 2"),
        "weight_decay": Field("float", 0.0),
        "beta": Field("float", 1e-3, doc="exit at step t when the loss <= beta * exp(t / 2)"),
        "loss": Field("str", None, choices=("softmax", "bce"), doc="default: bce for HVU, else softmax"),
        "seed": Field("int", 0),
        "hidden_dim": Field("int", 4096, doc="projection width"),
        "val_path_split": Field("str", None, doc="split file of a validation set for per-epoch accuracy"),
    },
    "replay": {
        "first_thresholds": Field("grid", None, doc="grid of first_threshold values: list or 'start:stop:count'"),
        "gate_thresholds": Field("grid", None, doc="grid of gate_threshold values: list or 'start:stop:count'"),
        "per_video": Field("str", "default", choices=("default", "all"), doc="per-video rows: job's setting or all"),
        "policies": Field(
            "strs", list(POLICIES), doc="exit policies replayed beside frameexit's gates: confidence, fixed, oracle"
        ),
        "confidence_thresholds": Field(
            "grid", None, doc="grid of the confidence policy's tau: list or 'start:stop:count' (default: first grid)"
        ),
        "bootstrap_resamples": Field("int", DEFAULT_RESAMPLES, doc="bootstrap resamples of the intervals; 0: none"),
        "bootstrap_level": Field("float", DEFAULT_LEVEL, doc="level of the percentile intervals, in (0, 1)"),
        "bootstrap_seed": Field("int", 0, doc="seed of the bootstrap's resamples"),
    },
    "extract": {
        "dtype": Field("str", "float32", choices=DTYPES, doc="storage type of the features"),
        "precision": Field("str", "fp32", choices=PRECISIONS, doc="backbone arithmetic"),
        "channels_last": Field("bool", False, doc="channels-last memory format of the backbone"),
        "batching": Field("str", "auto", choices=BATCHING_OPTIONS, doc="backbone forward passes"),
    },
}

#: The command-line options that are shorthands for a job key, by parameter name: the CLI applies the ones given
#: as overrides of those keys (:func:`with_options`), after the job file and its ``--section.key`` overrides.
OPTION_KEYS = {
    "num_workers": "data.num_workers",
    "order": "model.adaptive.input_order",
    "first_thresholds": "replay.first_thresholds",
    "gate_thresholds": "replay.gate_thresholds",
    "per_video": "replay.per_video",
    "policies": "replay.policies",
    "confidence_thresholds": "replay.confidence_thresholds",
    "resamples": "replay.bootstrap_resamples",
    "level": "replay.bootstrap_level",
    "seed": "replay.bootstrap_seed",
    "dtype": "extract.dtype",
    "precision": "extract.precision",
    "channels_last": "extract.channels_last",
    "batching": "extract.batching",
}


@dataclass(frozen=True)
class DataConfig:
    """Where the dataset lives and how frames are sampled and preprocessed."""

    name: str
    path_frame: str | None
    path_split: str | None
    path_label: str | None
    path_classid: str | None
    path_category: str | None
    key_format: str | None
    num_frames: int
    num_workers: int
    preprocessing: Preprocessing


@dataclass(frozen=True)
class ModelConfig:
    """The network and its exit rule."""

    backbone_name: str
    truncate_modules: int
    output_dim: int
    pretrained: bool
    num_class: int
    first_threshold: float
    gate_threshold: float
    input_order: tuple[int, ...]
    backbone_type: str = "2d"
    clip_length: int = 1
    clip_stride: int = 1

    @property
    def clips(self) -> bool:
        """Whether a step reads a clip (3D backbone) rather than a frame."""
        return self.backbone_type == "3d"


@dataclass(frozen=True)
class ReplayConfig:
    """The threshold grid of a sweep (ours); each defaults to the model's single threshold."""

    first_thresholds: tuple[float, ...]
    gate_thresholds: tuple[float, ...]
    per_video: str  # 'default': per-video rows for the job's own setting; 'all': for every setting
    policies: tuple[str, ...] = POLICIES  # exit policies replayed (frameexit always; frameexit.policies)
    confidence_thresholds: tuple[float, ...] = ()  # the confidence policy's tau grid
    bootstrap: Bootstrap = field(default_factory=Bootstrap)  # resamples, level and seed of the intervals


@dataclass(frozen=True)
class ExtractConfig:
    """``extract`` keys of the job (ours): how the cached features are computed, all in the cache key (see the
    ``--dtype``, ``--precision``, ``--channels-last`` and ``--batching`` help, :func:`cache.exactness.resolve_batching`)."""

    dtype: str
    precision: str
    channels_last: bool
    batching: str


@dataclass(frozen=True)
class TrainSection:
    """``train`` keys of the job (ours): hyper-parameters and an optional validation split."""

    config: TrainConfig
    val_path_split: str | None


@dataclass(frozen=True)
class Job:
    """A fully resolved job: its file and validated key tree ``resolved`` (every key of :data:`SCHEMA`, overrides
    applied), the one source of truth, and typed sections computed from it (:meth:`with_value` makes a new job)."""

    source: str
    resolved: Mapping[str, Any] = field(repr=False)
    data: DataConfig = field(init=False)
    model: ModelConfig = field(init=False)
    checkpoints: tuple[str, ...] = field(init=False)
    replay: ReplayConfig = field(init=False)
    extract: ExtractConfig = field(init=False)
    train: TrainSection = field(init=False)

    def __post_init__(self) -> None:
        for name, value in _sections(self.resolved, self.source).items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    def with_value(self, dotted: str, value: Any) -> Job:
        """The same job with key ``dotted`` (e.g. ``data.path_split``) set to ``value``, validated."""
        tree = copy.deepcopy(dict(self.resolved))
        _set(tree, dotted, _coerce(value, _spec(dotted), dotted, self.source))
        return Job(self.source, tree)

    def require(self, *dotted: str) -> None:
        """Raise :class:`ConfigError` for every listed key that has no value."""
        missing = [key for key in dotted if _get(self.resolved, key) in (None, [], "")]
        if missing:
            raise ConfigError(
                f"{self.source}: this command needs {', '.join(missing)}; "
                f"set {'it' if len(missing) == 1 else 'them'} in the job file or as --{missing[0]} VALUE"
            )


def with_options(job: Job, values: Mapping[str, Any]) -> Job:
    """``job`` with the command-line shorthands ``values`` (parameter name -> value, ``None``: not given) set as
    their job keys (:data:`OPTION_KEYS`); ``order`` is a name (``coarse_to_fine``, ``sequential``) made a list."""
    for name, value in values.items():
        if value is not None:
            if name == "order":
                value = policy_order(value, job.data.num_frames)
            job = job.with_value(OPTION_KEYS[name], list(value) if isinstance(value, tuple) else value)
    return job


def bundled_jobs() -> dict[str, str]:
    """Job files shipped in the ``jobs`` package, by file name."""
    root = resources.files("jobs")
    return {p.name: str(p) for p in root.iterdir() if p.name.endswith((".yml", ".yaml"))}


def resolve_job_path(path: str) -> str:
    """``path`` if it is a file, else the bundled job of that name."""
    if os.path.isfile(path):
        return path
    bundled = bundled_jobs()
    name = os.path.basename(path)
    if name in bundled:
        return bundled[name]
    hint = f" Bundled jobs: {', '.join(sorted(bundled))}." if bundled else ""
    raise ConfigError(f"job file not found: {path}.{hint}")


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree[part]
    tree[last] = value


def _get(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _keys(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, spec in schema.items():
        dotted = prefix + key
        out.extend(_keys(spec, dotted + ".") if isinstance(spec, Mapping) else [dotted])
    return out


def _unknown(dotted: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(dotted, _keys(SCHEMA), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return ConfigError(f"{source}: unknown key {dotted}{hint}")


_TYPE_NAMES = {
    "bool": "a boolean",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "floats": "a list of numbers",
    "ints": "a list of integers",
    "strs": "a string or a list of strings",
}


def _number(value: Any) -> float | None:
    """A finite float from a YAML number or from text such as ``1e-3``, else ``None``: YAML 1.1 (PyYAML) reads
    ``1e-3`` and ``1E5`` as strings (it wants ``1.0e-3``), yet everyone writes them."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _coerce(value: Any, spec: Field, dotted: str, source: str, *, raw: str | None = None) -> Any:
    """Check ``value`` against ``spec``; ``raw`` is the override's text, kept verbatim for strings."""
    kind = spec.kind

    def bad() -> ConfigError:
        return ConfigError(f"{source}: {dotted} must be {_TYPE_NAMES[kind]}, got {value!r}")

    if value is None:
        if spec.required:
            raise ConfigError(f"{source}: {dotted} must be set, got an empty value")
        return None
    if kind == "any":
        return value
    if kind == "grid":
        # YAML 1.1 reads an unquoted 0:1:5 as a base-60 integer: keep the override's text as typed
        return raw if raw is not None and not raw.lstrip().startswith("[") else value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad()
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
    elif kind == "float":
        number = _number(value)
        if number is None:
            raise bad()
        value = number
    elif kind == "str":
        if raw is not None:
            value = raw
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            raise bad()
    elif kind == "strs":
        if raw is not None and not raw.lstrip().startswith("["):
            value = raw
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad()
    elif kind == "ints":
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad()
        value = list(value)
    elif kind == "floats":
        numbers = [_number(v) for v in value] if isinstance(value, list) else [None]
        if any(v is None for v in numbers):
            raise bad()
        value = numbers
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{source}: {dotted} must be one of {', '.join(map(repr, spec.choices))}, got {value!r}")
    return value


def _validate(tree: Any, schema: Mapping[str, Any], prefix: str, source: str) -> dict[str, Any]:
    if tree is None:
        tree = {}
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the job'} must be a mapping of keys, got {tree!r}")
    for key in tree:
        if key not in schema:
            raise _unknown(prefix + str(key), source)
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        dotted = prefix + key
        if isinstance(spec, Mapping):
            out[key] = _validate(tree.get(key), spec, dotted + ".", source)
        elif key in tree:
            out[key] = _coerce(tree[key], spec, dotted, source)
        elif spec.required:
            raise ConfigError(f"{source}: {dotted} is required")
        else:
            out[key] = copy.deepcopy(spec.default)
    return out


def parse_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """``['--a.b', 'v', '--c.d=w']`` -> ``[('a.b', 'v'), ('c.d', 'w')]``, in order."""
    pairs = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(
                f"unexpected argument {arg!r}: overrides look like --data.path_frame DIR or --model.first_threshold=0.9"
            )
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key} needs a value")
            value = args[i + 1]
            i += 1
        pairs.append((key, value))
        i += 1
    return pairs


def _spec(dotted: str) -> Field:
    """The schema field of a dotted key; :class:`ConfigError` for an unknown key or a section."""
    spec: Any = SCHEMA
    for part in dotted.split("."):
        if not isinstance(spec, Mapping) or part not in spec:
            raise _unknown(dotted, "override")
        spec = spec[part]
    if isinstance(spec, Mapping):
        raise ConfigError(
            f"override --{dotted} names a section; give one of its keys, e.g. --{_keys(spec, dotted + '.')[0]}"
        )
    return spec


#: Largest job file read, in bytes: the official configs hold about 1.5 KB; a larger file is not a job.
MAX_JOB_BYTES = 1 << 20
#: Deepest nesting of YAML collections in a job file or an override (the schema is 4 deep): deeper is refused
#: with its line rather than taking the parser into a RecursionError.
MAX_JOB_DEPTH = 32


class _JobLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing, with the line, deep nesting and aliases: with ``*name`` a few hundred bytes can
    stand for 10^9 values ("billion laughs") that every copy or JSON dump of the job (replay.json) expands."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """PyYAML's hook for every node: refuse an alias, or a collection nested too deep, before composing it."""
        event = self.peek_event()
        line = f"{self.source}, line {event.start_mark.line + 1}"
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(
                f"{line}: YAML aliases (*{event.anchor}) are not supported in a job file; write the value out"
            )
        if self.depth >= MAX_JOB_DEPTH:
            raise ConfigError(f"{line}: values nested more than {MAX_JOB_DEPTH} levels deep are not a job's")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _load_yaml(text: str, source: str) -> Any:
    """The YAML document ``text`` (of ``source``) by :class:`_JobLoader`; :class:`yaml.YAMLError` if invalid."""
    loader = _JobLoader(text, source)
    try:
        return loader.get_single_data()
    except RecursionError:  # a safety net: the depth bound should stop any nesting first
        raise ConfigError(f"{source}: values nested too deeply to be a job's") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line: its problem and where (its own text spans several lines, with a snippet)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def _apply_override(tree: dict[str, Any], dotted: str, text: str) -> None:
    spec = _spec(dotted)
    try:
        value = _load_yaml(text, f"override --{dotted}") if text.strip() else None
    except yaml.YAMLError:
        value = text
    raw = text if spec.kind in ("str", "strs", "grid") else None
    _set(tree, dotted, _coerce(value, spec, dotted, f"override --{dotted}", raw=raw))


def load_job(path: str, overrides: Sequence[str] = ()) -> Job:
    """Read, override and validate the job file ``path`` (or the bundled job of that name); ``overrides``:
    command-line words such as ``['--data.path_frame', 'DIR', '--model.first_threshold=0.9']``."""
    path = resolve_job_path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_JOB_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read job file {path}: {exc.strerror}") from None
    if len(data) > MAX_JOB_BYTES:
        raise ConfigError(f"job file {path} is larger than {MAX_JOB_BYTES // 1024} KiB: not a job file")
    try:
        raw = _load_yaml(data.decode("utf-8"), path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"job file {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    pre = _get(raw, "data.preprocessing")
    if isinstance(pre, Mapping):
        given = [k for k in pre if k in PREPROCESSING_ORDER]
        if given not in ([k for k in order if k in pre] for order in (PREPROCESSING_ORDER, PYTORCHVIDEO_ORDER)):
            raise ConfigError(
                f"{path}: data.preprocessing runs its keys in file order; only "
                f"{', '.join(PREPROCESSING_ORDER)} (the official order) or {', '.join(PYTORCHVIDEO_ORDER)} "
                f"(pytorchvideo's) is supported, got {', '.join(given)}"
            )
    tree = _validate(raw, SCHEMA, "", path)
    if _normalizes_first(pre):  # the validated section follows the schema's order: put the file's back
        section = tree["data"]["preprocessing"]
        tree["data"]["preprocessing"] = {**{k: section[k] for k in PYTORCHVIDEO_ORDER}, **section}
    for dotted, text in parse_overrides(overrides):
        _apply_override(tree, dotted, text)
    return Job(path, tree)


def _normalizes_first(pre: Any) -> bool:
    """Whether a job file's ``data.preprocessing`` lists ``normalize`` before ``resize`` (pytorchvideo's order)."""
    keys = list(pre) if isinstance(pre, Mapping) else []
    return "normalize" in keys and "resize" in keys and keys.index("normalize") < keys.index("resize")


def _sections(tree: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The typed sections of a validated tree (see :class:`Job`); :class:`ConfigError` for values that do not fit."""
    data, model = tree["data"], tree["model"]
    _check_values(data, model, source)
    for dotted in ("replay.per_video", *(f"extract.{key}" for key in tree["extract"])):
        if _get(tree, dotted) is None:  # the cache key and the outputs need a value: no empty one means a default
            raise ConfigError(f"{source}: {dotted} must be set, got an empty value")
    pre, norm, backbone = data["preprocessing"], data["preprocessing"]["normalize"], model["backbone"]
    order = policy_order(model["adaptive"]["input_order"], data["num_frames"])
    clip_length, clip_stride = _clip(backbone, source)
    grids = {}
    for name in ("first_threshold", "gate_threshold"):  # each grid defaults to the model's single threshold
        grid = tree["replay"][f"{name}s"]
        grids[f"{name}s"] = tuple([model[name]] if grid is None else parse_grid(grid, name=f"{source}: replay.{name}s"))
    replay = tree["replay"]
    tau = replay["confidence_thresholds"]
    grids["confidence_thresholds"] = (
        grids["first_thresholds"]
        if tau is None
        else tuple(parse_grid(tau, name=f"{source}: replay.confidence_thresholds"))
    )
    preprocessing = Preprocessing(
        resize=pre["resize"],
        crop=pre["crop_center"],
        mean=tuple(norm["mean"]),
        std=tuple(norm["std"]),
        normalize_first=_normalizes_first(pre),
    )
    return dict(
        # every field of DataConfig but the last, preprocessing, is the data key of its name
        data=DataConfig(
            **{f.name: data[f.name] for f in fields(DataConfig) if f.name != "preprocessing"},
            preprocessing=preprocessing,
        ),
        model=ModelConfig(
            backbone_name=backbone["name"],
            backbone_type=backbone["type"],
            **{k: backbone[k] for k in ("truncate_modules", "output_dim", "pretrained")},
            **{k: model[k] for k in ("num_class", "first_threshold", "gate_threshold")},
            input_order=order,
            clip_length=clip_length,
            clip_stride=clip_stride,
        ),
        checkpoints=tuple(tree["checkpoint"]["init"] or ()),
        replay=ReplayConfig(
            **grids,
            per_video=replay["per_video"],
            policies=_policies(replay["policies"], source),
            bootstrap=_bootstrap(replay, source),
        ),
        extract=ExtractConfig(**tree["extract"]),
        train=_train_section(tree["train"], source, multi_label=BY_NAME[data["name"]].multi_label),
    )


def _policies(names: Sequence[str], source: str) -> tuple[str, ...]:
    """``replay.policies`` checked, in :data:`frameexit.policies.POLICIES` order (a list, or one comma-separated
    string as ``--policies`` gives it); frameexit's gates are always replayed."""
    given = [n.strip() for name in names for n in name.split(",") if n.strip()]
    unknown = [n for n in given if n not in POLICIES]
    if unknown:
        raise ConfigError(
            f"{source}: replay.policies: unknown exit policy {unknown[0]!r}: expected some of {', '.join(POLICIES)}"
        )
    return tuple(p for p in POLICIES if p in given or p == "frameexit")


def _bootstrap(replay: Mapping[str, Any], source: str) -> Bootstrap:
    """The ``replay.bootstrap_*`` keys checked: resamples >= 0 (0: no intervals), a level in (0, 1)."""
    resamples, level = replay["bootstrap_resamples"], replay["bootstrap_level"]
    if resamples is None or resamples < 0:
        raise ConfigError(f"{source}: replay.bootstrap_resamples must be an integer >= 0, got {resamples!r}")
    if level is None or not 0.0 < level < 1.0:
        raise ConfigError(f"{source}: replay.bootstrap_level must be a fraction in (0, 1), e.g. 0.95, got {level!r}")
    return Bootstrap(resamples=resamples, level=level, seed=replay["bootstrap_seed"] or 0)


def _check_values(data: Mapping[str, Any], model: Mapping[str, Any], source: str) -> None:
    """:class:`ConfigError` naming the key for a value of the right type that does not fit (sizes, counts,
    thresholds, the key format)."""
    pre = data["preprocessing"]
    if not pre["to_tensor"]:
        raise ConfigError(f"{source}: data.preprocessing.to_tensor must be True (frames are resized as tensors)")
    for key in ("resize", "crop_center"):
        if pre[key] is None or pre[key] < 1:
            raise ConfigError(
                f"{source}: data.preprocessing.{key} must be a positive number of pixels, got {pre[key]!r}"
            )
    if pre["crop_center"] > pre["resize"]:
        raise ConfigError(
            f"{source}: data.preprocessing.crop_center ({pre['crop_center']}) cannot exceed resize ({pre['resize']})"
        )
    norm = pre["normalize"]
    for key in ("mean", "std"):
        if len(norm[key]) != 3:
            raise ConfigError(f"{source}: data.preprocessing.normalize.{key} must hold 3 numbers, got {norm[key]}")
    if any(s <= 0 for s in norm["std"]):
        raise ConfigError(f"{source}: data.preprocessing.normalize.std must be positive, got {norm['std']}")
    if data["num_frames"] < 1:
        raise ConfigError(f"{source}: data.num_frames must be at least 1, got {data['num_frames']}")
    if data["num_workers"] < 0:
        raise ConfigError(f"{source}: data.num_workers must be 0 or more, got {data['num_workers']}")
    if model["num_class"] < 1:
        raise ConfigError(f"{source}: model.num_class must be at least 1, got {model['num_class']}")
    one_hot = data["preprocessing_label"]["one_hot_encoding"]
    if one_hot is not None and one_hot != model["num_class"]:
        raise ConfigError(
            f"{source}: data.preprocessing_label.one_hot_encoding ({one_hot}) must equal model.num_class ({model['num_class']})"
        )
    try:
        check_thresholds(model["first_threshold"], model["gate_threshold"])
    except ValueError as exc:
        raise ConfigError(f"{source}: model.{exc}") from None
    if data["key_format"] is not None:
        _check_key_format(data["key_format"], data["name"], source)


def _clip(backbone: Mapping[str, Any], source: str) -> tuple[int, int]:
    """``(clip_length, clip_stride)`` of ``model.backbone``: ``(1, 1)`` for a 2D backbone (a step reads one frame)."""
    name, kind = backbone["name"], backbone["type"]
    length, stride = backbone["clip_length"], backbone["clip_stride"]
    if kind == "2d":
        if is_clip_backbone(name):
            raise ConfigError(
                f"{source}: model.backbone.name {name} is a 3D backbone (its steps read clips); "
                "set model.backbone.type: 3d with model.backbone.clip_length and model.backbone.clip_stride"
            )
        given = [k for k, v in (("clip_length", length), ("clip_stride", stride)) if v is not None]
        if given:
            raise ConfigError(
                f"{source}: model.backbone.{given[0]} is only meaningful with model.backbone.type: 3d "
                f"(a step of the 2D backbone {name} reads one frame)"
            )
        return 1, 1
    if not is_clip_backbone(name):
        raise ConfigError(
            f"{source}: model.backbone.type 3d needs a 3D backbone (pytorchvideo.x3d_s); {name} reads single frames"
        )
    for key, value in (("clip_length", length), ("clip_stride", stride)):
        if value is None:
            raise ConfigError(f"{source}: model.backbone.{key} must be set for model.backbone.type: 3d")
        if value < 1:
            raise ConfigError(f"{source}: model.backbone.{key} must be at least 1, got {value}")
    return length, stride


def _check_key_format(key_format: str, name: str, source: str) -> None:
    """Raise :class:`ConfigError` unless ``key_format`` makes a key from an HVU row's fields."""
    if BY_NAME[name].key_format is None:  # the dataset's keys are fixed by its reader
        raise ConfigError(f"{source}: data.key_format names the videos of HVU's CSV; data.name is {name!r}")
    try:
        key_format.format(youtube_id="abc", time_start=1, time_end=2)
    except (ValueError, KeyError, IndexError) as exc:
        raise ConfigError(
            f"{source}: data.key_format {key_format!r} must be a Python format of youtube_id, time_start and "
            f"time_end (integers), e.g. '{{youtube_id}}_{{time_start:06d}}_{{time_end:06d}}.mp4': {exc!r}"
        ) from None


def _train_section(section: dict[str, Any], source: str, *, multi_label: bool) -> TrainSection:
    """The ``train`` keys as a :class:`TrainSection`; a setting that would train nothing or diverge at once
    (:func:`frameexit.train_config.config_problem`) is a :class:`ConfigError` here, before any extraction."""
    values = {k: v for k, v in section.items() if k != "val_path_split"}
    if values["loss"] is None:  # the loss fits the labels: independent classes when a video has many
        values["loss"] = "bce" if multi_label else "softmax"
    config = TrainConfig(**values)
    problem = config_problem(config)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    return TrainSection(config, section["val_path_split"])
