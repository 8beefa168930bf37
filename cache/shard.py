"""One shard: an HDF5 file holding a fixed run of videos' features.

Layout (readable with plain h5py)::

    features       (n_videos, n_frames, feat_dim) float32|float16  sampled temporal order
    videos         (n_videos,) UTF-8 strings                       split keys
    labels         (n_videos, num_class) uint8                     multi-hot ground truth
    frame_indices  (n_videos, n_frames) int32                      sampled frame-file positions
    attrs: key, inputs (JSON of the cache-key inputs), format_version

and, from batched extraction, the exactness probe (:mod:`cache.exactness`)::

    probe_videos    (n_probe,) UTF-8 strings                       videos whose steps also ran one per forward pass
    probe_features  (n_probe, n_frames, feat_dim) float32          their per-step features (sequential inference's)
    attrs: batching_effective, exactness, probe_max_abs_deviation, probe_max_rel_deviation

A shard is built in memory (HDF5's core driver), then written under a temporary name, fsynced and renamed; dataset
timestamps are off so the same content gives the same bytes (those HDF5 writes to a file itself).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from frameexit.atomic import atomic_path
from frameexit.errors import reporting_disk_full


@dataclass(frozen=True)
class Shard:
    """The arrays of one shard, in memory."""

    videos: list[str]
    features: np.ndarray
    labels: np.ndarray
    frame_indices: np.ndarray
    attrs: dict[str, Any]
    probe_videos: list[str] | None = None  # None: the shard holds no probe (exact, or written before probes)
    probe_features: np.ndarray | None = None


def write_shard(
    path: str,
    *,
    videos: Sequence[str],
    features: np.ndarray,
    labels: np.ndarray,
    frame_indices: np.ndarray,
    attrs: dict[str, Any],
    probe_videos: Sequence[str] | None = None,
    probe_features: np.ndarray | None = None,
) -> str:
    """Write a shard atomically; returns the SHA-256 of the file written. A full disk is a
    :class:`~frameexit.errors.DiskFullError` naming ``path``, with nothing left behind. The probe (see the
    module docstring) is written when given."""
    n = len(videos)
    if features.shape[0] != n or labels.shape[0] != n or frame_indices.shape[0] != n:
        raise ValueError(
            f"shard arrays disagree on the number of videos: {n} keys, features {features.shape}, "
            f"labels {labels.shape}, frame_indices {frame_indices.shape}"
        )
    # built in memory, then written by Python: HDF5 meeting a full disk itself keeps the file open, prints errors
    # at every later close and crashes the interpreter at exit; the image is the bytes HDF5 writes to a file
    with h5py.File(path, "w", libver=("earliest", "v110"), driver="core", backing_store=False) as f:
        f.create_dataset("features", data=features, track_times=False)
        f.create_dataset(
            "videos", data=np.asarray(list(videos), dtype=object), dtype=h5py.string_dtype(), track_times=False
        )
        f.create_dataset("labels", data=labels.astype(np.uint8), track_times=False)
        f.create_dataset("frame_indices", data=frame_indices.astype(np.int32), track_times=False)
        if probe_videos is not None and probe_features is not None:
            keys = np.asarray(list(probe_videos), dtype=object)
            f.create_dataset("probe_videos", data=keys, dtype=h5py.string_dtype(), track_times=False)
            f.create_dataset("probe_features", data=probe_features.astype(np.float32), track_times=False)
        for name, value in attrs.items():
            f.attrs[name] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
        f.flush()
        image = f.id.get_file_image()
    with reporting_disk_full(path), atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(image)
    return hashlib.sha256(image).hexdigest()


def read_shard(path: str) -> Shard:
    """Read a whole shard (checksums are checked before, see :class:`cache.manifest.FeatureCache`)."""
    with h5py.File(path, "r") as f:
        probed = "probe_videos" in f and "probe_features" in f
        return Shard(
            videos=_keys(f["videos"][()]),
            features=f["features"][()],
            labels=f["labels"][()],
            frame_indices=f["frame_indices"][()],
            attrs={k: _attr(v) for k, v in f.attrs.items()},
            probe_videos=_keys(f["probe_videos"][()]) if probed else None,
            probe_features=f["probe_features"][()] if probed else None,
        )


def _keys(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value.item() if isinstance(value, np.generic) else value


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
