"""`frameexit extract`: backbone features of every step (sampled frame or clip) into resumable HDF5 shards.

The sampled frames (or clips) of several videos go through the backbone per batch, into
``<cache root>/<key>/shard-NNNNN.h5``; batches never cross a shard boundary, so a resumed run computes every shard
exactly as an uninterrupted one. This module wires frames -> backbone -> shard and the scheduling (one process, or
shard tasks on dask); the key and directory are :mod:`cache`'s (``key``, ``inputs``, ``plan``, ``manifest``).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from cache import exactness
from cache.inputs import frame_files, video_frames_digest
from cache.key import CacheKeyInputs
from cache.manifest import CacheError, FeatureCache, Manifest
from cache.plan import Checked, open_for_writing, shard_attrs
from cache.shard import file_sha256, write_shard
from frameexit.atomic import check_writable_dir
from frameexit.checkpoint import backbone_digest, build_backbone_from_state
from frameexit.errors import ConfigError, UsageError
from frameexit.metrics import multi_hot
from frameexit.sampling import clip_indices
from reports.records import runtime

from .cache_keys import cache_key_inputs
from .config import Job
from .datasets import Dataset, Video, load_job_dataset, require_videos
from .frames import FrameReadError, FrameUnreadableError, decode_frame, frames_records, read_frame_bytes, step_input
from .model import HeadState, LazyModel, backbone_geometry, checkpoint_file, resolve_device
from .process import backbone_precision, dask_worker_setup, dataloader_worker_init, exact_fp32
from .progress import progress as progress_bar
from .scheduling import LOCAL_SCHEDULERS, check_scheduler, dask_client, explaining_lost_workers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractOptions:
    """How to run an extraction; what it computes is the job's (its ``extract`` keys, :class:`jobs.config.ExtractConfig`)."""

    cache_root: str  # one sub-directory per cache key
    shard_size: int = 64  # videos per shard (a resumed run keeps the size it started with)
    batch_videos: int = 8  # videos per backbone batch (x num_frames frames)
    device: str = "auto"  # auto, cpu, cuda or cuda:N; with extract.batching auto, CUDA runs batched
    # the address of a dask.distributed scheduler to send shard tasks to; None, threads or sync: this process
    # (the backbone batches videos itself)
    scheduler: str | None = "threads"
    workers: int | None = None  # start a local dask cluster of this many worker processes (CPU)
    # videos per shard (first and last) run again one step per forward pass, to measure how far the features are
    # from sequential inference's (cache.exactness); 0: none (replay then cannot say which may disagree with infer)
    probe_videos: int = 2


