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
