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
    """Parameters of the per-frame pipeline.

    Attributes
    ----------
    resize : int, default=224
        Length in pixels of the shorter side after resizing.
    crop : int, default=224
        Side in pixels of the square centre crop.
    mean, std : tuple of 3 floats
        Per-channel normalisation of the [0, 1] RGB tensor.
    normalize_first : bool, default=False
        Normalise before resizing and cropping (pytorchvideo's order) instead of
        after (the official FrameExit order).
    """

    resize: int = 224
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    normalize_first: bool = False
