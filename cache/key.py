"""The one cache-key function: a digest of everything cached features depend on.

Equal inputs give equal keys on any machine; paths, mtimes, host names, worker
counts and batch sizes stay out. :data:`FORMAT_VERSION` is bumped whenever the
extraction output changes, so old caches are not reused by mistake.
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

    def to_json(self) -> dict[str, Any]:
        """The inputs as plain JSON types (tuples become lists)."""
        return json.loads(canonical_json(self))


def canonical_json(inputs: CacheKeyInputs) -> str:
    """Sorted-key, compact JSON of the inputs; raises ``TypeError`` for anything not serialisable."""
    return json.dumps(dataclasses.asdict(inputs), sort_keys=True, separators=(",", ":"), allow_nan=False)


def cache_key(inputs: CacheKeyInputs) -> str:
    """``KEY_LENGTH`` hex characters of the SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:KEY_LENGTH]
