"""Sequential early-exit inference: the reference path (SEMANTICS 6).

One video at a time, one frame at a time, in policy order; a frame is read and
run through the backbone only if the video has not exited yet. This is what a
deployment does, and what replay over cached features must agree with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .exit_rule import check_thresholds, exits_at, first_step_exits, gate_exits
from .head import FrameExit


@dataclass(frozen=True)
class VideoDecision:
    """The outcome of early exit on one video: ``exit_step`` (0-based; ``exit_step + 1`` frames were read), and
    at that step the ``probs`` (num_class,) float32, their top class ``prediction`` and its ``confidence``."""

    exit_step: int
    prediction: int
    confidence: float
    probs: np.ndarray


def _decision(step: int, probs: torch.Tensor) -> VideoDecision:
    probs = probs[0].to("cpu", torch.float32).numpy()
    prediction = int(probs.argmax())
    return VideoDecision(step, prediction, float(probs[prediction]), probs)


@torch.inference_mode()
def infer_video(
    model: FrameExit,
    read_frame: Callable[[int], torch.Tensor],
    order: Sequence[int],
    *,
    first_threshold: float,
    gate_threshold: float = 0.5,
    device: torch.device | str = "cpu",
) -> VideoDecision:
    """Run early exit on one video, reading only the frames it needs.

    ``model``: with a backbone, in eval mode, on ``device``. ``read_frame(position)`` returns the preprocessed
    sampled frame ``position`` (0..T-1, temporal order), a (3, H, W) float32 tensor; it is called once per step
    actually taken. Step t reads sampled frame ``order[t]``.
    """
    check_thresholds(first_threshold, gate_threshold)
    device = torch.device(device)
    last = len(order) - 1
    z_prev = None
    for step, position in enumerate(order):
        frame = read_frame(position)
        if device.type == "cuda":
            frame = frame.pin_memory()
        frame = frame.to(device, non_blocking=True)[None]
        z = model.pool(model.project(model.backbone(frame)), z_prev)
        if step == 0:
            probs = model.probs(0, z)
            if exits_at(step, len(order), first_step_exits(probs.max().item(), first_threshold)):
                return _decision(step, probs)
        else:
            # the last step's gate is not computed: exits_at stops the video there whatever it says
            fires = step < last and bool(gate_exits(model.gate(step, z, z_prev).float().item(), gate_threshold))
            if exits_at(step, len(order), fires):
                return _decision(step, model.probs(step, z))
        z_prev = z
    raise ValueError("order must not be empty")
