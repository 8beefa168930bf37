"""Reading JPEG frames from disk into preprocessed tensors, and a step's backbone input from them."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from PIL import Image, UnidentifiedImageError

from frameexit.errors import FrameExitError
from frameexit.preprocess import Preprocessing, preprocess_image

T = TypeVar("T")


class FrameReadError(FrameExitError, OSError):
    """A frame file that cannot be decoded; the video is skipped with this reason."""


def read_frame(path: str, params: Preprocessing) -> torch.Tensor:
    """Decode ``path`` with PIL (converted to RGB) and preprocess it: (3, crop, crop) float32.

    Raises :class:`FrameReadError` naming the file if it is missing, truncated or not an image.
    """
    return _decoded(path, lambda image: preprocess_image(image, params))


def step_input(frames: Sequence[torch.Tensor], clips: bool) -> torch.Tensor:
    """One step's backbone input from its preprocessed frames (each (3, H, W) float32).

    A 2D backbone's step is its one frame, (3, H, W); a 3D backbone's is the
    clip, (3, clip_length, H, W), frames in temporal order (pytorchvideo's
    channel-first layout).
    """
    if clips:
        return torch.stack(list(frames), dim=1)
    (frame,) = frames
    return frame


def check_frame(path: str) -> None:
    """Decode ``path`` as :func:`read_frame` does, without preprocessing; :class:`FrameReadError` if it cannot."""
    _decoded(path, lambda image: None)


def _decoded(path: str, use: Callable[[Image.Image], T]) -> T:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return use(image)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        reason = str(exc) or type(exc).__name__
        raise FrameReadError(f"cannot read frame {path}: {reason}") from None
