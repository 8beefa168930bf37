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

#: ``read_frame(position)`` returns sampled frame ``position`` (0..T-1, temporal order), preprocessed: (3, H, W) float32.
FrameReader = Callable[[int], torch.Tensor]


@dataclass(frozen=True)
class VideoDecision:
    """The outcome of early exit on one video.

    Attributes
    ----------
    exit_step : int
        0-based step at which the video exited; ``exit_step + 1`` frames were read.
    prediction : int
        Class index with the highest probability at the exit step.
    confidence : float
        That probability, in [0, 1].
    probs : ndarray of shape (num_class,), dtype=float32
        ``softmax(logits_t(z_t))`` at the exit step.
    """

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
    read_frame: FrameReader,
    order: Sequence[int],
    *,
    first_threshold: float,
    gate_threshold: float = 0.5,
    device: torch.device | str = "cpu",
) -> VideoDecision:
    """Run early exit on one video, reading only the frames it needs.

    Parameters
    ----------
    model : FrameExit
        With a backbone, in eval mode, on ``device``.
    read_frame : callable
        ``read_frame(position)`` returns the preprocessed sampled frame ``position``,
        a (3, H, W) float32 tensor; it is called once per step actually taken.
    order : sequence of int of length n_steps
        Policy order: step t reads sampled frame ``order[t]``.
    first_threshold, gate_threshold : float in [0, 1]
        Exit at step 0 if the top probability is above ``first_threshold``; at a
        gate step if ``s_t`` is below ``gate_threshold``.
    device : torch.device or str, default='cpu'
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
