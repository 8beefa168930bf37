"""Bootstrap over videos: how much mAP and top-1 could move on another draw of the same number of videos.

A resample draws ``n`` videos with replacement; it is held as integer weights, ``weights[b, v]`` copies of
video ``v`` in resample ``b``, so that each metric of every resample comes from one pass over the
original rows. Labels and predictions of a video travel together (one weight per video).

The AP of a resample is computed exactly, as :func:`frameexit.metrics.average_precision` of the expanded
set (``w_v`` copies of each row, in key order) would give it, without sorting again: a class's scores are
sorted once, and a positive video ranked after ``R`` copies, ``P`` of them positive, adds
``sum_{i=1..w} (P + i) / (R + i)`` for its ``w`` copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .metrics import mean_ap

#: Resamples and interval level when the job does not say otherwise.
DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
#: Positives per matrix product in :func:`resampled_average_precision` (bounds its working memory:
#: ``n_videos x chunk`` float32 for the ranking and ``resamples x chunk`` float64 for the sums).
_POSITIVES_PER_PRODUCT = 2048


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: ``resamples`` (0: no intervals), the percentile interval's ``level`` in (0, 1),
    and the ``seed`` of :func:`resample_weights`."""

    resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    seed: int = 0


def resample_weights(n_videos: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Copies of each video in each resample: shape (resamples, n_videos), int32, each row summing to n_videos.

    Drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same resamples.
    """
    if n_videos < 0 or resamples < 1:
        raise ValueError(f"need n_videos >= 0 and resamples >= 1, got {n_videos} and {resamples}")
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, max(n_videos, 1), size=(resamples, n_videos), dtype=np.int64)
    drawn += (np.arange(resamples, dtype=np.int64) * n_videos)[:, None]
    counts = np.bincount(drawn.ravel(), minlength=resamples * n_videos)
    return counts.reshape(resamples, n_videos).astype(np.int32)


def resampled_top1(hits: npt.ArrayLike, labelled: npt.ArrayLike, weights: np.ndarray) -> np.ndarray:
    """Top-1 of every resample: shape (resamples,), float64; NaN for a resample without a labelled video.

    ``hits[v]``: the prediction of video v is one of its labels; ``labelled[v]``: it has a label (the
    denominator, as :func:`frameexit.metrics.top1_accuracy`).
    """
    labelled = np.asarray(labelled, dtype=bool)
    hits = np.asarray(hits, dtype=bool) & labelled
    w = np.asarray(weights, dtype=np.int64)
    total = w @ labelled.astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w @ hits.astype(np.int64)) / total, np.nan)


def resampled_average_precision(scores: npt.ArrayLike, labels: npt.ArrayLike, weights: np.ndarray) -> np.ndarray:
    """Per-class AP of every resample: shape (resamples, n_classes), float64; NaN where a resample holds no
    positive of the class.

    Parameters
    ----------
    scores : array-like of shape (n_videos, n_classes)
        Each video's probabilities at its exit; rows in key order (ties rank by row, as in
        :func:`frameexit.metrics.average_precision`).
    labels : array-like of shape (n_videos, n_classes)
        Multi-hot ground truth.
    weights : ndarray of shape (resamples, n_videos), int
        From :func:`resample_weights`.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=bool)
    weights = np.asarray(weights)
    if scores.shape != labels.shape or scores.ndim != 2 or weights.shape[1:] != scores.shape[:1]:
        raise ValueError(
            f"scores {scores.shape}, labels {labels.shape} and weights {weights.shape} do not match: "
            "need (n_videos, n_classes) twice and (resamples, n_videos)"
        )
    n, n_classes = scores.shape
    resamples = len(weights)
    ap = np.full((resamples, n_classes), np.nan)
    if n == 0:
        return ap
    # rank[v, c]: place of video v in class c's order (descending score, ties by row), sorted once
    order = np.argsort(-scores, axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[:, None], axis=0)
    pos_class, pos_video = np.nonzero(labels.T)
    if len(pos_class) == 0:
        return ap
    # positives grouped by class, in the class's ranking
    by_rank = np.lexsort((rank[pos_video, pos_class], pos_class))
    pos_class, pos_video = pos_class[by_rank], pos_video[by_rank]
    starts = np.flatnonzero(np.r_[True, pos_class[1:] != pos_class[:-1]])
    wp = weights[:, pos_video].astype(np.float64)  # copies of each positive, (resamples, n_positives)
    # copies of the class's positives ranked before each positive: a running sum within its class
    running = np.cumsum(wp, axis=1)
    positives_before = (
        running - wp - np.repeat((running - wp)[:, starts], np.diff(np.r_[starts, len(pos_class)]), axis=1)
    )
    # copies of all videos ranked before each positive: integer counts below 2^24 are exact in float32,
    # whose matrix products run at the machine's GEMM rate
    w32 = weights.astype(np.float32)
    contribution = np.empty((resamples, len(pos_class)))
    for start in range(0, len(pos_class), _POSITIVES_PER_PRODUCT):
        part = slice(start, start + _POSITIVES_PER_PRODUCT)
        c, v = pos_class[part], pos_video[part]
        before = (rank[:, c] < rank[v, c][None, :]).astype(np.float32)  # (n_videos, chunk)
        contribution[:, part] = _copies_precision(
            positives_before[:, part], (w32 @ before).astype(np.float64), wp[:, part]
        )
    classes = pos_class[starts]
    n_pos = np.add.reduceat(wp, starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap[:, classes] = np.where(n_pos > 0, np.add.reduceat(contribution, starts, axis=1) / n_pos, np.nan)
    return ap


def _copies_precision(positives_before: np.ndarray, before: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """``sum_{i=1..copies} (positives_before + i) / (before + i)``, elementwise (0 where copies is 0)."""
    out = np.zeros_like(before)
    for i in range(1, int(copies.max(initial=0)) + 1):
        out += np.where(copies >= i, (positives_before + i) / (before + i), 0.0)
    return out


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval of one metric: fractions in [0, 1] (NaN when undefined)."""

    low: float
    high: float
    level: float
    resamples: int


def percentile_interval(values: npt.ArrayLike, level: float = DEFAULT_LEVEL) -> Interval:
    """The central ``level`` percentile interval of a metric's resampled values (NaN values left out)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"the interval level must be in (0, 1), got {level!r}")
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    if not len(finite):
        return Interval(float("nan"), float("nan"), level, len(values))
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return Interval(float(low), float(high), level, len(values))


def resampled_map(scores: npt.ArrayLike, labels: npt.ArrayLike, weights: np.ndarray) -> np.ndarray:
    """mAP of every resample (:func:`frameexit.metrics.mean_ap` of :func:`resampled_average_precision`)."""
    return mean_ap(resampled_average_precision(scores, labels, weights))


@dataclass(frozen=True)
class Resampled:
    """One setting's metric in every resample: ``map`` and ``top1``, shape (resamples,) float64."""

    map: np.ndarray
    top1: np.ndarray

    def intervals(self, level: float) -> tuple[Interval, Interval]:
        """The percentile intervals of mAP and top-1 at ``level``."""
        return percentile_interval(self.map, level), percentile_interval(self.top1, level)


def resample_setting(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> Resampled:
    """mAP and top-1 of every resample of one setting: ``scores`` (n_videos, n_classes), each video's
    probabilities at its exit, ``labels`` multi-hot, rows in key order; the prediction is the top class."""
    labels = np.asarray(labels, dtype=bool)
    hits = labels[np.arange(len(scores)), np.asarray(scores).argmax(axis=1)] if len(scores) else np.zeros(0, bool)
    return Resampled(resampled_map(scores, labels, weights), resampled_top1(hits, labels.any(axis=1), weights))


def paired_difference(values: npt.ArrayLike, baseline: npt.ArrayLike, level: float = DEFAULT_LEVEL) -> Interval:
    """Percentile interval of ``values - baseline``, a metric of two runs on the same resamples (the same
    :func:`resample_weights` applied to the videos both evaluated, in the same order): a paired bootstrap."""
    values, baseline = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if values.shape != baseline.shape:
        raise ValueError(f"a paired difference needs the same resamples, got {values.shape} and {baseline.shape}")
    return percentile_interval(values - baseline, level)


def common_videos(keys: list[str], baseline_keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``keys`` and of ``baseline_keys`` holding the videos both list, in key order (the pairing)."""
    both = sorted(set(keys) & set(baseline_keys))
    at, at_baseline = {k: i for i, k in enumerate(keys)}, {k: i for i, k in enumerate(baseline_keys)}
    return np.array([at[k] for k in both], dtype=np.int64), np.array([at_baseline[k] for k in both], dtype=np.int64)
