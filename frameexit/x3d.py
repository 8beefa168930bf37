"""Clip-level (3D) backbones: X3D from pytorchvideo, truncated before its classification projection.

pytorchvideo's ``create_x3d`` builds the network as ``Net(blocks)``: the stem,
four stages and a head, ``blocks.5``, whose ``pool`` (1x1x1 convolution, BN,
ReLU, average pool over the whole clip, 1x1x1 convolution to 2048 channels,
ReLU) is followed by dropout, the classification projection ``proj`` and a
softmax. The backbone keeps everything up to and including ``pool`` and
flattens its output: one 2048-d feature vector per clip. Parameter names are
pytorchvideo's (``blocks.0.conv.conv_t.weight`` ...), so a FrameExit checkpoint
stores them as ``module.backbone.blocks.*`` and a pytorchvideo model-zoo file
(``X3D_S.pyth``, its ``model_state``) loads once ``blocks.5.proj.*`` is dropped.

pytorchvideo (with fvcore and iopath) is an optional dependency:
``pip install 'frameexit[x3d]'``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone_names import CLIP_PREFIX
from .errors import BackboneError
from .weights_file import refusal_reason


@dataclass(frozen=True)
class X3DSpec:
    """One X3D size: ``create_x3d``'s ``input_clip_length`` (frames per clip the model was trained with),
    ``input_crop_size`` (side in pixels of the square clip) and ``depth_factor``; the length of the feature
    vector before the classification projection; the file name of pytorchvideo's Kinetics-400 model-zoo
    checkpoint."""

    clip_length: int
    crop: int
    depth_factor: float
    feature_dim: int
    zoo_file: str


#: X3D-S: 13 frames of 160x160 pixels, 1.96 GMACs per clip (the paper's 19.6 GFLOPs for 10 clips).
X3D_MODELS = {"x3d_s": X3DSpec(clip_length=13, crop=160, depth_factor=2.2, feature_dim=2048, zoo_file="X3D_S.pyth")}
#: Keys of the classification projection in a pytorchvideo X3D state dict (dropped by the truncation).
PROJECTION = "blocks.5.proj."


def spec(short: str) -> X3DSpec:
    """The :class:`X3DSpec` of ``x3d_s``; :class:`BackboneError` naming the known ones otherwise."""
    if short not in X3D_MODELS:
        known = ", ".join(CLIP_PREFIX + name for name in X3D_MODELS)
        raise BackboneError(f"model.backbone.name {CLIP_PREFIX + short!r} is not a known 3D backbone; known: {known}")
    return X3D_MODELS[short]


def _create_x3d():
    try:
        with warnings.catch_warnings():
            # fvcore, imported by pytorchvideo, scripts a loss with the deprecated torch.jit.script at import
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
            from pytorchvideo.models.x3d import create_x3d
    except ImportError as exc:
        raise BackboneError(
            f"3D backbones ({CLIP_PREFIX}x3d_s) need pytorchvideo, which is not installed ({exc}); "
            "install it with: pip install 'frameexit[x3d]'"
        ) from None
    return create_x3d


class ClipBackbone(nn.Module):
    """X3D up to the head's pooling, mapping clips (n, 3, clip_length, H, W) to features (n, feat_dim).

    ``blocks`` is pytorchvideo's module list with the head's ``proj`` removed,
    so the state dict keys are pytorchvideo's (``blocks.5.pool.post_conv.weight``).
    """

    def __init__(self, blocks: nn.ModuleList):
        super().__init__()
        self.blocks = blocks

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.device.type == "cpu" and len(clips) > 1:
            # On CPU torch runs a 3D convolution with oneDNN for a batch of clips but with its own kernel for
            # one clip, and the two round differently (up to 1e-6). Sequential inference reads one clip at a
            # time, so extraction must too, or replay and infer would disagree in the last bits.
            return torch.cat([self._features(clip[None]) for clip in clips])
        return self._features(clips)

    def _features(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips
        for block in self.blocks[:-1]:
            x = block(x)
        # the head's pool averages over the whole clip at the size the model was built for
        x = self.blocks[-1].pool(x)
        if x.shape[-3:] != (1, 1, 1):
            x = F.adaptive_avg_pool3d(x, 1)
        return x.flatten(1)


def build_x3d(short: str, *, clip_length: int, crop: int, device: torch.device | str) -> ClipBackbone:
    """X3D ``short`` built by ``create_x3d`` for clips of ``clip_length`` x ``crop`` x ``crop``, without ``proj``.

    The head's average pool covers a whole clip of that size, so the geometry
    must be the one the backbone will see. Parameters are created on ``device``
    (the meta device when weights come from a checkpoint).
    """
    x3d = spec(short)
    if crop < 32:
        raise BackboneError(
            f"{CLIP_PREFIX}{short} needs clips of at least 32x32 pixels (5 stride-2 stages), got {crop}"
        )
    create_x3d = _create_x3d()
    with torch.device(device):
        net = create_x3d(input_clip_length=clip_length, input_crop_size=crop, depth_factor=x3d.depth_factor)
    del net.blocks[-1].proj  # the classification projection; dropout and softmax hold no weights and are not run
    return ClipBackbone(net.blocks)


def zoo_weights_path(short: str) -> str:
    """Where ``torch.hub`` keeps pytorchvideo's model-zoo checkpoint of ``short`` (it may not exist)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", spec(short).zoo_file)


def zoo_state_dict(short: str, path: str | None = None) -> dict[str, torch.Tensor]:
    """The backbone weights of a pytorchvideo model-zoo checkpoint (``model_state``), without ``proj``.

    Read from disk only, with ``weights_only=True``; by default from torch's hub
    cache, where pytorchvideo's ``x3d_s(pretrained=True)`` would have put it.
    :class:`BackboneError` if the file is missing (saying where it was expected), unreadable, or has no
    ``model_state``.
    """
    path = path or zoo_weights_path(short)
    if not os.path.isfile(path):
        raise BackboneError(
            f"Kinetics weights for {CLIP_PREFIX}{short} are not on disk (expected {path}) and frameexit never downloads. "
            "FrameExit checkpoints carry their fine-tuned backbone: set checkpoint.init, or place pytorchvideo's "
            f"model-zoo file {spec(short).zoo_file} at that path, or set model.backbone.pretrained: False."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for unreadable files
        raise BackboneError(f"cannot read {path} with weights_only=True: {refusal_reason(exc)}") from None
    state = checkpoint.get("model_state") if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(
            f"{path} is not a pytorchvideo model-zoo checkpoint: it has no 'model_state' mapping of tensors"
        )
    return {k: v for k, v in state.items() if not k.startswith(PROJECTION)}