@dataclass(frozen=True)
class ExtractResult:
    """What an extraction did (``frames``: frames, or clips for a 3D backbone, sent through the backbone)."""

    cache_dir: str
    key: str
    n_videos: int  # videos with features in the cache
    n_shards: int
    shards_written: int  # by this run (0: nothing to do)
    frames: int
    seconds: float
    skipped: list[dict[str, str]]  # {'video', 'reason'} for every split video without features
    unit: str = "frames"  # what frames counts: frames or clips
    # videos whose frames were not those their cached features came from: extracted again
    frames_changed: list[str] = dataclasses.field(default_factory=list)
    # videos that an earlier extraction could not read, tried again
    retried: list[str] = dataclasses.field(default_factory=list)
    replanned: bool = False  # the split's frame folders had changed: the cache was planned anew
    # how far the cached features are from sequential inference's (cache.exactness.summarize)
    exactness: dict[str, Any] | None = None
    # the cache, class list and checkpoint head, for jobs.run's replay
    cache: FeatureCache | None = dataclasses.field(default=None, repr=False, compare=False)
    classes: tuple[str, ...] = dataclasses.field(default=(), repr=False, compare=False)
    head: HeadState | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs to compute and write one shard (picklable)."""

    index: int
    path: str
    videos: tuple[Video, ...]
    job: Job
    options: ExtractOptions
    attrs: dict[str, Any]


@dataclass(frozen=True)
class ShardResult:
    index: int
    sha256: str
    skipped: list[dict[str, str]]
    frames: int
    records: dict[str, str | None]  # the frame record of each video (cache.inputs.video_frames_digest)
    probe: dict[str, Any] | None = None  # cache.exactness.ShardProbe as a dict


def cache_inputs(
    job: Job, options: ExtractOptions, checkpoint: str | None = None, read: tuple[dict, str] | None = None
) -> tuple[CacheKeyInputs, Dataset, dict[str, torch.Tensor], str]:
    """Key inputs, dataset, checkpoint state and SHA-256 of the cache that ``job`` (``checkpoint``'s backbone) writes
    on ``options.device``: each file read once (digest and contents from the same bytes), no backbone run.
    ``read``: :func:`jobs.model.checkpoint_file` of the checkpoint when the caller has already read it."""
    dataset = load_job_dataset(job.data, job.model.num_class)
    state, sha256 = read or checkpoint_file(job, checkpoint or job.checkpoints[0])
    batching = resolved(job, options.device).extract.batching
    inputs = cache_key_inputs(job, backbone_digest(state), batching, dataset.digests)
    return inputs, dataset, state, sha256


def resolved(job: Job, device: str) -> Job:
    """``job`` with ``extract.batching: auto`` resolved for ``device``, where the backbone will run."""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    batching = exactness.resolve_batching(job.extract.batching, clips=job.model.clips, cuda=cuda)
    return job if batching == job.extract.batching else job.with_value("extract.batching", batching)


def _check_options(options: ExtractOptions) -> None:
    if options.probe_videos < 0:
        raise ConfigError(f"probe_videos must be at least 0, got {options.probe_videos}")
    for name in ("shard_size", "batch_videos"):
        if getattr(options, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(options, name)}")
    if options.scheduler not in (None, *LOCAL_SCHEDULERS) and options.workers:
        raise UsageError("give either --scheduler or --workers, not both")
    check_scheduler(options.scheduler, _gpus(options))


def _gpus(options: ExtractOptions) -> int:
    """The GPUs an extraction with ``options`` spreads its shards over (``--device auto`` or ``cuda``: all)."""
    return torch.cuda.device_count() if options.device in ("auto", "cuda") else 0


def extract(
    job: Job, options: ExtractOptions, *, progress: bool | None = None, checkpoint_read: tuple[dict, str] | None = None
) -> ExtractResult:
    """Extract (or finish extracting, or verify) the feature cache of ``job``: shards that are missing or corrupt,
    hold a video whose frames changed (every file the steps read is hashed), or one that could not be read and now
    can, are (re)computed; everything else is reused (:func:`cache.plan.open_for_writing`). ``checkpoint_read``:
    :func:`jobs.model.checkpoint_file` of the job's checkpoint when the caller has read it (``run``)."""
    _check_options(options)
    job.require("checkpoint.init", "data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    if len(job.checkpoints) != 1:
        raise ConfigError(
            f"extract reads the backbone of one checkpoint, but checkpoint.init lists {len(job.checkpoints)}; "
            "checkpoints that share a backbone share one cache"
        )
    checkpoint = job.checkpoints[0]
    job = resolved(job, options.device)
    check_writable_dir(options.cache_root, "--cache")
    inputs, dataset, state, sha256 = cache_inputs(job, options, checkpoint, checkpoint_read)
    require_videos(len(dataset.videos), dataset.skipped, job.data.path_split)
    # for a replay that follows in this process (jobs.run): the head weights and the SHA-256 of the bytes read
    head = HeadState(checkpoint, sha256, state, inputs.backbone_digest)
    started = time.perf_counter()
    by_key = {v.key: v for v in dataset.videos}

    def check_frames(keys: Sequence[str]) -> dict[str, str | None]:
        videos = [by_key[k] for k in keys if k in by_key]
        geometry = (job.data.num_frames, job.model.clip_length, job.model.clip_stride)
        return frames_records(videos, *geometry, progress=progress)

    with open_for_writing(
        options.cache_root,
        inputs,
        [v.key for v in dataset.videos],
        shard_size=options.shard_size,
        n_listed=dataset.n_listed,
        skipped=[{"video": s.video, "reason": s.reason} for s in dataset.skipped],
        check_frames=check_frames,
    ) as (cache, checked):
        if not checked.pending and cache.manifest.complete:
            log.info("cache %s is complete; nothing to do", cache.directory)
            return _result(job, cache, checked, 0, 0, started, dataset, head)
        cache.manifest.provenance = {
            "checkpoint": os.path.abspath(checkpoint),
            "frames_root": os.path.abspath(job.data.path_frame),
            "split": os.path.abspath(job.data.path_split),
            "labels": os.path.abspath(job.data.path_label),
            "classes": os.path.abspath(job.data.path_classid),
            "device": options.device,
            **runtime(),
        }
        attrs = shard_attrs(inputs)
        tasks = [
            ShardTask(
                index=i,
                # absolute: a dask worker elsewhere resolves a relative path against its own working directory
                path=os.path.abspath(cache.shard_path(i)),
                videos=tuple(by_key[k] for k in cache.manifest.shards[i].videos),
                job=job,
                options=options,
                attrs=attrs,
            )
            for i in checked.pending
        ]
        backbone = BackboneHolder(job, checkpoint, job.extract.channels_last, state=state)
        del state  # the holder drops it once the backbone is built
        frames = 0
        for result in _run(tasks, backbone, options, cache.manifest, progress):
            cache.record(result.index, result.sha256, result.skipped, result.records, result.probe)
            frames += result.frames
        cache.finish()
    return _result(job, cache, checked, len(tasks), frames, started, dataset, head)


def _result(
    job: Job,
    cache: FeatureCache,
    checked: Checked,
    written: int,
    frames: int,
    started: float,
    dataset: Dataset,
    head: HeadState,
) -> ExtractResult:
    manifest = cache.manifest
    result = ExtractResult(
        cache.directory,
        manifest.key,
        manifest.usable_videos(),
        len(manifest.shards),
        written,
        frames,
        time.perf_counter() - started,
        manifest.all_skipped(),
        "clips" if job.model.clips else "frames",
        frames_changed=checked.changed,
        retried=checked.retried,
        replanned=checked.replanned,
        exactness=exactness.summarize(
            manifest.inputs.get("batching", exactness.BATCHED), [e.probe for e in manifest.shards]
        ),
        cache=cache,
        classes=dataset.classes,
        head=head,
    )
    # every video can fail at decoding time (corrupt JPEGs): the cache is complete, but holds nothing to evaluate
    require_videos(result.n_videos, result.skipped, job.data.path_split)
    return result


class BackboneHolder(LazyModel):
    """One checkpoint's backbone for extraction's shard tasks (:class:`jobs.model.LazyModel`), built per device; a
    worker reads the checkpoint itself (``state``, when already read, does not travel)."""

    TRAVELS = ("job", "checkpoint", "channels_last")
    _state: dict[str, torch.Tensor] | None = None  # not after a trip to a worker: read there

    def __init__(self, job: Job, checkpoint: str, channels_last: bool, state: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.job, self.checkpoint, self.channels_last = job, checkpoint, channels_last
        self._state = state

    def get(self, device: torch.device) -> nn.Module:
        """The backbone in eval mode on ``device``; threads of one process share it."""
        return self.built(str(device))

    def build(self, key: str) -> nn.Module:
        state = self._state if self._state is not None else checkpoint_file(self.job, self.checkpoint)[0]
        backbone = build_backbone_from_state(
            state,
            backbone_name=self.job.model.backbone_name,
            truncate_modules=self.job.model.truncate_modules,
            path=self.checkpoint,
            **backbone_geometry(self.job),
        )
        self._state = None  # the weights now live in the backbone
        backbone = backbone.to(torch.device(key))
        if self.channels_last:
            backbone = backbone.to(memory_format=_memory_format(True, self.job.model.clips))
        return backbone.eval()

    def __repr__(self) -> str:
        return f"BackboneHolder({self.checkpoint!r}, channels_last={self.channels_last})"


def _run(
    tasks: list[ShardTask],
    backbone: BackboneHolder,
    options: ExtractOptions,
    manifest: Manifest,
    progress: bool | None,
) -> Iterator[ShardResult]:
    if not tasks:
        return
    n_gpus = _gpus(options)
    if options.scheduler not in (None, *LOCAL_SCHEDULERS) or options.workers or n_gpus > 1:
        yield from _run_distributed(tasks, backbone, options, n_gpus, progress)
        return
    device = resolve_device(options.device)
    job = tasks[0].job
    total = sum(len(e.videos) for e in manifest.shards)
    done = total - sum(len(t.videos) for t in tasks)
    bar = progress_bar(range(total), desc="extract", total=total, initial=done, enabled=progress)
    started, frames = time.perf_counter(), 0

    def on_batch(n_videos: int, n_frames: int) -> None:
        nonlocal frames
        frames += n_frames
        bar.update(n_videos)
        bar.set_postfix_str(f"{frames / max(time.perf_counter() - started, 1e-9):.0f} frames/s", refresh=False)

    num_workers = job.data.num_workers
    advice = "lower --num-workers (data.num_workers) or --batch-videos; the shards written so far are kept"
    try:
        with explaining_lost_workers("decoding JPEGs", advice):
            yield from compute_shards(tasks, backbone.get(device), device, num_workers=num_workers, on_batch=on_batch)
    finally:
        bar.close()


def _run_distributed(
    tasks: list[ShardTask], backbone: BackboneHolder, options: ExtractOptions, n_gpus: int, progress: bool | None
) -> Iterator[ShardResult]:
    from distributed import as_completed

    # a local cluster shares this machine's cores between its workers; remote workers keep their own settings
    threads = max(1, (os.cpu_count() or 1) // options.workers) if options.workers else None
    advice = (
        "give the workers more memory, run fewer per machine or lower --batch-videos; "
        "the shards written so far are kept"
    )
    with dask_client(options.scheduler, options.workers, gpus=n_gpus) as client:
        if threads:
            client.register_plugin(dask_worker_setup(threads))
        # one object under one key: each worker deserializes it once, and its tasks share the backbone built there
        with explaining_lost_workers("receiving the backbone", advice):
            shipped = client.scatter(backbone, broadcast=True, hash=False)
        futures = client.map(run_shard_task, tasks, backbone=shipped, pure=False)
        bar = progress_bar(
            as_completed(futures), desc="extract shards", total=len(futures), unit="shard", enabled=progress
        )
        for future in bar:
            with explaining_lost_workers("extracting a shard", advice):
                result = future.result()
            _check_written_here(result, tasks)
            yield result


def _check_written_here(result: ShardResult, tasks: Sequence[ShardTask]) -> None:
    """Raise :class:`CacheError` unless this process sees the shard a worker wrote, with the bytes it reported: a
    worker on another machine writes to its own file system, and the manifest must not record such a shard."""
    path = next(t.path for t in tasks if t.index == result.index)
    try:
        digest = file_sha256(path)
    except FileNotFoundError:
        digest = None
    if digest != result.sha256:
        seen = "is not there" if digest is None else "holds other bytes than the worker wrote"
        raise CacheError(
            f"a dask worker wrote shard {path}, but for this process it {seen}: the cache (--cache) must be a "
            "folder every worker shares, at the same path"
        )


def run_shard_task(task: ShardTask, backbone: BackboneHolder) -> ShardResult:
    """Compute and write one shard in a worker process (dask task), with this worker's backbone."""
    # under LocalCUDACluster each worker sees exactly one GPU, so 'auto' means that one
    device = resolve_device(task.options.device)
    num_workers = task.job.data.num_workers
    if multiprocessing.current_process().daemon:
        num_workers = 0  # a daemonic worker process cannot start DataLoader processes
    (result,) = compute_shards([task], backbone.get(device), device, num_workers=num_workers)
    return result


def _memory_format(channels_last: bool, clips: bool) -> torch.memory_format:
    """Channels-last for frames (4-d) or for clips (5-d: ``channels_last_3d``), else contiguous."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if clips else torch.channels_last


class ClipDataset(TorchDataset):
    """Item ``i``: ``(i, inputs or None, sampled positions, reason it cannot be read or None, frame record)``.

    Inputs ``(T, 3, H, W)`` or ``(T, 3, clip_length, H, W)``; every file is read and decoded once, even when steps
    share it. The record (:func:`cache.inputs.video_frames_digest`) is ``None`` when a file could not be read at all
    (a reason that can pass: retried next time)."""

    def __init__(self, videos: Sequence[Video], job: Job):
        self.videos = list(videos)
        self.num_frames = job.data.num_frames
        self.preprocessing = job.data.preprocessing
        self.clips = job.model.clips
        self.clip_length, self.clip_stride = job.model.clip_length, job.model.clip_stride

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int):
        video = self.videos[i]
        files = clip_indices(len(video.frames), self.num_frames, self.clip_length, self.clip_stride)
        sampled = files[:, self.clip_length // 2]
        needed = frame_files(len(video.frames), self.num_frames, self.clip_length, self.clip_stride)
        try:
            content = {j: read_frame_bytes(video.frames[j]) for j in needed}
        except FrameUnreadableError as exc:
            return i, None, sampled, str(exc), None
        record = video_frames_digest(len(video.frames), [(video.frames[j], content[j]) for j in needed])
        try:
            decoded = {j: decode_frame(video.frames[j], content[j], self.preprocessing) for j in needed}
        except FrameReadError as exc:
            return i, None, sampled, str(exc), record
        steps = [step_input([decoded[j] for j in row], self.clips) for row in files.tolist()]
        return i, torch.stack(steps), sampled, None, record


def _collate(items):
    return items


def frames_loader(
    videos: Sequence[Video], job: Job, batches: Sequence[Sequence[int]], *, num_workers: int, device: torch.device
) -> DataLoader:
    """The DataLoader of extraction's inputs: batch ``b`` is the list of :class:`ClipDataset` items of the
    positions ``batches[b]`` in ``videos``, decoded by ``num_workers`` processes (0: this one), pinned for CUDA.
    Also timed alone by ``bench/extract.py``."""
    return DataLoader(
        ClipDataset(videos, job),
        batch_sampler=batches,
        num_workers=num_workers,
        worker_init_fn=dataloader_worker_init,
        # the loader draws its workers' base seed from this generator, not from torch's global one (left as it
        # was); decoding draws no random numbers
        generator=torch.Generator(),
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )


def shard_batches(sizes: Sequence[int], batch_videos: int) -> tuple[list[list[int]], list[int]]:
    """Extraction's batches over shards of ``sizes`` videos laid end to end: each batch's video positions
    (``batch_videos`` at a time, never across a shard boundary) and the shard it belongs to."""
    batches, owner, start = [], [], 0
    for shard, size in enumerate(sizes):
        for b in range(0, size, batch_videos):
            batches.append(list(range(start + b, start + min(b + batch_videos, size))))
            owner.append(shard)
        start += size
    return batches, owner


def batch_input(items: Sequence[tuple], device: torch.device, memory_format: torch.memory_format) -> torch.Tensor:
    """The backbone input of a batch's readable :class:`ClipDataset` items: their steps concatenated, on
    ``device`` in ``memory_format``."""
    # each item's steps are pinned on their own (the loader's pin_memory on CUDA): each is copied as it is,
    # asynchronously, and they are joined on the device; joined on the host first, they would make a new unpinned
    # tensor, copied synchronously (on the CPU ``.to`` returns the item itself: the same tensor as before)
    x = torch.cat([item[1].to(device, non_blocking=True) for item in items])
    return x.contiguous(memory_format=memory_format)


def compute_shards(
    tasks: Sequence[ShardTask],
    backbone: nn.Module,
    device: torch.device,
    *,
    num_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[ShardResult]:
    """Run the backbone over the shards' videos and write each shard as soon as its last batch is done.

    One DataLoader serves all shards; its batches never cross a shard boundary, so a shard's features do not
    depend on the others. The backbone runs on a whole batch, or one step per forward pass (``per-step``, as
    sequential inference). Unless the features are exact by construction, each shard's first and last videos run
    again as sequential inference runs them (:class:`cache.exactness.ShardProbe`).
    """
    videos = [v for task in tasks for v in task.videos]
    batches, owner = shard_batches([len(task.videos) for task in tasks], tasks[0].options.batch_videos)
    last_batch = {t: max((b for b, o in enumerate(owner) if o == t), default=-1) for t in range(len(tasks))}
    options, settings = tasks[0].options, tasks[0].job.extract
    job = tasks[0].job
    loader = frames_loader(videos, job, batches, num_workers=num_workers, device=device)
    memory_format = _memory_format(settings.channels_last, job.model.clips)
    dtype = np.dtype(settings.dtype)
    feat_dim = job.model.output_dim
    effective = exactness.effective_batching(settings.batching, job.model.clips, device.type)
    exact = exactness.is_exact(
        effective, dtype=settings.dtype, precision=settings.precision, channels_last=settings.channels_last
    )
    probes = {t: _ProbeCandidates(0 if exact else options.probe_videos) for t in range(len(tasks))}
    reference = _Reference(backbone, settings.channels_last, device)
    parts: dict[int, list] = {t: [] for t in range(len(tasks))}
    # shards with no video at all are written straight away
    pending_empty = [t for t in range(len(tasks)) if last_batch[t] < 0]
    for t in pending_empty:
        yield _write(tasks[t], [], dtype, feat_dim, exactness.ShardProbe(effective, exactness.EXACT, []))
    for b, items in enumerate(loader):
        t = owner[b]
        good = [item for item in items if item[1] is not None]
        rows: dict[int, np.ndarray] = {}
        if good:
            x = batch_input(good, device, memory_format)
            with torch.inference_mode():
                with backbone_precision(settings.precision, device):
                    out = _forward(backbone, x, effective == exactness.PER_STEP, memory_format)
                feats = out.float().cpu().numpy().reshape(len(good), job.data.num_frames, -1)
            rows = {item[0]: feats[g] for g, item in enumerate(good)}
            probes[t].offer((videos[item[0]].key, item[1], rows[item[0]]) for item in good)
        for i, _, indices, error, record in items:
            parts[t].append((videos[i], rows.get(i), indices, error, record))
        if on_batch:
            on_batch(len(items), len(good) * job.data.num_frames)
        if b == last_batch[t]:
            shard = parts.pop(t)
            probe, probe_features = _probe(shard, probes.pop(t), reference, effective, exact, dtype)
            yield _write(tasks[t], shard, dtype, feat_dim, probe, probe_features)


def _forward(backbone: nn.Module, x: torch.Tensor, per_step: bool, memory_format: torch.memory_format) -> torch.Tensor:
    """The backbone on a batch of steps, or on each step alone (a fresh copy, as sequential inference passes it)."""
    if not per_step:
        return backbone(x)
    return torch.cat([backbone(x[k : k + 1].clone(memory_format=memory_format)) for k in range(len(x))])


class _ProbeCandidates:
    """The first ``n - n // 2`` and the last ``n // 2`` readable videos of a shard: ``(key, backbone inputs of
    its steps, their features as computed)`` each."""

    def __init__(self, n: int):
        self.first: list[tuple[str, torch.Tensor, np.ndarray]] = []
        self.last: collections.deque = collections.deque(maxlen=n // 2)
        self.n_first = n - n // 2

    def offer(self, items) -> None:
        for item in items:
            if len(self.first) < self.n_first:
                self.first.append(item)
            elif self.last.maxlen:
                self.last.append(item)

    @property
    def chosen(self) -> list[tuple[str, torch.Tensor, np.ndarray]]:
        return [*self.first, *self.last]


class _Reference:
    """What sequential inference computes for one video's steps on this device: one step per forward pass,
    fp32 (TF32 off, no autocast), contiguous memory format (a contiguous copy of a channels-last backbone)."""

    def __init__(self, backbone: nn.Module, channels_last: bool, device: torch.device):
        self.backbone, self.channels_last, self.device = backbone, channels_last, device
        self._contiguous: nn.Module | None = None

    def features(self, steps: torch.Tensor) -> np.ndarray:
        if self.channels_last and self._contiguous is None:
            self._contiguous = copy.deepcopy(self.backbone).to(memory_format=torch.contiguous_format)
        net = self._contiguous if self.channels_last else self.backbone
        with torch.inference_mode(), exact_fp32():
            out = [
                net(steps[k : k + 1].clone(memory_format=torch.contiguous_format).to(self.device))
                for k in range(len(steps))
            ]
            return torch.cat(out).float().cpu().numpy()


def _probe(
    rows: list,
    candidates: _ProbeCandidates,
    reference: _Reference,
    effective: str,
    exact: bool,
    dtype: np.dtype,
) -> tuple[exactness.ShardProbe, np.ndarray | None]:
    """The shard's :class:`cache.exactness.ShardProbe`, and the probed videos' per-step features (or ``None``);
    the deviation compares the features as stored (in ``dtype``) with the reference."""
    if exact or all(r[3] is not None for r in rows):
        return exactness.ShardProbe(effective, exactness.EXACT, []), None
    chosen = candidates.chosen
    if not chosen:
        return exactness.ShardProbe(effective, exactness.UNKNOWN, []), None
    reference_features = np.stack([reference.features(steps) for _, steps, _ in chosen])
    stored = np.stack([features.astype(dtype) for _, _, features in chosen])
    max_abs, max_rel = exactness.feature_deviation(reference_features, stored)
    probe = exactness.ShardProbe(effective, exactness.MEASURED, [key for key, _, _ in chosen], max_abs, max_rel)
    return probe, reference_features


def _write(
    task: ShardTask,
    rows: list,
    dtype: np.dtype,
    feat_dim: int,
    probe: exactness.ShardProbe,
    probe_features: np.ndarray | None = None,
) -> ShardResult:
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
        attrs={**task.attrs, **probe.attrs()},
        probe_videos=probe.videos if probe_features is not None else None,
        probe_features=probe_features,
    )
    return ShardResult(task.index, sha, skipped, len(ok) * T, {r[0].key: r[4] for r in rows}, probe.to_json())
