"""Hyper-parameters of head training and their checks, importable without torch.

The job loader validates ``train.*`` keys with :func:`config_problem`; a typo in
a job must be reported before torch (seconds to import) is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HIDDEN_DIM = 4096  # width of the projection in the released checkpoints
#: The head's arithmetic (frameexit.head.HEAD_DTYPE), named without torch: stored exit tables record it.
HEAD_PRECISION = "float64"

LOSSES = ("softmax", "bce")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters (all in the job file under ``train``)."""

    epochs_classifier: int = 20  # stage 1 (projection and classifiers)
    epochs_gates: int = 10  # stage 2 (gates)
    batch_size: int = 64  # videos per mini-batch
    lr: float = 1e-3  # Adam learning rate of stage 1
    lr_gates: float = 1e-3  # Adam learning rate of stage 2
    weight_decay: float = 0.0
    beta: float = 1e-3  # pseudo-label tolerance: exit at step t when the loss is at most beta * exp(t / 2)
    loss: str = "softmax"  # one of LOSSES; 'bce' treats classes independently (multi-label data)
    seed: int = 0  # initialisation and mini-batch order
    hidden_dim: int = HIDDEN_DIM  # width of the projection


# why each lower bound: a setting below it trains nothing, or trains without meaning, yet would run
_AT_LEAST = {
    "epochs_classifier": (1, "without stage 1 the classifiers keep their random initialisation"),
    "epochs_gates": (1, "without stage 2 the gates keep their random initialisation and exit at random"),
    "batch_size": (2, "BatchNorm needs two videos per mini-batch; smaller batches are skipped"),
    "hidden_dim": (1, "the width of the projection"),
}


def config_problem(config: TrainConfig) -> str | None:
    """The first hyper-parameter that cannot give a trained head, as ``train.<key> must be ..., got ...``.

    ``None`` when every setting is usable. Shared by the job loader and :func:`train_head`.
    """
    for key, (least, why) in _AT_LEAST.items():
        value = getattr(config, key)
        if value < least:
            return f"train.{key} must be at least {least}, got {value} ({why})"
    for key in ("lr", "lr_gates", "beta"):
        value = getattr(config, key)
        if not (math.isfinite(value) and value > 0):
            return f"train.{key} must be a finite number above 0, got {value:g}"
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        return f"train.weight_decay must be a finite number of at least 0, got {config.weight_decay:g}"
    if config.loss not in LOSSES:
        return f"train.loss must be one of {', '.join(LOSSES)}, got {config.loss!r}"
    return None
