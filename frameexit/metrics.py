"""Video-level accuracy metrics (SEMANTICS 7): per-class AP, mAP and top-1.

One prediction per video. Rows are matched by video key, never by position or
by a name cut from a frame path. Ties in a class's scores are ranked by video
key, ascending (the official code's order for ties depends on its input order):
on tie-free data this equals scikit-learn's ``average_precision_score``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import DatasetError


def average_precision(scores: npt.ArrayLike, labels: npt.ArrayLike) -> np.ndarray:
    """Non-interpolated average precision of every class: (n_classes,) float64, NaN without a positive video.

    ``AP_c = sum_k precision@k * y_k / n_positives``, ranking videos by ``scores[:, c]``
    descending; ties keep the row order (rows are in key order in this project).
    ``scores`` and ``labels`` (multi-hot, 0 or 1): (n_videos, n_classes); videos without labels are negatives for
    every class.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores and labels must both be (n_videos, n_classes), got {scores.shape} and {labels.shape}")
    n = scores.shape[0]
    order = np.argsort(-scores, axis=0, kind="stable")
    hits = np.take_along_axis(labels, order, axis=0)
    precision = np.cumsum(hits, axis=0) / np.arange(1, n + 1, dtype=np.float64)[:, None]
    positives = labels.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision * hits).sum(axis=0) / positives
    ap[positives == 0] = np.nan
    return ap


def mean_ap(ap: npt.ArrayLike) -> np.ndarray:
    """Mean over the last axis of per-class APs, ignoring NaN (classes without a positive video): shape
    ``ap.shape[:-1]``, float64; NaN where every class is NaN. The one definition of mAP (SEMANTICS 7), for one
    setting, a grid of settings or a category's classes."""
    ap = np.asarray(ap, dtype=np.float64)
    counted = (~np.isnan(ap)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # np.nanmean's own arithmetic (NaN as 0, sum, divide by the count), without its all-NaN warning
        return np.where(counted > 0, np.nansum(ap, axis=-1) / counted, np.nan)


def mean_average_precision(ap: npt.ArrayLike) -> float:
    """:func:`mean_ap` of one setting's per-class APs, as a float."""
    return float(mean_ap(ap))


def category_map(ap: npt.ArrayLike, categories: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """:func:`mean_ap` of each category of classes: shape ``ap.shape[:-1]``, NaN where no class of the category
    has a positive video.

    ``ap`` (..., n_classes): per-class AP, e.g. of every setting of a grid; ``categories``: class indices of each
    category (HVU: scene, object, action, event, attribute, concept); a class may be in several.
    """
    ap = np.asarray(ap, dtype=np.float64)
    return {name: mean_ap(ap[..., list(classes)]) for name, classes in categories.items()}


def top1_accuracy(predictions: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Hit@1: over videos with at least one label (multi-hot ``labels``), the share whose predicted class
    (``predictions``, argmax of the probabilities) is one of them; NaN if no video has a label."""
    predictions = np.asarray(predictions, dtype=np.int64)
    labels = np.asarray(labels)
    labelled = labels.sum(axis=1) > 0
    if not labelled.any():
        return float("nan")
    hit = labels[np.arange(len(predictions)), predictions] > 0
    return float(hit[labelled].mean())


def multi_hot(label_indices: Sequence[Sequence[int]], num_class: int) -> np.ndarray:
    """(n_videos, num_class) float32 multi-hot matrix from lists of class indices."""
    out = np.zeros((len(label_indices), num_class), dtype=np.float32)
    for row, classes in enumerate(label_indices):
        out[row, list(classes)] = 1.0
    return out


@dataclass(frozen=True)
class Metrics:
    """Accuracy of one prediction per video: ``map``, ``top1`` and per-class ``ap`` as :func:`mean_ap`,
    :func:`top1_accuracy` and :func:`average_precision` give them; ``n_labelled``: videos with at least one label
    (the top-1 denominator)."""

    map: float
    top1: float
    ap: np.ndarray
    n_videos: int
    n_labelled: int


def evaluate(
    keys: Sequence[str],
    scores: npt.ArrayLike,
    labels_by_key: Mapping[str, Sequence[int]],
    num_class: int,
) -> Metrics:
    """mAP and top-1 of per-video ``scores`` (n_videos, num_class), matched to the ground truth by video key.

    ``keys``: unique video keys (split-file entries), one per row of ``scores``; ``labels_by_key``: class indices
    of every video (an empty list for a video without labels).
    """
    scores = np.asarray(scores)
    keys = list(keys)
    if len(set(keys)) != len(keys):
        raise ValueError("video keys must be unique")
    if scores.shape != (len(keys), num_class):
        raise ValueError(f"scores must have shape ({len(keys)}, {num_class}), got {scores.shape}")
    missing = [k for k in keys if k not in labels_by_key]
    if missing:
        raise DatasetError(f"no ground truth for {len(missing)} video(s): {', '.join(missing[:5])}")
    order = np.argsort(np.asarray(keys, dtype=object), kind="stable")
    sorted_keys = [keys[i] for i in order]
    scores = scores[order]
    labels = multi_hot([labels_by_key[k] for k in sorted_keys], num_class)
    ap = average_precision(scores, labels)
    return Metrics(
        map=mean_average_precision(ap),
        top1=top1_accuracy(scores.argmax(axis=1), labels),
        ap=ap,
        n_videos=len(keys),
        n_labelled=int((labels.sum(axis=1) > 0).sum()),
    )
