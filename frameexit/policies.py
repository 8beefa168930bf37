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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .exit_rule import first_step_exits, stop_steps

POLICIES = ("frameexit", "confidence", "fixed", "oracle")
#: The policies whose settings are not frameexit's (first, gate) grid: each has one threshold of its own, or none.
BASELINES = POLICIES[1:]


@dataclass(frozen=True)
class PolicySetting:
    """One setting of a baseline policy: ``tau`` (a probability) for ``confidence``, ``frames`` (k, 1..T) for
    ``fixed``, neither for ``oracle``."""

    policy: str
    tau: float | None = None
    frames: int | None = None


def policy_settings(policies: Sequence[str], taus: Sequence[float], n_steps: int) -> list[PolicySetting]:
    """The settings replay evaluates for the baseline ``policies`` (frameexit's are its grid), in
    :data:`BASELINES` order: ``confidence`` at every ``tau``, ``fixed`` at ``k = 1..n_steps``, ``oracle`` once."""
    out: list[PolicySetting] = []
    if "confidence" in policies:
        out += [PolicySetting("confidence", tau=float(t)) for t in taus]
    if "fixed" in policies:
        out += [PolicySetting("fixed", frames=k) for k in range(1, n_steps + 1)]
    if "oracle" in policies:
        out.append(PolicySetting("oracle"))
    return out


def policy_exit_steps(settings: Sequence[PolicySetting], top_probs: npt.ArrayLike, hits: npt.ArrayLike) -> np.ndarray:
    """Exit step of every video at every baseline setting: shape (n_settings, n_videos), int64.

    ``top_probs``: (n_videos, n_steps) float32, each step's top probability; ``hits``: (n_videos, n_steps), whether
    step t's top class is one of the video's labels.
    """
    top_probs, hits = np.asarray(top_probs, dtype=np.float32), np.asarray(hits, dtype=bool)
    n = len(top_probs)
    out = np.empty((len(settings), n), dtype=np.int64)
    by_policy: dict[str, list[int]] = {}
    for row, setting in enumerate(settings):
        by_policy.setdefault(setting.policy, []).append(row)
    for policy, rows in by_policy.items():
        if policy == "confidence":
            out[rows] = confidence_exit_steps(top_probs, [settings[r].tau for r in rows])
        elif policy == "fixed":
            out[rows] = fixed_exit_steps(n, top_probs.shape[1])[[settings[r].frames - 1 for r in rows]]
        elif policy == "oracle":
            out[rows] = oracle_exit_steps(hits)[None, :]
        else:
            raise ValueError(f"unknown baseline exit policy {policy!r}: expected one of {', '.join(BASELINES)}")
    return out


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
