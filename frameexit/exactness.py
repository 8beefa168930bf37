"""Which replay decisions could differ from sequential inference's, given how far cached features are from its own.

Sequential inference runs the backbone on one step per forward pass. Features
extracted in batches may differ from those in the last bits (the cache records
by how much: :mod:`cache.exactness`). Run through a checkpoint's head, the
probed videos' two versions of features (per-step and as cached) give the
deviation of every step's class probabilities and gate outputs
(:func:`frameexit.head_pass.head_deviation`); the largest over the probed videos, times
:data:`SAFETY_FACTOR`, is the margin within which a comparison may come out
otherwise. A video is *at risk* at a setting when its decision could change:

- its step-0 confidence lies within the probability margin of ``first_threshold``;
- a gate output at a step it evaluates (steps 1 up to its exit, the last step
  excepted) lies within the gate margin of ``gate_threshold``;
- the gap between the two largest class probabilities at its exit step is
  within twice the probability margin (its prediction could change).

A cache whose features are exact has margins 0 and no video at risk; one whose
deviation is unknown (extracted before probes, or without any) gives no count.
Comparisons follow :mod:`frameexit.exit_rule`: thresholds rounded to float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .exit_rule import first_exit_mask, gate_exit_steps
from .sweep import ExitTables

#: The margin is the largest deviation seen on the probed videos times this: the probes are a sample
#: (two videos of each shard by default), and another video's deviation may exceed theirs.
SAFETY_FACTOR = 4.0
EXACT, MEASURED, UNKNOWN = "exact", "measured", "unknown"


@dataclass(frozen=True)
class HeadDeviation:
    """How far a head's outputs on cached features may be from those on per-step features.

    ``status``: ``exact`` (the features are per-step ones, deviation 0), ``measured`` (on the probed ``videos``)
    or ``unknown``; ``probs``, ``gates``: largest absolute difference of any step's class probability, of any gate
    output (probability units).
    """

    status: str
    videos: tuple[str, ...] = ()
    probs: float = 0.0
    gates: float = 0.0


def merge_deviations(parts: Sequence[HeadDeviation | None]) -> HeadDeviation:
    """The shards' deviations as one: ``unknown`` if one is (or is ``None``), ``exact`` if all are, the largest."""
    statuses = {UNKNOWN if p is None else p.status for p in parts} or {UNKNOWN}
    if UNKNOWN in statuses:
        return HeadDeviation(UNKNOWN)
    known = [p for p in parts if p is not None]
    return HeadDeviation(
        MEASURED if MEASURED in statuses else EXACT,
        tuple(sorted(v for p in known for v in p.videos)),
        max(p.probs for p in known),
        max(p.gates for p in known),
    )


@dataclass(frozen=True)
class Margins:
    """Distances from a threshold (or between the top two probabilities) within which a decision may change.

    ``first``: step-0 confidence from ``first_threshold``; ``gate``: gate output from ``gate_threshold``;
    ``top2``: the gap between the two largest probabilities at the exit step (twice ``first``).
    """

    first: float
    gate: float
    top2: float

    @classmethod
    def of(cls, deviation: HeadDeviation) -> Margins:
        return cls(
            SAFETY_FACTOR * deviation.probs, SAFETY_FACTOR * deviation.gates, 2 * SAFETY_FACTOR * deviation.probs
        )

    @property
    def zero(self) -> bool:
        return self.first == 0 and self.gate == 0 and self.top2 == 0


def top2_gaps(probs: np.ndarray) -> np.ndarray:
    """Largest minus second-largest class probability at every step: (n_videos, n_steps) float64 (inf for 1 class)."""
    n, steps, num_class = probs.shape
    if num_class < 2:
        return np.full((n, steps), np.inf)
    top = np.partition(probs, num_class - 2, axis=2)[:, :, -2:].astype(np.float64)
    return top[:, :, 1] - top[:, :, 0]


