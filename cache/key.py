"""The one cache-key function: a digest of everything the cached features, videos and labels depend on.

Equal inputs give equal keys on any machine; paths, mtimes, host names, worker
counts and batch sizes stay out. A reader computes the key from its job and
opens ``<root>/<key>`` itself (:func:`cache.find.open_cache`): nothing is found
by scanning manifests, so no input needs a rule of its own.

The frames are not in the key: their listing and contents are recorded per
video in the manifest (:func:`cache.inputs.video_frames_digest`), so that a
cache can be replayed where its frames are gone, and checked where they are
(``extract`` and ``run`` always, ``replay --verify-frames`` on request).
:data:`FORMAT_VERSION` is bumped whenever the extraction output or the key's
inputs change, so old caches are not reused by mistake.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

#: 2: the frames left the key for per-video records; the key format, class count and batching entered it.
FORMAT_VERSION = 2
KEY_LENGTH = 20  # hex characters: 80 bits, path-safe


@dataclass(frozen=True)
class CacheKeyInputs:
    """Every input of the features' values, of the videos a shard holds and of their labels.

    Attributes
    ----------
    backbone : str
        torchvision model name (``resnet50``) or ``pytorchvideo.x3d_s``.
    truncate_modules : int
        Children kept: ``children[:truncate_modules]``.
    backbone_digest : str
        SHA-256 of the backbone weights (:func:`frameexit.checkpoint.backbone_digest`).
    resize, crop : int
        Shorter side after resizing and centre-crop side, in pixels.
    mean, std : tuple of float
        Normalisation.
    normalize_first : bool
        Normalisation before resizing and cropping (pytorchvideo's order) instead of after (the official one).
    num_frames : int
        T, steps sampled per video.
    sampling : str
        Sampling rule name (``linspace`` = ``int(clip(linspace(0, L, T), 0, L-1))``).
    clip_length, clip_stride : int
        Frames each step reads and their distance in frame files (1 and 1: a frame, 2D backbones).
    dtype : {'float32', 'float16'}
        Storage type of the features.
    precision : {'fp32', 'tf32', 'bf16', 'fp16'}
        Arithmetic of the backbone (TF32 matmuls or autocast change the numbers).
    channels_last : bool
        Memory format of the backbone: it changes which convolution algorithm runs, and with it the
        last bits of the features.
    batching : {'batched', 'per-step'}
        How the backbone was asked to run (``--batching``): on batches of several videos' steps, or on
        one step per forward pass as sequential inference does (whose features it then equals bit for
        bit). The mode a backbone actually ran in is recorded per shard (:mod:`cache.exactness`).
    dataset : str
        ``data.name``: which label reader makes the labels.
    key_format : str or None
        ``data.key_format``: how video keys are made from the label file's rows (HVU).
    num_class : int
        Width of the multi-hot labels.
    split_digest, labels_digest, classes_digest : str
        SHA-256 of the split, label and class-list files.
    format_version : int
    """

    backbone: str
    truncate_modules: int
    backbone_digest: str
    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalize_first: bool
    num_frames: int
    sampling: str
    clip_length: int
    clip_stride: int
    dtype: str
    precision: str
    channels_last: bool
    batching: str
    dataset: str
    key_format: str | None
    num_class: int
    split_digest: str
    labels_digest: str
    classes_digest: str
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The inputs as plain JSON types (tuples become lists), as a manifest records them."""
        return json.loads(canonical_json(self))


def canonical_json(inputs: CacheKeyInputs) -> str:
    """Sorted-key, compact JSON of the inputs; raises ``TypeError`` for anything not serialisable."""
    return json.dumps(dataclasses.asdict(inputs), sort_keys=True, separators=(",", ":"), allow_nan=False)


def cache_key(inputs: CacheKeyInputs) -> str:
    """``KEY_LENGTH`` hex characters of the SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:KEY_LENGTH]
