"""How far a cache's features are from those sequential inference computes: per-shard probes, summed up.

``frameexit infer`` runs the backbone on one step (frame or clip) per forward pass, as the official code does. Run on
a batch of several videos' steps, the same network rounds differently in the last bits on some backbones and input
sizes (on one 2-core AMD EPYC CPU: ResNet-18 at 112 and 160 pixels, up to 1.9e-6; ResNet-50 at 224 agrees), and a
threshold between the two roundings of a video's confidence makes replay and infer decide differently.

Every shard therefore records how its backbone ran (:class:`ShardProbe`, in the manifest's shard entry and the
shard's attributes):

- ``exact``: the features are computed as sequential inference computes them (one step per forward pass, float32
  storage, fp32 arithmetic, contiguous memory format), so they equal its features bit for bit: ``--batching
  per-step``, or a 3D backbone on a CPU, which runs one clip per forward pass whatever the batch
  (:class:`frameexit.x3d.ClipBackbone`);
- ``measured``: otherwise, the steps of a few videos of the shard (the first and the last, by default) were run again
  one per forward pass, with sequential inference's arithmetic, on the extraction device; their features are stored
  in the shard (``probe_features``) and their largest deviation recorded;
- ``unknown``: a shard written before probes existed, or extracted without any.

The reference is sequential inference *on the extraction device*: features extracted on a GPU are not compared with a
CPU's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

PER_STEP, BATCHED, AUTO = "per-step", "batched", "auto"
EXACT, MEASURED, UNKNOWN = "exact", "measured", "unknown"


def resolve_batching(batching: str, *, clips: bool, cuda: bool) -> str:
    """The mode ``auto`` stands for when extracting: ``batched`` on CUDA (one frame per forward pass would
    leave a GPU mostly idle), ``per-step`` on a CPU (exact; on this project's CPUs no slower, or at most
    about 1.6 times slower, see the README). A 3D backbone on a CPU runs one clip per forward pass in
    either mode (exact either way), so ``auto`` keeps ``batched`` there."""
    if batching != AUTO:
        return batching
    return BATCHED if cuda or clips else PER_STEP


def effective_batching(batching: str, clips: bool, device_type: str) -> str:
    """How the backbone really runs: ``per-step`` when asked, and for a 3D backbone on a CPU (one clip per
    forward pass whatever the batch: :class:`frameexit.x3d.ClipBackbone`), else ``batched``."""
    return PER_STEP if batching == PER_STEP or (clips and device_type == "cpu") else BATCHED


def is_exact(effective: str, *, dtype: str, precision: str, channels_last: bool) -> bool:
    """Whether features extracted so equal sequential inference's bit for bit: one step per forward pass,
    stored in float32, computed in fp32 (TF32 off, no autocast) in the contiguous memory format."""
    return effective == PER_STEP and dtype == "float32" and precision == "fp32" and not channels_last


def feature_deviation(reference: np.ndarray, stored: np.ndarray) -> tuple[float, float]:
    """``(max abs, max relative)`` deviation of stored features from per-step reference ones.

    The relative deviation is the largest absolute one over the largest absolute reference value of
    the same video (features after a ReLU are often exactly 0, so an element-wise ratio means nothing).
    ``reference``, ``stored``: (n_videos, n_steps, feat_dim).
    """
    if len(reference) == 0:
        return 0.0, 0.0
    reference = np.asarray(reference, dtype=np.float32)
    diff = np.abs(np.asarray(stored, dtype=np.float32) - reference).reshape(len(reference), -1).max(axis=1)
    scale = np.abs(reference).reshape(len(reference), -1).max(axis=1)
    rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1), np.where(diff > 0, np.inf, 0))
    return float(diff.max()), float(rel.max())


@dataclass(frozen=True)
class ShardProbe:
    """How one shard's backbone ran, and its features' deviation from sequential inference's."""

    effective: str  # per-step or batched (effective_batching)
    status: str  # exact, measured or unknown (module docstring); a shard without any video to evaluate is exact
    videos: list[str]  # the videos probed (their per-step features are the shard's probe_features)
    # largest deviation of the probed videos' stored features from their per-step ones (feature_deviation; 0 if exact)
    max_abs_deviation: float = 0.0
    max_rel_deviation: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def attrs(self) -> dict[str, Any]:
        """The shard attributes that record it (the probed videos are the ``probe_videos`` dataset)."""
        return {
            "batching_effective": self.effective,
            "exactness": self.status,
            "probe_max_abs_deviation": self.max_abs_deviation,
            "probe_max_rel_deviation": self.max_rel_deviation,
        }


def summarize(batching: str, probes: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """The exactness of a whole cache from its shards' probes (the manifest's entries, ``None`` where absent).

    ``effective`` is ``mixed`` when shards differ; ``status`` is ``exact`` when every shard is, ``unknown``
    when one is, else ``measured``; the deviations are the shards' largest (``None`` when unknown).
    """
    known = [p for p in probes if p is not None]
    statuses = {p["status"] for p in known} | ({UNKNOWN} if len(known) < len(probes) or not probes else set())
    effective = {p["effective"] for p in known}
    status = UNKNOWN if UNKNOWN in statuses else (MEASURED if MEASURED in statuses else EXACT)
    return {
        "batching": batching,
        "effective": effective.pop() if len(effective) == 1 else ("mixed" if effective else UNKNOWN),
        "status": status,
        "probe_videos": sorted(v for p in known for v in p["videos"]),
        "max_abs_deviation": None if status == UNKNOWN else max((p["max_abs_deviation"] for p in known), default=0.0),
        "max_rel_deviation": None if status == UNKNOWN else max((p["max_rel_deviation"] for p in known), default=0.0),
    }
