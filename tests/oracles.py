"""Whole-table forms of the sweep, for tests only: production replay splits by shard and class block.

Each is the composition a test compares the split computation with (the same numbers, bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from frameexit.exit_rule import DEFAULT_GATE_THRESHOLD, check_thresholds, exit_steps_grid
from frameexit.step_costs import StepCosts
from frameexit.sweep import (
    ClassBlock,
    ExitTables,
    SweepMetrics,
    _gather_rows,
    _key_order,
    average_precision_block,
    class_block_ap,
    combine_sweep,
    video_exits,
)


def concat_tables(parts: Sequence[ExitTables]) -> ExitTables:
    """Tables of several shards as one, rows sorted by video key."""
    videos, order = _key_order(parts)
    return ExitTables(
        videos,
        _gather_rows(parts, order, "labels"),
        _gather_rows(parts, order, "probs"),
        _gather_rows(parts, order, "gates"),
    )


def average_precision_grid(
    tables: ExitTables,
    gate_steps: np.ndarray,
    first_mask: np.ndarray,
    *,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Per-class AP at every setting: shape (n_gate, n_first, num_class), float64, NaN without positives.

    :func:`average_precision_block` over all classes of ``tables``: equal to
    :func:`frameexit.metrics.average_precision` of each setting's scores (ties
    ranked by video key) up to floating-point summation order.

    Parameters
    ----------
    tables : ExitTables
    gate_steps : ndarray of shape (n_gate, n_videos)
        From :func:`gate_exit_steps`.
    first_mask : ndarray of shape (n_first, n_videos), dtype=bool
        From :func:`first_exit_mask`.
    max_bytes : int, optional
        Working memory in bytes (default :data:`AP_MAX_BYTES`); results do not depend on it.
    """
    return average_precision_block(
        tables.probs, tables.labels, tables.confidence0, gate_steps, first_mask, max_bytes=max_bytes
    )


def sweep_metrics(
    tables: ExitTables,
    first_thresholds: npt.ArrayLike,
    gate_thresholds: npt.ArrayLike,
    *,
    max_bytes: int | None = None,
) -> SweepMetrics:
    """mAP, per-class AP, top-1, mean frames and exit histogram of every setting of the grid.

    The same numbers, bit for bit, as splitting the classes into blocks
    (:func:`class_block`, :func:`class_block_ap`) and combining them (:func:`combine_sweep`).
    """
    exits = video_exits(tables)
    block = ClassBlock(exits.videos, np.arange(tables.probs.shape[2]), tables.probs, tables.labels)
    ap = class_block_ap(block, exits, first_thresholds, gate_thresholds, max_bytes=max_bytes)
    return combine_sweep(exits, [ap], first_thresholds, gate_thresholds)


def exit_steps(
    confidence: npt.ArrayLike,
    gates: npt.ArrayLike,
    first_threshold: float,
    gate_threshold: float = DEFAULT_GATE_THRESHOLD,
) -> np.ndarray:
    """Exit step of each video at one setting of :func:`frameexit.exit_rule.exit_steps_grid`: (n_videos,) int64."""
    check_thresholds(first_threshold, gate_threshold)
    return exit_steps_grid(confidence, gates, [first_threshold], [gate_threshold])[0, 0]


def paper_gflops(exit_step: npt.ArrayLike, per_frame: float | None) -> float:
    """Mean over videos of ``(exit_step + 1) * per_frame``; NaN when ``per_frame`` is ``None`` (SEMANTICS 8)."""
    steps = np.asarray(exit_step, dtype=np.float64)
    if per_frame is None or steps.size == 0:
        return float("nan")
    return float(np.mean((steps + 1.0) * per_frame))


def video_gmacs(costs: StepCosts, exit_step: npt.ArrayLike) -> np.ndarray:
    """GMACs sequential early exit spends on each video (the per-video form of
    :meth:`frameexit.step_costs.StepCosts.mean_video_gmacs`)."""
    t = np.asarray(exit_step, dtype=np.float64)
    # the gates of steps 1..t, but the last step (9) exits without computing its gate
    gates = np.minimum(t, 8)
    return (
        (t + 1.0) * (costs.backbone + costs.projection)
        + costs.classifier
        + gates * costs.gate
        + (t > 0) * costs.classifier
    )
