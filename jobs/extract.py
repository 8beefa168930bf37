"""`frameexit extract`: per-frame backbone features of every sampled frame into resumable HDF5 shards.

The backbone is paid once per dataset: the 10 sampled frames of every video go
through it in batches of several videos, and the features land in
``<cache root>/<key>/shard-NNNNN.h5``. The key (:mod:`cache.key`) changes with
anything the features depend on, so a changed backbone, preprocessing or split
gets a new directory and old caches stay untouched. Batches never cross a shard
boundary, so a resumed run computes every shard exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import glob
import hashlib
import logging
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

import frameexit
from cache.key import FORMAT_VERSION, CacheKeyInputs, cache_key
from cache.manifest import CacheError, Manifest, ShardEntry, read_manifest, write_manifest
from cache.reader import verify_shard
from cache.shard import file_sha256, write_shard
from frameexit.atomic import TMP_SUFFIX, check_writable_dir
from frameexit.backbone import Backbone, model_name
from frameexit.checkpoint import backbone_digest, build_backbone_from_state
from frameexit.errors import ConfigError, FrameExitError, UsageError
from frameexit.metrics import multi_hot
from frameexit.sampling import sample_indices

from .config import Job
from .datasets import Video, load_job_dataset, require_videos
from .frames import FrameReadError, read_frame
from .model import checkpoint_state, resolve_device
from .progress import progress as progress_bar

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
SAMPLING = "linspace"  # int(clip(linspace(0, L, T), 0, L - 1)), SEMANTICS 3


@dataclass(frozen=True)
class ExtractOptions:
    """How to run an extraction; only ``dtype``, ``precision`` and ``channels_last`` change the features.

    Attributes
    ----------
    cache_root : str
        Directory holding one sub-directory per cache key.
    shard_size : int, default=64
        Videos per shard (a resumed run keeps the size it started with).
    batch_videos : int, default=8
        Videos per backbone batch (x ``num_frames`` frames).
    dtype : {'float32', 'float16'}
        Storage type of the features.
    precision : {'fp32', 'tf32', 'bf16', 'fp16'}
        Backbone arithmetic: exact float32 (TF32 off), TF32 matmuls, or autocast to bf16/fp16.
    channels_last : bool
        Run the backbone in channels-last memory format.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    num_workers : int or None
        DataLoader worker processes decoding JPEGs; ``None`` takes ``data.num_workers`` from the job.
    scheduler : str or None
        Address of an existing ``dask.distributed`` scheduler to send shard tasks to.
    workers : int or None
        Start a local dask cluster of this many worker processes (CPU).
    """

    cache_root: str
    shard_size: int = 64
    batch_videos: int = 8
    dtype: str = "float32"
    precision: str = "fp32"
    channels_last: bool = False
    device: str = "auto"
    num_workers: int | None = None
    scheduler: str | None = None
    workers: int | None = None


@dataclass(frozen=True)
class ExtractResult:
    """What an extraction did.

    Attributes
    ----------
    cache_dir, key : str
    n_videos : int
        Videos with features in the cache.
    n_shards, shards_written : int
        Shards in the cache, and how many this run computed (0: nothing to do).
    frames : int
        Frames this run sent through the backbone.
    seconds : float
    skipped : list of dict
        ``{'video', 'reason'}`` for every split video without features.
    """

    cache_dir: str
    key: str
    n_videos: int
    n_shards: int
    shards_written: int
    frames: int
    seconds: float
    skipped: list[dict[str, str]]

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs to compute and write one shard (picklable)."""

    index: int
    path: str
    videos: tuple[Video, ...]
    job: Job
    checkpoint: str
    options: ExtractOptions
    attrs: dict[str, Any]
    torch_threads: int | None = None


@dataclass(frozen=True)
class ShardResult:
    index: int
    sha256: str
    videos: list[str]
    skipped: list[dict[str, str]]
    frames: int


# ---------------------------------------------------------------------------------------------- inputs


def _digest_file(path: str) -> str:
    return file_sha256(path)


