"""SEMANTICS 3: uniform sampling of T=10 frames and the coarse-to-fine order."""

import numpy as np
import pytest

from frameexit.errors import ConfigError
from frameexit.sampling import COARSE_TO_FINE, policy_order, sample_indices


@pytest.mark.parametrize(
    "n_files, expected",
    [
        (1, [0] * 10),
        # linspace(0, 3, 10) = 0, .33, .67, 1, 1.33, 1.67, 2, 2.33, 2.67, 3 -> truncated, clipped to 2
        (3, [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]),
        # linspace(0, 10, 10) steps by 10/9: 0, 1.1, 2.2, 3.3, 4.4, 5.6, 6.7, 7.8, 8.9, 10 -> last clipped to 9
        (10, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        # linspace(0, 25, 10) steps by 2.78: 0, 2.78, 5.56, 8.33, 11.1, 13.9, 16.7, 19.4, 22.2, 25
        (25, [0, 2, 5, 8, 11, 13, 16, 19, 22, 24]),
    ],
)
def test_sample_indices_hand_computed(n_files, expected):
    assert sample_indices(n_files, 10).tolist() == expected


def test_sample_indices_first_and_last_frame_always_sampled():
    for n in range(1, 200):
        idx = sample_indices(n)
        assert idx[0] == 0 and idx[-1] == n - 1
        assert np.all(np.diff(idx) >= 0)


def test_sample_indices_rejects_empty_video():
    with pytest.raises(ValueError, match="at least one frame"):
        sample_indices(0)


def test_coarse_to_fine_order_is_the_official_one():
    assert COARSE_TO_FINE == (5, 0, 9, 2, 7, 4, 6, 3, 8, 1)
    assert policy_order(None) == COARSE_TO_FINE
    assert policy_order([5, 0, 9, 2, 7, 4, 6, 3, 8, 1]) == COARSE_TO_FINE


def test_sequential_order_and_validation():
    assert policy_order("sequential", 4) == (0, 1, 2, 3)
    with pytest.raises(ConfigError, match="permutation of 0..9"):
        policy_order([0, 1, 2, 3, 4, 5, 6, 7, 8, 8])
    with pytest.raises(ConfigError, match="defined for 10 frames"):
        policy_order(None, 8)
    with pytest.raises(ConfigError, match="unknown policy order"):
        policy_order("random")
