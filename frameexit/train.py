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

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, DatasetError, TrainingError
from .head import FrameExit
from .metrics import average_precision, mean_average_precision, top1_accuracy
from .train_config import LOSSES, TrainConfig, config_problem  # noqa: F401  (re-exported)


def _check_weights(model: torch.nn.Module, stage: str, epoch: int, config: TrainConfig, recalibrated=False) -> None:
    """Raise :func:`_diverged` naming the floating parameters or buffers of ``model`` holding NaN or +-inf."""
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        what = f"BatchNorm statistics in {bad[0]}" if recalibrated else f"weights in {', '.join(bad[:5])}"
        raise _diverged(stage, epoch, config, f"non-finite {what}")


def _diverged(stage: str, epoch: int, config: TrainConfig, what: str) -> TrainingError:
    """The error for ``stage`` diverging in ``epoch`` (0-based), naming the learning rate to lower."""
    lr_key = "lr" if stage.startswith("stage 1") else "lr_gates"
    epochs = config.epochs_classifier if lr_key == "lr" else config.epochs_gates
    return TrainingError(
        f"training diverged in {stage}, epoch {epoch + 1} of {epochs}: {what}; "
        f"lower train.{lr_key} ({getattr(config, lr_key):g})"
    )


def exit_tolerance(beta: float, num_steps: int) -> np.ndarray:
    """``beta * exp(t / 2)`` for t = 1..num_steps: shape (num_steps,), float64."""
    return beta * np.exp(np.arange(1, num_steps + 1) / 2.0)


def pseudo_exit_labels(losses: np.ndarray, beta: float) -> np.ndarray:
    """Whether each video should exit at each step: ``loss_t <= beta * exp(t / 2)``, t counted from 1.

    ``losses`` (n_videos, n_steps): per-video classification loss at each step (NaN for videos without labels:
    never exit-labelled). Returns bool of the same shape.
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
    z = model.pooled(features)
    return z, torch.stack([model.logits(t, z[:, t]) for t in range(z.shape[1])], dim=1)


def _eval_logits(model: FrameExit, features: torch.Tensor, chunk: int):
    """``(rows, logits of every step)`` of consecutive chunks of ``chunk`` videos, model in eval mode."""
    model.eval()
    for i in range(0, len(features), chunk):
        with torch.no_grad():
            yield slice(i, i + chunk), _steps_logits(model, features[i : i + chunk])[1]


def step_losses(
    model: FrameExit, features: torch.Tensor, labels: torch.Tensor, kind: str, chunk: int = 512
) -> np.ndarray:
    """Per-video classification loss at every step, model in eval mode: (n_videos, n_steps), float64."""
    out = [
        torch.stack([classification_loss(logits[:, t], labels[rows], kind) for t in range(logits.shape[1])], dim=1)
        .double()
        .numpy()
        for rows, logits in _eval_logits(model, features, chunk)
    ]
    return np.concatenate(out) if out else np.zeros((0, features.shape[1]))


def step_accuracy(
    model: FrameExit, features: torch.Tensor, labels: np.ndarray, chunk: int = 512
) -> dict[str, list[float]]:
    """Top-1 and mAP of every step's classifier after reading 1..T frames (eval mode)."""
    p = np.concatenate([F.softmax(logits.float(), dim=2).numpy() for _, logits in _eval_logits(model, features, chunk)])
    steps = p.shape[1]
    return {
        "top1": [top1_accuracy(p[:, t].argmax(1), labels) for t in range(steps)],
        "map": [mean_average_precision(average_precision(p[:, t], labels)) for t in range(steps)],
    }


EpochCallback = Callable[[str, int, float, FrameExit], None]


class _Through(torch.nn.Module):
    """``module`` (whose BatchNorms are recalibrated) reached through another forward (the steps before it)."""

    def __init__(self, module: torch.nn.Module, forward: Callable[[torch.Tensor], object]):
        super().__init__()
        self.module = module
        self._forward = forward

    def forward(self, batch: torch.Tensor) -> object:
        return self._forward(batch)


def recalibrate_batchnorm(module: torch.nn.Module, forward: Callable[[torch.Tensor], object], batches) -> None:
    """Replace the running statistics of every BatchNorm in ``module`` by their average over ``batches``.

    During training the running statistics trail weights that keep moving; the
    projection's pre-activations vary little between frames, so that lag is
    amplified many times in eval mode. A pass with the final weights fixes it.
    ``forward(batch)`` runs whatever leads to ``module``; torch's
    ``swa_utils.update_bn`` does the pass (cumulative average over the batches,
    momenta and training mode restored), and only ``module`` is put in training mode.
    """
    modes = [(m, m.training) for m in module.modules()]
    torch.optim.swa_utils.update_bn(batches, _Through(module, forward))
    for m, training in modes:  # update_bn restores the mode of its (new) wrapper, not of each submodule
        m.training = training


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


