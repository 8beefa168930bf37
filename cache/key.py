"""The one cache-key function: a digest of everything the cached features, videos and labels depend on.

Equal inputs give equal keys on any machine; paths, mtimes, host names, worker counts and batch sizes stay out. A
reader computes the key from its job and opens ``<root>/<key>`` itself (:func:`cache.find.open_cache`): nothing is
found by scanning manifests, so no input needs a rule of its own.

The frames are not in the key: their listing and contents are recorded per video in the manifest
(:func:`cache.inputs.video_frames_digest`), so that a cache can be replayed where its frames are gone, and checked
where they are (``extract`` and ``run`` always, ``replay --verify-frames`` on request). :data:`FORMAT_VERSION` is
bumped whenever the extraction output or the key's inputs change, so old caches are not reused by mistake.
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
    """Every input of the features' values, of the videos a shard holds and of their labels."""

    backbone: str  # torchvision model name (resnet50) or pytorchvideo.x3d_s
    truncate_modules: int  # children kept: children[:truncate_modules]
    backbone_digest: str  # SHA-256 of the backbone weights (frameexit.checkpoint.backbone_digest)
    resize: int  # shorter side after resizing, pixels
    crop: int  # centre-crop side, pixels
    mean: tuple[float, ...]  # normalisation
    std: tuple[float, ...]
    # normalisation before resizing and cropping (pytorchvideo's order) instead of after (the official one)
    normalize_first: bool
    num_frames: int  # T, steps sampled per video
    sampling: str  # sampling rule name (linspace = int(clip(linspace(0, L, T), 0, L-1)))
    # frames each step reads and their distance in frame files (1 and 1: a frame, 2D backbones)
    clip_length: int
    clip_stride: int
    dtype: str  # storage type of the features: float32 or float16
    precision: str  # backbone arithmetic, fp32, tf32, bf16 or fp16 (TF32 matmuls or autocast change the numbers)
    # memory format of the backbone: it changes which convolution algorithm runs, and the features' last bits
    channels_last: bool
    # --batching: batched (several videos' steps per forward pass) or per-step (one step per forward pass, as
    # sequential inference, whose features it equals bit for bit); how a shard really ran: cache.exactness
    batching: str
    dataset: str  # data.name: which label reader makes the labels
    key_format: str | None  # data.key_format: how video keys are made from the label file's rows (HVU)
    num_class: int  # width of the multi-hot labels
    split_digest: str  # SHA-256 of the split, label and class-list files
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
