"""The bootstrap over videos: resampled metrics equal the metrics of the expanded sets, seeded and exact."""

from __future__ import annotations

import numpy as np
import pytest

from frameexit.bootstrap import (
    common_videos,
    paired_difference,
    percentile_interval,
    resample_weights,
    resampled_average_precision,
    resampled_map,
    resampled_top1,
)
from frameexit.metrics import average_precision, mean_ap, top1_accuracy


def _table(n=40, classes=5, seed=0, multi=False):
    rng = np.random.default_rng(seed)
    # few distinct values: many ties between videos
    scores = rng.integers(0, 6, size=(n, classes)).astype(np.float32) / 5
    labels = np.zeros((n, classes), dtype=bool)
    labels[np.arange(n), rng.integers(0, classes, n)] = True
    if multi:
        labels |= rng.random((n, classes)) < 0.2
    labels[3] = False  # a video without labels
    return scores, labels


def test_weights_are_seeded_draws_with_replacement():
    a, b = resample_weights(50, 200, seed=7), resample_weights(50, 200, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, resample_weights(50, 200, seed=8))
    assert a.shape == (200, 50) and (a.sum(axis=1) == 50).all() and a.min() >= 0
    # each video is drawn once per resample on average
    assert abs(a.mean() - 1.0) < 1e-12 and 0.9 < a.var() < 1.1


@pytest.mark.parametrize("multi", [False, True])
def test_resampled_ap_is_the_ap_of_the_expanded_set(multi):
    scores, labels = _table(multi=multi)
    weights = resample_weights(len(scores), 30, seed=1)
    got = resampled_average_precision(scores, labels, weights)
    for b, w in enumerate(weights):
        expanded = average_precision(np.repeat(scores, w, axis=0), np.repeat(labels, w, axis=0))
        np.testing.assert_allclose(got[b], expanded, rtol=1e-12, atol=0, equal_nan=True)


def test_unit_weights_give_the_ap_and_top1_of_the_table():
    scores, labels = _table(multi=True)
    ones = np.ones((1, len(scores)), dtype=np.int32)
    np.testing.assert_allclose(resampled_average_precision(scores, labels, ones)[0], average_precision(scores, labels))
    np.testing.assert_allclose(resampled_map(scores, labels, ones)[0], mean_ap(average_precision(scores, labels)))
    predictions = scores.argmax(axis=1)
    hits = labels[np.arange(len(scores)), predictions]
    assert resampled_top1(hits, labels.any(axis=1), ones)[0] == top1_accuracy(predictions, labels)


def test_ap_by_hand_with_copies():
    # scores 0.9 (positive), 0.8 (negative), 0.7 (positive); the first drawn twice, the second not, the third once:
    # expanded ranking +, +, + (0.9, 0.9, 0.7): AP 1; with weights (1, 2, 1): +, -, -, + -> (1 + 2/4) / 2
    scores = np.array([[0.9], [0.8], [0.7]], dtype=np.float32)
    labels = np.array([[True], [False], [True]])
    ap = resampled_average_precision(scores, labels, np.array([[2, 0, 1], [1, 2, 1], [0, 3, 0]]))
    assert ap[0, 0] == 1.0
    assert ap[1, 0] == (1 + 2 / 4) / 2
    assert np.isnan(ap[2, 0])  # no positive drawn


def test_top1_interval_is_close_to_the_binomial_one():
    n, p = 2000, 0.7
    hits = np.arange(n) < int(p * n)
    weights = resample_weights(n, 1000, seed=3)
    interval = percentile_interval(resampled_top1(hits, np.ones(n, bool), weights))
    half = 1.959964 * np.sqrt(p * (1 - p) / n)  # normal approximation of the binomial interval
    assert interval.low == pytest.approx(p - half, abs=0.15 * half)
    assert interval.high == pytest.approx(p + half, abs=0.15 * half)


def test_interval_levels_and_errors():
    values = np.arange(101, dtype=float)
    interval = percentile_interval(values, 0.9)
    assert (interval.low, interval.high) == (pytest.approx(5.0), pytest.approx(95.0))
    assert interval.level == 0.9 and interval.resamples == 101
    assert np.isnan(percentile_interval([np.nan, np.nan]).low)
    with pytest.raises(ValueError, match="level"):
        percentile_interval(values, 1.0)
    with pytest.raises(ValueError, match="do not match"):
        resampled_average_precision(np.zeros((3, 2)), np.zeros((3, 2)), np.ones((4, 2)))


def test_a_run_against_itself_differs_by_exactly_zero():
    scores, labels = _table(multi=True)
    weights = resample_weights(len(scores), 200, seed=5)
    values = resampled_map(scores, labels, weights)
    interval = paired_difference(values, values.copy())
    assert (interval.low, interval.high) == (0.0, 0.0)


def test_paired_difference_by_hand():
    # run A right on videos a, b, d; the baseline on a, d and on e, which A did not evaluate
    keys, hits = ["d", "a", "b", "c"], np.array([True, True, True, False])
    baseline_keys, baseline_hits = ["a", "c", "d", "b", "e"], np.array([True, False, True, False, True])
    rows, baseline_rows = common_videos(keys, baseline_keys)
    assert [keys[i] for i in rows] == [baseline_keys[i] for i in baseline_rows] == ["a", "b", "c", "d"]
    weights = np.array([[1, 1, 1, 1], [0, 4, 0, 0], [2, 0, 2, 0]])  # resamples of a, b, c, d
    labelled = np.ones(4, bool)
    difference = resampled_top1(hits[rows], labelled, weights) - resampled_top1(
        baseline_hits[baseline_rows], labelled, weights
    )
    # only b differs (A right, the baseline wrong): its share of each resample
    np.testing.assert_allclose(difference, [0.25, 1.0, 0.0])
    interval = paired_difference(
        resampled_top1(hits[rows], labelled, weights),
        resampled_top1(baseline_hits[baseline_rows], labelled, weights),
        0.5,
    )
    assert (interval.low, interval.high) == (pytest.approx(0.125), pytest.approx(0.625))
    with pytest.raises(ValueError, match="same resamples"):
        paired_difference(np.zeros(3), np.zeros(4))
