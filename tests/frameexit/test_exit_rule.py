"""SEMANTICS 6: strict > first_threshold at step 0, s_t < gate_threshold at the gates, always at the last step."""

import numpy as np
import pytest
from oracles import exit_steps

from frameexit.errors import ThresholdError
from frameexit.exit_rule import check_thresholds, first_step_exits, gate_exits

F32 = np.float32
CONTINUE = np.full(9, 0.9, dtype=F32)  # every gate says "continue" (s >= 0.5)


def steps(conf, gates, ft=0.99, gt=0.5):
    return exit_steps(np.asarray([conf], dtype=F32), np.asarray([gates], dtype=F32), ft, gt)[0]


def test_step0_is_strict():
    assert steps(0.99, CONTINUE, ft=0.99) == 9  # equal: no exit
    assert steps(np.nextafter(F32(0.99), F32(1)), CONTINUE, ft=0.99) == 0
    assert steps(np.nextafter(F32(0.99), F32(0)), CONTINUE, ft=0.99) == 9


def test_threshold_is_compared_in_float32_like_the_official_code():
    # float32(0.99) = 0.99000000953..., above the double 0.99, yet torch's `tensor > 0.99` is False
    assert float(F32(0.99)) > 0.99
    assert not first_step_exits(F32(0.99), 0.99)
    assert not gate_exits(F32(0.1), 0.1)


def test_gate_is_strict_below():
    gates = CONTINUE.copy()
    gates[2] = 0.5  # step 3: equal to the threshold, continue
    assert steps(0.1, gates) == 9
    gates[2] = np.nextafter(F32(0.5), F32(0))
    assert steps(0.1, gates) == 3
    gates[0] = 0.0
    assert steps(0.1, gates) == 1  # the first gate that fires wins


def test_gate_polarity_one_means_continue():
    assert steps(0.1, np.ones(9, dtype=F32)) == 9
    assert steps(0.1, np.zeros(9, dtype=F32)) == 1


def test_last_step_always_exits_and_its_gate_is_ignored():
    gates = CONTINUE.copy()
    gates[8] = 0.9  # the gate belonging to step 9 says continue: still exits at 9
    assert steps(0.1, gates) == 9


def test_step0_takes_precedence_and_threshold_extremes():
    assert steps(0.999, np.zeros(9, dtype=F32)) == 0
    assert steps(0.005, CONTINUE, ft=0.0) == 0  # any probability is > 0
    assert steps(1.0, CONTINUE, ft=1.0) == 9  # nothing is > 1
    assert steps(0.1, np.zeros(9, dtype=F32), gt=0.0) == 9  # nothing is < 0
    assert steps(0.1, np.full(9, 0.999, dtype=F32), gt=1.0) == 1


def test_vectorised_over_videos():
    conf = np.array([0.995, 0.5, 0.5, 0.5], dtype=F32)
    gates = np.tile(CONTINUE, (4, 1))
    gates[1, 0] = 0.2
    gates[2, 4] = 0.49
    assert exit_steps(conf, gates, 0.99, 0.5).tolist() == [0, 1, 5, 9]


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), "0.5", None, True])
def test_impossible_thresholds_are_refused(bad):
    with pytest.raises(ThresholdError, match="first_threshold"):
        check_thresholds(bad, 0.5)
    with pytest.raises(ThresholdError, match="gate_threshold"):
        check_thresholds(0.5, bad)
