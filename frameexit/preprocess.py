"""Per-frame preprocessing exactly as the official transforms compute it (SEMANTICS 4).

The official pipeline turns the JPEG into a tensor *first* and then resizes the
tensor with ``interpolate(mode="bilinear", align_corners=False)``, which does
not antialias. Resizing the PIL image instead looks equivalent but moves
normalised pixels by up to 0.67, enough to flip gate decisions.

pytorchvideo's evaluation transform (X3D) normalises *before* resizing
(``Div255, Normalize, ShortSideScale, CenterCrop``) and resizes a whole clip
tensor: with ``normalize_first`` the same operations run in that order, on
each colour plane as the clip layout has them, which gives pytorchvideo's
tensors bit for bit. Mathematically the order makes no difference, but float32
rounding does (about 5e-7 after normalisation), so each model's own pipeline is
kept exactly.

The resize is bit for bit the same in every process only on one torch intra-op thread: CPU bilinear
interpolation rounds differently where its work is split between threads. This module sets no thread count
(process-wide state): its callers run it on one thread (``jobs.frames`` does, through ``jobs.process``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

# the parameters live in a module without torch, so that loading a job stays fast
from .preprocess_params import IMAGENET_MEAN as IMAGENET_MEAN
from .preprocess_params import IMAGENET_STD as IMAGENET_STD
from .preprocess_params import Preprocessing

DEFAULT = Preprocessing()  # the official parameters


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(height, width)`` after resizing the shorter side to ``size`` (truncating the longer one)."""
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def crop_offsets(height: int, width: int, crop: int) -> tuple[int, int]:
    """``(top, left)`` of the centre crop; Python's ``round`` (halves to even), as the official code."""
    return round((height - crop) / 2.0), round((width - crop) / 2.0)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB float tensor of shape (3, height, width) with values in [0, 1].

    Grey, palette and CMYK images are converted to RGB first (the official code
    assumes RGB files).
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    return TF.to_tensor(image)


def preprocess_tensor(frame: torch.Tensor, params: Preprocessing = DEFAULT) -> torch.Tensor:
    """Resize, centre-crop and normalise one frame (normalise first if ``params.normalize_first``).

    ``frame``: (3, height, width) float32 in [0, 1], as :func:`to_tensor` returns it; the result is (3, crop, crop).
    Run on one torch intra-op thread to get the tensor every process gets (see the module's docstring).
    """
    if params.normalize_first:
        frame = _normalize(frame, params)
    _, height, width = frame.shape
    if min(height, width) != params.resize:
        size = resized_size(height, width, params.resize)
        if params.normalize_first:
            # pytorchvideo resizes a clip (C, T, H, W): interpolate takes the colour planes as the batch
            # and the frames as channels, which rounds as each plane alone does, not as one 3-channel
            # image does (torch's bilinear kernel vectorises over channels)
            frame = F.interpolate(frame[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        else:
            frame = F.interpolate(frame[None], size=size, mode="bilinear", align_corners=False)[0]
        height, width = size
    if height < params.crop or width < params.crop:
        raise ValueError(f"a frame of {height}x{width} pixels after resizing cannot be centre-cropped to {params.crop}")
    top, left = crop_offsets(height, width, params.crop)
    frame = frame[:, top : top + params.crop, left : left + params.crop]
    return frame if params.normalize_first else _normalize(frame, params)


def _normalize(frame: torch.Tensor, params: Preprocessing) -> torch.Tensor:
    mean = torch.as_tensor(params.mean, dtype=frame.dtype)[:, None, None]
    std = torch.as_tensor(params.std, dtype=frame.dtype)[:, None, None]
    return (frame - mean) / std


def preprocess_image(image: Image.Image, params: Preprocessing = DEFAULT) -> torch.Tensor:
    """:func:`to_tensor` then :func:`preprocess_tensor`: shape (3, crop, crop), float32."""
    return preprocess_tensor(to_tensor(image), params)
