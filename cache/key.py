"""The one cache-key function: a digest of everything cached features depend on.

Equal inputs give equal keys on any machine; paths, mtimes, host names, worker
counts and batch sizes stay out. :data:`FORMAT_VERSION` is bumped whenever the
extraction output changes, so old caches are not reused by mistake.

Inputs added after the first format (:data:`OPTIONAL`: the clip of a 3D
backbone, pytorchvideo's preprocessing order, the backbone's batching) enter the key only when they
differ from their default, which is what every earlier cache was extracted
with: caches of 2D backbones keep their keys, and a recorded input that is
absent means its default (:func:`with_defaults`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 1
KEY_LENGTH = 20  # hex characters: 80 bits, path-safe


@dataclass(frozen=True)
class CacheKeyInputs:
    """Every input of the features' values.

    Attributes
    ----------
    backbone : str
        torchvision model name (``resnet50``).
    truncate_modules : int
        Children kept: ``children[:truncate_modules]``.
    backbone_digest : str
        SHA-256 of the backbone weights (:func:`frameexit.checkpoint.backbone_digest`).
    resize, crop : int
        Shorter side after resizing and centre-crop side, in pixels.
    mean, std : tuple of float
        Normalisation.
    num_frames : int
        T, frames sampled per video.
    sampling : str
        Sampling rule name (``linspace`` = ``int(clip(linspace(0, L, T), 0, L-1))``).
    dtype : {'float32', 'float16'}
        Storage type of the features.
    precision : {'fp32', 'tf32', 'bf16', 'fp16'}
        Arithmetic of the backbone (TF32 matmuls or autocast change the numbers).
    channels_last : bool
        Memory format of the backbone (may change convolution algorithms).
    dataset : str
        ``data.name``.
    split_digest, labels_digest, classes_digest : str
        SHA-256 of the split, label and class-list files.
    frames_digest : str
        SHA-256 of every evaluated video's key, frame count and sampled file names and sizes.
    format_version : int
    clip_length : int, default=1
        Frames each step reads (1: a frame, 2D backbones; X3D-S: 13).
    clip_stride : int, default=1
        Distance in frame files between the frames of a clip (1 when ``clip_length`` is 1).
    normalize_first : bool, default=False
        Normalisation before resizing and cropping (pytorchvideo's order) instead of after (the official one).
    batching : {'batched', 'per-step'}, default='batched'
        How the backbone was asked to run (``--batching``): on batches of several videos' steps, or on
        one step per forward pass as sequential inference does (whose features it then equals bit for
        bit). The mode a backbone actually ran in is recorded per shard (:mod:`cache.exactness`).
    """

    backbone: str
    truncate_modules: int
    backbone_digest: str
    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_frames: int
    sampling: str
    dtype: str
    precision: str
    channels_last: bool
    dataset: str
    split_digest: str
    labels_digest: str
    classes_digest: str
    frames_digest: str
    format_version: int = FORMAT_VERSION
    clip_length: int = 1
    clip_stride: int = 1
    normalize_first: bool = False
    batching: str = "batched"

    def to_json(self) -> dict[str, Any]:
        """The inputs as plain JSON types (tuples become lists), :data:`OPTIONAL` ones left out at their default."""
        return json.loads(canonical_json(self))


#: Inputs added after the first format, with the value every cache made before them has.
OPTIONAL: dict[str, Any] = {"clip_length": 1, "clip_stride": 1, "normalize_first": False, "batching": "batched"}


def with_defaults(recorded: dict[str, Any]) -> dict[str, Any]:
    """Recorded inputs (a manifest's) with every absent :data:`OPTIONAL` input at its default."""
    return {**OPTIONAL, **recorded}


def without_defaults(inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs as they are recorded: :data:`OPTIONAL` ones left out at their default (as in the key)."""
    return {k: v for k, v in inputs.items() if k not in OPTIONAL or v != OPTIONAL[k]}


def canonical_json(inputs: CacheKeyInputs) -> str:
    """Sorted-key, compact JSON of the inputs; raises ``TypeError`` for anything not serialisable.

    :data:`OPTIONAL` inputs at their default are left out, so that the keys of
    caches extracted before those inputs existed do not change.
    """
    fields = without_defaults(dataclasses.asdict(inputs))
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)


def cache_key(inputs: CacheKeyInputs) -> str:
    """``KEY_LENGTH`` hex characters of the SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:KEY_LENGTH]
