"""Exit policies over one head: FrameExit's gates and the simple rules they should beat at equal cost.

Every policy decides from what replay already holds for every step: the classifiers' probabilities ``p_t``
and the gate outputs. For steps ``t = 0..T-1``:

- ``frameexit``: :mod:`frameexit.exit_rule` (``first_threshold`` at step 0, gates at 1..T-2, the last step);
- ``confidence``: the first step ``t <= T-2`` whose top probability is strictly above ``tau`` (step 0's
  comparison, in float32), else ``T-1``;
- ``fixed``: step ``k - 1`` for every video, ``k = 1..T`` frames;
- ``oracle``: the earliest step whose top class is one of the video's labels; step 0 for a video with no
  such step (or no label). No exit rule over this head reaches a higher top-1, nor that top-1 at less cost.

Each has a grid form (every video, every setting) and a single-video form for sequential inference, both
through :func:`frameexit.exit_rule.stop_steps`, where "the last step always exits" is written.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .exit_rule import first_step_exits, stop_steps
from .sweep import average_precision_block

POLICIES = ("frameexit", "confidence", "fixed", "oracle")


def confidence_fires(top_prob: npt.ArrayLike, tau: float) -> np.ndarray:
    """Whether the ``confidence`` rule fires: ``top_prob > tau`` in float32 (step 0's comparison)."""
    return first_step_exits(top_prob, tau)


def confidence_exit_steps(top_probs: npt.ArrayLike, taus: npt.ArrayLike) -> np.ndarray:
    """Exit step of every video under ``confidence`` at every ``tau``: shape (n_tau, n_videos), int64.

    ``top_probs``: (n_videos, n_steps), the top probability of each step's classifier.
    """
    top_probs = np.asarray(top_probs, dtype=np.float32)
    fires = np.stack([confidence_fires(top_probs, float(tau)) for tau in np.atleast_1d(taus)])
    return stop_steps(fires)  # its last column, step T-1, fires whatever it holds


def fixed_exit_steps(n_videos: int, n_steps: int) -> np.ndarray:
    """Exit step of every video under ``fixed`` for ``k = 1..n_steps`` frames: shape (n_steps, n_videos), int64."""
    return np.repeat(np.arange(n_steps, dtype=np.int64)[:, None], n_videos, axis=1)


def oracle_exit_steps(hits: npt.ArrayLike) -> np.ndarray:
    """Exit step of every video under ``oracle``: shape (n_videos,), int64.

    ``hits``: (n_videos, n_steps), whether step t's top class is one of the video's labels.
    """
    hits = np.asarray(hits, dtype=bool)
    return np.where(hits.any(axis=1), stop_steps(hits), 0)


def policy_fires(policy: str, step: int, *, top_prob: float, setting: float) -> bool:
    """Whether ``confidence`` (``setting``: ``tau``) or ``fixed`` (``setting``: ``k`` frames) fires at ``step``, for
    sequential inference; combine with :func:`frameexit.exit_rule.exits_at`. ``oracle`` has no single-step form
    (a video that is never right exits at step 0): sequential inference runs every step and applies
    :func:`oracle_exit_steps` to the video's row."""
    if policy == "confidence":
        return bool(confidence_fires(top_prob, setting))
    if policy == "fixed":
        return step == int(setting) - 1
    raise ValueError(f"exit policy {policy!r} has no single-step form: expected confidence or fixed")


def policy_average_precision(
    probs: np.ndarray, labels: np.ndarray, exit_steps: np.ndarray, *, max_bytes: int | None = None
) -> np.ndarray:
    """Per-class AP at every row of ``exit_steps`` (any policy's grid form): shape (n_settings, n_block), float64.

    ``probs``: (n_videos, n_steps, n_block) float32 and ``labels`` (n_videos, n_block) of some classes, rows in
    key order. The exact AP of :func:`frameexit.sweep.average_precision_block`, with no step-0 prefix: every
    exit comes from ``exit_steps``.
    """
    n = len(probs)
    no_prefix = np.zeros((1, n), dtype=bool)
    block = average_precision_block(probs, labels, np.zeros(n, np.float32), exit_steps, no_prefix, max_bytes=max_bytes)
    return block[:, 0]
