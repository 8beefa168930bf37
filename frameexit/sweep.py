"""Replaying the exit rule over precomputed exit tables, for many thresholds at once.

Everything any threshold needs is in the exit tables: the probabilities of all
classifiers and all gate outputs of every video (:meth:`FrameExit.exit_tables`).
For a grid ``gate_thresholds x first_thresholds`` this module computes every
video's exit step and the metrics of every setting without another pass of the
network, vectorised over videos and settings.

Average precision is the expensive metric: sorting every class's scores for
every setting costs ``n log n x classes x settings``. Here it is computed
exactly (same ranking and tie rule as :func:`frameexit.metrics.average_precision`)
from counts, with work near-linear in the number of positive labels:

- For a fixed gate threshold, raising ``first_threshold`` only moves a prefix of
  the videos sorted by step-0 confidence from their gate exit to step 0. The
  distinct prefixes of the grid cut the videos into segments, and a setting
  selects step 0 for the videos of its first segments and the gate exit step
  for the others.
- A video can only ever be scored at step 0 or at one of its gate exit steps
  of the grid (its *candidates*). Per class, all candidates are sorted once by
  score (descending, ties by video), and the candidates of positive videos cut
  that order into buckets.
- A positive's rank at a setting is one plus the number of selected candidates
  in the buckets before its own, and the number of positives ranked at or before
  it the same count over positive candidates. Counting per bucket and segment,
  then summing over buckets and segments, gives both for every first threshold
  at once, in ``O(buckets x segments)`` per class and gate threshold, where a
  class has about (1 + distinct gate exit steps) buckets per positive video.

Classes are independent: the per-class AP of a class does not depend on which
other classes are computed with it, so the work can be split by class blocks
(:func:`class_block`, :func:`class_block_ap`, :func:`combine_sweep`) with the
same numbers, bit for bit, as one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import exit_rule
from .exit_rule import check_thresholds, first_exit_mask, gate_exit_steps
from .metrics import mean_ap

#: Bytes :func:`average_precision_block` may hold at once for its working arrays: it works through the
#: classes in chunks (and, if one class alone needs more, through the first thresholds in slices) to stay
#: within this, unless a single class and a single first threshold already need more (about
#: :data:`AP_BYTES_PER_CANDIDATE` x ``n_videos x n_steps``).
AP_MAX_BYTES = 256 * 2**20
#: Peak bytes of a sweep (:func:`combine_sweep`) per setting and video (exit steps in int64, their shifted copy, the
#: top-1 hits and one histogram bin at a time), measured with tracemalloc at about 17, rounded up.
BYTES_PER_SETTING_VIDEO = 24
#: Working bytes of the AP per candidate and class of a chunk (sort keys, buckets, their scatter), per video
#: and class (histogram weights and indices), per cell of the bucket x segment tables (packed counts, their
#: histogram) and per cell of the positive x segment arrays (counts, precision, sum indices); fitted to
#: tracemalloc's peaks with a margin of about 1.4 (tested through :func:`sweep_block_bytes`).
AP_BYTES_PER_CANDIDATE = 36
AP_BYTES_PER_VIDEO = 32
AP_BYTES_PER_TABLE_CELL = 40
AP_BYTES_PER_PAIR_CELL = 48

_U64 = np.uint64


@dataclass(frozen=True)
class ExitTables:
    """What replay needs of every video (keys sorted), for one checkpoint head and one policy order.

    ``labels`` (n_videos, num_class) bool: multi-hot; ``probs`` (n_videos, n_steps, num_class) float32: softmax
    of classifier t on ``z_t``, step t reading sampled frame ``order[t]``; ``gates`` (n_videos, n_steps - 1)
    float32: ``s_t`` for steps 1..T-1; ``deviation``: how far these outputs may be from those on per-step
    features (a shard's probe, :class:`frameexit.exactness.HeadDeviation`), ``None`` when not known.
    """

    videos: list[str]
    labels: np.ndarray
    probs: np.ndarray
    gates: np.ndarray
    deviation: Any = None

    @property
    def confidence0(self) -> np.ndarray:
        """Top probability at step 0, shape (n_videos,), float32."""
        return self.probs[:, 0].max(axis=1)


def _key_order(parts: Sequence[ExitTables | VideoExits]) -> tuple[list[str], np.ndarray]:
    """Keys of all parts sorted, and the row of the concatenated parts each sorted row comes from."""
    if not parts:
        raise ValueError("no exit tables to concatenate")
    videos = [v for part in parts for v in part.videos]
    order = np.argsort(np.asarray(videos, dtype=object), kind="stable")
    return [videos[i] for i in order], order


def _gather_rows(parts: Sequence, order: np.ndarray, name: str, index=None) -> np.ndarray:
    """Rows ``order`` of the parts' arrays ``name`` stacked (``index`` applied to every part first), one copy."""
    arrays = [getattr(p, name) if index is None else getattr(p, name)[index] for p in parts]
    if len(arrays) == 1:
        only = arrays[0]
        return only if np.array_equal(order, np.arange(len(order))) else only[order]
    # fill a preallocated array part by part: the concatenation and its reordered copy never coexist
    destination = np.empty(len(order), dtype=np.int64)
    destination[order] = np.arange(len(order))
    out = np.empty((len(order), *arrays[0].shape[1:]), dtype=arrays[0].dtype)
    start = 0
    for a in arrays:
        out[destination[start : start + len(a)]] = a
        start += len(a)
    return out


# ------------------------------------------------------------------------------------ splitting by classes


@dataclass(frozen=True)
class VideoExits:
    """The part of the exit tables that does not grow with the classes: all metrics but AP need only this.

    Rows sorted by key, as in :class:`ExitTables`: ``confidence0``, top step-0 probability over *all* classes
    (decides the step-0 exit); ``hits`` (n_videos, n_steps) bool, whether step t's top class (over all classes)
    is one of the video's labels; ``labelled``, videos with a label (the top-1 denominator). ``positives``
    (num_class,) int64: positive videos per class (mAP averages the classes with at least one). ``top_probs``
    (n_videos, n_steps) float32: each step's top probability (the confidence policy's input).
    """

    videos: list[str]
    confidence0: np.ndarray
    gates: np.ndarray
    hits: np.ndarray
    labelled: np.ndarray
    positives: np.ndarray
    top_probs: np.ndarray


def video_exits(tables: ExitTables) -> VideoExits:
    """The class-independent part of ``tables`` (computed from all its classes; a shard's tables will do)."""
    n = len(tables.videos)
    predictions = tables.probs.argmax(axis=2)  # (n, T)
    top_probs = tables.probs.max(axis=2)
    return VideoExits(
        videos=list(tables.videos),
        confidence0=top_probs[:, 0].copy(),  # as ExitTables.confidence0, without a second pass over the classes
        gates=tables.gates,
        hits=tables.labels[np.arange(n)[:, None], predictions],
        labelled=tables.labels.any(axis=1),
        positives=tables.labels.sum(axis=0, dtype=np.int64),
        top_probs=top_probs,
    )


def concat_video_exits(parts: Sequence[VideoExits]) -> VideoExits:
    """:class:`VideoExits` of several shards as one, rows sorted by video key (as :func:`concat_tables`)."""
    videos, order = _key_order(parts)
    return VideoExits(
        videos=videos,
        confidence0=_gather_rows(parts, order, "confidence0"),
        gates=_gather_rows(parts, order, "gates"),
        hits=_gather_rows(parts, order, "hits"),
        labelled=_gather_rows(parts, order, "labelled"),
        positives=np.sum([p.positives for p in parts], axis=0, dtype=np.int64),
        top_probs=_gather_rows(parts, order, "top_probs"),
    )


@dataclass(frozen=True)
class ClassBlock:
    """``probs`` (n_videos, n_steps, n_block) float32 and ``labels`` (n_videos, n_block) bool of the classes
    ``classes`` (int64 indices in the class list) for every video, rows sorted by video key."""

    videos: list[str]
    classes: np.ndarray
    probs: np.ndarray
    labels: np.ndarray


def class_block(parts: Sequence[ExitTables], classes: slice | npt.ArrayLike) -> ClassBlock:
    """The columns ``classes`` of the shards' tables, rows sorted by key as :func:`concat_tables` sorts them.

    Memory: ``n_videos x n_steps x n_block`` float32, the only copy made (none for a single
    part already in key order and a slice of classes).
    """
    videos, order = _key_order(parts)
    num_class = parts[0].probs.shape[2]
    index = np.arange(num_class)[classes]
    columns = classes if isinstance(classes, slice) else index  # a slice takes views, not copies
    probs = _gather_rows(parts, order, "probs", np.s_[:, :, columns])
    labels = _gather_rows(parts, order, "labels", np.s_[:, columns])
    return ClassBlock(videos=videos, classes=index.astype(np.int64), probs=probs, labels=labels)


# ------------------------------------------------------------------------------------ average precision


def _descending_codes(scores: np.ndarray) -> np.ndarray:
    """uint32 codes of float32 scores whose ascending order is the scores' descending order.

    Equal scores get equal codes (-0.0 and 0.0 included); NaN gets the largest code, as
    ``np.argsort(-scores)`` puts NaN last.
    """
    s = np.asarray(scores, dtype=np.float32) + np.float32(0)  # -0.0 + 0.0 is 0.0
    bits = s.view(np.uint32)
    # IEEE floats order as sign-magnitude integers: flip negatives entirely, set the sign bit of the others
    ascending = np.where(bits >> np.uint32(31) == 1, ~bits, bits | np.uint32(0x80000000))
    codes = np.invert(ascending, out=ascending)
    codes[np.isnan(s)] = np.uint32(0xFFFFFFFF)
    return codes


@dataclass(frozen=True)
class _Segments:
    """The videos cut by the step-0 prefixes of some first thresholds.

    ``position[v]``: place of video v in the step-0 confidence order (descending, ties by video);
    ``segment[v]``: segment of video v (segments are runs of that order);
    ``sigma[f]``: number of leading segments that exit at step 0 at first threshold f.
    """

    position: np.ndarray
    segment: np.ndarray
    sigma: np.ndarray
    count: int


def _segments(confidence0: np.ndarray, first_mask: np.ndarray) -> _Segments:
    n = len(confidence0)
    perm = np.argsort(-np.asarray(confidence0, dtype=np.float32), kind="stable")
    position = np.empty(n, dtype=np.int64)
    position[perm] = np.arange(n)
    prefix = first_mask.sum(axis=1)
    for f in range(len(first_mask)):
        if not np.array_equal(first_mask[f], position < prefix[f]):
            raise ValueError(
                "first_mask: the step-0 exits of a first threshold are not a prefix of the confidence order"
            )
    cuts = np.unique(prefix[(prefix > 0) & (prefix < n)])
    return _Segments(
        position=position,
        segment=np.searchsorted(cuts, position, side="right"),
        sigma=np.searchsorted(np.append(cuts, n), prefix, side="right"),
        count=len(cuts) + 1,
    )


@dataclass(frozen=True)
class _Candidates:
    """The (video, step) scores some setting of the grid can select, with the exit-step changes between gate rows.

    ``ids``: sorted flat indices ``video * n_steps + step`` (step 0 and every gate exit step of every video);
    ``step0[v]`` / ``gate[g, v]``: position in ``ids`` of video v's step-0 / gate-exit candidate at gate row g;
    ``order``: the gate rows in the order they are processed (few exit steps change from one to the next).
    """

    ids: np.ndarray
    video: np.ndarray
    step0: np.ndarray
    gate: np.ndarray
    per_video: np.ndarray
    order: np.ndarray


def _candidates(gate_steps: np.ndarray, n_steps: int) -> _Candidates:
    n_gate, n = gate_steps.shape
    reachable = np.zeros((n, n_steps), dtype=bool)
    reachable[:, 0] = True
    for g in range(n_gate):
        reachable[np.arange(n), gate_steps[g]] = True
    ids = np.flatnonzero(reachable.ravel())
    video = np.arange(n, dtype=np.int64) * n_steps
    return _Candidates(
        ids=ids,
        video=ids // n_steps,
        step0=np.searchsorted(ids, video),
        gate=np.searchsorted(ids, video[None, :] + gate_steps),
        per_video=reachable.sum(axis=1),
        # rows of a sorted threshold list have monotone exit steps: process them in that order
        order=np.argsort(-gate_steps.sum(axis=1), kind="stable"),
    )


def _chunk_bytes(
    n_videos: int, n_candidates: int, n_classes: int, table_rows: int, pairs: int, width: int, n_gate: int
) -> int:
    """Working bytes of :func:`_average_precision_chunk` (see the ``AP_BYTES_*`` constants)."""
    return (
        AP_BYTES_PER_CANDIDATE * n_candidates * n_classes
        + AP_BYTES_PER_VIDEO * n_videos * n_classes
        + AP_BYTES_PER_TABLE_CELL * table_rows * width
        + AP_BYTES_PER_PAIR_CELL * pairs * width
        + 8 * n_gate * width * n_classes  # the AP of every gate threshold and prefix
    )


def average_precision_block(
    probs: np.ndarray,
    labels: np.ndarray,
    confidence0: np.ndarray,
    gate_steps: np.ndarray,
    first_mask: np.ndarray,
    *,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Per-class AP of some classes at every setting: shape (n_gate, n_first, n_block), float64.

    Equal to :func:`frameexit.metrics.average_precision` of each setting's scores
    (higher first, ties by row, i.e. video key) up to floating-point summation
    order; NaN for a class without positives. The AP of a class depends only on
    its own column: any split of the classes into blocks, and any ``max_bytes``
    (working memory, default :data:`AP_MAX_BYTES`), gives the same numbers bit for bit.

    ``probs`` (n_videos, n_steps, n_block) float32 and ``labels`` (n_videos, n_block): the block's classes, rows
    in video-key order; ``confidence0``: top step-0 probability over *all* classes (``first_mask`` came from it);
    ``gate_steps`` (n_gate, n_videos): from :func:`gate_exit_steps`; ``first_mask`` (n_first, n_videos): from
    :func:`first_exit_mask`, every row a prefix of the step-0 confidence order.

    Work: per class, one sort of its candidate scores (``n_videos x (1 + distinct gate
    exit steps)``) and, per gate threshold, ``O(candidates of its positives x segments)``
    where segments number at most ``n_first + 1``; nothing grows with the square of
    the positives.
    """
    probs = np.asarray(probs)
    if probs.dtype != np.float32:
        # the codes below are those of float32; rounding other scores to float32 could create ties
        raise ValueError(f"probs must be float32 (as exit tables hold them), got {probs.dtype}")
    labels = np.asarray(labels, dtype=bool)
    gate_steps = np.asarray(gate_steps, dtype=np.int64)
    first_mask = np.asarray(first_mask, dtype=bool)
    n, n_steps, n_block = probs.shape
    n_gate, n_first = len(gate_steps), len(first_mask)
    ap = np.full((n_gate, n_first, n_block), np.nan)
    positives = labels.sum(axis=0, dtype=np.int64)
    classes = np.flatnonzero(positives)
    if n == 0 or n_gate == 0 or n_first == 0 or len(classes) == 0:
        return ap
    budget = AP_MAX_BYTES if max_bytes is None else max_bytes
    cand = _candidates(gate_steps, n_steps)
    n_cand = len(cand.ids)
    if n_cand >= 2**31:
        raise ValueError(f"{n} videos x {n_steps} steps are too many candidates for one sort key (at most 2^31 - 1)")
    rows = labels[:, classes].T.astype(np.int64) @ cand.per_video + 1  # bucket rows per class

    def cost(members: np.ndarray, width: int) -> int:
        return _chunk_bytes(
            n, n_cand, len(members), int(rows[members].sum()), int(positives[classes[members]].sum()), width, n_gate
        )

    # first thresholds per slice: all of them unless the largest class alone would not fit
    largest = np.array([int(np.argmax(rows))])
    per_slice = n_first
    while per_slice > 1 and cost(largest, per_slice + 2) > budget:
        per_slice = (per_slice + 1) // 2
    for lo in range(0, n_first, per_slice):
        hi = min(lo + per_slice, n_first)
        segments = _segments(confidence0, first_mask[lo:hi])
        width = segments.count + 1
        start = 0
        while start < len(classes):
            stop = start + 1
            while stop < len(classes) and cost(np.arange(start, stop + 1), width) <= budget:
                stop += 1
            chunk = classes[start:stop]
            ap[:, lo:hi, chunk] = _average_precision_chunk(probs, labels[:, chunk], chunk, cand, segments)
            start = stop
    return ap


def _average_precision_chunk(
    probs: np.ndarray, labels: np.ndarray, chunk: np.ndarray, cand: _Candidates, segments: _Segments
) -> np.ndarray:
    """:func:`average_precision_block` of the classes ``chunk`` (each with a positive) for one slice of first
    thresholds: shape (n_gate, n_first_in_slice, len(chunk))."""
    n, n_steps, _ = probs.shape
    k, n_cand = len(chunk), len(cand.ids)
    n_seg, width = segments.count, segments.count + 1
    seg = segments.segment

    # one sort per class of its candidates: score code in the high 32 bits (descending score), then the
    # candidate index (it grows with the video: ties go to the earlier video), then a flag for candidates of
    # positive videos, whose running count is the bucket
    scores = probs.reshape(n * n_steps, -1)[cand.ids[:, None], chunk[None, :]].T
    keys = _descending_codes(scores).astype(np.uint64, order="C")  # (k, n_cand), rows contiguous for the sort
    del scores
    keys <<= _U64(32)
    keys |= np.arange(n_cand, dtype=np.uint64) << _U64(1)
    keys |= labels[cand.video].T
    keys.sort(axis=1)
    # the low 32-bit word of each key (little- or big-endian alike) holds the candidate index and the flag
    low = keys.view(np.uint32)[:, 0::2] if np.little_endian else keys.view(np.uint32)[:, 1::2]
    bucket = np.cumsum(low & np.uint32(1), axis=1, dtype=np.int32)
    n_rows = bucket[:, -1].astype(np.int64) + 1  # bucket 0 holds what ranks before the first positive candidate
    offset = np.concatenate([[0], np.cumsum(n_rows)[:-1]])
    m = int(n_rows.sum())
    if m * width >= 2**31:
        raise ValueError(f"a chunk of {k} classes needs a table of {m} x {width} cells: give it fewer bytes")
    bucket += offset[:, None].astype(np.int32)  # rows of all classes of the chunk in one table, class after class
    target = (low >> np.uint32(1)).astype(np.int64)
    del keys, low
    target += (np.arange(k, dtype=np.int64) * n_cand)[:, None]
    row_of = np.empty((k, n_cand), dtype=np.int32)  # table row of every candidate, per class
    row_of.ravel()[target.ravel()] = bucket.ravel()
    del target, bucket

    # Counts travel packed in one int64: selected candidates in the low 32 bits, selected candidates of
    # positive videos in the high bits (both at most n_videos < 2^31, so sums never carry between them).
    weight = labels.T.astype(np.int64)  # (k, n)
    weight <<= 32
    weight += 1
    cand_seg = seg[cand.video] * m  # histogram offset of each candidate's segment
    ks = np.arange(k)[:, None]

    def histogram(candidates: np.ndarray) -> np.ndarray:
        """Packed selected candidates per (segment, row) when video v selects candidate ``candidates[v]``."""
        index = row_of[ks, candidates[None, :]] + cand_seg[candidates][None, :]
        # float64 sums are exact below 2^53 (at most n_videos x 2^32 here)
        return np.bincount(index.ravel(), weights=weight.ravel(), minlength=n_seg * m).astype(np.int64)

    # step-0 candidates of the segments before sigma, per row (sigma = 0..n_seg: width rows)
    hist0 = histogram(cand.step0).reshape(n_seg, m)
    step0 = np.zeros((width, m), dtype=np.int64)
    for s in range(n_seg):
        np.add(step0[s], hist0[s], out=step0[s + 1])
    del hist0

    # the positives of the chunk, flat: class (in the chunk) and video, in step-0 confidence order, so that
    # at every sigma those exiting at step 0 come first; the per-class sums below then add in that order,
    # which depends neither on the chunk nor on the slice of first thresholds
    pc, pv = np.nonzero(labels.T)
    n_pos = np.bincount(pc, minlength=k)
    by_position = np.argsort(segments.position[pv], kind="stable")
    pc, pv = pc[by_position], pv[by_position]
    n_step0 = np.searchsorted(seg[pv], np.arange(width), side="left")  # positives exiting at step 0, per sigma
    # a positive's own candidate opens its row: what ranks before it is everything up to the row before
    pair_step0 = row_of[pc, cand.step0[pv]].astype(np.int64) - 1
    # what the classes before a positive's class hold in the table: each selects one candidate per video
    base = pc * n + ((np.cumsum(n_pos) - n_pos)[pc] << 32)
    sum_ids = (np.arange(width)[:, None] * k + pc[None, :]).ravel()

    n_gate = len(cand.gate)
    ap_sigma = np.empty((n_gate, width, k))
    hist_gate = np.empty(0)
    previous = None
    table = np.empty((width, m), dtype=np.int64)
    suffix = np.empty(m, dtype=np.int64)
    before = np.empty((width, len(pc)), dtype=np.int64)
    rank = np.empty_like(before)
    for g in cand.order:
        chosen = cand.gate[g]
        if previous is None:
            hist_gate = histogram(chosen)
        else:
            changed = np.flatnonzero(chosen != previous)
            if len(changed):
                old, new = previous[changed], chosen[changed]
                index = np.concatenate(
                    [
                        row_of[ks, new[None, :]] + cand_seg[new][None, :],
                        row_of[ks, old[None, :]] + cand_seg[old][None, :],
                    ],
                    axis=1,
                )
                w = weight[:, changed]
                np.add.at(hist_gate, index.ravel(), np.concatenate([w, -w], axis=1).ravel())
        previous = chosen
        # gate-exit candidates of the segments from sigma on, added to the step-0 ones, summed over rows
        table[n_seg] = step0[n_seg]
        suffix[:] = 0
        for s in range(n_seg - 1, -1, -1):
            suffix += hist_gate[s * m : (s + 1) * m]
            np.add(step0[s], suffix, out=table[s])
        np.cumsum(table, axis=1, out=table)
        pair_gate = row_of[pc, chosen[pv]].astype(np.int64) - 1
        for sigma in range(width):
            first_gate = n_step0[sigma]
            np.take(table[sigma], pair_step0[:first_gate], out=before[sigma, :first_gate])
            np.take(table[sigma], pair_gate[first_gate:], out=before[sigma, first_gate:])
        before -= base[None, :]
        np.bitwise_and(before, 0xFFFFFFFF, out=rank)
        rank += 1
        before >>= 32
        before += 1
        # per class and sigma, the positives' precision summed (bincount adds in input order)
        sums = np.bincount(sum_ids, weights=(before / rank).ravel(), minlength=width * k)
        ap_sigma[g] = sums.reshape(width, k) / n_pos[None, :]
    return ap_sigma[:, segments.sigma, :]


def policy_average_precision(
    probs: np.ndarray, labels: np.ndarray, exit_steps: np.ndarray, *, max_bytes: int | None = None
) -> np.ndarray:
    """Per-class AP at every row of ``exit_steps`` (any policy's grid form): shape (n_settings, n_block), float64.

    ``probs``: (n_videos, n_steps, n_block) float32 and ``labels`` (n_videos, n_block) of some classes, rows in
    key order. The exact AP of :func:`frameexit.sweep.average_precision_block`, with no step-0 prefix: every
    exit comes from ``exit_steps``.
    """
    n = len(probs)
    no_prefix = np.zeros((1, n), dtype=bool)
    block = average_precision_block(probs, labels, np.zeros(n, np.float32), exit_steps, no_prefix, max_bytes=max_bytes)
    return block[:, 0]


# ------------------------------------------------------------------------------------ the sweep


@dataclass(frozen=True)
class SweepMetrics:
    """Metrics of every setting, float64 arrays of shape (n_gate, n_first) unless said otherwise.

    ``map``, ``top1``: fractions in [0, 1], NaN when no class / no video has a positive label; ``mean_frames``:
    mean frames read (``exit_step + 1``); ``exit_histogram`` (n_gate, n_first, n_steps): share of videos exiting
    at each step; ``ap`` (n_gate, n_first, num_class): per-class AP, NaN for a class without positives (``map``
    is their mean over the other classes; a mean over a subset of classes, e.g. a tag category, is taken the
    same way).
    """

    map: np.ndarray
    top1: np.ndarray
    mean_frames: np.ndarray
    exit_histogram: np.ndarray
    ap: np.ndarray


def sweep_block_bytes(n_videos: int, n_first: int, n_gate: int, num_class: int, n_steps: int = 10) -> int:
    """Estimated peak memory of a sweep on ``n_gate x n_first`` settings, in bytes.

    The exit tables it reads are not counted (they exist before and after); the
    estimate is an upper bound of what tracemalloc measures (tested). The AP works
    within :data:`AP_MAX_BYTES` unless one class and one first threshold need more.
    """
    settings = n_first * n_gate
    per_setting = BYTES_PER_SETTING_VIDEO * n_videos + 16 * num_class + 16 * n_steps
    # AP: its chunk budget, or what a single class of positives on every video needs at one first threshold
    one_class = _chunk_bytes(n_videos, n_videos * n_steps, 1, n_videos * n_steps + 1, n_videos, 3, n_gate)
    # the class-independent arrays: exit steps and candidate positions per gate threshold (int64, twice),
    # step-0 masks, candidate lists (up to n_steps per video, int64, twice), top-1 hits and predictions,
    # confidence order and segments
    fixed = (16 * n_gate + 2 * n_first + 26 * n_steps + 64) * n_videos
    return settings * per_setting + max(AP_MAX_BYTES, one_class) + fixed


def _check_grid(first_thresholds: npt.ArrayLike, gate_thresholds: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    first = np.atleast_1d(np.asarray(first_thresholds, dtype=np.float64))
    gate = np.atleast_1d(np.asarray(gate_thresholds, dtype=np.float64))
    for ft in first:
        for gt in gate:
            check_thresholds(float(ft), float(gt))
    return first, gate


def class_block_ap(
    block: ClassBlock,
    exits: VideoExits,
    first_thresholds: npt.ArrayLike,
    gate_thresholds: npt.ArrayLike,
    *,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Per-class AP of a class block at every setting: shape (n_gate, n_first, n_block), float64.

    ``exits`` (all classes, same videos) decides the exit steps. The task of one class
    block of a split sweep; :func:`combine_sweep` puts the blocks together.
    """
    first, gate = _check_grid(first_thresholds, gate_thresholds)
    if block.videos != exits.videos:
        raise ValueError(
            f"the class block and the video exits hold other videos ({len(block.videos)} and {len(exits.videos)}, "
            "or in another order): build both from the same shards' tables"
        )
    return average_precision_block(
        block.probs,
        block.labels,
        exits.confidence0,
        gate_exit_steps(exits.gates, gate),
        first_exit_mask(exits.confidence0, first),
        max_bytes=max_bytes,
    )


def combine_sweep(
    exits: VideoExits,
    ap_blocks: Sequence[np.ndarray],
    first_thresholds: npt.ArrayLike,
    gate_thresholds: npt.ArrayLike,
) -> SweepMetrics:
    """All metrics of the grid from the video ``exits`` (all videos, rows sorted by key) and ``ap_blocks``, the
    :func:`class_block_ap` of consecutive class blocks that together cover classes ``0..num_class-1`` in order."""
    first, gate = _check_grid(first_thresholds, gate_thresholds)
    ap = np.concatenate(list(ap_blocks), axis=2) if len(ap_blocks) else np.empty((len(gate), len(first), 0))
    if ap.shape != (len(gate), len(first), len(exits.positives)):
        raise ValueError(
            f"per-class AP of shape {ap.shape} does not cover the grid and classes "
            f"({len(gate)}, {len(first)}, {len(exits.positives)})"
        )
    exits_grid = exit_rule.exit_steps_grid(exits.confidence0, exits.gates, first, gate)
    return _exit_metrics(exits, exits_grid, ap)


def policy_metrics(exits: VideoExits, exit_steps: np.ndarray, ap_blocks: Sequence[np.ndarray]) -> SweepMetrics:
    """All metrics of the baseline policies' settings: :class:`SweepMetrics` of shape (n_settings, 1), from the
    video ``exits``, each setting's ``exit_steps`` (n_settings, n_videos; :func:`frameexit.policies.policy_exit_steps`)
    and the :func:`policy_average_precision` of consecutive class blocks covering every class in order."""
    n_settings = len(exit_steps)
    ap = np.concatenate(list(ap_blocks), axis=1) if len(ap_blocks) else np.empty((n_settings, 0))
    if ap.shape != (n_settings, len(exits.positives)):
        raise ValueError(f"per-class AP of shape {ap.shape} does not cover ({n_settings}, {len(exits.positives)})")
    return _exit_metrics(exits, np.asarray(exit_steps, dtype=np.int64)[:, None, :], ap[:, None, :])


def _exit_metrics(exits: VideoExits, exits_grid: np.ndarray, ap: np.ndarray) -> SweepMetrics:
    """The metrics of settings whose exit steps are ``exits_grid`` (rows, columns, n_videos) and per-class AP ``ap``
    (rows, columns, num_class)."""
    n, steps = exits.hits.shape
    no_label = np.full(exits_grid.shape[:2], np.nan)
    labelled = exits.labelled
    top1 = exits.hits[np.arange(n), exits_grid][..., labelled].mean(axis=-1) if labelled.any() else no_label
    histogram = np.stack(
        [(exits_grid == t).mean(axis=-1) if n else np.zeros(exits_grid.shape[:2]) for t in range(steps)], -1
    )
    mean_frames = (exits_grid + 1).mean(axis=-1) if n else np.full(exits_grid.shape[:2], np.nan)
    return SweepMetrics(map=mean_ap(ap), top1=top1, mean_frames=mean_frames, exit_histogram=histogram, ap=ap)
