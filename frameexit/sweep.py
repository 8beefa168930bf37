"""Replaying the exit rule over precomputed exit tables, for many thresholds at once.

Everything any threshold needs is in the exit tables: the probabilities of all
classifiers and all gate outputs of every video (:meth:`FrameExit.exit_tables`).
For a grid ``gate_thresholds x first_thresholds`` this module computes every
video's exit step and the metrics of every setting without another pass of the
network, vectorised over videos and settings.

Average precision is the expensive metric: sorting every class's scores for
every setting costs ``n log n x classes x settings``. Here it is computed
exactly (same ranking and tie rule as :func:`frameexit.metrics.average_precision`)
from counts: for a fixed gate threshold, raising ``first_threshold`` only moves
a prefix of the videos sorted by step-0 confidence from their gate exit to
step 0, so for each positive video its rank at every first threshold is a sum
of comparisons against the videos' two possible scores, counted per prefix
segment.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from .exit_rule import check_thresholds, first_step_exits, gate_exits
from .head import FrameExit

#: Bytes :func:`average_precision_grid` may hold at once for comparing the positives of a chunk of classes
#: (it works through the first thresholds in slices to stay within this).
AP_MAX_BYTES = 256 * 2**20
#: Peak bytes of :func:`sweep_metrics` per setting and video (exit steps in int64, their shifted copy, the
#: top-1 hits and one histogram bin at a time), measured with tracemalloc at about 17, rounded up.
BYTES_PER_SETTING_VIDEO = 24


@dataclass(frozen=True)
class ExitTables:
    """What replay needs of every video, for one checkpoint head and one policy order.

    Attributes
    ----------
    videos : list of str of length n_videos
        Video keys, sorted.
    labels : ndarray of shape (n_videos, num_class), dtype=bool
        Multi-hot ground truth.
    probs : ndarray of shape (n_videos, n_steps, num_class), dtype=float32
        Softmax of classifier t on ``z_t``, step t reading sampled frame ``order[t]``.
    gates : ndarray of shape (n_videos, n_steps - 1), dtype=float32
        ``s_t`` for steps 1..T-1.
    """

    videos: list[str]
    labels: np.ndarray
    probs: np.ndarray
    gates: np.ndarray

    @property
    def confidence0(self) -> np.ndarray:
        """Top probability at step 0, shape (n_videos,), float32."""
        return self.probs[:, 0].max(axis=1)


@torch.inference_mode()
def exit_tables(
    model: FrameExit,
    features: np.ndarray,
    order: Sequence[int],
    *,
    videos: Sequence[str],
    labels: np.ndarray,
    chunk: int = 256,
) -> ExitTables:
    """Exit tables of cached features.

    Parameters
    ----------
    model : FrameExit
        Its head is used; the backbone, if any, is not.
    features : ndarray of shape (n_videos, n_frames, feat_dim)
        Backbone features of the sampled frames in temporal order (as cached).
    order : sequence of int
        Policy order: step t reads sampled frame ``order[t]``.
    videos, labels
        Keys (sorted) and multi-hot labels of the rows.
    chunk : int, default=256
        Videos per head evaluation (bounds memory; results do not depend on it).
    """
    order = list(order)
    probs, gates = [], []
    for start in range(0, len(features), chunk):
        x = torch.from_numpy(np.ascontiguousarray(features[start : start + chunk][:, order], dtype=np.float32))
        p, g = model.exit_tables(x)
        probs.append(p.numpy())
        gates.append(g.numpy())
    n_class, steps = model.num_class, len(order)
    return ExitTables(
        videos=list(videos),
        labels=np.asarray(labels, dtype=bool),
        probs=np.concatenate(probs) if probs else np.zeros((0, steps, n_class), np.float32),
        gates=np.concatenate(gates) if gates else np.zeros((0, steps - 1), np.float32),
    )


def concat_tables(parts: Sequence[ExitTables]) -> ExitTables:
    """Tables of several shards as one, rows sorted by video key."""
    videos = [v for part in parts for v in part.videos]
    order = np.argsort(np.asarray(videos, dtype=object), kind="stable")
    cat = (lambda name: np.concatenate([getattr(p, name) for p in parts])[order]) if parts else None
    if not parts:
        raise ValueError("no exit tables to concatenate")
    return ExitTables([videos[i] for i in order], cat("labels"), cat("probs"), cat("gates"))


def gate_exit_steps(gates: np.ndarray, gate_thresholds: npt.ArrayLike) -> np.ndarray:
    """Exit step of every video if step 0 does not exit: shape (n_gate_thresholds, n_videos), int64.

    The first step t >= 1 whose gate fires (``s_t < gate_threshold``), else the last step.
    """
    gates = np.asarray(gates, dtype=np.float32)
    n = gates.shape[0]
    out = np.empty((len(np.atleast_1d(gate_thresholds)), n), dtype=np.int64)
    for i, gt in enumerate(np.atleast_1d(gate_thresholds)):
        fires = gate_exits(gates, float(gt))
        fires[:, -1] = True  # the last step always exits, whatever its gate says
        out[i] = fires.argmax(axis=1) + 1
    return out


def first_exit_mask(confidence0: np.ndarray, first_thresholds: npt.ArrayLike) -> np.ndarray:
    """Whether each video exits at step 0: shape (n_first_thresholds, n_videos), bool."""
    return np.stack([first_step_exits(confidence0, float(ft)) for ft in np.atleast_1d(first_thresholds)])


def exit_steps_grid(tables: ExitTables, first_thresholds: npt.ArrayLike, gate_thresholds: npt.ArrayLike) -> np.ndarray:
    """Exit step of every video at every setting: shape (n_gate, n_first, n_videos), int64."""
    steps = gate_exit_steps(tables.gates, gate_thresholds)
    first = first_exit_mask(tables.confidence0, first_thresholds)
    return np.where(first[None], 0, steps[:, None, :])


def candidate_ranks(probs: np.ndarray) -> np.ndarray:
    """Rank of every (video, step) score within its class, 0 = ranked first: (n_videos, n_steps, C), int32.

    Higher scores rank first; equal scores rank by video (row) order, the
    order of :func:`frameexit.metrics.average_precision` on key-sorted rows.
    """
    n, steps, n_class = probs.shape
    flat = probs.reshape(n * steps, n_class)
    order = np.argsort(-flat, axis=0, kind="stable")
    ranks = np.empty_like(order, dtype=np.int32)
    np.put_along_axis(ranks, order, np.arange(n * steps, dtype=np.int32)[:, None], axis=0)
    return ranks.reshape(n, steps, n_class)


def _prefix_counts(values: np.ndarray, queries: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``out[k, q, s] = #{j < bound_s : values[k, j] < queries[k, q]}`` for the segment starts given.

    ``starts`` are the increasing segment starts (first 0); bound ``s`` is the
    end of segment ``s``, so ``out[..., -1]`` counts everything.
    """
    below = values[:, None, :] < queries[:, :, None]
    return np.cumsum(np.add.reduceat(below, starts, axis=2, dtype=np.int32), axis=2)


