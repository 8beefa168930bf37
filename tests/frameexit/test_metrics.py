"""SEMANTICS 7: per-class AP (NaN without positives), mAP ignoring NaN, top-1 over labelled videos."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from frameexit.errors import DatasetError
from frameexit.metrics import average_precision, evaluate, mean_average_precision, multi_hot, top1_accuracy

KEYS = ["a", "b", "c", "d"]
SCORES = np.array(
    [
        [0.6, 0.3, 0.1],  # a: labels {0} -> predicts 0, hit
        [0.2, 0.5, 0.3],  # b: labels {0, 1} (multi-label) -> predicts 1, hit
        [0.7, 0.2, 0.1],  # c: no labels -> negative everywhere, not in top-1
        [0.1, 0.4, 0.5],  # d: labels {1} -> predicts 2, miss
    ]
)
LABELS = {"a": [0], "b": [0, 1], "c": [], "d": [1]}


def test_hand_computed_ap_map_top1():
    m = evaluate(KEYS, SCORES, LABELS, 3)
    # class 0 ranking c(-) a(+) b(+) d(-): (1/2 + 2/3) / 2 = 7/12
    # class 1 ranking b(+) d(+) a(-) c(-): (1/1 + 2/2) / 2 = 1
    # class 2: no positive -> NaN, ignored by the mean
    assert m.ap[0] == pytest.approx(7 / 12)
    assert m.ap[1] == pytest.approx(1.0)
    assert math.isnan(m.ap[2])
    assert m.map == pytest.approx(19 / 24)
    assert m.top1 == pytest.approx(2 / 3)  # a and b hit, d misses, c has no label
    assert (m.n_videos, m.n_labelled) == (4, 3)


def test_metrics_are_keyed_by_video_not_by_row_order():
    perm = [2, 0, 3, 1]
    m = evaluate([KEYS[i] for i in perm], SCORES[perm], LABELS, 3)
    assert m.map == pytest.approx(19 / 24) and m.top1 == pytest.approx(2 / 3)
    with pytest.raises(DatasetError, match="no ground truth.*e"):
        evaluate([*KEYS, "e"], np.vstack([SCORES, SCORES[:1]]), LABELS, 3)
    with pytest.raises(ValueError, match="unique"):
        evaluate(["a", "a"], SCORES[:2], LABELS, 3)


def test_ties_are_ranked_by_video_key():
    # a negative and a positive with the same score: the key decides who ranks first
    scores = np.array([[0.5], [0.5]])
    assert evaluate(["a_neg", "b_pos"], scores, {"a_neg": [], "b_pos": [0]}, 1).map == pytest.approx(0.5)
    assert evaluate(["b_neg", "a_pos"], scores, {"b_neg": [], "a_pos": [0]}, 1).map == pytest.approx(1.0)


def test_agrees_with_scikit_learn_on_tie_free_data():
    rng = np.random.default_rng(0)
    n, c = 300, 20
    scores = rng.random((n, c))
    labels = (rng.random((n, c)) < 0.1).astype(float)
    labels[:, 3] = 0  # a class without positives
    ap = average_precision(scores, labels)
    for k in range(c):
        if labels[:, k].any():
            assert ap[k] == pytest.approx(average_precision_score(labels[:, k], scores[:, k]), abs=1e-12)
        else:
            assert math.isnan(ap[k])
    assert mean_average_precision(ap) == pytest.approx(np.nanmean(ap))


def test_degenerate_cases():
    assert math.isnan(mean_average_precision([np.nan, np.nan]))
    assert math.isnan(top1_accuracy([0, 1], np.zeros((2, 3))))
    assert multi_hot([[0, 2], []], 3).tolist() == [[1, 0, 1], [0, 0, 0]]
    empty = evaluate([], np.zeros((0, 3)), {}, 3)
    assert math.isnan(empty.map) and math.isnan(empty.top1)
