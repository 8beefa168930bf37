"""How ``model.backbone.name`` names a backbone: ``torchvision.<model>`` (frames) or ``pytorchvideo.<model>`` (clips).

Without torch: the job's checks and the cache's key read these before any model is built.
"""

from __future__ import annotations

#: Prefix of torchvision's classification models (optional in a job: ``resnet50`` is ``torchvision.resnet50``).
TORCHVISION_PREFIX = "torchvision."
#: Prefix of the 3D backbones, whose steps read clips (pytorchvideo's names).
CLIP_PREFIX = "pytorchvideo."


def is_clip_backbone(name: str) -> bool:
    """Whether ``model.backbone.name`` is a 3D backbone, whose steps read clips (``pytorchvideo.<model>``)."""
    return name.startswith(CLIP_PREFIX)


def short_name(name: str) -> str:
    """The model name in ``model.backbone.name`` without its prefix (``torchvision.resnet50`` -> ``resnet50``,
    ``pytorchvideo.x3d_s`` -> ``x3d_s``), unchecked (:func:`frameexit.backbone.model_name` checks it)."""
    for prefix in (CLIP_PREFIX, TORCHVISION_PREFIX):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