def _near(values: np.ndarray, threshold: np.ndarray, margin: float) -> np.ndarray:
    """``|value - float32(threshold)| <= margin`` in float64 (never true for a zero margin)."""
    if margin <= 0:
        return np.zeros(np.broadcast_shapes(values.shape, threshold.shape), dtype=bool)
    return np.abs(values.astype(np.float64) - threshold.astype(np.float32).astype(np.float64)) <= margin


@dataclass(frozen=True)
class RiskTables:
    """What the risk rule reads of one shard's exit tables (``confidence0`` and ``gates`` as in
    :class:`frameexit.sweep.ExitTables`, ``top2``: :func:`top2_gaps`): a few numbers per video, so that every
    shard's can be kept until the deviation of the whole cache is known, where its full tables (every class at
    every step) would not.
    """

    videos: list[str]
    confidence0: np.ndarray
    gates: np.ndarray
    top2: np.ndarray


def risk_tables(tables: ExitTables) -> RiskTables:
    """The :class:`RiskTables` of a shard's exit tables (copies: they keep none of the tables alive)."""
    return RiskTables(
        list(tables.videos), np.array(tables.confidence0), np.array(tables.gates), top2_gaps(tables.probs)
    )


def risk_grid(
    tables: RiskTables,
    margins: Margins,
    first: Sequence[float],
    gate: Sequence[float],
    named: Sequence[tuple[int, int]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Videos at risk at every setting of ``gate x first`` (see the module docstring).

    Returns ``counts`` of shape (n_gate, n_first), int64: videos at risk per setting; and
    ``masks`` of shape (len(named), n_videos), bool: which videos, at the ``(gate index, first index)``
    settings of ``named``. Memory: ``n_first x n_videos`` booleans at a time.
    """
    n, steps = tables.top2.shape
    counts = np.zeros((len(gate), len(first)), dtype=np.int64)
    masks = np.zeros((len(named), n), dtype=bool)
    if margins.zero or n == 0:
        return counts, masks
    near_top2 = tables.top2 <= margins.top2  # (n, T)
    confidence0 = tables.confidence0.astype(np.float32)
    first32 = np.asarray(first, dtype=np.float64)[:, None]
    exits0 = first_exit_mask(confidence0, first)  # (n_first, n)
    near0 = _near(confidence0[None, :], first32, margins.first)  # (n_first, n)
    gate_steps = gate_exit_steps(tables.gates, gate)  # (n_gate, n)
    step = np.arange(1, steps)[None, :]  # gate column t - 1 is step t; the last step exits whatever its gate
    for g, gt in enumerate(gate):
        exit_step = gate_steps[g]
        evaluated = (step <= exit_step[:, None]) & (step <= steps - 2)
        near_gate = (_near(tables.gates, np.asarray(gt), margins.gate) & evaluated).any(axis=1)
        gate_path = near_gate | near_top2[np.arange(n), exit_step]
        risk = near0 | np.where(exits0, near_top2[None, :, 0], gate_path[None, :])
        counts[g] = risk.sum(axis=1)
        for k, (gi, fi) in enumerate(named):
            if gi == g:
                masks[k] = risk[fi]
    return counts, masks


@dataclass(frozen=True)
class Risk:
    """Videos whose replayed decision may differ from sequential inference's, for one checkpoint's head.

    ``counts`` (n_gate, n_first) int64: videos at risk at each setting of the computed grid; ``masks`` (n_named,
    n_videos) bool: which videos (of ``videos``, sorted) at each named setting. ``margins`` and ``counts`` are
    ``None`` when the deviation is unknown.
    """

    deviation: HeadDeviation
    margins: Margins | None
    counts: np.ndarray | None
    videos: list[str]
    masks: np.ndarray

    def at_risk(self, k: int) -> list[str] | None:
        """The videos at risk at named setting ``k``, sorted; ``None`` when unknown."""
        if self.counts is None:
            return None
        return [v for v, flag in zip(self.videos, self.masks[k], strict=True) if flag]
