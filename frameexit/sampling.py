"""Which frames a video contributes, and in which order the model reads them (SEMANTICS 3).

A 2D backbone reads one sampled frame per step. A 3D (clip) backbone reads a
clip per step: ``clip_length`` frames, ``clip_stride`` apart, around the
step's sampled frame (:func:`clip_indices`); the sampled positions are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ConfigError

#: The official coarse-to-fine policy over T=10 sampled frames: step t reads sampled frame ``ORDER[t]``.
COARSE_TO_FINE: tuple[int, ...] = (5, 0, 9, 2, 7, 4, 6, 3, 8, 1)


def sample_indices(n_files: int, num_frames: int = 10) -> np.ndarray:
    """Positions of the ``num_frames`` (T) sampled files among a video's ``n_files`` (L, at least 1) frame files
    sorted by path: (T,) int64, temporal order.

    ``int(clip(linspace(0, L, T), 0, L - 1))``: both ends of ``linspace`` are
    included and the cast truncates toward zero, so the first and the last file
    are always sampled and short videos repeat frames.
    """
    if n_files < 1:
        raise ValueError(f"a video needs at least one frame file to be sampled, got {n_files}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    return np.clip(np.linspace(0, n_files, num_frames), 0, n_files - 1).astype(np.int64)


def clip_indices(n_files: int, num_frames: int = 10, clip_length: int = 1, clip_stride: int = 1) -> np.ndarray:
    """Positions of the frame files each step reads (its sampled frame, or a clip around it): (T, clip_length)
    int64, in temporal order within each clip; arguments as :func:`sample_indices`.

    Step ``t``'s clip holds the files ``p + clip_stride * (k - clip_length // 2)``
    for ``k = 0 .. clip_length - 1``, where ``p`` is the step's sampled position
    (:func:`sample_indices`), clamped to ``0 .. L - 1``: the sampled frame is
    the clip's middle frame (for an even length, the first of the two middle
    ones), and clips at the ends of a video repeat its first or last file.
    ``clip_length=1`` gives the sampled positions themselves.
    """
    if clip_length < 1 or clip_stride < 1:
        raise ValueError(f"clip_length and clip_stride must be at least 1, got {clip_length} and {clip_stride}")
    centres = sample_indices(n_files, num_frames)
    offsets = clip_stride * (np.arange(clip_length, dtype=np.int64) - clip_length // 2)
    return np.clip(centres[:, None] + offsets[None, :], 0, n_files - 1)


def policy_order(order: Sequence[int] | str | None, num_frames: int = 10) -> tuple[int, ...]:
    """The reading order of the sampled frames: step t reads sampled frame ``order[t]``.

    ``order``: an explicit permutation of ``range(num_frames)``, or a named order: ``None`` and
    ``'coarse_to_fine'`` give the official order (only defined for ``num_frames=10``); ``'sequential'`` gives
    ``0, 1, ..., T-1``.
    """
    if order is None or order == "coarse_to_fine":
        if num_frames != len(COARSE_TO_FINE):
            raise ConfigError(
                f"the coarse-to-fine order is defined for {len(COARSE_TO_FINE)} frames, "
                f"not {num_frames}; give model.adaptive.input_order explicitly"
            )
        return COARSE_TO_FINE
    if order == "sequential":
        return tuple(range(num_frames))
    if isinstance(order, str):
        raise ConfigError(f"unknown policy order {order!r}; use 'coarse_to_fine', 'sequential' or a list")
    result = tuple(int(i) for i in order)
    if sorted(result) != list(range(num_frames)):
        raise ConfigError(
            f"model.adaptive.input_order must be a permutation of 0..{num_frames - 1}, got {list(result)}"
        )
    return result
