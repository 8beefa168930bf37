"""Per-step feature extractors: torchvision classification models, truncated as the official code does,
and clip-level (3D) models from pytorchvideo.

The official configs name a backbone as ``torchvision.<model>`` and keep
``children[:-1]`` (``truncate_modules: -1``), which drops the classifier. The
output is global-average-pooled if it still has a spatial extent, then
flattened: 2048 features for ResNet-50, 1536 for EfficientNet-B3. A step of
such a 2D backbone reads one frame, ``(3, H, W)``.

``pytorchvideo.x3d_s`` is X3D-S (:mod:`frameexit.x3d`): a step reads a clip,
``(3, clip_length, H, W)``, and gives 2048 features.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from . import x3d
from .backbone_names import TORCHVISION_PREFIX, is_clip_backbone, short_name
from .errors import BackboneError
from .weights_file import refusal_reason


def model_name(name: str) -> str:
    """The model name in a config's ``model.backbone.name`` (``torchvision.resnet50`` -> ``resnet50``,
    ``pytorchvideo.x3d_s`` -> ``x3d_s``)."""
    short = short_name(name)
    if is_clip_backbone(name):
        x3d.spec(short)
        return short
    known = torchvision.models.list_models(module=torchvision.models)
    if short not in known:
        close = difflib.get_close_matches(short, known, n=3)
        hint = f" Did you mean {', '.join(TORCHVISION_PREFIX + c for c in close)}?" if close else ""
        raise BackboneError(f"model.backbone.name {name!r} is not a torchvision classification model.{hint}")
    return short


class Backbone(nn.Module):
    """A truncated torchvision model mapping frames (n, 3, H, W) to features (n, feat_dim).

    Children are kept as ``self.<index>`` so the state dict reads
    ``0.weight``, ``4.0.conv1.weight`` ... as in the official checkpoints.
    """

    def __init__(self, children: list[nn.Module]):
        super().__init__()
        for i, child in enumerate(children):
            self.add_module(str(i), child)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames
        for child in self.children():
            x = child(x)
        if x.dim() == 4 and x.shape[-2:] != (1, 1):
            x = F.adaptive_avg_pool2d(x, 1)
        return x.flatten(1)


def _truncate(net: nn.Module, truncate_modules: int) -> Backbone:
    children = list(net.children())
    if truncate_modules >= 0 or -truncate_modules >= len(children):
        raise BackboneError(
            f"model.backbone.truncate_modules must be between -{len(children) - 1} and -1, got {truncate_modules}"
        )
    return Backbone(children[:truncate_modules])


def build_backbone(
    name: str,
    *,
    truncate_modules: int = -1,
    device: torch.device | str | None = None,
    clip_length: int | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """An uninitialised truncated :class:`Backbone` (2D) or :class:`frameexit.x3d.ClipBackbone` (3D), parameters
    on ``device`` (default the meta device).

    Weights are meant to come from a checkpoint (``load_state_dict(..., assign=True)``)
    or from :func:`pretrained_state_dict`; building on the meta device skips the
    cost of a random initialisation that would be overwritten anyway.

    ``truncate_modules``: children kept (``children[:truncate_modules]``); a 3D backbone is always cut before its
    classification projection and accepts only -1. ``clip_length``, ``input_size``: 3D backbones only, the clip
    the backbone will see (frames, and the side in pixels), which sizes the head's average pool; default the
    model's own (X3D-S: 13 frames of 160 pixels).
    """
    short = model_name(name)
    if is_clip_backbone(name):
        if truncate_modules != -1:
            raise BackboneError(
                f"{name} is cut before its classification projection; "
                f"model.backbone.truncate_modules must be -1, got {truncate_modules}"
            )
        spec = x3d.spec(short)
        return x3d.build_x3d(
            short,
            clip_length=clip_length or spec.clip_length,
            crop=input_size or spec.crop,
            device=device or "meta",
        )
    with torch.device(device or "meta"):
        net = torchvision.models.get_model(short, weights=None)
    return _truncate(net, truncate_modules)


def step_input(name: str, *, input_size: int, clip_length: int | None = None) -> tuple[int, ...]:
    """Shape of what one step feeds the backbone: ``(3, H, W)`` for a 2D backbone,
    ``(3, clip_length, H, W)`` for a 3D one (``clip_length`` default the model's own)."""
    if is_clip_backbone(name):
        return (3, clip_length or x3d.spec(model_name(name)).clip_length, input_size, input_size)
    return (3, input_size, input_size)


def random_backbone(name: str, *, seed: int, truncate_modules: int = -1) -> Backbone:
    """A backbone with torchvision's default random initialisation under a fixed seed (CPU; torchvision models)."""
    if is_clip_backbone(name):
        raise BackboneError(f"random_backbone builds torchvision models only, not {name}")
    short = model_name(name)
    # torchvision initialises from torch's global generator (it takes no generator): seeded on a fork of it,
    # so that the caller's random state is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.get_model(short, weights=None)
    return _truncate(net, truncate_modules)


def feature_dim(name: str, *, truncate_modules: int = -1, input_size: int = 224, clip_length: int | None = None) -> int:
    """Length of the feature vector the truncated backbone gives for one step (frame or clip) of ``input_size``."""
    backbone = build_backbone(
        name, truncate_modules=truncate_modules, device="meta", clip_length=clip_length, input_size=input_size
    )
    shape = step_input(name, input_size=input_size, clip_length=clip_length)
    with torch.no_grad():
        out = backbone(torch.empty(1, *shape, device="meta"))
    return int(out.shape[1])


def pretrained_state_dict(name: str, *, truncate_modules: int = -1) -> Mapping[str, torch.Tensor]:
    """The published weights of the truncated backbone, read from torch's hub cache only.

    torchvision models: ImageNet (:func:`imagenet_state_dict`); pytorchvideo
    models: the Kinetics model-zoo checkpoint (:func:`frameexit.x3d.zoo_state_dict`).
    Keys are those of :func:`build_backbone`'s module. Nothing is ever downloaded.
    """
    if is_clip_backbone(name):
        return x3d.zoo_state_dict(model_name(name))
    return imagenet_state_dict(name, truncate_modules=truncate_modules)


def imagenet_weights_path(name: str) -> str:
    """Where torch keeps the default ImageNet weights of a torchvision model (it may not exist)."""
    weights = torchvision.models.get_model_weights(model_name(name)).DEFAULT
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def imagenet_state_dict(name: str, *, truncate_modules: int = -1) -> Mapping[str, torch.Tensor]:
    """The torchvision ImageNet weights of the truncated backbone, read from disk only.

    Nothing is ever downloaded: if the weights file is not already in torch's
    hub cache, this raises :class:`BackboneError` saying where it was expected.
    """
    path = imagenet_weights_path(name)
    if not os.path.isfile(path):
        raise BackboneError(
            f"ImageNet weights for {name} are not on disk (expected {path}) and frameexit never downloads. "
            "FrameExit checkpoints carry their fine-tuned backbone: set checkpoint.init, "
            "or place the torchvision weights file at that path, or set model.backbone.pretrained: False."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for unreadable files
        raise BackboneError(f"cannot read ImageNet weights file {path}: {refusal_reason(exc)}") from None
    with torch.device("meta"):
        net = torchvision.models.get_model(model_name(name), weights=None)
    kept = [child for child, _ in net.named_children()][:truncate_modules]
    index = {child: str(i) for i, child in enumerate(kept)}
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in index:
            out[f"{index[head]}.{rest}"] = value
    return out
