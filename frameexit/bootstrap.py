"""Bootstrap over videos: how much mAP and top-1 could move on another draw of the same number of videos.

A resample draws ``n`` videos with replacement; it is held as integer weights, ``weights[b, v]`` copies of
video ``v`` in resample ``b``, so that each metric of every resample comes from one pass over the
original rows. Labels and predictions of a video travel together (one weight per video).

The AP of a resample is computed exactly, as :func:`frameexit.metrics.average_precision` of the expanded
set (``w_v`` copies of each row, in key order) would give it, without sorting again: a class's scores are
sorted once, and a positive video ranked after ``R`` copies, ``P`` of them positive, adds
``sum_{i=1..w} (P + i) / (R + i)`` for its ``w`` copies. ``R`` for every positive and resample comes from one
exact int8 matrix product per setting (:class:`_ResampledAP`); :func:`resampled_metrics` takes several
settings (each a different exit step per video) that share the labels and the resamples.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .metrics import mean_ap

#: Resamples and interval level when the job does not say otherwise.
DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


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

    One setting of :func:`resampled_metrics`' kernel (same working memory bound).
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=bool)
    weights = np.asarray(weights)
    if scores.shape != labels.shape or scores.ndim != 2 or weights.ndim != 2 or weights.shape[1:] != scores.shape[:1]:
        raise ValueError(
            f"scores {scores.shape}, labels {labels.shape} and weights {weights.shape} do not match: "
            "need (n_videos, n_classes) twice and (resamples, n_videos)"
        )
    return _ResampledAP(labels, weights).per_class(scores)


def resampled_metrics(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    hits: npt.ArrayLike,
    labelled: npt.ArrayLike,
    weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """mAP and top-1 of every resample at each of several settings that share labels and resamples.

    Parameters
    ----------
    scores : array-like of shape (n_settings, n_videos, n_classes), float
        Each setting's probabilities at each video's exit; rows in key order (ties rank by row).
    labels : array-like of shape (n_videos, n_classes), bool
        Multi-hot ground truth, the same for every setting.
    hits : array-like of shape (n_settings, n_videos), bool
        The setting's prediction of the video is one of its labels.
    labelled : array-like of shape (n_videos,), bool
        The video has a label (top-1's denominator).
    weights : ndarray of shape (resamples, n_videos), int
        From :func:`resample_weights`; the same resamples for every setting (a paired bootstrap).

    Returns
    -------
    (map, top1): two float64 arrays of shape (n_settings, resamples), fractions in [0, 1]. ``map`` is
    :func:`frameexit.metrics.mean_ap` of the resample's per-class AP (classes with a positive in the resample),
    each AP exactly :func:`frameexit.metrics.average_precision` of the expanded set, as
    :func:`resampled_average_precision` gives it; ``top1`` as :func:`resampled_top1`. NaN where undefined.

    Working memory, besides the inputs: the weights twice more (int32 for gathers, int8 for the products), the
    labels transposed, four ``n_classes x resamples`` float64 arrays, one segment matrix of at most
    ``_PRODUCT_BYTES`` (64 MiB) and its int32 product (``resamples x 4`` bytes per row), about 60 bytes per
    entry of a ranked block of classes (at most ``_RANKED_ENTRIES`` = 2^21 (class, video) entries: 0.13 GB)
    and a few elementwise temporaries of ``_BLOCK_ELEMENTS`` (2^18) values. At 1,000 resamples that is about
    0.2 GB at ActivityNet scale (4,926 videos, 200 classes) and 0.5 GB at HVU scale (31,000 videos, 3,142
    classes); the peak resident memory measured over the inputs was 0.16 and 0.44 GB (``bench/bootstrap.py``).
    Time: one int8 product of ``resamples x n_videos x positives`` multiply-adds per setting dominates, plus
    one sort of every class's scores.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=bool)
    hits = np.asarray(hits, dtype=bool)
    labelled = np.asarray(labelled, dtype=bool)
    weights = np.asarray(weights)
    if (
        scores.ndim != 3
        or labels.shape != scores.shape[1:]
        or hits.shape != scores.shape[:2]
        or labelled.shape != scores.shape[1:2]
        or weights.ndim != 2
        or weights.shape[1:] != scores.shape[1:2]
    ):
        raise ValueError(
            f"scores {scores.shape}, labels {labels.shape}, hits {hits.shape}, labelled {labelled.shape} and "
            f"weights {weights.shape} do not match: need (n_settings, n_videos, n_classes), (n_videos, n_classes), "
            "(n_settings, n_videos), (n_videos,) and (resamples, n_videos)"
        )
    kernel = _ResampledAP(labels, weights)
    maps = np.full((len(scores), len(weights)), np.nan)
    for setting, setting_scores in enumerate(scores):
        maps[setting] = mean_ap(kernel.per_class(setting_scores))
    return maps, kernel.top1(hits, labelled)


#: Working-memory bounds of :class:`_ResampledAP` (results do not depend on them): the 0/1 operand of one
#: matrix product (positives x n_videos, int8), the (class, video) entries ranked at once, and the
#: (positive, resample) elements of one elementwise pass (2^18: fastest on the project's VM, 2^16 to 2^19
#: within 15 %).
_PRODUCT_BYTES = 64 * 2**20
_RANKED_ENTRIES = 2**21
_BLOCK_ELEMENTS = 2**18
#: Largest table of partial harmonic sums (entries); beyond it :func:`_copies_precision` loops.
_TABLE_ENTRIES = 2**22


class _ResampledAP:
    """Per-class AP of every resample, for settings sharing labels and resamples.

    A positive video ranked after ``R`` copies of its class's ranking, ``P`` of them positive, adds
    ``sum_{i=1..w} (P + i) / (R + i)`` for its ``w`` copies (:func:`_copies_precision`). ``R`` sums weights over
    the videos ranked before the positive. A class's positives cut its ranking into segments (segment 0: the
    videos before its first positive; segment ``k``: its ``k``-th positive and the videos after it, up to the
    next positive); the videos before positive ``k`` (from 0) are segments ``0..k``. Each video lies in one
    segment of each class, so one int8 matrix product of the 0/1 segment matrix (a row per positive) with the
    weights gives the copies in every segment (exact integers, and the cheapest product numpy or torch offer:
    a comparison matrix "ranked before" would have as many rows and many more ones to build), and a running
    sum over the class's segments gives ``R``; ``P`` is a running sum of the positives' own weights.

    Rows are laid out by :class:`_Layout`: classes of about as many positives side by side in slabs, the
    ``k``-th positive of each class of a slab in one slab row, so that running sums over positives and sums
    over a class add whole slab rows of ``classes x resamples`` contiguous values (numpy's cumulative sums
    and segmented reductions along a matrix's first axis go one element at a time).
    """

    def __init__(self, labels: np.ndarray, weights: np.ndarray):
        if weights.size and weights.min() < 0:
            raise ValueError("resample weights must be counts (>= 0)")
        self.n_videos, self.n_classes = labels.shape
        self.resamples = len(weights)
        total = int(weights.sum(axis=1, dtype=np.int64).max(initial=0))
        # copies are summed in int32 when every resample's total fits, else in int64
        count = np.int32 if total < 2**31 else np.int64
        # a row per video for gathers, and a row of zeros for the slabs' padding
        self.weights_t = np.zeros((self.n_videos + 1, self.resamples), dtype=count)
        self.weights_t[:-1] = weights.T
        self.product = _count_product(weights, total)
        self.labels_t = np.ascontiguousarray(labels.T)
        positives = self.labels_t.sum(axis=1)
        # copies of each class's positives in each resample (AP's denominator), (n_classes, resamples)
        self.copies = self._products(self.labels_t).astype(np.float64)
        self.table = _harmonic_table(total, int(weights.max(initial=0)))
        # classes with a positive, most positives first, in blocks of at most _RANKED_ENTRIES (class, video)
        classes = np.argsort(-positives, kind="stable")[: np.count_nonzero(positives)]
        per_block = max(_RANKED_ENTRIES // max(self.n_videos, 1), 1)
        self.layouts = [
            _Layout(classes[i : i + per_block], positives, self.resamples, self.n_videos)
            for i in range(0, len(classes), per_block)
        ]
        self._segments = np.empty(0, dtype=np.int8)  # the segment matrix's memory, reused

    def per_class(self, scores: np.ndarray) -> np.ndarray:
        """AP of every class in every resample, (resamples, n_classes) float64, NaN without a positive."""
        sums = np.zeros((self.n_classes, self.resamples))
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)  # integers and booleans: negation must not wrap around
        for layout in self.layouts:
            self._add_block(scores, layout, sums)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.ascontiguousarray(np.where(self.copies > 0, sums / self.copies, np.nan).T)

    def top1(self, hits: np.ndarray, labelled: np.ndarray) -> np.ndarray:
        """:func:`resampled_top1` of every setting of ``hits`` (n_settings, n_videos): (n_settings, resamples)."""
        counts = self._products(np.concatenate([labelled[None], hits & labelled])).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts[:1] > 0, counts[1:] / counts[:1], np.nan)

    def _products(self, rows: np.ndarray) -> np.ndarray:
        """Copies of the videos of each 0/1 row of ``rows`` (k, n_videos) in each resample: (k, resamples)."""
        step = max(_PRODUCT_BYTES // max(self.n_videos, 1), 1)
        parts = [self.product(rows[i : i + step].astype(np.int8)) for i in range(0, len(rows), step)]
        return np.concatenate(parts) if parts else np.zeros((0, self.resamples), dtype=np.int32)

    def _add_block(self, scores: np.ndarray, layout: _Layout, sums: np.ndarray) -> None:
        """Add the precision sums of the positives of ``layout``'s classes to ``sums``."""
        n = self.n_videos
        order, ranked_labels = _ranking(scores[:, layout.classes].T, self.labels_t[layout.classes])
        videos = np.full(layout.rows, n)  # the video of each row (n: padding, a row of zero weights)
        videos[layout.positive_rows] = order[ranked_labels]
        # the row of each (class, video) entry's segment (the class's positives ranked at or before the
        # video), looked up: the segment after the class's last positive has none (layout.rows)
        segment = np.cumsum(ranked_labels, axis=1, dtype=np.int32)
        segment += layout.segment_offsets[:, None]
        row = layout.segment_rows.take(segment)
        carry = None
        for first, last, pieces in layout.chunks:
            # the chunk's segment matrix: a row per positive (or padding), a last row for the other entries
            height = last - first
            if self._segments.size < (height + 1) * n:
                self._segments = np.empty((height + 1) * n, dtype=np.int8)
            segments = self._segments[: (height + 1) * n].reshape(height + 1, n)
            segments.fill(0)
            if height == layout.rows:
                rows = row
            else:
                rows = row - first
                rows[(rows < 0) | (rows >= height)] = height
            # int32 indices: (height + 1) * n_videos is at most _PRODUCT_BYTES + n_videos
            flat = np.multiply(rows, n, dtype=np.int32)
            flat += order
            segments.reshape(-1)[flat] = 1
            copies = self.product(segments[:-1])
            for classes, top, depth, continued in pieces:
                shape = (depth, len(classes), self.resamples)
                span = slice(top, top + depth * len(classes))
                before = copies[span.start - first : span.stop - first].reshape(shape)
                weights = self.weights_t.take(videos[span], axis=0).reshape(shape)
                carry = self._add_piece(before, weights, carry if continued else None, classes, sums)

    def _add_piece(
        self,
        before: np.ndarray,
        weights: np.ndarray,
        carry: tuple[np.ndarray, np.ndarray] | None,
        classes: np.ndarray,
        sums: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add the precision sums of the slab rows ``before`` and ``weights`` (positives, classes, resamples)
        to ``sums[classes]``.

        ``before``: copies in each positive's segment (overwritten); ``weights``: each positive's copies;
        ``carry``: the copies before, and the positive copies up to and including, the slab's previous
        positive, when the piece continues a slab. Returns the carry for the next piece of the slab.
        """
        # copies of all videos ranked before each positive: its class's segments up to its own
        if carry is not None:
            before[0] += carry[0]
        for k in range(1, len(before)):
            np.add(before[k - 1], before[k], out=before[k])
        # copies of the class's positives ranked before each positive
        positive = np.empty_like(weights)
        positive[0] = 0 if carry is None else carry[1]
        for k in range(1, len(weights)):
            np.add(positive[k - 1], weights[k - 1], out=positive[k])
        carry = before[-1].copy(), positive[-1] + weights[-1]
        sums[classes] += _copies_precision(positive, before, weights, self.table).sum(axis=0)
        return carry


class _Layout:
    """Rows of the segment matrix for one block of classes (most positives first), the same for every setting.

    Slabs: consecutive classes side by side, as many as fit ``_BLOCK_ELEMENTS / resamples`` rows at the depth
    of the first (largest) class; the slab's row ``k`` holds the ``k``-th positive of each of its classes, and a
    class with fewer positives pads the slab with rows of no video. Pieces: the slab rows that one elementwise
    pass takes (a slab deeper than that is cut into several, which carry running sums over). Chunks: the
    consecutive pieces whose rows one product takes, at most ``_PRODUCT_BYTES / n_videos``.
    """

    def __init__(self, classes: np.ndarray, positives: np.ndarray, resamples: int, n_videos: int):
        self.classes = classes
        self.counts = counts = positives[classes]
        chunk = max(_PRODUCT_BYTES // max(n_videos, 1), 1)
        limit = max(min(_BLOCK_ELEMENTS // max(resamples, 1), chunk), 1)
        self.base = np.empty(len(classes), dtype=np.int64)  # row of the class's first positive
        self.stride = np.empty(len(classes), dtype=np.int64)  # rows from one of its positives to the next
        pieces, top, i = [], 0, 0
        while i < len(classes):
            depth, size = int(counts[i]), 1
            while i + size < len(classes) and depth * (size + 1) <= limit:
                size += 1
            self.base[i : i + size] = top + np.arange(size)
            self.stride[i : i + size] = size
            step = max(limit // size, 1)
            for k in range(0, depth, step):
                pieces.append((classes[i : i + size], top + k * size, min(step, depth - k), k > 0))
            top += depth * size
            i += size
        self.rows = top
        # the row of each positive, class by class and in rank order within a class
        rank = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        self.positive_rows = np.repeat(self.base, counts) + rank * np.repeat(self.stride, counts)
        # the row of each class's segments 0..count (the last, after its last positive, in no row): a table
        # from segment_offsets[class] + segment
        self.segment_offsets = (np.cumsum(counts + 1) - (counts + 1)).astype(np.int32)
        self.segment_rows = np.full(int((counts + 1).sum()), self.rows, dtype=np.int32)
        self.segment_rows[np.repeat(self.segment_offsets, counts) + rank] = self.positive_rows
        self.chunks: list[list] = []  # [first row, last row + 1, pieces]
        for piece in pieces:
            stop = piece[1] + piece[2] * len(piece[0])
            if self.chunks and stop - self.chunks[-1][0] <= chunk:
                self.chunks[-1][1] = stop
                self.chunks[-1][2].append(piece)
            else:
                self.chunks.append([piece[1], stop, [piece]])


def _ranking(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each class's videos in rank order: descending score, equal scores by video (as
    :func:`frameexit.metrics.average_precision` ranks them, NaN last), and their labels.

    ``scores`` and ``labels``: (classes, n_videos); returns the videos (int32 or int64) and the labels (bool)
    in rank order, both (classes, n_videos).
    """
    n = scores.shape[1]
    if scores.dtype in (np.float16, np.float32) and n < 2**30 and not np.isnan(scores).any():
        # one int64 key per entry: the score, negated and mapped to an int32 of the same order (the sign bit
        # flips the others), then the video and its label; distinct keys, so numpy's default sort (SIMD,
        # several times its stable sort, and far faster than argsort) gives the rank order, labels included
        bits = np.subtract(np.float32(0), scores, dtype=np.float32, order="C").view(np.int32)  # -0.0 ties 0.0
        key = (bits >> 31) & 0x7FFFFFFF
        key ^= bits
        key = key.astype(np.int64)
        key <<= 32
        key |= np.arange(0, 2 * n, 2, dtype=np.int64)
        key |= labels
        key.sort(axis=1)
        low = key.view(np.int32)[:, (0 if sys.byteorder == "little" else 1) :: 2]  # video and label
        return low >> 1, (low & 1).astype(bool)
    keys = np.negative(scores.astype(np.float64, copy=False))
    order = np.argsort(keys, axis=1)
    if n > 1:
        # the default sort leaves equal keys in any order: rows holding some (or NaN, sorted last) sort again
        ranked = np.take_along_axis(keys, order, axis=1)
        unsettled = (ranked[:, 1:] == ranked[:, :-1]).any(axis=1) | np.isnan(ranked[:, -1])
        for row in np.flatnonzero(unsettled):
            order[row] = np.argsort(keys[row], kind="stable")
    return order, np.take_along_axis(labels, order, axis=1)


def _harmonic_table(total: int, most: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Partial harmonic sums ``sum_{i=1..w} 1 / (R + i)`` and ``sum_{i=1..w} i / (R + i)`` for ``R`` in
    ``0..total`` and ``w`` in ``0..most``: two flat float64 tables indexed by ``R * (most + 1) + w``, and
    ``most + 1``; None beyond ``_TABLE_ENTRIES`` entries.

    ``P * first + second`` is then ``sum_{i=1..w} (P + i) / (R + i)``, both sums of at most ``most`` positive
    terms: right to a few units in the last place. The closed form through harmonic numbers,
    ``w - (R - P) (H(R + w) - H(R))``, cancels twice (``H(R + w) - H(R)`` keeps about
    ``16 - log10(R H(R) / w)`` digits, and the subtraction from ``w`` loses more where precision is low): at
    ActivityNet scale (4,926 videos, 200 classes, one label each, random probabilities) its per-class AP was
    off the expanded sets' by up to 1.0e-12 (3.4e-10 relative), these tables' by 1.4e-17 (4.9e-16 relative).
    """
    if (total + 1) * (most + 1) > _TABLE_ENTRIES:
        return None
    before = np.arange(total + 1, dtype=np.float64)[:, None]
    i = np.arange(1, most + 1, dtype=np.float64)
    first, second = np.zeros((total + 1, most + 1)), np.zeros((total + 1, most + 1))
    np.cumsum(1.0 / (before + i), axis=1, out=first[:, 1:])
    np.cumsum(i / (before + i), axis=1, out=second[:, 1:])
    return first.ravel(), second.ravel(), most + 1


def _copies_precision(
    positives_before: np.ndarray,
    before: np.ndarray,
    copies: np.ndarray,
    table: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> np.ndarray:
    """``sum_{i=1..copies} (positives_before + i) / (before + i)``, elementwise, float64 (0 where copies is 0).

    Integer arguments. With ``table`` (:func:`_harmonic_table`, covering every ``before + copies``) by lookup,
    else a loop over ``i``. ``before`` may be overwritten.
    """
    if table is not None:
        first, second, width = table
        index = np.multiply(before, width, out=before)
        index += copies
        out = first.take(index)  # two flat tables: gathering pairs of a (n, 2) table is 8 times slower
        out *= positives_before
        out += second.take(index)
        return out
    out = np.zeros(before.shape)
    for i in range(1, int(copies.max(initial=0)) + 1):
        out += np.where(copies >= i, (positives_before + i) / (before + i), 0.0)
    return out


#: Resample weights (videos x resamples) from which the bootstrap imports torch for its int8 product.
TORCH_PRODUCT_SIZE = 10**7


def _count_product(weights: np.ndarray, total: int) -> Callable[[np.ndarray], np.ndarray]:
    """``m @ weights.T`` for 0/1 int8 matrices ``m`` (k, n_videos), exactly: integers of shape (k, resamples).

    torch's int8 product (int32 sums; on this project's 2-core AVX-512 VM 7 times numpy's float32 product)
    when the weights fit int8 and every resample's total int32; else numpy in float32 (exact below 2^24 copies)
    or float64 (below 2^53).
    """
    # torch where it is imported already, or where the products repay importing it (about 1 s): at ActivityNet
    # scale (4,926 videos x 1,000 resamples) numpy's product costs 0.24 s a setting against torch's 0.055 s, so the
    # 5 settings a report names cost about the same either way (a replay reading stored tables imports no torch)
    worth = "torch" in sys.modules or weights.size >= TORCH_PRODUCT_SIZE
    int8_product = _torch_int8_product() if worth else None
    if int8_product is not None and weights.size and weights.max() <= 127 and total < 2**31:
        import torch

        # a C-ordered (n_videos, resamples) copy: given the transposed view of a (resamples, 1) array (strides
        # (1, 1)), torch 2.14's _int_mm returns wrong sums
        right = torch.from_numpy(np.ascontiguousarray(weights.T, dtype=np.int8))
        return lambda m: int8_product(torch.from_numpy(m), right).numpy()
    if total >= 2**53:
        raise ValueError(f"{total} copies in a resample: too many to count exactly")
    exact = np.float32 if total < 2**24 else np.float64
    right = np.ascontiguousarray(weights.T, dtype=exact)
    count = np.int32 if total < 2**31 else np.int64
    return lambda m: (m.astype(exact) @ right).astype(count)


@functools.cache
def _torch_int8_product() -> Callable | None:
    """``torch._int_mm`` (int8 x int8 -> int32) if this torch has it on the CPU and it counts right on a small
    check, else None."""
    try:
        import torch

        left = np.array([[3, 0, 127, 1], [0, 2, 5, 9]], dtype=np.int8)
        right = np.array([[1, 0, 1], [1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=np.int8)
        got = torch._int_mm(torch.from_numpy(left), torch.from_numpy(right)).numpy()
    except (ImportError, AttributeError, RuntimeError, NotImplementedError):
        return None
    return torch._int_mm if np.array_equal(got, left.astype(np.int64) @ right) else None


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


class SettingResampler:
    """The resamples of one set of videos (``labels`` multi-hot (n_videos, n_classes), rows in key order, and
    ``weights`` from :func:`resample_weights`), applied to one setting after another: what the resamples share
    (the weights' copies, each class's positives) is computed once."""

    def __init__(self, labels: npt.ArrayLike, weights: np.ndarray):
        self.labels = np.asarray(labels, dtype=bool)
        self._kernel = _ResampledAP(self.labels, np.asarray(weights))

    def __call__(self, scores: np.ndarray) -> Resampled:
        """mAP and top-1 of every resample at a setting whose probabilities at each video's exit are ``scores``
        (n_videos, n_classes); the prediction is the top class (as :func:`resampled_metrics`)."""
        scores = np.asarray(scores)
        n = len(scores)
        hits = self.labels[np.arange(n), scores.argmax(axis=1)] if n else np.zeros(0, dtype=bool)
        top1 = self._kernel.top1(hits[None], self.labels.any(axis=1))[0]
        return Resampled(mean_ap(self._kernel.per_class(scores)), top1)


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
