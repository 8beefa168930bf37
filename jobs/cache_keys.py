"""The cache key of a job's features: one helper for extract and replay, importable without torch."""

from __future__ import annotations

from collections.abc import Mapping

from cache.inputs import key_inputs
from cache.key import CacheKeyInputs

from .config import Job


def cache_key_inputs(job: Job, backbone_digest: str, batching: str, digests: Mapping[str, str]) -> CacheKeyInputs:
    """:func:`cache.inputs.key_inputs` of the job's features in ``batching`` mode: the key extract and replay use."""
    settings = job.extract
    return key_inputs(
        job.data,
        job.model,
        dtype=settings.dtype,
        precision=settings.precision,
        channels_last=settings.channels_last,
        backbone_digest=backbone_digest,
        batching=batching,
        digests=digests,
    )