def _chunks(n: int, batch_size: int) -> list[torch.Tensor]:
    """Consecutive indices ``0..n-1`` in chunks of ``batch_size``; a last chunk of one joins the one before.

    BatchNorm in training mode refuses a batch of one video, so recalibration must not see one.
    """
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [torch.arange(a, b) for a, b in zip(starts, [*starts[1:], n], strict=True)]


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    order: tuple[int, ...],
    config: TrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
) -> FrameExit:
    """Train projection, classifiers (stage 1) and gates (stage 2) on cached features; a head alone (``backbone``
    None), float32, eval mode, every weight finite.

    ``features`` (n_videos, n_frames, feat_dim): cached, temporal order; ``labels`` (n_videos, num_class):
    multi-hot; ``order``: step t reads sampled frame ``order[t]``. ``on_epoch(stage, epoch, mean_loss, model)``
    runs after every epoch; ``stage`` is 'classifier' or 'gates'; ``mean_loss`` is the per-video mean over the
    epoch's trained mini-batches, always finite. It may evaluate the model; training mode is restored afterwards.

    Raises :class:`ConfigError` for a setting that cannot train (:func:`config_problem`), :class:`DatasetError`
    for fewer than two videos with labels, :class:`TrainingError` for non-finite features, or a loss or weights
    that became NaN or infinite (naming the stage and epoch).
    """
    problem = config_problem(config)
    if problem:
        raise ConfigError(problem)
    # the seed fixes the head's initialisation without changing the caller's random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)  # one stream for both stages, in this order
        x, y, labelled = _training_tensors(features, labels, order)
        _, steps, dim = x.shape
        model = FrameExit(None, dim, y.shape[1], steps, config.hidden_dim)
        _train_classifiers(model, x, y, labelled, config, generator, on_epoch)
        _train_gates(model, x, y, config, generator, on_epoch)
        model.requires_grad_(False)
        return model.eval()


def _training_tensors(
    features: np.ndarray, labels: np.ndarray, order: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features in policy order, labels, and the rows with a label; errors for non-finite features or fewer
    than two labelled videos."""
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(features, dtype=np.float32)[:, list(order)]))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    n = x.shape[0]
    bad_rows = (~torch.isfinite(x)).reshape(n, -1).any(dim=1).nonzero().flatten().tolist()
    if bad_rows:
        shown = ", ".join(map(str, bad_rows[:8])) + (", ..." if len(bad_rows) > 8 else "")
        raise TrainingError(f"non-finite values in the features of {len(bad_rows)} videos (rows {shown})")
    labelled = (y.sum(dim=1) > 0).nonzero().flatten()
    if len(labelled) < 2:
        # every mini-batch would be skipped, and the epochs would report a loss of nothing
        raise DatasetError(
            f"{len(labelled)} video with labels; training needs at least 2 (BatchNorm needs two per mini-batch)"
            if len(labelled) == 1
            else f"{len(labelled)} videos with labels; training needs at least 2"
        )
    return x, y, labelled


def _train_classifiers(
    model: FrameExit,
    x: torch.Tensor,
    y: torch.Tensor,
    labelled: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    on_epoch: EpochCallback | None,
) -> None:
    """Stage 1: projection and classifiers on every step's loss, videos with labels; then BatchNorm recalibrated."""
    n, steps, dim = x.shape
    stage = "stage 1 (classifiers)"
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
            if not torch.isfinite(loss):  # a step on it would spread NaN to every weight
                raise _diverged(stage, epoch, config, f"the loss is {float(loss.detach())}")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, count = total + float(loss.detach()) * len(batch), count + len(batch)
        _check_weights(model, stage, epoch, config)
        if on_epoch:
            on_epoch("classifier", epoch, total / count, model)  # count > 0: two labelled videos, batches >= 2

    model.eval()
    chunks = _chunks(n, config.batch_size)
    recalibrate_batchnorm(model.mlp, lambda b: model.project(x[b].reshape(-1, dim)), chunks)
    _check_weights(model, stage, config.epochs_classifier - 1, config, recalibrated=True)


def _train_gates(
    model: FrameExit,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    on_epoch: EpochCallback | None,
) -> None:
    """Stage 2: the gates on frozen stage 1, pseudo-labels from each step's loss; then BatchNorm recalibrated."""
    n, steps = x.shape[:2]
    chunks = _chunks(n, config.batch_size)
    stage = "stage 2 (gates)"
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
            if not bool(torch.isfinite(s[mask]).all()):  # binary_cross_entropy would fail on NaN with a traceback
                raise _diverged(stage, epoch, config, "the gates output NaN")
            loss = F.binary_cross_entropy(s[mask], target[batch][mask])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, count = total + float(loss.detach()) * len(batch), count + len(batch)
        _check_weights(model, stage, epoch, config)  # stage 1 is frozen: anything non-finite is in the gates
        if count == 0:  # cannot happen with two labelled videos; a loss of 0.0 here would be a made-up number
            raise TrainingError(f"{stage}, epoch {epoch + 1}: no mini-batch had a video with labels")
        if on_epoch:
            on_epoch("gates", epoch, total / count, model)
    model.eval()

    def gates_forward(batch: torch.Tensor) -> None:
        z, _ = _steps_logits(model, x[batch])
        for t in range(1, steps):
            model.gate(t, z[:, t], z[:, t - 1])

    recalibrate_batchnorm(model.exit_selector, gates_forward, chunks)
    _check_weights(model, stage, config.epochs_gates - 1, config, recalibrated=True)
