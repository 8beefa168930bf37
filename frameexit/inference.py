"""Sequential early-exit inference: the reference path (SEMANTICS 6).

One video at a time, one frame at a time, in policy order; a frame is read and
run through the backbone only if the video has not exited yet. This is what a
deployment does, and what replay over cached features must agree with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ThresholdError
from .exit_rule import check_thresholds, exits_at, first_step_exits, gate_exits
from .head import FrameExit
from .policies import POLICIES, oracle_exit_steps, policy_fires


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
    first_threshold: float | None = None,
    gate_threshold: float = 0.5,
    device: torch.device | str = "cpu",
    policy: str = "frameexit",
    tau: float | None = None,
    frames: int | None = None,
    labels: Sequence[int] = (),
) -> VideoDecision:
    """Run early exit on one video under an exit ``policy`` (:mod:`frameexit.policies`), reading only the frames
    it needs.

    ``model``: with a backbone, in eval mode, on ``device``. ``read_frame(position)`` returns the preprocessed
    sampled frame ``position`` (0..T-1, temporal order), a (3, H, W) float32 tensor; it is called once per step
    actually taken. Step t reads sampled frame ``order[t]``.

    ``policy``: ``frameexit`` (the gates: ``first_threshold``, required, and ``gate_threshold``), ``confidence``
    (exit at the first step whose top probability is strictly above ``tau``), ``fixed`` (exit at step
    ``frames - 1``, ``frames`` in 1..T), or ``oracle`` (exit at the earliest step whose top class is one of
    ``labels``, step 0 if none is; it runs every step, as it must know whether any is right, then decides).
    ``confidence`` and ``fixed`` stop reading as soon as their rule fires, as ``frameexit`` does.
    """
    check_policy(policy, len(order), first_threshold=first_threshold, tau=tau, frames=frames)
    if policy == "frameexit":
        check_thresholds(first_threshold, gate_threshold)
    device = torch.device(device)
    steps = _steps(model, read_frame, order, device)
    if policy == "frameexit":
        return _frameexit(model, steps, len(order), first_threshold, gate_threshold)
    if policy == "oracle":
        return _oracle(model, steps, labels)
    setting = tau if policy == "confidence" else frames
    for step, z, _ in steps:
        # fixed needs no probabilities before its exit step; confidence needs them at every step
        probs = model.probs(step, z) if policy == "confidence" else None
        top = probs.max().item() if probs is not None else math.nan
        if exits_at(step, len(order), policy_fires(policy, step, top_prob=top, setting=setting)):
            return _decision(step, probs if probs is not None else model.probs(step, z))
    raise ValueError("order must not be empty")


def check_policy(
    policy: str,
    n_steps: int,
    *,
    first_threshold: float | None = None,
    tau: float | None = None,
    frames: int | None = None,
) -> None:
    """Raise :class:`ThresholdError` unless ``policy`` is one of :data:`frameexit.policies.POLICIES` with the
    setting it needs: ``first_threshold`` for ``frameexit``, ``tau`` a probability in [0, 1] for ``confidence``,
    ``frames`` an integer in 1..``n_steps`` for ``fixed``; a setting of another policy is refused."""
    if policy not in POLICIES:
        raise ThresholdError(f"unknown exit policy {policy!r}: expected one of {', '.join(POLICIES)}")
    if tau is not None and policy != "confidence":
        raise ThresholdError(f"tau is the confidence policy's threshold, not the {policy} policy's")
    if frames is not None and policy != "fixed":
        raise ThresholdError(f"frames is the fixed policy's setting, not the {policy} policy's")
    if policy == "frameexit" and first_threshold is None:
        raise ThresholdError("the frameexit policy needs first_threshold")
    number = (int, float, np.floating)
    if policy == "confidence" and (isinstance(tau, bool) or not isinstance(tau, number) or not 0.0 <= tau <= 1.0):
        raise ThresholdError(f"tau must be in [0, 1] (a probability), got {tau!r}")
    integer = (int, np.integer)
    if policy == "fixed" and (
        isinstance(frames, bool) or not isinstance(frames, integer) or not 1 <= frames <= n_steps
    ):
        raise ThresholdError(
            f"frames must be an integer in 1..{n_steps} (the frames every video reads), got {frames!r}"
        )


def _steps(
    model: FrameExit, read_frame: Callable[[int], torch.Tensor], order: Sequence[int], device: torch.device
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """``(step, z_t, z_{t-1})`` of each step in policy order (``z_{-1}``: None), a frame read only when the
    consumer asks for the step."""
    z_prev = None
    for step, position in enumerate(order):
        frame = read_frame(position)
        if device.type == "cuda":
            frame = frame.pin_memory()
        frame = frame.to(device, non_blocking=True)[None]
        z = model.pool(model.project(model.backbone(frame)), z_prev)
        yield step, z, z_prev
        z_prev = z


def _frameexit(
    model: FrameExit,
    steps: Iterator[tuple[int, torch.Tensor, torch.Tensor | None]],
    n_steps: int,
    first_threshold: float,
    gate_threshold: float,
) -> VideoDecision:
    """FrameExit's gates (:mod:`frameexit.exit_rule`) over ``steps``."""
    last = n_steps - 1
    for step, z, z_prev in steps:
        if step == 0:
            probs = model.probs(0, z)
            if exits_at(step, n_steps, first_step_exits(probs.max().item(), first_threshold)):
                return _decision(step, probs)
        else:
            # the last step's gate is not computed: exits_at stops the video there whatever it says
            fires = step < last and bool(gate_exits(model.gate(step, z, z_prev).float().item(), gate_threshold))
            if exits_at(step, n_steps, fires):
                return _decision(step, model.probs(step, z))
    raise ValueError("order must not be empty")


def _oracle(
    model: FrameExit, steps: Iterator[tuple[int, torch.Tensor, torch.Tensor | None]], labels: Sequence[int]
) -> VideoDecision:
    """The ``oracle`` policy: every step's probabilities, then :func:`oracle_exit_steps` of the video's row (the
    top class as :func:`_decision` takes it, numpy's first maximum)."""
    probs = [model.probs(step, z) for step, z, _ in steps]
    if not probs:
        raise ValueError("order must not be empty")
    wanted = {int(c) for c in labels}
    hits = [[int(p[0].to("cpu", torch.float32).numpy().argmax()) in wanted for p in probs]]
    step = int(oracle_exit_steps(hits)[0])
    return _decision(step, probs[step])