def frames_digest(videos: Sequence[Video], num_frames: int) -> str:
    """SHA-256 of each video's key, frame count, and sampled file names and sizes (cheap: no pixels read)."""
    h = hashlib.sha256()
    for video in videos:
        h.update(f"{video.key}|{len(video.frames)}".encode())
        for i in sorted(set(sample_indices(len(video.frames), num_frames).tolist())):
            path = video.frames[i]
            try:
                size = os.path.getsize(path)
            except OSError:
                size = -1
            h.update(f"|{os.path.basename(path)}:{size}".encode())
        h.update(b"\n")
    return h.hexdigest()


def key_inputs(
    job: Job, options: ExtractOptions, state: dict[str, torch.Tensor], videos: Sequence[Video]
) -> CacheKeyInputs:
    """The cache-key inputs of an extraction of ``job`` (see :class:`cache.key.CacheKeyInputs`)."""
    pre = job.data.preprocessing
    return CacheKeyInputs(
        backbone=model_name(job.model.backbone_name),
        truncate_modules=job.model.truncate_modules,
        backbone_digest=backbone_digest(state),
        resize=pre.resize,
        crop=pre.crop,
        mean=tuple(pre.mean),
        std=tuple(pre.std),
        num_frames=job.data.num_frames,
        sampling=SAMPLING,
        dtype=options.dtype,
        precision=options.precision,
        channels_last=options.channels_last,
        dataset=job.data.name,
        split_digest=_digest_file(job.data.path_split),
        labels_digest=_digest_file(job.data.path_label),
        classes_digest=_digest_file(job.data.path_classid),
        frames_digest=frames_digest(videos, job.data.num_frames),
    )


def locate_cache(job: Job, options: ExtractOptions, checkpoint: str | None = None):
    """Key inputs, key and dataset of the cache that ``job`` (with ``checkpoint``'s backbone) reads or writes.

    Returns ``(inputs, key, dataset, state)``; reads the split, labels and the
    frame listing, and the checkpoint, but runs no backbone.
    """
    data = job.data
    dataset = load_job_dataset(data, job.model.num_class)
    state = checkpoint_state(job, checkpoint or job.checkpoints[0])
    inputs = key_inputs(job, options, state, dataset.videos)
    return inputs, cache_key(inputs), dataset, state


def _check_options(options: ExtractOptions) -> None:
    if options.dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {options.dtype!r}")
    if options.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {options.precision!r}")
    for name in ("shard_size", "batch_videos"):
        if getattr(options, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(options, name)}")
    if options.scheduler and options.workers:
        raise UsageError("give either --scheduler or --workers, not both")


# ---------------------------------------------------------------------------------------------- the stage


