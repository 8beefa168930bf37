"""`frameexit train`: a FrameExit head trained on the cached features of a training split."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cache.manifest import FeatureCache
from frameexit.atomic import check_writable_dir, folder_lock
from frameexit.checkpoint import build_backbone_from_state, save_checkpoint
from frameexit.errors import (
    DatasetError,
    DatasetFileNotFoundError,
    OutputError,
    TrainingError,
    reporting_disk_full,
)
from frameexit.train import step_accuracy, train_head
from reports.commit import remove_leftovers

from .config import Job
from .extract import ExtractOptions, ExtractResult, extract
from .model import backbone_geometry, checkpoint_state
from .progress import progress as progress_bar

TRAIN_SPLIT = "data.path_split"
VAL_SPLIT = "train.val_path_split"


@dataclass(frozen=True)
class TrainResult:
    """The exported checkpoint, the loss of every epoch, and per-step validation accuracy (if any)."""

    checkpoint: str
    history: list[dict[str, Any]]
    validation: dict[str, list[float]] | None
    n_videos: int
    cache_dir: str
    loss: str  # the classification loss trained with and behind the pseudo-labels: 'softmax' or 'bce'


def check_split_file(path: str, key: str) -> None:
    """Refuse a split file that is missing, unreadable, not UTF-8 text or lists no video, naming it and ``key``, the
    job key it came from (the dataset readers name ``data.path_split`` whichever split they read)."""
    if not os.path.isfile(path):
        raise DatasetFileNotFoundError(f"split file not found: {path} (from {key})")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            listed = [line.strip() for line in handle.read().splitlines()]
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"split file {path} (from {key}) is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "a split file lists one video key per line"
        ) from None
    except OSError as exc:
        raise DatasetError(f"split file {path} (from {key}) cannot be read: {exc.strerror or exc}") from None
    if not any(listed):
        raise DatasetError(f"split file {path} (from {key}) lists no video")


def _extract_split(
    job: Job, key: str, options: ExtractOptions, progress: bool | None
) -> tuple[ExtractResult, list[str], np.ndarray, np.ndarray]:
    """Extract (or reuse) the features of the job's split, which came from ``key``, refusing one without videos;
    the extraction result and the cache's ``(videos, features (n, T, D) float32, labels (n, C))``, shards verified."""
    path = job.data.path_split or ""
    try:
        result = extract(job, options, progress=progress)
    except DatasetError as exc:
        # the readers name data.path_split for whichever split they read, or the file alone
        message = str(exc).replace(TRAIN_SPLIT, key)
        if key not in message:
            if path and path in message:
                message = message.replace(path, f"{path} (from {key})", 1)
            elif key != TRAIN_SPLIT:  # the training split was read first: this error is the other split's
                message += f" (reading the split file {path} from {key})"
        raise type(exc)(message) from None
    if result.n_videos == 0:
        shown = "; ".join(f"{s['video']}: {s['reason']}" for s in result.skipped[:5])
        more = f"; ... ({len(result.skipped) - 5} more)" if len(result.skipped) > 5 else ""
        raise DatasetError(
            f"split file {path} (from {key}) has no video that can be used; "
            f"all {len(result.skipped)} were left out ({shown}{more})"
        )
    shards = list(FeatureCache.open(result.cache_dir).iter_shards())
    videos = [v for s in shards for v in s.videos]
    features = np.concatenate([s.features for s in shards]).astype(np.float32, copy=False)
    labels = np.concatenate([s.labels for s in shards])
    bad = ~np.isfinite(features).reshape(len(features), -1).all(axis=1)
    if bad.any():
        names = [v for v, b in zip(videos, bad, strict=True) if b]
        raise TrainingError(
            f"the cached features of {len(names)} videos of the split file {path} (from {key}) hold NaN or "
            f"infinite values ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); cache {result.cache_dir}"
        )
    return result, videos, features, labels


def train(job: Job, out_path: str, *, extract_options: ExtractOptions, progress: bool | None = None) -> TrainResult:
    """Extract (or reuse) the training split's features, train a head, export it with the backbone of
    ``checkpoint.init`` in the official format (``module.``-prefixed, the released checkpoints' gate polarity).

    Nothing is written when training fails or the head is not finite; one ``train`` writes ``out_path`` at a time.
    :class:`DatasetError` for a split file that is missing, unreadable or without usable videos, or fewer than
    2 labelled training videos; :class:`TrainingError` for non-finite features or divergence."""
    job.require("checkpoint.init", "data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    val_split = job.train.val_path_split
    # both split files before any extraction, which can take hours
    check_split_file(job.data.path_split or "", TRAIN_SPLIT)
    check_writable_dir(os.path.dirname(os.path.abspath(out_path)), "the folder of --out")
    if os.path.isdir(out_path):
        raise OutputError(f"--out {out_path} is a directory; give the checkpoint file to write")
    if val_split:
        check_split_file(val_split, VAL_SPLIT)
    folder, name = os.path.split(os.path.abspath(out_path))
    busy = f"another frameexit train is writing --out {out_path}; wait for it to finish or choose another --out"
    # one writer per checkpoint file, from before the extraction that can take hours
    with folder_lock(folder, busy, lock_name=f".{name}.lock"):
        remove_leftovers(folder, [name])  # the temporary files of a killed train of this --out
        return _train(job, out_path, extract_options, progress)


def _train(job: Job, out_path: str, extract_options: ExtractOptions, progress: bool | None) -> TrainResult:
    """:func:`train` once its inputs are checked and ``out_path``'s lock is held."""
    config = job.train.config
    val_split = job.train.val_path_split
    extracted, _, features, labels = _extract_split(job, TRAIN_SPLIT, extract_options, progress)
    n_labelled = int((labels.sum(axis=1) > 0).sum())
    if n_labelled < 2:
        raise DatasetError(
            f"split file {job.data.path_split} (from {TRAIN_SPLIT}) has {n_labelled} video(s) with labels "
            f"in {job.data.path_label}; training needs at least 2"
        )
    val = None
    if val_split:
        _, _, val_features, val_labels = _extract_split(
            job.with_value(TRAIN_SPLIT, val_split), VAL_SPLIT, extract_options, progress
        )
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
        **backbone_geometry(job),
    )
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    # torch.save says "unexpected pos" on a full disk: say which file could not be written, and why
    with reporting_disk_full(out_path):
        save_checkpoint(head, out_path)  # refuses non-finite weights, writing nothing
    return TrainResult(out_path, history, validation, len(features), extracted.cache_dir, config.loss)
