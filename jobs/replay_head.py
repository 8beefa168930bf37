"""The head pass tasks of a replay (the only ones that need torch): each shard verified and read once, its exit
tables computed for every checkpoint that has none stored, and stored for the next replay (:mod:`cache.exit_tables`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from cache.exit_tables import write_table
from cache.manifest import verify_shard
from cache.shard import read_shard
from frameexit.errors import FrameExitError
from frameexit.exactness import EXACT, MEASURED, UNKNOWN, HeadDeviation
from frameexit.head import FrameExit
from frameexit.head_pass import exit_tables, head_deviation
from frameexit.sweep import ExitTables

from .model import HeadState
from .process import head_threads


def shard_exit_tables(
    path: str,
    sha256: str,
    order: tuple[int, ...],
    stores: Sequence[tuple[str, str] | None],
    *heads: HeadState,
    threads: int | None = None,
    device: str = "cpu",
) -> tuple[tuple[ExitTables, ...], tuple[dict[str, str] | None, ...]]:
    """Dask task: verify and read one shard (once, whatever the number of checkpoints), return its exit tables for
    each checkpoint's head, with the head's deviation on the shard's probed videos (:func:`shard_deviation`); and
    where ``stores`` gives ``(path, key)`` for a head, write them there (:func:`_stored`). ``threads``: torch's
    threads while heads run (:func:`jobs.process.head_threads`); ``device``: where the heads run (``cpu``,
    ``cuda:N``)."""
    verify_shard(path, sha256)
    shard = read_shard(path)
    out, written = [], []
    for head, store in zip(heads, stores, strict=True):
        with head_threads(threads):
            model = head.model(device)
            tables = exit_tables(model, shard.features, order, videos=shard.videos, labels=shard.labels)
            out.append(dataclasses.replace(tables, deviation=shard_deviation(model, shard, order, tables)))
        written.append(_stored(out[-1], store) if store is not None else None)
    return tuple(out), tuple(written)


def _stored(tables: ExitTables, store: tuple[str, str]) -> dict[str, str]:
    """Write one shard's tables to ``store`` (``(path, key)``): ``{"sha256": ...}`` of the file, or ``{"error":
    ...}`` where it could not be written (a full disk, a read-only cache): storing is never worth losing the replay."""
    try:
        return {"sha256": write_table(store[0], tables, store[1])}
    except (OSError, FrameExitError) as exc:
        return {"error": str(exc) if isinstance(exc, FrameExitError) else f"{store[0]}: {exc.strerror or exc}"}


def shard_deviation(model: FrameExit, shard: Any, order: tuple[int, ...], tables: ExitTables) -> HeadDeviation:
    """How far the head's outputs on a shard's features (``tables``) may be from those on per-step features:
    ``exact``, measured on the probed videos (against their rows of ``tables``), or ``unknown`` (no probe)."""
    status = shard.attrs.get("exactness")
    if status == EXACT:
        return HeadDeviation(EXACT)
    if status == MEASURED and shard.probe_videos is not None:
        return head_deviation(model, shard.probe_features, order, tables, shard.probe_videos)
    return HeadDeviation(UNKNOWN)