def extract(job: Job, options: ExtractOptions, *, progress: bool | None = None) -> ExtractResult:
    """Extract (or finish extracting, or verify) the feature cache of ``job``.

    A complete cache whose shards all match their checksums is left as it is
    and no backbone work is done. Shards that are missing or corrupt are
    (re)computed; everything else is reused.
    """
    _check_options(options)
    job.require("checkpoint.init", "data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    if len(job.checkpoints) != 1:
        raise ConfigError(
            f"extract reads the backbone of one checkpoint, but checkpoint.init lists {len(job.checkpoints)}; "
            "checkpoints that share a backbone share one cache"
        )
    checkpoint = job.checkpoints[0]
    check_writable_dir(options.cache_root, "--cache")
    inputs, key, dataset, state = locate_cache(job, options, checkpoint)
    require_videos(len(dataset.videos), dataset.skipped, job.data.path_split)
    cache_dir = os.path.join(options.cache_root, key)
    os.makedirs(cache_dir, exist_ok=True)
    started = time.perf_counter()
    with _lock(cache_dir):
        _remove_stale_temporaries(cache_dir)
        manifest = read_manifest(cache_dir) or _plan(key, inputs, options, dataset)
        if manifest.key != key:
            raise CacheError(
                f"{cache_dir}/manifest.json belongs to key {manifest.key}, not {key}; remove the directory"
            )
        pending = _pending_shards(cache_dir, manifest)
        if not pending and manifest.complete:
            log.info("cache %s is complete; nothing to do", cache_dir)
            return _checked(job, _result(cache_dir, manifest, 0, 0, time.perf_counter() - started))
        if options.shard_size != manifest.shard_size:
            log.warning("resuming with the shard size the cache was started with (%d)", manifest.shard_size)
        manifest.provenance = _provenance(job, checkpoint, options)
        by_key = {v.key: v for v in dataset.videos}
        attrs = {"key": key, "inputs": inputs.to_json(), "format_version": FORMAT_VERSION}
        tasks = [
            ShardTask(
                index=i,
                path=os.path.join(cache_dir, manifest.shards[i].name),
                videos=tuple(by_key[k] for k in manifest.shards[i].videos),
                job=job,
                checkpoint=checkpoint,
                options=options,
                attrs=attrs,
            )
            for i in pending
        ]
        frames = 0
        for result in _run(tasks, state, options, manifest, progress):
            entry = manifest.shards[result.index]
            entry.sha256, entry.skipped = result.sha256, result.skipped
            frames += result.frames
            write_manifest(cache_dir, manifest)
        manifest.complete = all(entry.done for entry in manifest.shards)
        write_manifest(cache_dir, manifest)
    return _checked(job, _result(cache_dir, manifest, len(tasks), frames, time.perf_counter() - started))


def _checked(job: Job, result: ExtractResult) -> ExtractResult:
    # every video can fail at decoding time (corrupt JPEGs): the cache is complete, but holds nothing to evaluate
    require_videos(result.n_videos, result.skipped, job.data.path_split)
    return result


def _plan(key: str, inputs: CacheKeyInputs, options: ExtractOptions, dataset) -> Manifest:
    keys = [v.key for v in dataset.videos]
    size = options.shard_size
    shards = [
        ShardEntry(name=f"shard-{i // size:05d}.h5", videos=keys[i : i + size]) for i in range(0, len(keys), size)
    ]
    return Manifest(
        key=key,
        inputs=inputs.to_json(),
        format_version=FORMAT_VERSION,
        shard_size=size,
        n_listed=dataset.n_listed,
        shards=shards,
        skipped=[{"video": s.video, "reason": s.reason} for s in dataset.skipped],
    )


def _pending_shards(cache_dir: str, manifest: Manifest) -> list[int]:
    """Shards not written yet, or whose file does not match its checksum (they are rebuilt)."""
    pending = []
    for i, entry in enumerate(manifest.shards):
        if not entry.done:
            pending.append(i)
            continue
        try:
            verify_shard(os.path.join(cache_dir, entry.name), entry.sha256 or "")
        except CacheError as exc:
            log.warning("%s", exc)
            entry.sha256, entry.skipped = None, []
            manifest.complete = False
            pending.append(i)
    return pending


def _result(cache_dir: str, manifest: Manifest, written: int, frames: int, seconds: float) -> ExtractResult:
    skipped = manifest.all_skipped()
    skipped_keys = {s["video"] for s in skipped}
    n_videos = sum(len([v for v in e.videos if v not in skipped_keys]) for e in manifest.shards)
    return ExtractResult(cache_dir, manifest.key, n_videos, len(manifest.shards), written, frames, seconds, skipped)


def _provenance(job: Job, checkpoint: str, options: ExtractOptions) -> dict[str, Any]:
    return {
        "checkpoint": os.path.abspath(checkpoint),
        "frames_root": os.path.abspath(job.data.path_frame),
        "split": os.path.abspath(job.data.path_split),
        "labels": os.path.abspath(job.data.path_label),
        "classes": os.path.abspath(job.data.path_classid),
        "device": options.device,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "frameexit": frameexit.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def _lock(cache_dir: str) -> Iterator[None]:
    """One writer per cache directory."""
    with open(os.path.join(cache_dir, ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheError(f"another frameexit extract is writing {cache_dir}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_temporaries(cache_dir: str) -> None:
    # left by a run that was killed between creating a shard and renaming it
    for path in glob.glob(os.path.join(glob.escape(cache_dir), f".*{TMP_SUFFIX}")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# ---------------------------------------------------------------------------------------------- running


def _run(
    tasks: list[ShardTask],
    state: dict[str, torch.Tensor],
    options: ExtractOptions,
    manifest: Manifest,
    progress: bool | None,
) -> Iterator[ShardResult]:
    if not tasks:
        return
    n_gpus = torch.cuda.device_count() if options.device in ("auto", "cuda") else 0
    if options.scheduler or options.workers or n_gpus > 1:
        yield from _run_distributed(tasks, options, n_gpus, progress)
        return
    device = resolve_device(options.device)
    job = tasks[0].job
    backbone = _prepare_backbone(
        build_backbone_from_state(
            state,
            backbone_name=job.model.backbone_name,
            truncate_modules=job.model.truncate_modules,
            path=tasks[0].checkpoint,
        ),
        device,
        options.channels_last,
    )
    total = sum(len(e.videos) for e in manifest.shards)
    done = total - sum(len(t.videos) for t in tasks)
    bar = progress_bar(range(total), desc="extract", total=total, initial=done, enabled=progress)
    started, frames = time.perf_counter(), 0

    def on_batch(n_videos: int, n_frames: int) -> None:
        nonlocal frames
        frames += n_frames
        bar.update(n_videos)
        bar.set_postfix_str(f"{frames / max(time.perf_counter() - started, 1e-9):.0f} frames/s", refresh=False)

    num_workers = job.data.num_workers if options.num_workers is None else options.num_workers
    try:
        yield from compute_shards(tasks, backbone, device, num_workers=num_workers, on_batch=on_batch)
    finally:
        bar.close()


def _run_distributed(
    tasks: list[ShardTask], options: ExtractOptions, n_gpus: int, progress: bool | None
) -> Iterator[ShardResult]:
    from distributed import Client, LocalCluster, as_completed

    with contextlib.ExitStack() as stack:
        if options.scheduler:
            client = stack.enter_context(Client(options.scheduler))
        elif options.workers:
            threads = max(1, (os.cpu_count() or 1) // options.workers)
            tasks = [dataclasses.replace(t, torch_threads=threads) for t in tasks]
            cluster = stack.enter_context(
                LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True, dashboard_address=None)
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                raise FrameExitError(
                    f"{n_gpus} GPUs are visible: spreading shards over them needs dask-cuda "
                    "(pip install '.[gpu]'); or pass --device cuda:0 to use one"
                ) from None
            cluster = stack.enter_context(LocalCUDACluster(dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        futures = client.map(run_shard_task, tasks, pure=False)
        bar = progress_bar(
            as_completed(futures), desc="extract shards", total=len(futures), unit="shard", enabled=progress
        )
        for future in bar:
            yield future.result()


def run_shard_task(task: ShardTask) -> ShardResult:
    """Compute and write one shard in a worker process (dask task): loads its own backbone, device-local."""
    if task.torch_threads:
        torch.set_num_threads(task.torch_threads)
    # under LocalCUDACluster each worker sees exactly one GPU, so 'auto' means that one
    device = resolve_device(task.options.device)
    backbone = _cached_backbone(task.job, task.checkpoint, device, task.options.channels_last)
    num_workers = task.job.data.num_workers if task.options.num_workers is None else task.options.num_workers
    if multiprocessing.current_process().daemon:
        num_workers = 0  # a daemonic worker process cannot start DataLoader processes
    (result,) = compute_shards([task], backbone, device, num_workers=num_workers)
    return result


_BACKBONES: dict[tuple, Backbone] = {}


def _cached_backbone(job: Job, checkpoint: str, device: torch.device, channels_last: bool) -> Backbone:
    """One backbone per worker process and checkpoint: shard tasks after the first reuse it."""
    key = (os.path.abspath(checkpoint), job.model.backbone_name, job.model.truncate_modules, str(device), channels_last)
    if key not in _BACKBONES:
        _BACKBONES.clear()
        state = checkpoint_state(job, checkpoint)
        backbone = build_backbone_from_state(
            state, backbone_name=job.model.backbone_name, truncate_modules=job.model.truncate_modules, path=checkpoint
        )
        _BACKBONES[key] = _prepare_backbone(backbone, device, channels_last)
    return _BACKBONES[key]


def _prepare_backbone(backbone: Backbone, device: torch.device, channels_last: bool) -> Backbone:
    backbone = backbone.to(device)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    return backbone.eval()


# ---------------------------------------------------------------------------------------------- compute


class ClipDataset(TorchDataset):
    """Item ``i``: the preprocessed sampled frames of video ``i``, or the reason it cannot be read."""

    def __init__(self, videos: Sequence[Video], job: Job):
        self.videos = list(videos)
        self.num_frames = job.data.num_frames
        self.preprocessing = job.data.preprocessing

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int):
        video = self.videos[i]
        indices = sample_indices(len(video.frames), self.num_frames)
        try:
            decoded = {j: read_frame(video.frames[j], self.preprocessing) for j in sorted(set(indices.tolist()))}
        except FrameReadError as exc:
            return i, None, indices, str(exc)
        return i, torch.stack([decoded[j] for j in indices.tolist()]), indices, None


def _collate(items):
    return items


@contextlib.contextmanager
def _precision(precision: str, device: torch.device) -> Iterator[None]:
    """Backbone arithmetic: fp32 turns TF32 off (exact), tf32 on, bf16/fp16 autocast."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        if precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def compute_shards(
    tasks: Sequence[ShardTask],
    backbone: Backbone,
    device: torch.device,
    *,
    num_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[ShardResult]:
    """Run the backbone over the shards' videos and write each shard as soon as its last batch is done.

    One DataLoader serves all shards; its batches never cross a shard boundary,
    so a shard's features do not depend on which other shards run with it.
    """
    videos = [v for task in tasks for v in task.videos]
    batches, owner, start = [], [], 0
    for t, task in enumerate(tasks):
        for b in range(0, len(task.videos), task.options.batch_videos):
            batches.append(list(range(start + b, start + min(b + task.options.batch_videos, len(task.videos)))))
            owner.append(t)
        start += len(task.videos)
    last_batch = {t: max((b for b, o in enumerate(owner) if o == t), default=-1) for t in range(len(tasks))}
    options = tasks[0].options
    job = tasks[0].job
    loader = DataLoader(
        ClipDataset(videos, job),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    dtype = np.dtype(options.dtype)
    feat_dim = job.model.output_dim
    parts: dict[int, list] = {t: [] for t in range(len(tasks))}
    # shards with no video at all are written straight away
    pending_empty = [t for t in range(len(tasks)) if last_batch[t] < 0]
    for t in pending_empty:
        yield _write(tasks[t], [], dtype, feat_dim)
    with torch.inference_mode(), _precision(options.precision, device):
        for b, items in enumerate(loader):
            t = owner[b]
            good = [item for item in items if item[1] is not None]
            rows: dict[int, np.ndarray] = {}
            if good:
                x = torch.cat([item[1] for item in good]).to(device, non_blocking=True)
                x = x.contiguous(memory_format=memory_format)
                feats = backbone(x).float().cpu().numpy().reshape(len(good), job.data.num_frames, -1)
                rows = {item[0]: feats[g] for g, item in enumerate(good)}
            for i, _, indices, error in items:
                parts[t].append((videos[i], rows.get(i), indices, error))
            if on_batch:
                on_batch(len(items), len(good) * job.data.num_frames)
            if b == last_batch[t]:
                yield _write(tasks[t], parts.pop(t), dtype, feat_dim)


def _write(task: ShardTask, rows: list, dtype: np.dtype, feat_dim: int) -> ShardResult:
    ok = [r for r in rows if r[3] is None]
    skipped = [{"video": r[0].key, "reason": r[3]} for r in rows if r[3] is not None]
    T = task.job.data.num_frames
    features = np.stack([r[1] for r in ok]).astype(dtype) if ok else np.zeros((0, T, feat_dim), dtype=dtype)
    sha = write_shard(
        task.path,
        videos=[r[0].key for r in ok],
        features=features,
        labels=multi_hot([r[0].labels for r in ok], task.job.model.num_class).astype(np.uint8),
        frame_indices=np.stack([r[2] for r in ok]).astype(np.int32) if ok else np.zeros((0, T), dtype=np.int32),
        attrs=task.attrs,
    )
    return ShardResult(task.index, sha, [r[0].key for r in ok], skipped, len(ok) * T)
