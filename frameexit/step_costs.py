"""Measured cost of videos by their exit steps, from the measured GMACs of each part of the network
(:func:`frameexit.cost.measure_step_costs`): importable without torch, for a report recomputing costs over
another set of videos."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class StepCosts:
    """Measured GMACs of each part of the network: ``backbone``, one step (a frame; a clip for a 3D backbone) at
    the configured input size; ``projection``, one frame's features; ``classifier``, one classifier on pooled
    features; ``gate``, one gate (its branch twice, then the linear layer)."""

    backbone: float
    projection: float
    classifier: float
    gate: float

    def step_gmacs(self, n_steps: int, policy: str = "frameexit") -> np.ndarray:
        """GMACs a video exiting at step t spends under exit ``policy``, for t = 0..n_steps-1: shape (n_steps,).

        Every policy reads t + 1 frames (backbone and projection); the head's share is what each policy runs:

        - ``frameexit`` (:mod:`frameexit.inference`): classifier 0 for the step-0 rule, the gates of steps
          1..min(t, T-2) (the last step exits without its gate), and, if t > 0, the exit step's classifier;
        - ``confidence``: the classifier of every step read (its rule reads each step's top probability);
        - ``fixed``: the classifier of the exit step alone;
        - ``oracle``: as ``fixed``, what a perfect stop rule would spend (no rule can know the right step: the
          oracle's sequential reference runs every step to find it, and its cost is not what it reports).
        """
        t = np.arange(n_steps, dtype=np.float64)
        frames = (t + 1.0) * (self.backbone + self.projection)
        if policy == "frameexit":
            gates = np.clip(np.minimum(t, n_steps - 2), 0, None)
            head = self.classifier + gates * self.gate + (t > 0) * self.classifier
        elif policy == "confidence":
            head = (t + 1.0) * self.classifier
        elif policy in ("fixed", "oracle"):
            head = np.full(n_steps, self.classifier)
        else:
            raise ValueError(f"unknown exit policy {policy!r}")
        return frames + head

    def mean_video_gmacs(self, exit_histogram: npt.ArrayLike, policy: str = "frameexit") -> Any:
        """Mean over videos of the GMACs exit ``policy`` spends (:meth:`step_gmacs`), from the share of videos
        exiting at each step (``exit_histogram``, last axis the steps: one setting, or every setting of a grid).
        NaN without videos (a histogram of zeros). Of one histogram a float, of several an array."""
        hist = np.asarray(exit_histogram, dtype=np.float64)
        gmacs = hist @ self.step_gmacs(hist.shape[-1], policy)
        gmacs = np.where(hist.sum(axis=-1) > 0, gmacs, np.nan)
        return float(gmacs) if gmacs.ndim == 0 else gmacs