def average_precision_grid(
    tables: ExitTables,
    gate_steps: np.ndarray,
    first_mask: np.ndarray,
    *,
    ranks: np.ndarray | None = None,
    class_chunk: int = 16,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Per-class AP at every setting: shape (n_gate, n_first, num_class), float64, NaN without positives.

    Equal to :func:`frameexit.metrics.average_precision` of each setting's
    scores (ties ranked by video key) up to floating-point summation order.

    Parameters
    ----------
    tables : ExitTables
    gate_steps : ndarray of shape (n_gate, n_videos)
        From :func:`gate_exit_steps`.
    first_mask : ndarray of shape (n_first, n_videos), dtype=bool
        From :func:`first_exit_mask`.
    ranks : ndarray, optional
        :func:`candidate_ranks` of ``tables.probs`` if already computed.
    class_chunk : int, default=16
        Classes handled together (bounds memory).
    max_bytes : int, optional
        Memory for comparing positives, in bytes (default :data:`AP_MAX_BYTES`): the
        comparisons grow with ``class_chunk x positives^2 x n_first``, so a long list of
        first thresholds is worked through in slices. Results do not depend on it.
    """
    n, _, n_class = tables.probs.shape
    n_first = len(first_mask)
    if n == 0:
        return np.full((len(gate_steps), n_first, n_class), np.nan)
    ranks = candidate_ranks(tables.probs) if ranks is None else ranks
    width = int(tables.labels.sum(axis=0).max()) if n_class else 0
    # three bool/int arrays of class_chunk x width x width per first threshold, and a dozen of class_chunk x width
    per_first = class_chunk * width * (3 * width + 96)
    step = max(2, (AP_MAX_BYTES if max_bytes is None else max_bytes) // max(per_first, 1))
    if n_first <= step:
        return _average_precision_slice(tables, gate_steps, first_mask, ranks, class_chunk)
    bounds = [*range(0, n_first, step), n_first]
    if bounds[-1] - bounds[-2] == 1:
        # never a slice of one threshold: numpy sums a (k, width, 1) array along width pairwise, a wider one
        # sequentially, and the last bits of AP would then depend on the slicing
        del bounds[-2]
    return np.concatenate(
        [
            _average_precision_slice(tables, gate_steps, first_mask[lo:hi], ranks, class_chunk)
            for lo, hi in itertools.pairwise(bounds)
        ],
        axis=1,
    )


def _average_precision_slice(
    tables: ExitTables, gate_steps: np.ndarray, first_mask: np.ndarray, ranks: np.ndarray, class_chunk: int
) -> np.ndarray:
    """:func:`average_precision_grid` for every first threshold of ``first_mask`` at once."""
    n, _, n_class = tables.probs.shape
    n_gate, n_first = len(gate_steps), len(first_mask)
    ap = np.full((n_gate, n_first, n_class), np.nan)
    conf0 = tables.confidence0
    perm = np.argsort(-conf0, kind="stable")  # videos exiting at step 0 form a prefix of this order
    position = np.empty(n, dtype=np.int64)
    position[perm] = np.arange(n)
    prefix = first_mask.sum(axis=1)
    if not all(np.array_equal(first_mask[f], position < prefix[f]) for f in range(n_first)):
        raise AssertionError("step-0 exits are not a prefix of the confidence order")
    cuts = np.unique(prefix[(prefix > 0) & (prefix < n)])
    starts = np.concatenate([[0], cuts]).astype(np.int64)
    bounds = np.concatenate([cuts, [n]])
    at = np.searchsorted(bounds, prefix)  # column of each first threshold's prefix in the segment sums
    empty_prefix = prefix == 0

    step0 = ranks[:, 0, :]  # (n, C)
    positives = tables.labels.sum(axis=0)
    classes = np.flatnonzero(positives)
    classes = classes[np.argsort(positives[classes], kind="stable")]  # similar sizes share a chunk
    for lo in range(0, len(classes), class_chunk):
        chunk = classes[lo : lo + class_chunk]
        k = len(chunk)
        n_pos = positives[chunk]
        width = int(n_pos.max())
        members = np.zeros((k, width), dtype=np.int64)
        valid = np.zeros((k, width), dtype=bool)
        for i, c in enumerate(chunk):
            idx = np.flatnonzero(tables.labels[:, c])
            members[i, : len(idx)], valid[i, : len(idx)] = idx, True
        cols = chunk[:, None]
        a_perm = np.ascontiguousarray(step0[perm][:, chunk].T)  # (k, n), confidence order
        xa = step0[members, cols]  # (k, width): positives' rank if they exit at step 0
        in_prefix = position[members][:, :, None] < prefix[None, None, :]  # (k, width, n_first)

        def pick(counts, _empty=empty_prefix, _at=at):
            out = counts[:, :, _at]
            out[:, :, _empty] = 0
            return out

        prefix_a_xa = pick(_prefix_counts(a_perm, xa, starts))
        for g in range(n_gate):
            b = ranks[np.arange(n), gate_steps[g]][:, chunk]  # (n, k): rank at the gate exit step
            b_perm = np.ascontiguousarray(b[perm].T)
            xb = b[members, np.arange(k)[:, None]]  # (k, width)
            prefix_a_xb = pick(_prefix_counts(a_perm, xb, starts))
            counts_b = _prefix_counts(b_perm, np.concatenate([xa, xb], axis=1), starts)
            total_b = counts_b[:, :, -1][:, :, None]
            prefix_b = pick(counts_b)
            above_if_0 = prefix_a_xa + total_b[:, :width] - prefix_b[:, :width]
            above_if_gate = prefix_a_xb + total_b[:, width:] - prefix_b[:, width:]
            rank = np.where(in_prefix, above_if_0, above_if_gate) + 1  # (k, width, n_first)
            score = np.where(in_prefix, xa[:, :, None], xb[:, :, None])  # smaller = ranked first
            before = (score[:, None, :, :] < score[:, :, None, :]) & valid[:, None, :, None]
            hits = before.sum(axis=2) + 1  # positives ranked at or before each positive
            ratio = np.where(valid[:, :, None], hits / rank, 0.0)
            ap[g][:, chunk] = (ratio.sum(axis=1) / n_pos[:, None]).T
    return ap


@dataclass(frozen=True)
class SweepMetrics:
    """Metrics of every setting, arrays of shape (n_gate, n_first) unless said otherwise.

    Attributes
    ----------
    map, top1 : float64
        Fractions in [0, 1]; NaN when no class / no video has a positive label.
    mean_frames : float64
        Mean number of frames read (``exit_step + 1``).
    exit_histogram : ndarray of shape (n_gate, n_first, n_steps)
        Share of videos exiting at each step.
    """

    map: np.ndarray
    top1: np.ndarray
    mean_frames: np.ndarray
    exit_histogram: np.ndarray


def sweep_block_bytes(n_videos: int, n_first: int, n_gate: int, num_class: int, n_steps: int = 10) -> int:
    """Estimated peak memory of :func:`sweep_metrics` on ``n_gate x n_first`` settings, in bytes.

    The exit tables and ranks it reads are not counted (they exist before and
    after); the estimate is an upper bound of what tracemalloc measures (tested).
    """
    settings = n_first * n_gate
    per_setting = BYTES_PER_SETTING_VIDEO * n_videos + 16 * num_class + 16 * n_steps
    return settings * per_setting + 2 * n_first * n_videos + AP_MAX_BYTES


def sweep_metrics(
    tables: ExitTables,
    first_thresholds: npt.ArrayLike,
    gate_thresholds: npt.ArrayLike,
    *,
    ranks: np.ndarray | None = None,
) -> SweepMetrics:
    """mAP, top-1, mean frames and exit histogram of every setting of the grid."""
    first_thresholds = np.atleast_1d(np.asarray(first_thresholds, dtype=np.float64))
    gate_thresholds = np.atleast_1d(np.asarray(gate_thresholds, dtype=np.float64))
    for ft in first_thresholds:
        for gt in gate_thresholds:
            check_thresholds(float(ft), float(gt))
    n, steps, _ = tables.probs.shape
    gate_steps = gate_exit_steps(tables.gates, gate_thresholds)
    first = first_exit_mask(tables.confidence0, first_thresholds)
    exits = np.where(first[None], 0, gate_steps[:, None, :])  # (G, F, n)
    ap = average_precision_grid(tables, gate_steps, first, ranks=ranks)
    has_positive = tables.labels.any(axis=0)
    mean_ap = ap[:, :, has_positive].mean(axis=2) if has_positive.any() else np.full(exits.shape[:2], np.nan)
    predictions = tables.probs.argmax(axis=2)  # (n, T)
    hit = tables.labels[np.arange(n)[:, None], predictions]  # (n, T): is the step's top class a label
    labelled = tables.labels.any(axis=1)
    no_label = np.full(exits.shape[:2], np.nan)
    top1 = hit[np.arange(n), exits][..., labelled].mean(axis=-1) if labelled.any() else no_label
    histogram = np.stack([(exits == t).mean(axis=-1) if n else np.zeros(exits.shape[:2]) for t in range(steps)], -1)
    mean_frames = (exits + 1).mean(axis=-1) if n else np.full(exits.shape[:2], np.nan)
    return SweepMetrics(map=mean_ap, top1=top1, mean_frames=mean_frames, exit_histogram=histogram)
