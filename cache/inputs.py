"""The inputs of a cache key, from a job's settings, and how a cache's recorded inputs differ from a job's.

The one place that says which job setting feeds which input of
:class:`cache.key.CacheKeyInputs`. The job is read through two plain objects
(this package does not import ``jobs``):

- ``data`` with ``name``, ``num_frames``, ``preprocessing`` (a
  :class:`frameexit.preprocess.Preprocessing`), ``path_split``, ``path_label``
  and ``path_classid``;
- ``model`` with ``backbone_name``, ``truncate_modules``, ``clip_length`` and
  ``clip_stride`` (1 and 1 for a 2D backbone: a step reads one frame).

Two inputs are expensive: the backbone digest (the checkpoint must be read and
its backbone weights hashed) and the frames digest (every frame folder of the
split must be listed). :func:`cheap_inputs` gives every other input, which is
what finding an existing cache needs (:mod:`cache.locate`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, Protocol

from frameexit.backbone import model_name
from frameexit.errors import ConfigError
from frameexit.sampling import clip_indices

from .key import OPTIONAL, CacheKeyInputs
from .shard import file_sha256

DTYPES = ("float32", "float16")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
#: How the backbone runs: batches of several videos' steps, or one step per forward pass (sequential inference's);
#: ``auto`` is resolved before a key is made (:func:`cache.exactness.resolve_batching`; a reader: either).
BATCHINGS = ("batched", "per-step")
BATCHING_OPTIONS = ("auto", *BATCHINGS)
SAMPLING = "linspace"  # int(clip(linspace(0, L, T), 0, L - 1)), SEMANTICS 3
#: Inputs that cost a checkpoint read or a listing of every frame folder.
EXPENSIVE = ("backbone_digest", "frames_digest")
#: The job files digested into the key, by input.
FILES = {"split_digest": "path_split", "labels_digest": "path_label", "classes_digest": "path_classid"}
#: How inputs are named in errors: the job key or option that sets them.
INPUT_NAMES = {
    "dataset": "data.name",
    "split_digest": "split file data.path_split",
    "labels_digest": "label file data.path_label",
    "classes_digest": "class list data.path_classid",
    "backbone": "model.backbone.name",
    "truncate_modules": "model.backbone.truncate_modules",
    "backbone_digest": "backbone weights (checkpoint.init)",
    "num_frames": "data.num_frames",
    "sampling": "frame sampling",
    "dtype": "dtype (--dtype)",
    "precision": "precision (--precision)",
    "channels_last": "memory format (--channels-last)",
    "frames_digest": "frame listing under data.path_frame",
    "format_version": "cache format version",
    "clip_length": "model.backbone.clip_length",
    "clip_stride": "model.backbone.clip_stride",
    "normalize_first": "normalisation before resizing (data.preprocessing key order)",
    "batching": "backbone batching (--batching)",
}


class Video(Protocol):
    key: str
    frames: Sequence[str]


def check_feature_options(dtype: str, precision: str, batching: str = "auto") -> None:
    """Raise :class:`ConfigError` for a storage type, backbone arithmetic or batching that is not known."""
    if batching not in BATCHING_OPTIONS:
        raise ConfigError(f"batching must be one of {', '.join(BATCHING_OPTIONS)}, got {batching!r}")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def check_job_files(data: Any) -> None:
    """Raise :class:`ConfigError` unless the split, label and class-list files (digested into the key) exist."""
    for name in FILES.values():
        path = getattr(data, name)
        if not path:
            raise ConfigError(f"data.{name} is not set: the file is compared with the feature cache's")
        if not os.path.isfile(path):
            raise ConfigError(f"data.{name} {path} is not a file: it is compared with the feature cache's")


def frames_digest(videos: Sequence[Video], num_frames: int, clip_length: int = 1, clip_stride: int = 1) -> str:
    """SHA-256 of each video's key, frame count, and the names and sizes of the files its steps read.

    Cheap: no pixels are read. With ``clip_length`` 1 the files are the sampled
    frames; otherwise every frame of every step's clip
    (:func:`frameexit.sampling.clip_indices`).
    """
    h = hashlib.sha256()
    for video in videos:
        h.update(f"{video.key}|{len(video.frames)}".encode())
        files = clip_indices(len(video.frames), num_frames, clip_length, clip_stride)
        for i in sorted(set(files.ravel().tolist())):
            path = video.frames[i]
            try:
                size = os.path.getsize(path)
            except OSError:
                size = -1
            h.update(f"|{os.path.basename(path)}:{size}".encode())
        h.update(b"\n")
    return h.hexdigest()


def key_inputs(
    data: Any,
    model: Any,
    *,
    dtype: str,
    precision: str,
    channels_last: bool,
    backbone_digest: str,
    frames_digest: str,
    batching: str = "batched",
) -> CacheKeyInputs:
    """Every input of the features of ``data`` through ``model``'s backbone (see :class:`CacheKeyInputs`).

    ``batching`` is the mode the backbone runs in, ``auto`` resolved first (:mod:`cache.exactness`).
    """
    if batching not in BATCHINGS:
        raise ValueError(f"batching of a cache key must be one of {', '.join(BATCHINGS)}, got {batching!r}")
    pre = data.preprocessing
    clip_length = model.clip_length
    return CacheKeyInputs(
        backbone=model_name(model.backbone_name),
        truncate_modules=model.truncate_modules,
        backbone_digest=backbone_digest,
        resize=pre.resize,
        crop=pre.crop,
        mean=tuple(pre.mean),
        std=tuple(pre.std),
        num_frames=data.num_frames,
        sampling=SAMPLING,
        dtype=dtype,
        precision=precision,
        channels_last=channels_last,
        dataset=data.name,
        split_digest=file_sha256(data.path_split),
        labels_digest=file_sha256(data.path_label),
        classes_digest=file_sha256(data.path_classid),
        frames_digest=frames_digest,
        clip_length=clip_length,
        # a clip of one frame has no stride: every stride gives the same features
        clip_stride=model.clip_stride if clip_length > 1 else 1,
        normalize_first=pre.normalize_first,
        batching=batching,
    )


def cheap_inputs(
    data: Any, model: Any, *, dtype: str, precision: str, channels_last: bool, batching: str = "batched"
) -> dict[str, Any]:
    """Every input but the :data:`EXPENSIVE` ones, as a manifest records them (JSON types).

    :data:`cache.key.OPTIONAL` inputs are always present, at their default
    when the job uses it; compare them with :func:`cache.key.with_defaults` of a
    manifest's inputs. Reads the split, label and class-list files (to digest
    them), nothing else.
    """
    inputs = key_inputs(
        data,
        model,
        dtype=dtype,
        precision=precision,
        channels_last=channels_last,
        backbone_digest="",
        frames_digest="",
        batching=batching,
    ).to_json()
    inputs = {**OPTIONAL, **inputs}
    for name in EXPENSIVE:
        del inputs[name]
    return inputs


def differences(recorded: dict[str, Any], wanted: dict[str, Any], names: Sequence[str], data: Any = None) -> list[str]:
    """How ``recorded`` (a cache's inputs) differs from ``wanted`` (a job's) in the inputs ``names``, in words.

    A file digest names the job's file (from ``data``) and both digests'
    first 12 digits; any other input its job key and both values.
    """
    out = []
    for name in names:
        have, want = recorded.get(name), wanted.get(name)
        if have == want:
            continue
        label = INPUT_NAMES.get(name, name)
        if name in FILES or name in EXPENSIVE:
            where = f" {getattr(data, FILES[name])}" if data is not None and name in FILES else ""
            out.append(f"{label}{where}: SHA-256 {str(have)[:12]}... in the cache, {str(want)[:12]}...")
        else:
            out.append(f"{label} {have!r} in the cache, {want!r} in the job")
    return out
