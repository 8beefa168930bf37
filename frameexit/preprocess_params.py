"""Parameters of the per-frame preprocessing (SEMANTICS 4), importable without torch.

:mod:`frameexit.preprocess` runs the pipeline; job files are read and checked
(``frameexit prepare check``, a typo in a job) without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Parameters of the per-frame pipeline (lengths in pixels)."""

    resize: int = 224  # the shorter side after resizing
    crop: int = 224  # side of the square centre crop
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel normalisation of the [0, 1] RGB tensor
    std: tuple[float, float, float] = IMAGENET_STD
    # normalise before resizing and cropping (pytorchvideo's order), not after (the official FrameExit order)
    normalize_first: bool = False
