"""SEMANTICS 3: uniform sampling of T=10 frames and the coarse-to-fine order; clips around them (3D backbones)."""

import numpy as np
import pytest

from frameexit.errors import ConfigError
from frameexit.sampling import COARSE_TO_FINE, clip_indices, policy_order, sample_indices


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


def test_clip_of_one_frame_is_the_sampled_frame():
    for n in (1, 4, 23, 250):
        assert clip_indices(n, 10).tolist() == [[i] for i in sample_indices(n, 10).tolist()]
        assert clip_indices(n, 10, 1, 6).tolist() == clip_indices(n, 10).tolist()  # no stride in one frame


def test_clips_around_the_sampled_positions_hand_computed():
    # L=100: positions int(linspace(0, 100, 10)) = 0, 11, 22, 33, 44, 55, 66, 77, 88, 99
    assert sample_indices(100, 10).tolist() == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    clips = clip_indices(100, 10, clip_length=5, clip_stride=3)
    assert clips.shape == (10, 5) and clips.dtype == np.int64
    # offsets 3 * (k - 2) = -6, -3, 0, 3, 6 around each position; the sampled frame is the middle one
    assert clips[4].tolist() == [38, 41, 44, 47, 50]
    assert clips[:, 2].tolist() == sample_indices(100, 10).tolist()
    # clamped at both ends: the first clip starts before frame 0, the last one ends after frame 99
    assert clips[0].tolist() == [0, 0, 0, 3, 6]
    assert clips[9].tolist() == [93, 96, 99, 99, 99]
    # even length: one more frame before the sampled one than after it
    assert clip_indices(100, 10, clip_length=4, clip_stride=2)[5].tolist() == [51, 53, 55, 57]


def test_x3d_s_clips_of_a_video_shorter_than_the_steps():
    # T=10 > L=4: positions 0, 0, 0, 1, 1, 2, 2, 3, 3, 3 (linspace(0, 4, 10) truncated, clipped to 3);
    # 13 frames every frame file around each one, clamped to 0..3
    clips = clip_indices(4, 10, clip_length=13, clip_stride=1)
    assert clips[:, 6].tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert clips[0].tolist() == [0] * 7 + [1, 2, 3, 3, 3, 3]
    assert clips[3].tolist() == [0] * 6 + [1, 2, 3, 3, 3, 3, 3]
    assert clips[9].tolist() == [0, 0, 0, 0, 1, 2, 3, 3, 3, 3, 3, 3, 3]
    assert clip_indices(1, 10, 13, 6).tolist() == [[0] * 13] * 10  # a single frame fills every clip


def test_clip_arguments_are_checked():
    with pytest.raises(ValueError, match="clip_length and clip_stride must be at least 1, got 0 and 1"):
        clip_indices(10, 10, 0, 1)
    with pytest.raises(ValueError, match="at least one frame"):
        clip_indices(0, 10, 13, 1)
