"""The inputs of a cache key, from a job's settings; a video's frame record; how two sets of inputs differ.

The one place that says which job setting feeds which input of :class:`cache.key.CacheKeyInputs`. The job is read
through two plain objects (this package does not import ``jobs``):

- ``data`` with ``name``, ``num_frames``, ``preprocessing`` (a :class:`frameexit.preprocess.Preprocessing`),
  ``key_format``, ``path_split``, ``path_label`` and ``path_classid``;
- ``model`` with ``backbone_name``, ``truncate_modules``, ``num_class``, ``clip_length`` and ``clip_stride`` (1 and 1
  for a 2D backbone: a step reads one frame).

Writers and readers compute the key with :func:`key_inputs` alike. The frames are not an input (:mod:`cache.key`):
:func:`video_frames_digest` records them per video.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from frameexit.backbone_names import short_name
from frameexit.errors import ConfigError
from frameexit.sampling import clip_indices

from .key import CacheKeyInputs
from .shard import file_sha256

DTYPES = ("float32", "float16")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
#: How the backbone runs: batches of several videos' steps, or one step per forward pass (sequential inference's);
#: ``auto`` is resolved before a key is made (:func:`cache.exactness.resolve_batching`; a reader: either).
BATCHINGS = ("batched", "per-step")
BATCHING_OPTIONS = ("auto", *BATCHINGS)
SAMPLING = "linspace"  # int(clip(linspace(0, L, T), 0, L - 1)), SEMANTICS 3
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
    "dtype": "dtype extract.dtype (--dtype)",
    "precision": "precision extract.precision (--precision)",
    "channels_last": "memory format extract.channels_last (--channels-last)",
    "batching": "backbone batching extract.batching (--batching)",
    "key_format": "video key format data.key_format",
    "num_class": "model.num_class",
    "format_version": "cache format version",
    "clip_length": "model.backbone.clip_length",
    "clip_stride": "model.backbone.clip_stride",
    "normalize_first": "normalisation before resizing (data.preprocessing key order)",
}


def check_job_files(data: Any) -> None:
    """Raise :class:`ConfigError` unless the split, label and class-list files (digested into the key) exist."""
    for name in FILES.values():
        path = getattr(data, name)
        if not path:
            raise ConfigError(f"data.{name} is not set: the file is compared with the feature cache's")
        if not os.path.isfile(path):
            raise ConfigError(f"data.{name} {path} is not a file: it is compared with the feature cache's")


def frame_files(n_frames: int, num_frames: int, clip_length: int = 1, clip_stride: int = 1) -> list[int]:
    """Positions (in the sorted frame list) of every file a video's steps read, each once, ascending."""
    return sorted(set(clip_indices(n_frames, num_frames, clip_length, clip_stride).ravel().tolist()))


def video_frames_digest(n_frames: int, files: Sequence[tuple[str, bytes]]) -> str:
    """What a video's features were computed from: 32 hex digits of a SHA-256 of its frame count (which decides
    the sampled positions) and the name and bytes of every file its steps read (:func:`frame_files`)."""
    h = hashlib.sha256(f"{n_frames}".encode())
    for name, content in files:
        h.update(f"|{os.path.basename(name)}:{len(content)}|".encode())
        h.update(content)
    return h.hexdigest()[:32]


def named_digests(data: Any, digests: Mapping[str, str]) -> dict[str, str]:
    """The SHA-256 of ``data``'s split, label and class-list files by input name (:data:`FILES`), from ``digests``
    by path."""
    return {name: digests[getattr(data, path)] for name, path in FILES.items()}


def key_inputs(
    data: Any,
    model: Any,
    *,
    dtype: str,
    precision: str,
    channels_last: bool,
    backbone_digest: str,
    batching: str,
    digests: Mapping[str, str] | None = None,
) -> CacheKeyInputs:
    """The key inputs of ``data`` through ``model``'s backbone (see :class:`CacheKeyInputs`).

    Reads the split, label and class-list files (to digest them), nothing else, unless ``digests`` gives
    their SHA-256 by path (:func:`file_digests`); ``batching`` has ``auto`` resolved (:mod:`cache.exactness`).
    """
    if batching not in BATCHINGS:
        raise ValueError(f"batching of a cache key must be one of {', '.join(BATCHINGS)}, got {batching!r}")
    pre, clip_length = data.preprocessing, model.clip_length
    digests = digests if digests is not None else file_digests(data)
    return CacheKeyInputs(
        backbone=short_name(model.backbone_name),  # checked where the backbone is built
        truncate_modules=model.truncate_modules,
        backbone_digest=backbone_digest,
        resize=pre.resize,
        crop=pre.crop,
        mean=tuple(pre.mean),
        std=tuple(pre.std),
        normalize_first=pre.normalize_first,
        num_frames=data.num_frames,
        sampling=SAMPLING,
        clip_length=clip_length,
        # a clip of one frame has no stride: every stride gives the same features
        clip_stride=model.clip_stride if clip_length > 1 else 1,
        dtype=dtype,
        precision=precision,
        channels_last=channels_last,
        batching=batching,
        dataset=data.name,
        key_format=data.key_format,
        num_class=model.num_class,
        **named_digests(data, digests),
    )


def file_digests(data: Any, known: Mapping[str, str] | None = None) -> dict[str, str]:
    """The SHA-256 of the split, label and class-list files of ``data``, by path, each file read once; ``known``:
    digests of files already read (from the bytes parsed), not read again."""
    known = known or {}
    paths = dict.fromkeys(getattr(data, name) for name in FILES.values())
    return {path: known[path] if path in known else file_sha256(path) for path in paths}


def differences(recorded: dict[str, Any], wanted: dict[str, Any], names: Sequence[str], data: Any = None) -> list[str]:
    """How ``recorded`` (a cache's inputs) differs from ``wanted`` (a job's) in the inputs ``names``, in words:
    a digest by its first 12 digits (a file's named from ``data``), any other input by its job key and values."""
    out = []
    for name in names:
        have, want = recorded.get(name), wanted.get(name)
        if have == want:
            continue
        label = INPUT_NAMES.get(name, name)
        if name in FILES or name == "backbone_digest":
            where = f" {getattr(data, FILES[name])}" if data is not None and name in FILES else ""
            out.append(f"{label}{where}: SHA-256 {str(have)[:12]}... in the cache, {str(want)[:12]}...")
        else:
            out.append(f"{label} {have!r} in the cache, {want!r} in the job")
    return out
