"""Compute cost of early exiting (SEMANTICS 8), in two conventions.

*Paper convention* (``gflops``): ``mean((exit_step + 1) * per_frame)`` with the
per-step cost hard-coded by the official code: 4.12 for ResNet-50, 1.8 for
EfficientNet-B3; and 1.96 per clip for X3D-S, from the paper's table (19.6 for
10 steps without exiting). The paper calls it GFLOPs, but 4.12 is ResNet-50's
count of multiply-accumulates (GMACs) at 224x224, 1.8 EfficientNet-B3's at
300x300 and 1.96 X3D-S's for a 13x160x160 clip; gates, projection and
classifiers are ignored. This is how 24.7 (ActivityNet) and 19.7
(Mini-Kinetics) come out. The official code charges 4.12 and 1.8 whatever the
frame size; X3D-S's 1.96 is ours, from the paper, and holds for its clip only:
another clip length or size has no paper figure (none).

*Measured* (``gmacs_measured``): multiply-accumulates of the actual backbone at
the actual input size (one frame, or one clip for a 3D backbone) plus the head, counted by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products;
element-wise operations are not counted). GFLOPs = 2 x GMACs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.flop_counter import FlopCounterMode

from . import x3d
from .backbone import build_backbone, is_clip_backbone, model_name, step_input
from .head import HIDDEN_DIM, FrameExit
from .step_costs import StepCosts

#: Per-step cost in the paper's convention, in "GFLOPs" (really GMACs): the official code's 4.12 and 1.8
#: per frame, and X3D-S's 1.96 per clip (the paper's 19.6 GFLOPs for 10 clips without exiting).
PAPER_PER_FRAME = {"resnet50": 4.12, "efficientnet_b3": 1.8, "x3d_s": 1.96}


def paper_per_frame(
    backbone_name: str, *, clip_length: int | None = None, input_size: int | None = None
) -> float | None:
    """The paper-convention cost of one step (frame or clip), or ``None`` where the paper has none (the official
    code uses 0).

    A 3D backbone's figure is the paper's for one clip of the model's own geometry (X3D-S: 13 frames of 160x160)
    and ``None`` for another ``clip_length`` or ``input_size`` (``None``: the model's own). It is not scaled: the
    cost of a clip is not proportional to its frames and pixels (the head's last convolution runs once per clip;
    torch's FLOP counter gives 3.923 GMACs for 26x160x160, not 2 x 1.962), so a scaled figure would be no one's.
    A 2D backbone's figure is the official code's, charged whatever the frame size.
    """
    short = model_name(backbone_name)
    per_step = PAPER_PER_FRAME.get(short)
    if per_step is not None and is_clip_backbone(backbone_name):
        own = x3d.spec(short)
        if (clip_length or own.clip_length, input_size or own.crop) != (own.clip_length, own.crop):
            return None
    return per_step


def exit_histogram(exit_step: npt.ArrayLike, num_steps: int = 10) -> np.ndarray:
    """Share of videos exiting at each step: shape (num_steps,), fractions summing to 1 (zeros if no video)."""
    steps = np.asarray(exit_step, dtype=np.int64)
    counts = np.bincount(steps, minlength=num_steps).astype(np.float64)
    return counts / max(len(steps), 1)


def _gmacs(fn, *args) -> float:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() / 2e9


def measure_step_costs(
    backbone_name: str,
    *,
    input_size: int,
    num_class: int,
    truncate_modules: int = -1,
    hidden_dim: int = HIDDEN_DIM,
    clip_length: int | None = None,
) -> StepCosts:
    """Count the GMACs of each part of a FrameExit model whose backbone sees frames of ``input_size`` pixels square
    (the centre crop) or, for a 3D backbone, clips of ``clip_length`` such frames (default the model's own).

    Builds the model on the meta device and runs meta tensors through it, so it
    costs no compute or memory whatever the backbone.
    """
    meta = torch.device("meta")
    backbone = build_backbone(
        backbone_name,
        truncate_modules=truncate_modules,
        device=meta,
        clip_length=clip_length,
        input_size=input_size,
    ).eval()
    frame = torch.empty(1, *step_input(backbone_name, input_size=input_size, clip_length=clip_length), device=meta)
    with torch.no_grad():
        feat_dim = backbone(frame).shape[1]
        with meta:
            model = FrameExit(None, feat_dim, num_class, hidden_dim=hidden_dim).eval()
        feats = torch.empty(1, feat_dim, device=meta)
        z = torch.empty(1, hidden_dim, device=meta)
        return StepCosts(
            backbone=_gmacs(backbone, frame),
            projection=_gmacs(model.mlp, feats),
            classifier=_gmacs(model.classifiers[0], z),
            gate=_gmacs(model.exit_selector[0], z, z),
        )
