"""Training a FrameExit head on cached backbone features (PAPER.md sections 8-9).

The official repository has no training code; this follows what is known or
most probable, and says so:

- Stage 1: projection and the T classifiers, cross-entropy at every step on the
  max-pooled features in the policy order (softmax cross-entropy against the
  normalised multi-hot target, or binary cross-entropy for multi-label data).
- Stage 2: the gates, with stage 1 frozen, by binary cross-entropy against
  pseudo-labels made on the fly: a video should exit at step t (counted from 1)
  when that step's classification loss is at most ``beta * exp(t / 2)``. Larger
  beta means earlier exits. Step 1 keeps the confidence rule with
  ``first_threshold``; its gate is not used at inference.
- Gate polarity follows the released checkpoints: the target of the sigmoid is
  1 for *continue* and 0 for *exit*, so that ``s_t < 0.5`` means exit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .head import HIDDEN_DIM, FrameExit
from .metrics import average_precision, mean_average_precision, top1_accuracy

LOSSES = ("softmax", "bce")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters (all in the job file under ``train``).

    Attributes
    ----------
    epochs_classifier : int, default=20
        Epochs of stage 1 (projection and classifiers).
    epochs_gates : int, default=10
        Epochs of stage 2 (gates).
    batch_size : int, default=64
        Videos per mini-batch.
    lr : float, default=1e-3
        Adam learning rate of stage 1.
    lr_gates : float, default=1e-3
        Adam learning rate of stage 2.
    weight_decay : float, default=0.0
    beta : float, default=1e-3
        Pseudo-label tolerance: exit at step t when the loss is at most ``beta * exp(t / 2)``.
    loss : {'softmax', 'bce'}, default='softmax'
        Classification loss; 'bce' treats classes independently (multi-label data).
    seed : int, default=0
        Initialisation and mini-batch order.
    hidden_dim : int, default=4096
        Width of the projection (4096 in the released checkpoints).
    """

    epochs_classifier: int = 20
    epochs_gates: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_gates: float = 1e-3
    weight_decay: float = 0.0
    beta: float = 1e-3
    loss: str = "softmax"
    seed: int = 0
    hidden_dim: int = HIDDEN_DIM


def exit_tolerance(beta: float, num_steps: int) -> np.ndarray:
    """``beta * exp(t / 2)`` for t = 1..num_steps: shape (num_steps,), float64."""
    return beta * np.exp(np.arange(1, num_steps + 1) / 2.0)


def pseudo_exit_labels(losses: np.ndarray, beta: float) -> np.ndarray:
    """Whether each video should exit at each step: ``loss_t <= beta * exp(t / 2)``, t counted from 1.

    Parameters
    ----------
    losses : ndarray of shape (n_videos, n_steps)
        Per-video classification loss at each step (NaN for videos without labels: never exit-labelled).
    beta : float

    Returns
    -------
    exit : ndarray of shape (n_videos, n_steps), dtype=bool
    """
    losses = np.asarray(losses, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return losses <= exit_tolerance(beta, losses.shape[1])[None, :]


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-video loss, shape (n,): softmax CE against the normalised multi-hot target, or mean BCE.

    Videos without labels get NaN (they are left out of every mean).
    """
    labels = labels.to(logits.dtype)
    counts = labels.sum(dim=1)
    if kind == "bce":
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=1)
    else:
        target = labels / counts.clamp_min(1)[:, None]
        loss = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
    return torch.where(counts > 0, loss, torch.full_like(loss, math.nan))


def _steps_logits(model: FrameExit, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, steps, dim = features.shape
    h = model.project(features.reshape(n * steps, dim)).reshape(n, steps, -1)
    z = torch.cummax(h, dim=1).values
    return z, torch.stack([model.logits(t, z[:, t]) for t in range(steps)], dim=1)


def step_losses(
    model: FrameExit, features: torch.Tensor, labels: torch.Tensor, kind: str, chunk: int = 512
) -> np.ndarray:
    """Per-video classification loss at every step, model in eval mode: (n_videos, n_steps), float64."""
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(features), chunk):
            _, logits = _steps_logits(model, features[i : i + chunk])
            out.append(
                torch.stack(
                    [classification_loss(logits[:, t], labels[i : i + chunk], kind) for t in range(logits.shape[1])],
                    dim=1,
                )
                .double()
                .numpy()
            )
    return np.concatenate(out) if out else np.zeros((0, features.shape[1]))


def step_accuracy(
    model: FrameExit, features: torch.Tensor, labels: np.ndarray, chunk: int = 512
) -> dict[str, list[float]]:
    """Top-1 and mAP of every step's classifier after reading 1..T frames (eval mode)."""
    probs = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(features), chunk):
            _, logits = _steps_logits(model, features[i : i + chunk])
            probs.append(F.softmax(logits.float(), dim=2).numpy())
    p = np.concatenate(probs)
    steps = p.shape[1]
    return {
        "top1": [top1_accuracy(p[:, t].argmax(1), labels) for t in range(steps)],
        "map": [mean_average_precision(average_precision(p[:, t], labels)) for t in range(steps)],
    }


