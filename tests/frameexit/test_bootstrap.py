"""The bootstrap over videos: resampled metrics equal the metrics of the expanded sets, seeded and exact."""

from __future__ import annotations

import numpy as np
import pytest

from frameexit import bootstrap
from frameexit.bootstrap import (
    common_videos,
    paired_difference,
    percentile_interval,
    resample_weights,
    resampled_average_precision,
    resampled_map,
    resampled_metrics,
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


def _settings(n=40, classes=6, settings=3, seed=0):
    """Scores of several settings with ties, multi-label rows, a video without labels, a class without
    positives; hits and labelled as the replay derives them (argmax of each setting's scores)."""
    rng = np.random.default_rng(seed)
    scores = (rng.integers(0, 6, size=(settings, n, classes)) / 5).astype(np.float32)
    scores[1] = rng.random((n, classes)).astype(np.float32)  # a setting without ties
    labels = np.zeros((n, classes), dtype=bool)
    labels[np.arange(n), rng.integers(0, classes - 1, n)] = True
    labels |= rng.random((n, classes)) < 0.15
    labels[:, -1] = False  # a class without a positive video
    labels[3] = False  # a video without labels
    hits = labels[np.arange(n)[None, :], scores.argmax(axis=2)]
    return scores, labels, hits, labels.any(axis=1)


def _expanded(scores, labels, w):
    return average_precision(np.repeat(scores, w, axis=0), np.repeat(labels, w, axis=0))


def test_batched_metrics_equal_the_single_setting_functions():
    scores, labels, hits, labelled = _settings()
    weights = resample_weights(len(labels), 50, seed=2)
    weights[:, 5] = 0  # a video in no resample
    maps, top1 = resampled_metrics(scores, labels, hits, labelled, weights)
    assert maps.shape == top1.shape == (len(scores), len(weights))
    for setting in range(len(scores)):
        np.testing.assert_array_equal(maps[setting], resampled_map(scores[setting], labels, weights))
        np.testing.assert_array_equal(top1[setting], resampled_top1(hits[setting], labelled, weights))


def test_batched_metrics_are_those_of_the_expanded_sets():
    scores, labels, hits, labelled = _settings(seed=1)
    weights = resample_weights(len(labels), 20, seed=3)
    weights[:4, 7] = 0
    weights[4, :] = 0
    weights[4, [3, 9]] = [5, 2]  # a resample of a video without labels and one other
    maps, top1 = resampled_metrics(scores, labels, hits, labelled, weights)
    for setting in range(len(scores)):
        for b, w in enumerate(weights):
            expanded = _expanded(scores[setting], labels, w)
            np.testing.assert_allclose(maps[setting, b], mean_ap(expanded), rtol=1e-12, atol=0, equal_nan=True)
            predictions = np.repeat(scores[setting], w, axis=0).argmax(axis=1)
            assert top1[setting, b] == pytest.approx(
                top1_accuracy(predictions, np.repeat(labels, w, axis=0)), abs=1e-15
            )


def test_resampled_ap_without_positives_or_videos():
    scores, labels, _, _ = _settings()
    weights = resample_weights(len(labels), 5, seed=4)
    ap = resampled_average_precision(scores[0], labels, weights)
    assert np.isnan(ap[:, -1]).all()  # the class without a positive
    nothing = resampled_average_precision(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((4, 0), dtype=np.int32))
    assert nothing.shape == (4, 3) and np.isnan(nothing).all()
    maps, top1 = resampled_metrics(np.zeros((2, 0, 3)), np.zeros((0, 3)), np.zeros((2, 0)), np.zeros(0), nothing[:, :0])
    assert maps.shape == top1.shape == (2, 4) and np.isnan(maps).all() and np.isnan(top1).all()
    with pytest.raises(ValueError, match="do not match"):
        resampled_metrics(scores, labels, np.zeros((3, 5), bool), labels.any(axis=1), weights)
    with pytest.raises(ValueError, match="counts"):
        resampled_average_precision(scores[0], labels, -weights)


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_other_score_types_rank_as_average_precision(dtype):
    # float64 and integer scores take the sort without packed keys: ties, -0.0 against 0.0 and NaN (ranked last)
    scores, labels, _, _ = _settings()
    scores = scores[0].astype(dtype) * (5 if dtype == np.int64 else 1)
    if dtype == np.float64:
        scores[:4, 0] = [0.0, -0.0, np.nan, np.nan]
        scores[6:9, 1] = [-0.0, 0.0, np.nan]
    weights = resample_weights(len(labels), 15, seed=5)
    got = resampled_average_precision(scores, labels, weights)
    for b, w in enumerate(weights):
        np.testing.assert_allclose(got[b], _expanded(scores, labels, w), rtol=1e-12, atol=0, equal_nan=True)


def test_signed_zero_and_nan_float32_scores():
    scores, labels, _, _ = _settings()
    scores = scores[1].copy()
    scores[:5, 0] = [0.0, -0.0, 0.0, -0.0, 0.5]
    scores[10:12, 2] = np.nan
    weights = resample_weights(len(labels), 15, seed=6)
    got = resampled_average_precision(scores, labels, weights)
    for b, w in enumerate(weights):
        np.testing.assert_allclose(got[b], _expanded(scores, labels, w), rtol=1e-12, atol=0, equal_nan=True)


def test_working_memory_bounds_and_fallbacks_give_the_same_numbers(monkeypatch):
    # classes split across products, blocks of positives and blocks of ranked classes (the carries between
    # them); numpy's product instead of torch's; the loop instead of the table; weights beyond int8
    scores, labels, hits, labelled = _settings(n=60, classes=7, seed=7)
    labels[:45, 2] = True  # a class of 45 positives, longer than the chunks below
    weights = resample_weights(len(labels), 40, seed=8)
    expected = resampled_metrics(scores, labels, hits, labelled, weights)
    monkeypatch.setattr(bootstrap, "_PRODUCT_BYTES", 60 * 16)
    monkeypatch.setattr(bootstrap, "_BLOCK_ELEMENTS", 40 * 5)
    monkeypatch.setattr(bootstrap, "_RANKED_ENTRIES", 60 * 3)
    small = resampled_metrics(scores, labels, hits, labelled, weights)
    monkeypatch.setattr(bootstrap, "_torch_int8_product", lambda: None)
    monkeypatch.setattr(bootstrap, "_TABLE_ENTRIES", 0)
    fallback = resampled_metrics(scores, labels, hits, labelled, weights)
    for got in (small, fallback):
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-13, atol=0)
        np.testing.assert_array_equal(got[1], expected[1])
    heavy = weights.copy()
    heavy[0, :2] = [200, 130]  # over int8: numpy's product, and a larger table
    got = resampled_average_precision(scores[0], labels, heavy)
    for b in (0, 1):
        np.testing.assert_allclose(got[b], _expanded(scores[0], labels, heavy[b]), rtol=1e-12, atol=0, equal_nan=True)


