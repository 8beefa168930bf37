"""When a video stops reading frames (SEMANTICS 6).

- Step 0 exits if the top softmax probability is *strictly* above ``first_threshold``.
- Steps 1..T-2 exit if the gate output ``s_t`` is strictly below ``gate_threshold``
  (in the released checkpoints a gate output of 1 means *continue*).
- Step T-1 always exits.

Comparisons are made in float32, with the threshold rounded to float32: that is
what the official code does when it compares a float32 tensor with a Python
float, and it decides the boundary cases (``0.99`` is ``0.99000001`` in float32).
Sequential inference (:func:`exits_at`) and replay (:func:`exit_steps_grid`) both
decide through these functions; "the last step always exits" is written once, in :func:`stop_steps`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .errors import ThresholdError

#: Official defaults; ``first_threshold`` is 0.99 for ActivityNet and 0.95 for Mini-Kinetics.
DEFAULT_GATE_THRESHOLD = 0.5


def check_thresholds(first_threshold: float, gate_threshold: float) -> None:
    """Raise :class:`ThresholdError` unless both thresholds lie in [0, 1].

    ``first_threshold=1`` never exits at step 0 and ``gate_threshold=0`` never
    exits at a gate; values outside [0, 1] have no meaning for probabilities.
    """
    for name, value in (("first_threshold", first_threshold), ("gate_threshold", gate_threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
            raise ThresholdError(f"{name} must be a number in [0, 1], got {value!r}")
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise ThresholdError(f"{name} must be in [0, 1] (a probability), got {value!r}")


def first_step_exits(confidence: npt.ArrayLike, first_threshold: float) -> np.ndarray:
    """Whether step 0 exits: ``confidence > first_threshold`` in float32 (boolean array)."""
    return np.asarray(confidence, dtype=np.float32) > np.float32(first_threshold)


def gate_exits(gate_prob: npt.ArrayLike, gate_threshold: float) -> np.ndarray:
    """Whether a gate step exits: ``s_t < gate_threshold`` in float32 (boolean array)."""
    return np.asarray(gate_prob, dtype=np.float32) < np.float32(gate_threshold)


def exits_at(step: int, n_steps: int, fires: bool) -> bool:
    """Whether a video stops at ``step`` (0-based) of ``n_steps``: its rule fires there, or it is the last step.

    The single-video form of :func:`stop_steps`, for sequential inference, which
    decides a step before the next frame is read.
    """
    row = np.zeros(n_steps, dtype=bool)
    row[step] = bool(fires)  # the steps before it did not fire: the video would have stopped there
    return int(stop_steps(row)) == step


def stop_steps(fires: np.ndarray) -> np.ndarray:
    """The first step whose rule fires, along the last axis of ``fires`` (..., n_steps), the last step always
    firing: int64 of shape (...). The grid form of :func:`exits_at`."""
    fires = np.array(fires, dtype=bool)  # a copy: the last column is set here
    fires[..., -1] = True
    return fires.argmax(axis=-1).astype(np.int64)


def gate_exit_steps(gates: np.ndarray, gate_thresholds: npt.ArrayLike) -> np.ndarray:
    """Exit step of every video if step 0 does not exit: shape (n_gate_thresholds, n_videos), int64.

    The first step t >= 1 whose gate fires (``s_t < gate_threshold``), else the last step.
    ``gates``: (n_videos, n_steps - 1), column ``t - 1`` holding ``s_t``.
    """
    gates = np.asarray(gates, dtype=np.float32)
    thresholds = np.atleast_1d(gate_thresholds)
    if not len(thresholds) or gates.shape[1] == 0:
        # one step only: step 0 is the last, every video stops there
        return np.zeros((len(thresholds), gates.shape[0]), dtype=np.int64)
    return stop_steps(np.stack([gate_exits(gates, float(gt)) for gt in thresholds])) + 1


def first_exit_mask(confidence0: npt.ArrayLike, first_thresholds: npt.ArrayLike) -> np.ndarray:
    """Whether each video exits at step 0: shape (n_first_thresholds, n_videos), bool."""
    confidence0 = np.asarray(confidence0, dtype=np.float32)
    thresholds = np.atleast_1d(first_thresholds)
    if not len(thresholds):
        return np.empty((0, confidence0.shape[0]), dtype=bool)
    return np.stack([first_step_exits(confidence0, float(ft)) for ft in thresholds])


def exit_steps_grid(
    confidence0: npt.ArrayLike, gates: npt.ArrayLike, first_thresholds: npt.ArrayLike, gate_thresholds: npt.ArrayLike
) -> np.ndarray:
    """Exit step of every video at every setting: shape (n_gate, n_first, n_videos), int64.

    ``confidence0``: (n_videos,) top probability of classifier 0; ``gates``:
    (n_videos, n_steps - 1), ``s_t`` in column ``t - 1``.
    """
    first = first_exit_mask(confidence0, first_thresholds)
    return np.where(first[None], 0, gate_exit_steps(np.asarray(gates), gate_thresholds)[:, None, :])
