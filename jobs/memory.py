"""How much memory a replay needs, planned before any work: class blocks small enough, or a clear refusal."""

from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass
from typing import Any

from frameexit.errors import UsageError
from frameexit.sweep import sweep_block_bytes

#: Bytes per row of sweep.parquet while a replay assembles it, besides the per-class AP: the metrics arrays, their
#: columns (jobs.outputs.metric_columns, six categories), the Arrow arrays and the Parquet writer's buffers; measured
#: at about 900 on a million rows (tests/test_sweep_rows_memory.py), rounded up.
SWEEP_ROW_BYTES = 1000
#: Bytes per per-video row (videos.parquet): built in a worker, sent here, copied into the columns and the
#: Arrow table; measured at about 300, rounded up.
VIDEO_ROW_BYTES = 500
#: Exit tables of at least this many bytes (all checkpoints) are kept with large allocations mapped on their own.
FRAGMENTING_TABLES = 10**9
#: glibc's malloc then gives every allocation of at least this many bytes (1 MiB) a memory mapping of its own.
MMAP_THRESHOLD = 1 << 20


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory a replay is expected to hold at its peak, in bytes, by part."""

    sweep_rows: int  # the metrics of every checkpoint and setting (with per-class AP): arrays, columns, Arrow table
    video_rows: int  # the per-video rows (one per video, setting and checkpoint with per_video='all')
    # exit tables of every checkpoint's shards (float32, videos x steps x classes), held until every class block
    # has read them
    tables: int
    # working memory of the AP tasks that run at once, each on class_block classes (its classes' scores of every
    # video, and the AP's own), and of the task putting the grid together
    sweep_tasks: int
    n_settings: int  # settings of the grid, over all checkpoints
    n_video_rows: int  # per-video rows, over all checkpoints

    @property
    def total(self) -> int:
        return self.sweep_rows + self.video_rows + self.tables + self.sweep_tasks


def memory_estimate(
    *,
    n_first: int,
    n_gate: int,
    n_checkpoints: int,
    n_videos: int,
    num_class: int,
    per_video_all: bool = False,
    n_steps: int = 10,
    concurrency: int = 1,
    class_block: int = 1,
    n_baseline: int = 0,
) -> MemoryEstimate:
    """What a replay of ``n_first x n_gate`` settings (and ``n_baseline`` baseline policy settings) for
    ``n_checkpoints`` over ``n_videos`` needs (see :class:`MemoryEstimate`); ``concurrency`` AP tasks of
    ``class_block`` classes run at once."""
    settings = (n_first * n_gate + n_baseline) * n_checkpoints
    video_rows = n_checkpoints * n_videos * (n_first * n_gate if per_video_all else 1)
    block = max(1, min(class_block, num_class))
    # an AP task: a copy of its classes' scores, and sweep_block_bytes of them (which also bounds the task
    # putting the grid together: its exit steps of every setting and video)
    task = 4 * n_videos * n_steps * block + sweep_block_bytes(n_videos, n_first, n_gate, block, n_steps)
    if n_baseline:  # the same task then computes the baselines' AP: their exit steps and AP working memory too
        task += 8 * n_baseline * n_videos + sweep_block_bytes(n_videos, 1, n_baseline, block, n_steps)
    return MemoryEstimate(
        sweep_rows=settings * (SWEEP_ROW_BYTES + 8 * num_class),
        video_rows=video_rows * VIDEO_ROW_BYTES,
        tables=n_checkpoints * n_videos * n_steps * (num_class * 4 + 4),
        sweep_tasks=concurrency * task if n_videos else 0,
        n_settings=settings,
        n_video_rows=video_rows,
    )


def plan_memory(*, limit: int, class_block: int, **grid: Any) -> int:
    """The largest number of classes per AP task (at most ``class_block``) that fits in ``limit`` bytes; ``grid``:
    the other arguments of :func:`memory_estimate`. :class:`UsageError` (with the estimate, the limit and how to
    shrink the grid) when even one class per task does not fit."""
    one = memory_estimate(**grid, class_block=1)
    if one.total > limit:
        raise UsageError(_too_large(one, limit, **grid))
    if class_block <= 1:
        return 1
    # memory grows linearly with the block: solve for the largest block that fits
    two = memory_estimate(**grid, class_block=2)
    per_class = max(two.total - one.total, 1)
    return int(max(1, min(class_block, 1 + (limit - one.total) // per_class)))


def _too_large(estimate: MemoryEstimate, limit: int, **grid: Any) -> str:
    n_first, n_gate, n_videos = grid["n_first"], grid["n_gate"], grid["n_videos"]
    over = f" over {n_videos:,} videos" if n_videos else ""
    parts = [
        f"sweep rows {_size(estimate.sweep_rows)}",
        f"per-video rows {_size(estimate.video_rows)}",
        f"exit tables {_size(estimate.tables)}",
        f"AP tasks {_size(estimate.sweep_tasks)}",
    ]
    advice = (
        "use fewer thresholds (smaller COUNTs in --first-thresholds / --gate-thresholds START:STOP:COUNT; "
        "e.g. 0.5:1:51 x 0:1:41 is 2,091 settings)"
    )
    # the rows of every setting are what breaks the limit, or the largest part of the estimate
    at_default = estimate.total - estimate.video_rows + estimate.video_rows // max(n_first * n_gate, 1)
    if grid.get("per_video_all") and (at_default <= limit or estimate.video_rows > estimate.sweep_rows):
        advice = (
            f"--per-video all writes {estimate.n_video_rows:,} per-video rows (one per video, setting and "
            f"checkpoint): use --per-video default (the job's setting only), or {advice}"
        )
    return (
        f"a grid of {n_first:,} first x {n_gate:,} gate thresholds ({n_first * n_gate:,} settings) for "
        f"{grid['n_checkpoints']} checkpoint(s){over} needs about {_size(estimate.total)} of memory "
        f"({', '.join(parts)}), more than the {_size(limit)} available; {advice}"
    )


def _size(n_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes / 1e3:.1f} kB"


def available_memory() -> int:
    """Memory a replay may use on this machine, in bytes: ``MemAvailable`` (Linux), else the physical memory."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 2**62  # unknown: no limit


def limit_fragmentation(tables: int) -> bool:
    """For a replay keeping ``tables`` bytes of exit tables: from :data:`FRAGMENTING_TABLES` on, have glibc's malloc
    map every allocation of :data:`MMAP_THRESHOLD` bytes or more on its own, for the rest of the process (never
    restored, :mod:`jobs.process`) and in the worker processes it starts. Returns whether the setting was made.

    glibc raises that threshold (up to 32 MiB) after freeing a large block, so the tables a replay keeps
    until every class block has read them (8 MB per shard at HVU scale) are carved out of heaps between
    the head's freed temporaries, which it then cannot give back: the whole replay at HVU scale peaked at
    13.8 GB by default and 7.0 GB with this setting, in about 8 % more time (bench/README.md). Small
    tables are left alone: mapping every temporary on its own costs page faults (the ActivityNet head pass,
    17 % slower) and gains little there. Elsewhere than glibc nothing is set.
    """
    if tables < FRAGMENTING_TABLES:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    return bool(mallopt(-3, MMAP_THRESHOLD))  # M_MMAP_THRESHOLD, from <malloc.h>