EpochCallback = Callable[[str, int, float, FrameExit], None]


@torch.no_grad()
def recalibrate_batchnorm(module: torch.nn.Module, forward: Callable[[torch.Tensor], object], batches) -> None:
    """Replace the running statistics of every BatchNorm in ``module`` by their average over ``batches``.

    During training the running statistics trail weights that keep moving; the
    projection's pre-activations vary little between frames, so that lag is
    amplified many times in eval mode. A pass with the final weights fixes it.
    """
    norms = [m for m in module.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    saved = [(m, m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    try:
        for batch in batches:
            forward(batch)
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    order: tuple[int, ...],
    config: TrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
) -> FrameExit:
    """Train projection, classifiers (stage 1) and gates (stage 2) on cached features.

    Parameters
    ----------
    features : ndarray of shape (n_videos, n_frames, feat_dim)
        Cached backbone features, temporal order.
    labels : ndarray of shape (n_videos, num_class)
        Multi-hot ground truth.
    order : tuple of int
        Policy order: step t reads sampled frame ``order[t]``.
    config : TrainConfig
    on_epoch : callable, optional
        ``on_epoch(stage, epoch, mean_loss, model)`` after every epoch; ``stage`` is 'classifier' or
        'gates'. It may evaluate the model; training mode is restored afterwards.

    Returns
    -------
    model : FrameExit
        Head only (``backbone`` is None), float32, eval mode.
    """
    if config.loss not in LOSSES:
        raise ValueError(f"train.loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(features, dtype=np.float32)[:, list(order)]))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    n, steps, dim = x.shape
    model = FrameExit(None, dim, y.shape[1], steps, config.hidden_dim)
    labelled = (y.sum(dim=1) > 0).nonzero().flatten()

    # stage 1: projection and classifiers, every step's loss, videos with labels
    params = list(model.mlp.parameters()) + list(model.classifiers.parameters())
    optimiser = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    for epoch in range(config.epochs_classifier):
        model.train()
        total, count = 0.0, 0
        for idx in _batches(len(labelled), config.batch_size, generator):
            batch = labelled[idx]
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            _, logits = _steps_logits(model, x[batch])
            loss = torch.stack(
                [classification_loss(logits[:, t], y[batch], config.loss) for t in range(steps)], 1
            ).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, count = total + float(loss.detach()) * len(batch), count + len(batch)
        if on_epoch:
            on_epoch("classifier", epoch, total / max(count, 1), model)

    model.eval()
    recalibrate_batchnorm(
        model.mlp,
        lambda b: model.project(x[b].reshape(-1, dim)),
        [torch.arange(i, min(i + config.batch_size, n)) for i in range(0, n, config.batch_size)],
    )

    # stage 2: gates on frozen stage 1, pseudo-labels from each step's loss
    losses = step_losses(model, x, y, config.loss)
    exit_labels = pseudo_exit_labels(losses, config.beta)
    target = torch.from_numpy((~exit_labels[:, 1:]).astype(np.float32))  # 1 = continue, as released
    usable = torch.from_numpy(~np.isnan(losses[:, 1:]))
    for module in (model.mlp, model.classifiers):
        module.requires_grad_(False)
    optimiser = torch.optim.Adam(model.exit_selector.parameters(), lr=config.lr_gates, weight_decay=config.weight_decay)
    for epoch in range(config.epochs_gates):
        model.eval()
        model.exit_selector.train()
        total, count = 0.0, 0
        for batch in _batches(n, config.batch_size, generator):
            if len(batch) < 2:
                continue
            with torch.no_grad():
                z, _ = _steps_logits(model, x[batch])
            s = torch.stack([model.gate(t, z[:, t], z[:, t - 1]) for t in range(1, steps)], dim=1)
            mask = usable[batch]
            if not mask.any():
                continue
            loss = F.binary_cross_entropy(s[mask], target[batch][mask])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, count = total + float(loss.detach()) * len(batch), count + len(batch)
        if on_epoch:
            on_epoch("gates", epoch, total / max(count, 1), model)
    model.eval()

    def gates_forward(batch: torch.Tensor) -> None:
        z, _ = _steps_logits(model, x[batch])
        for t in range(1, steps):
            model.gate(t, z[:, t], z[:, t - 1])

    recalibrate_batchnorm(
        model.exit_selector,
        gates_forward,
        [torch.arange(i, min(i + config.batch_size, n)) for i in range(0, n, config.batch_size)],
    )
    model.requires_grad_(False)
    return model.eval()
