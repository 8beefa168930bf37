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

    def mean_video_gmacs(self, mean_frames: npt.ArrayLike, share_step0: npt.ArrayLike) -> Any:
        """Mean over videos of the GMACs sequential early exit spends, from their mean frames read and the share
        exiting at step 0.

        A video exiting at step t reads t + 1 frames (backbone and projection),
        evaluates classifier 0 for the step-0 rule, gates 1..t, and, if t > 0,
        the classifier of its exit step: exactly what :mod:`frameexit.inference` runs.
        The cost is linear in the exit step except for the exit classifier, which
        every video that passes step 0 runs: these two figures determine the mean.
        NaN when ``mean_frames`` is (no videos). Of two floats a float; of arrays (every
        setting of a grid) an array, element by element.
        """
        frames = np.asarray(mean_frames, dtype=np.float64)
        t = frames - 1.0  # mean exit step
        gmacs = (
            frames * (self.backbone + self.projection)
            + self.classifier
            + t * self.gate
            + (1.0 - np.asarray(share_step0, dtype=np.float64)) * self.classifier
        )
        return float(gmacs) if gmacs.ndim == 0 else gmacs
