"""When a video stops reading frames (SEMANTICS 6).

- Step 0 exits if the top softmax probability is *strictly* above ``first_threshold``.
- Steps 1..T-2 exit if the gate output ``s_t`` is strictly below ``gate_threshold``
  (in the released checkpoints a gate output of 1 means *continue*).
- Step T-1 always exits.

Comparisons are made in float32, with the threshold rounded to float32: that is
what the official code does when it compares a float32 tensor with a Python
float, and it decides the boundary cases (``0.99`` is ``0.99000001`` in float32).
Sequential inference and replay both decide through these functions.
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


def exit_steps(
    confidence: npt.ArrayLike,
    gates: npt.ArrayLike,
    first_threshold: float,
    gate_threshold: float = DEFAULT_GATE_THRESHOLD,
) -> np.ndarray:
    """The step at which each video exits, from its step-0 confidence and its gate outputs.

    Parameters
    ----------
    confidence : array-like of shape (n_videos,)
        Top softmax probability of classifier 0.
    gates : array-like of shape (n_videos, n_steps - 1)
        ``s_t`` for steps 1..T-1 (column ``t - 1``).
    first_threshold, gate_threshold : float in [0, 1]

    Returns
    -------
    exit_step : ndarray of shape (n_videos,), dtype=int64
        0-based step; the number of frames read is ``exit_step + 1``.
    """
    check_thresholds(first_threshold, gate_threshold)
    gates = np.asarray(gates, dtype=np.float32)
    n, n_gates = gates.shape
    fires = np.empty((n, n_gates + 1), dtype=bool)
    fires[:, 0] = first_step_exits(confidence, first_threshold)
    fires[:, 1:] = gate_exits(gates, gate_threshold)
    fires[:, -1] = True
    return fires.argmax(axis=1).astype(np.int64)