def test_exact_at_a_larger_scale():
    # continuous float32 probabilities (some equal by chance), thousands of copies before a positive: the
    # table's sums against the expanded sets' precision one copy at a time
    rng = np.random.default_rng(9)
    n, classes = 3000, 40
    logits = rng.standard_normal((n, classes)).astype(np.float32) * 3
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.zeros((n, classes), dtype=bool)
    labels[np.arange(n), rng.integers(0, classes, n)] = True
    labels |= rng.random((n, classes)) < 0.01
    weights = resample_weights(n, 4, seed=10)
    got = resampled_average_precision(scores, labels, weights)
    for b, w in enumerate(weights):
        expanded = _expanded(scores, labels, w)
        assert np.abs(got[b] - expanded).max() < 1e-14
        np.testing.assert_allclose(got[b], expanded, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("n", "resamples"), [(1, 7), (2, 1), (1, 1)])
def test_a_single_video_or_resample(n, resamples):
    # matrices with a dimension of 1 (torch's int8 product once summed a transposed (resamples, 1) view wrong)
    rng = np.random.default_rng(n + resamples)
    scores = rng.random((2, n, 3)).astype(np.float32)
    labels = np.zeros((n, 3), dtype=bool)
    labels[0, 1] = True
    hits = labels[np.arange(n)[None, :], scores.argmax(axis=2)]
    weights = rng.integers(0, 4, size=(resamples, n))
    weights[0, 0] = 2
    maps, top1 = resampled_metrics(scores, labels, hits, labels.any(axis=1), weights)
    for setting in range(2):
        for b, w in enumerate(weights):
            np.testing.assert_allclose(
                maps[setting, b], mean_ap(_expanded(scores[setting], labels, w)), rtol=1e-12, atol=0, equal_nan=True
            )
            expected = resampled_top1(hits[setting], labels.any(axis=1), w[None, :])[0]
            np.testing.assert_array_equal(top1[setting, b], expected)
