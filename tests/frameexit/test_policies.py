"""Exit policies by hand on a small table (SEMANTICS' exit comparisons, issue 22's definitions)."""

from __future__ import annotations

import numpy as np
import pytest

from frameexit.exit_rule import exits_at
from frameexit.metrics import average_precision
from frameexit.policies import (
    PolicySetting,
    confidence_exit_steps,
    fixed_exit_steps,
    oracle_exit_steps,
    policy_exit_steps,
    policy_fires,
    policy_settings,
)
from frameexit.sweep import ExitTables, policy_average_precision, policy_metrics, video_exits

# top probability of each step, 4 steps
TOP = np.array(
    [
        [0.95, 0.99, 0.99, 0.99],  # above 0.9 at step 0
        [0.5, 0.9, 0.95, 0.2],  # exactly 0.9 at step 1: strict, so not at 0.9
        [0.1, 0.2, 0.3, 0.99],  # only the last step is confident: the last step exits anyway
        [0.99000001, 0.1, 0.1, 0.1],  # 0.99 is 0.99000001 in float32: not strictly above 0.99
    ],
    dtype=np.float32,
)


def test_confidence_exits_by_hand():
    steps = confidence_exit_steps(TOP, [0.9, 0.99, 0.0, 1.0])
    assert steps.tolist() == [
        [0, 2, 3, 0],  # tau 0.9
        [3, 3, 3, 3],  # tau 0.99: nothing strictly above before the last step
        [0, 0, 0, 0],  # tau 0: every positive probability fires at step 0
        [3, 3, 3, 3],  # tau 1: never fires, the last step exits
    ]


def test_fixed_and_oracle_by_hand():
    assert fixed_exit_steps(2, 3).tolist() == [[0, 0], [1, 1], [2, 2]]
    hits = np.array(
        [
            [False, True, True],  # first right at step 1
            [True, False, False],
            [False, False, False],  # never right (or no label): step 0, the least cost
            [False, False, True],
        ]
    )
    assert oracle_exit_steps(hits).tolist() == [1, 0, 0, 2]


@pytest.mark.parametrize("tau", [0.0, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_single_video_form_equals_the_grid_form(tau):
    n_steps = TOP.shape[1]
    grid = confidence_exit_steps(TOP, [tau])[0]
    for video, row in enumerate(TOP):
        step = next(
            t
            for t in range(n_steps)
            if exits_at(t, n_steps, policy_fires("confidence", t, top_prob=float(row[t]), setting=tau))
        )
        assert step == grid[video]
    for k in range(1, n_steps + 1):
        step = next(t for t in range(n_steps) if exits_at(t, n_steps, policy_fires("fixed", t, top_prob=0, setting=k)))
        assert step == k - 1


def test_unknown_policy():
    for policy in ("random", "oracle"):
        with pytest.raises(ValueError, match=f"exit policy '{policy}' has no single-step form"):
            policy_fires(policy, 0, top_prob=0.5, setting=0.5)


@pytest.mark.parametrize("max_bytes", [None, 1])
def test_policy_ap_is_the_ap_of_the_scores_at_the_exits(max_bytes):
    rng = np.random.default_rng(4)
    n, steps, classes = 60, 5, 6
    probs = (rng.integers(0, 8, size=(n, steps, classes)) / 8).astype(np.float32)  # many ties
    labels = rng.random((n, classes)) < 0.3
    labels[:, 5] = False  # a class without positives: NaN
    top = probs.max(axis=2)
    hits = labels[np.arange(n)[:, None], probs.argmax(axis=2)]
    grids = [confidence_exit_steps(top, [0.3, 0.6, 0.9]), fixed_exit_steps(n, steps), oracle_exit_steps(hits)[None]]
    for exit_steps in grids:
        got = policy_average_precision(probs, labels, exit_steps, max_bytes=max_bytes)
        for row, step in zip(got, exit_steps, strict=True):
            want = average_precision(probs[np.arange(n), step], labels)
            np.testing.assert_allclose(row, want, rtol=1e-12, atol=0, equal_nan=True)
        assert np.isnan(got[:, 5]).all()


def test_policy_settings_and_their_exit_steps_by_hand():
    settings = policy_settings(("frameexit", "confidence", "fixed", "oracle"), [0.9, 1.0], 4)
    assert settings == [
        PolicySetting("confidence", tau=0.9),
        PolicySetting("confidence", tau=1.0),
        *[PolicySetting("fixed", frames=k) for k in (1, 2, 3, 4)],
        PolicySetting("oracle"),
    ]
    assert policy_settings(("frameexit",), [0.9], 4) == []
    hits = np.zeros(TOP.shape, dtype=bool)
    hits[1, 2] = hits[1, 3] = True  # video 1 first right at step 2; the others never: step 0
    steps = policy_exit_steps(settings, TOP, hits)
    assert steps.tolist() == [
        [0, 2, 3, 0],  # tau 0.9, as test_confidence_exits_by_hand
        [3, 3, 3, 3],
        *[[k - 1] * 4 for k in (1, 2, 3, 4)],
        [0, 2, 0, 0],
    ]
    with pytest.raises(ValueError, match="unknown baseline exit policy 'gates'"):
        policy_exit_steps([PolicySetting("gates")], TOP, hits)


def test_policy_metrics_by_hand_with_a_multi_label_video_and_one_without_labels():
    """3 videos, 2 steps, 2 classes. Fixed at 1 and 2 frames; exits, top-1, frames and mAP by hand."""
    probs = np.array(
        [
            [[0.9, 0.1], [0.2, 0.8]],  # labels {0, 1}: right at both steps
            [[0.3, 0.7], [0.6, 0.4]],  # label {0}: wrong at step 0, right at step 1
            [[0.5, 0.5], [0.1, 0.9]],  # no label: not in top-1, a negative of every class
        ],
        dtype=np.float32,
    )
    labels = np.array([[True, True], [True, False], [False, False]])
    tables = ExitTables(["a", "b", "c"], labels, probs, np.zeros((3, 1), np.float32))
    exits = video_exits(tables)
    steps = np.array([[0, 0, 0], [1, 1, 1]])
    m = policy_metrics(exits, steps, [policy_average_precision(probs, labels, steps)])
    assert m.top1[:, 0].tolist() == [0.5, 1.0]  # video b is right at step 1 only
    assert m.mean_frames[:, 0].tolist() == [1.0, 2.0]
    # 1 frame, class 0 ranks a (0.9, +), c (0.5), b (0.3, +): AP (1 + 2/3) / 2; class 1: b, c, a (+): 1/3
    # 2 frames, class 0: b (0.6, +), a (0.2, +), c: AP 1; class 1: c (0.9), a (0.8, +), b: AP 1/2
    assert m.ap[:, 0].ravel().tolist() == pytest.approx([5 / 6, 1 / 3, 1.0, 0.5], abs=1e-15)
    assert m.map[:, 0].tolist() == pytest.approx([(5 / 6 + 1 / 3) / 2, 0.75], abs=1e-15)
    assert oracle_exit_steps(exits.hits).tolist() == [0, 1, 0]
