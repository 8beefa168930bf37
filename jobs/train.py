"""`frameexit train`: a FrameExit head trained on the cached features of a training split."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cache.reader import FeatureCache
from frameexit.checkpoint import build_backbone_from_state, save_checkpoint
from frameexit.train import step_accuracy, train_head

from .config import Job
from .extract import ExtractOptions, extract
from .model import checkpoint_state
from .progress import progress as progress_bar


@dataclass(frozen=True)
class TrainResult:
    """The exported checkpoint, the loss of every epoch, and per-step validation accuracy (if any)."""

    checkpoint: str
    history: list[dict[str, Any]]
    validation: dict[str, list[float]] | None
    n_videos: int
    cache_dir: str


def cached_arrays(cache_dir: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(videos, features (n, T, D) float32, labels (n, C))`` of a complete cache, shards verified."""
    cache = FeatureCache.open(cache_dir)
    shards = list(cache.iter_shards())
    videos = [v for s in shards for v in s.videos]
    features = np.concatenate([s.features for s in shards]).astype(np.float32, copy=False)
    labels = np.concatenate([s.labels for s in shards])
    return videos, features, labels


def with_split(job: Job, split: str) -> Job:
    """The same job on another split file."""
    return dataclasses.replace(job, data=dataclasses.replace(job.data, path_split=split))


def train(job: Job, out_path: str, *, extract_options: ExtractOptions, progress: bool | None = None) -> TrainResult:
    """Extract (or reuse) the training split's features, train a head, export it with the backbone.

    The checkpoint is written in the official format (``module.``-prefixed,
    gate polarity of the released checkpoints) and carries the backbone of
    ``checkpoint.init``, so ``infer``, ``replay`` and the official code load it.
    """
    job.require("checkpoint.init", "data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    config = job.train.config
    extracted = extract(job, extract_options, progress=progress)
    _, features, labels = cached_arrays(extracted.cache_dir)
    val = None
    if job.train.val_path_split:
        val_cache = extract(with_split(job, job.train.val_path_split), extract_options, progress=progress)
        _, val_features, val_labels = cached_arrays(val_cache.cache_dir)
        order = list(job.model.input_order)
        val = (torch.from_numpy(np.ascontiguousarray(val_features[:, order])), val_labels)

    total = config.epochs_classifier + config.epochs_gates
    bar = progress_bar(range(total), desc=f"train (beta {config.beta:g})", total=total, unit="epoch", enabled=progress)
    history: list[dict[str, Any]] = []

    def on_epoch(stage: str, epoch: int, loss: float, model) -> None:
        history.append({"stage": stage, "epoch": epoch, "loss": loss})
        bar.update(1)
        bar.set_postfix_str(f"{stage} loss {loss:.4f}", refresh=False)

    try:
        head = train_head(features, labels, job.model.input_order, config, on_epoch=on_epoch)
    finally:
        bar.close()
    # after BatchNorm recalibration: per-epoch figures in eval mode would be misleading
    validation = step_accuracy(head, *val) if val is not None else None
    state = checkpoint_state(job, job.checkpoints[0])
    head.backbone = build_backbone_from_state(
        state,
        backbone_name=job.model.backbone_name,
        truncate_modules=job.model.truncate_modules,
        path=job.checkpoints[0],
    )
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    save_checkpoint(head, out_path)
    return TrainResult(out_path, history, validation, len(features), extracted.cache_dir)
