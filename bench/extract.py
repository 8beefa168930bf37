"""Extraction throughput: end-to-end frames/s against backbone-only and loader-only frames/s, same device and batch.

End to end = `jobs.extract.extract` on a generated ActivityNet-layout dataset (JPEG decode, preprocessing,
backbone, HDF5 write, manifest), timed around the whole call on a fresh cache. Backbone only = the same backbone
on frames already decoded and preprocessed in memory (``--backbone-frames`` of them, cycled over until as many
frames as end to end were timed or ``--max-seconds`` passed), in batches of the same size, copied to the device
from pinned memory as the extraction's loader pins them. Loader only = the extraction's own DataLoader
(`jobs.extract.frames_loader`: same videos, shards, batch size and workers; frames moved to the device as
extraction moves them) iterated without the backbone: it tells whether decoding or the device limits the ratio.
The ratio end to end / backbone only is what the input pipeline lets the backbone keep.

Everything is measured in one run, for the GPU run that is lent once:

- ``--batching``: ``batched`` (batches of ``--batch-videos`` videos; end to end includes the exactness probes,
  ``--probe-videos`` per shard run again one frame per forward pass) and ``per-step`` (one frame per forward
  pass, as ``frameexit infer`` runs the backbone; its backbone-only figure is batch 1).
- ``--modes``: the backbone's arithmetic, ``fp32|tf32|bf16|fp16`` with ``+cl`` for channels-last, e.g.
  ``fp32 bf16+cl fp16+cl tf32`` (without ``--modes``: ``--precision`` and ``--channels-last``, one mode). fp32
  runs first; every other mode's cached features are compared with fp32's (max abs, and max relative to each
  video's largest fp32 feature, as the exactness probes measure).
- ``--num-workers``: loader worker processes, each count measured loader only and end to end.

With ``--distinct-videos K`` only K videos are generated; the other folders are symbolic links to them under
their own keys, so a large dataset (30 s of a GPU's steady state is ~9,000 videos) takes seconds to build. Every
frame is still read and decoded, but its bytes come from the page cache, not the disk.

GPU utilisation (NVML's share of time a kernel ran, sampled every 0.25 s during each end-to-end run) needs
pynvml / nvidia-ml-py or cuda-bindings' NVML; without either, or on a CPU, it prints n/a.

    .venv/bin/python bench/extract.py [--backbone resnet50] [--size 224] [--videos 24] [--distinct-videos K]
        [--batch-videos 4] [--num-workers 0 1] [--batching batched per-step] [--modes fp32 bf16+cl]
        [--backbone-frames 2048] [--max-seconds 20] [--device auto] [--json PATH]

On a GPU (16 cores), e.g.: --device cuda --videos 9000 --distinct-videos 100 --batch-videos 32
--num-workers 15 --batching batched --modes fp32 bf16+cl --max-seconds 15 --json extract.json

Target (DESIGN.md): ratio >= 0.9; on one H100, >= 3,000 ResNet-50 frames/s end to end in fp32, more in the
fastest mode.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import glob
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cache.exactness import feature_deviation  # noqa: E402
from cache.shard import read_shard  # noqa: E402
from frameexit.backbone import random_backbone  # noqa: E402
from frameexit.checkpoint import save_checkpoint  # noqa: E402
from frameexit.head import FrameExit  # noqa: E402
from jobs.config import Job, load_job, with_options  # noqa: E402
from jobs.datasets import Video, load_dataset  # noqa: E402
from jobs.demo import CLASSES, make_dataset  # noqa: E402
from jobs.extract import ExtractOptions, batch_input, extract, frames_loader, shard_batches  # noqa: E402
from jobs.model import resolve_device  # noqa: E402
from jobs.process import ARITHMETIC, backbone_precision  # noqa: E402

TARGET_FPS = 3000.0  # ResNet-50 frames/s end to end on one H100-class GPU, fp32 (DESIGN.md)
TARGET_RATIO = 0.9  # end to end / backbone only
BUSY = 90  # percent: a utilisation sample at least this high counts as busy
SAMPLE_PERIOD = 0.25  # seconds between utilisation samples


@dataclass(frozen=True)
class Mode:
    """One arithmetic of the backbone: ``precision`` (:data:`jobs.process.ARITHMETIC`) and memory format."""

    precision: str
    channels_last: bool

    @property
    def name(self) -> str:
        return self.precision + ("+cl" if self.channels_last else "")


@dataclass(frozen=True)
class Timing:
    """``frames`` timed in ``seconds`` (wall clock)."""

    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def parse_mode(text: str) -> Mode:
    """``fp32``, ``bf16+cl``, ...: a precision, ``+cl`` for channels-last."""
    precision, _, suffix = text.partition("+")
    if precision not in ARITHMETIC or suffix not in ("", "cl"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {'|'.join(ARITHMETIC)}, optionally +cl")
    return Mode(precision, suffix == "cl")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--size", type=int, default=224, help="resize and crop side in pixels (the demo: 112)")
    ap.add_argument("--videos", type=int, default=24, help="videos in the split (10 frames each)")
    ap.add_argument("--distinct-videos", type=int, help="videos generated; the rest link to them (default: all)")
    ap.add_argument("--batch-videos", type=int, default=4)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--probe-videos", type=int, default=2)
    ap.add_argument("--num-workers", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--batching", nargs="+", default=["batched", "per-step"], choices=["batched", "per-step"])
    ap.add_argument("--modes", nargs="+", type=parse_mode, help="e.g. fp32 bf16+cl (default: --precision)")
    ap.add_argument("--precision", default="fp32", choices=list(ARITHMETIC), help="the one mode without --modes")
    ap.add_argument("--channels-last", action="store_true", help="channels-last for --precision")
    ap.add_argument("--backbone-frames", type=int, default=2048, help="pre-decoded frames for backbone only")
    ap.add_argument("--max-seconds", type=float, default=20.0, help="cap on each backbone-/loader-only timing")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="write the results as one JSON object to this file")
    a = ap.parse_args(argv)
    a.distinct_videos = min(a.distinct_videos or a.videos, a.videos)
    modes = a.modes or [Mode(a.precision, a.channels_last)]
    if len({m.name for m in modes}) != len(modes):
        ap.error("--modes lists a mode twice")
    # fp32 first: the other modes' features are compared with its cache
    a.modes = sorted(modes, key=lambda m: m.name != "fp32")
    return a


# --- data -----------------------------------------------------------------------------------------------------


def build_dataset(root: str, videos: int, distinct: int) -> dict[str, str]:
    """A validation split of ``videos`` synthetic 350-px videos under ``root``, ``distinct`` of them generated
    (:func:`jobs.demo.make_dataset`), the others linked to them (:func:`link_copies`); returns its paths."""
    paths = make_dataset(root, n_train=0, n_val=distinct, seed=0, size=350)
    if videos > distinct:
        link_copies(paths, videos, distinct)
    return paths


def link_copies(paths: dict[str, str], videos: int, distinct: int) -> None:
    """Add videos ``distinct .. videos - 1`` to the split and label files, each frame folder a relative symbolic
    link to generated video ``i % distinct`` (the dataset loader follows folder links, and frame reads accept a
    link's target as a regular file); the files are written once, so 10,000 videos take about a second."""
    with open(paths["split_val"]) as f:
        keys = [line.strip() for line in f if line.strip()]
    with open(paths["labels"]) as f:
        labels = json.load(f)
    database = labels["database"]
    for i in range(distinct, videos):
        source = keys[i % distinct]
        key = f"v_demo{i:04d}.mp4"  # make_dataset's naming, continued
        os.symlink(source, os.path.join(paths["frames"], key), target_is_directory=True)
        database[key[2:-4]] = database[source[2:-4]]
        keys.append(key)
    with open(paths["labels"], "w") as f:
        json.dump(labels, f)
    with open(paths["split_val"], "w") as f:
        f.write("\n".join(keys) + "\n")


def make_job(paths: dict[str, str], a: argparse.Namespace, checkpoint: str, dim: int) -> Job:
    """The official ActivityNet job on the generated data, ``--size`` pixels, the random backbone."""
    overrides = {
        "data.path_frame": paths["frames"],
        "data.path_split": paths["split_val"],
        "data.path_label": paths["labels"],
        "data.path_classid": paths["classes"],
        "checkpoint.init": checkpoint,
        "model.backbone.name": f"torchvision.{a.backbone}",
        "model.backbone.output_dim": str(dim),
        "model.num_class": str(len(CLASSES)),
        "data.preprocessing_label.one_hot_encoding": str(len(CLASSES)),
        "data.preprocessing.resize": str(a.size),
        "data.preprocessing.crop_center": str(a.size),
    }
    words = [w for key, value in overrides.items() for w in (f"--{key}", value)]
    return load_job(os.path.join(ROOT, "jobs", "activitynet_inference_2d.yml"), words)


def load_videos(job: Job) -> tuple[Video, ...]:
    """The job's split videos, sorted by key as extraction plans them."""
    data = job.data
    ds = load_dataset(
        data.name,
        path_frame=data.path_frame,
        path_split=data.path_split,
        path_label=data.path_label,
        path_classid=data.path_classid,
        num_class=len(CLASSES),
    )
    return ds.videos


def predecoded(videos: Sequence[Video], job: Job, n_frames: int, workers: int, device: torch.device) -> torch.Tensor:
    """At least ``n_frames`` frames (fewer if the split holds fewer), decoded and preprocessed by extraction's
    loader from the first videos: (n, 3, size, size) float32, pinned when ``device`` is CUDA."""
    n_videos = min(len(videos), -(-n_frames // job.data.num_frames))
    loader = frames_loader(
        videos[:n_videos], job, [[i] for i in range(n_videos)], num_workers=workers, device=torch.device("cpu")
    )
    frames = torch.cat([item[1] for items in loader for item in items if item[1] is not None])
    # pinned as the loader pins extraction's batches, so that both copy to the device the same way
    return frames.pin_memory() if device.type == "cuda" else frames


# --- timings --------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a timing must include it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mode_backbone(backbone: torch.nn.Module, mode: Mode, device: torch.device) -> torch.nn.Module:
    """A copy of ``backbone`` on ``device`` in eval mode, channels-last if ``mode`` says so."""
    net = copy.deepcopy(backbone).to(device).eval()
    return net.to(memory_format=torch.channels_last) if mode.channels_last else net


def backbone_only(
    net: torch.nn.Module,
    frames: torch.Tensor,
    batch: int,
    mode: Mode,
    device: torch.device,
    target: int,
    max_seconds: float,
) -> Timing:
    """The backbone alone on batches of ``batch`` pre-decoded frames, cycling over ``frames``, until ``target``
    frames or ``max_seconds`` (at least one batch), after one warm-up batch; features copied back as extraction
    copies them (the copy also waits for the device)."""
    batches = [frames[i : i + batch] for i in range(0, max(1, len(frames) - batch + 1), batch)]
    fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
    with torch.inference_mode(), backbone_precision(mode.precision, device):
        net(batches[0].to(device).contiguous(memory_format=fmt))  # warm-up: cuDNN's and autocast's first calls
        sync(device)
        done, started = 0, time.perf_counter()
        while done < target and (done == 0 or time.perf_counter() - started < max_seconds):
            x = batches[(done // batch) % len(batches)]
            net(x.to(device, non_blocking=True).contiguous(memory_format=fmt)).float().cpu()
            done += len(x)
        sync(device)
    return Timing(done, time.perf_counter() - started)


def loader_only(
    videos: Sequence[Video],
    job: Job,
    batches: list[list[int]],
    workers: int,
    device: torch.device,
    max_seconds: float,
) -> Timing:
    """Extraction's loader alone (workers started inside the timing, as end to end starts them): every batch
    decoded and moved to the device, no backbone, until the split ends or ``max_seconds`` passed."""
    started, frames = time.perf_counter(), 0
    batches_iter = iter(frames_loader(videos, job, batches, num_workers=workers, device=device))
    try:
        for items in batches_iter:
            good = [item for item in items if item[1] is not None]
            if good:
                batch_input(good, device, torch.contiguous_format)
            frames += len(good) * job.data.num_frames
            if time.perf_counter() - started > max_seconds:
                break
        sync(device)
        return Timing(frames, time.perf_counter() - started)
    finally:
        del batches_iter  # stops the worker processes now, not at garbage collection


# --- GPU utilisation ------------------------------------------------------------------------------------------


def utilisation_reader(device: torch.device) -> tuple[Callable[[], int] | None, str]:
    """A function returning the device's utilisation in percent (NVML: share of the last sample period with a
    kernel running), and where it comes from; ``(None, why not)`` on a CPU or without NVML bindings."""
    if device.type != "cuda":
        return None, "not a CUDA device"
    try:
        torch.cuda.utilization(device)
        return (lambda: torch.cuda.utilization(device)), "torch.cuda.utilization (pynvml)"
    except Exception as exc:  # no pynvml, or NVML refuses: try the bindings torch itself installs
        reason = f"torch.cuda.utilization: {exc}"
    try:
        from cuda.bindings import nvml

        nvml.init_v2()
        props = torch.cuda.get_device_properties(device)
        bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        handle = nvml.device_get_handle_by_pci_bus_id_v2(bus_id)
        nvml.device_get_utilization_rates(handle)
        return (lambda: int(nvml.device_get_utilization_rates(handle).gpu)), "cuda.bindings.nvml"
    except Exception as exc:
        return None, f"{reason}; cuda.bindings.nvml: {exc}"


class UtilisationSampler:
    """Samples a reader of :func:`utilisation_reader` every :data:`SAMPLE_PERIOD` seconds in a thread while the
    ``with`` body runs; :meth:`summary` gives the mean percent and the share of samples >= :data:`BUSY`."""

    def __init__(self, read: Callable[[], int] | None):
        self.read, self.samples = read, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD):
            # a failed sample is left out, not fatal to the measurement
            with contextlib.suppress(Exception):
                self.samples.append(self.read())

    def __enter__(self) -> UtilisationSampler:
        if self.read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        busy = sum(s >= BUSY for s in self.samples) / len(self.samples)
        return {"mean_percent": float(np.mean(self.samples)), "busy_share": busy, "samples": len(self.samples)}


# --- end to end and deviation ---------------------------------------------------------------------------------


def end_to_end(
    job: Job, a: argparse.Namespace, mode: Mode, batching: str, workers: int, device: torch.device, cache: str
) -> dict[str, Any]:
    """`jobs.extract.extract` on a fresh cache under ``cache``: frames, seconds, exactness summary, GPU
    utilisation during the call and the peak GPU memory allocated (GiB), as a record."""
    options = ExtractOptions(
        cache_root=cache,
        shard_size=a.shard_size,
        batch_videos=a.batch_videos,
        device=str(device),
        probe_videos=a.probe_videos,
    )
    settings = dict(num_workers=workers, precision=mode.precision, channels_last=mode.channels_last, batching=batching)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with UtilisationSampler(a.utilisation) as sampler:
        started = time.perf_counter()
        result = extract(with_options(job, settings), options, progress=False)
        sync(device)
        seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    timing = Timing(result.frames, seconds)
    return {
        "end_to_end_fps": timing.fps,
        "end_to_end_frames": timing.frames,
        "end_to_end_s": timing.seconds,
        "exactness": result.exactness,
        "gpu_utilisation": sampler.summary(),
        "peak_gpu_memory_gib": peak,
        "cache_dir": result.cache_dir,
    }


def cache_deviation(reference_dir: str, other_dir: str) -> dict[str, Any]:
    """Max abs and max relative deviation (:func:`cache.exactness.feature_deviation`: relative to each video's
    largest reference feature) of ``other_dir``'s cached features from ``reference_dir``'s, videos matched by key.
    Both caches come from one split and shard size, so shard ``i`` of each holds the same videos: read a pair at a
    time, memory stays at two shards."""
    reference, other = (sorted(glob.glob(os.path.join(d, "shard-*.h5"))) for d in (reference_dir, other_dir))
    worst_abs = worst_rel = 0.0
    matched = unmatched = 0
    for ref_path, path in zip(reference, other, strict=True):
        ref, shard = read_shard(ref_path), read_shard(path)
        rows = {key: i for i, key in enumerate(shard.videos)}
        pairs = [(i, rows[key]) for i, key in enumerate(ref.videos) if key in rows]
        unmatched += len(ref.videos) - len(pairs)
        if pairs:
            mine, theirs = (list(p) for p in zip(*pairs, strict=True))
            max_abs, max_rel = feature_deviation(ref.features[mine], shard.features[theirs])
            worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, max_rel)
        matched += len(pairs)
    return {"max_abs": worst_abs, "max_rel": worst_rel, "videos": matched, "unmatched": unmatched}


# --- report ---------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict[str, Any]:
    """The device's name, and for CUDA its memory (GiB), multiprocessors and compute capability."""
    if device.type != "cuda":
        return {"name": str(device)}
    props = torch.cuda.get_device_properties(device)
    return {
        "name": props.name,
        "memory_gib": props.total_memory / 2**30,
        "multiprocessors": props.multi_processor_count,
        "capability": f"{props.major}.{props.minor}",
    }


def machine_line(device: torch.device, info: dict[str, Any]) -> str:
    gpu = f" ({info['name']}, {info['memory_gib']:.1f} GiB)" if device.type == "cuda" else ""
    return (
        f"machine: {platform.node()} {cpu_model()}, {os.cpu_count()} CPUs, device {device}{gpu}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def utilisation_text(summary: dict[str, float] | None) -> str:
    if summary is None:
        return "n/a"
    return f"mean {summary['mean_percent']:.0f} %, {summary['busy_share']:.0%} of samples >= {BUSY} %"


def exactness_text(exact: dict[str, Any] | None) -> str:
    exact = exact or {}
    if exact.get("status") != "measured":
        return str(exact.get("status"))
    probes = len(exact.get("probe_videos", []))
    return (
        f"{exact['max_abs_deviation']:.2g} max abs, {exact['max_rel_deviation']:.2g} relative, {probes} probed videos"
    )


def verdict(
    records: list[dict[str, Any]], device: torch.device, target_setting: bool
) -> tuple[list[str], dict[str, Any] | None]:
    """The target lines and their JSON: on CUDA, from the batched runs (per-step if none), each mode at its
    fastest worker count; on a CPU only a note (the targets are for a GPU). ``target_setting``: the run is
    the targets' ResNet-50 at 224 px (else a line says the figures do not judge them)."""
    if device.type != "cuda":
        return [
            f"targets (>= {TARGET_FPS:,.0f} frames/s end to end, ratio >= {TARGET_RATIO}) are for a GPU: none on {device}"
        ], None
    batching = "batched" if any(r["batching"] == "batched" for r in records) else "per-step"
    best: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["batching"] == batching and r["end_to_end_fps"] > best.get(r["mode"], {}).get("end_to_end_fps", -1):
            best[r["mode"]] = r
    result: dict[str, Any] = {"batching": batching, "target_setting": target_setting, "modes": {}}
    lines = [] if target_setting else ["verdict: the targets are for ResNet-50 at 224 px; this run is another setting"]
    for name, r in best.items():
        fast, ratio = r["end_to_end_fps"] >= TARGET_FPS, r["ratio"] >= TARGET_RATIO
        result["modes"][name] = {
            "workers": r["workers"],
            "end_to_end_fps": r["end_to_end_fps"],
            "ratio": r["ratio"],
            "fps_ok": fast,
            "ratio_ok": ratio,
        }
        lines.append(
            f"verdict [{batching}] {name}, {r['workers']} workers: end to end >= {TARGET_FPS:,.0f} frames/s: "
            f"{'yes' if fast else 'no'} ({r['end_to_end_fps']:,.0f}); ratio >= {TARGET_RATIO}: "
            f"{'yes' if ratio else 'no'} ({r['ratio']:.3f})"
        )
    fastest = max(best, key=lambda m: best[m]["end_to_end_fps"])
    if "fp32" in best and fastest != "fp32":
        more = best[fastest]["end_to_end_fps"] > best["fp32"]["end_to_end_fps"]
        result.update(fastest_mode=fastest, fastest_more_than_fp32=more)
        lines.append(f"verdict: fastest mode {fastest} more than fp32 end to end: {'yes' if more else 'no'}")
    return lines, result


# --- main -----------------------------------------------------------------------------------------------------


def setup(a: argparse.Namespace, tmp: str) -> tuple[Job, torch.nn.Module, float]:
    """Generate the data and the random backbone's checkpoint under ``tmp``; the job, the backbone (CPU) and
    the seconds the dataset took to build."""
    started = time.perf_counter()
    paths = build_dataset(os.path.join(tmp, "data"), a.videos, a.distinct_videos)
    built = time.perf_counter() - started
    backbone = random_backbone(f"torchvision.{a.backbone}", seed=0)
    with torch.no_grad():
        dim = backbone(torch.zeros(1, 3, 64, 64)).shape[1]
    checkpoint = os.path.join(tmp, "ckpt.pth")
    save_checkpoint(FrameExit(backbone, dim, len(CLASSES)).eval(), checkpoint)
    return make_job(paths, a, checkpoint, dim), backbone, built


def print_header(a: argparse.Namespace, n_videos: int, n_frames: int, built: float, batch: int, line: str) -> None:
    print(line)
    linked = (
        f", {a.distinct_videos} generated and the rest linked to them (frames read from the page cache)"
        if a.distinct_videos < a.videos
        else ""
    )
    source = a.utilisation_source if a.utilisation else f"n/a ({a.utilisation_source})"
    print(f"GPU utilisation: {source}")
    print(f"data: {n_videos} videos, {n_frames} frames of 350 px{linked}; built in {built:.1f} s")
    print(
        f"{a.backbone} at {a.size}x{a.size}, batch {a.batch_videos} videos ({batch} frames), shards of "
        f"{a.shard_size} videos, modes {' '.join(m.name for m in a.modes)}"
    )


def measure_loader(videos, job, a, device) -> dict[int, Timing]:
    """Loader-only timing per worker count (independent of the mode and batching: the same batches)."""
    n = len(videos)
    sizes = [min(a.shard_size, n - start) for start in range(0, n, a.shard_size)]
    batches, _ = shard_batches(sizes, a.batch_videos)
    timings = {}
    for workers in a.num_workers:
        timings[workers] = loader_only(videos, job, batches, workers, device, a.max_seconds)
        t = timings[workers]
        print(f"loader only, {workers} workers: {t.fps:,.1f} frames/s ({t.frames} frames in {t.seconds:.1f} s)")
    return timings


def measure_mode(
    job: Job, a, backbone, frames, mode: Mode, batching: str, device, loader: dict[int, Timing], tmp: str
) -> list[dict[str, Any]]:
    """Backbone only, then end to end per worker count, for one mode and batching: a record per worker count
    (the first one's cache kept for the deviation from fp32, the others removed)."""
    batch = a.batch_videos * job.data.num_frames if batching == "batched" else 1
    n_frames = a.videos * job.data.num_frames
    net = mode_backbone(backbone, mode, device)
    bb = backbone_only(net, frames, batch, mode, device, n_frames, a.max_seconds)
    del net
    print(
        f"[{batching} {mode.name}] backbone only, batch of {batch} frames: {bb.fps:,.1f} frames/s ({bb.frames} frames)"
    )
    records = []
    for workers in a.num_workers:
        run = end_to_end(job, a, mode, batching, workers, device, tempfile.mkdtemp(prefix="cache-", dir=tmp))
        record = {"batching": batching, "mode": mode.name, **dataclasses.asdict(mode), "workers": workers}
        record.update(backbone_only_fps=bb.fps, backbone_only_frames=bb.frames, backbone_only_s=bb.seconds)
        record.update(backbone_batch=batch, loader_only_fps=loader[workers].fps)
        record.update(loader_only_frames=loader[workers].frames, loader_only_s=loader[workers].seconds)
        record.update(run, ratio=run["end_to_end_fps"] / bb.fps, deviation_from_fp32=None)
        print(
            f"[{batching} {mode.name}] end to end, {workers} workers: {run['end_to_end_fps']:,.1f} frames/s, "
            f"{run['end_to_end_s']:.1f} s (ratio to backbone only {record['ratio']:.3f}; loader only "
            f"{loader[workers].fps:,.1f} frames/s); GPU {utilisation_text(run['gpu_utilisation'])}; "
            f"exactness: {exactness_text(run['exactness'])}"
        )
        if records:  # one cache per mode is enough to compare: the features do not depend on the workers
            shutil.rmtree(os.path.dirname(record.pop("cache_dir")))
        records.append(record)
    return records


def add_deviations(records: list[dict[str, Any]], batching: str) -> None:
    """Each non-fp32 mode's deviation from fp32's cache (same batching), into its records, printed."""
    kept = {r["mode"]: r["cache_dir"] for r in records if r["batching"] == batching and "cache_dir" in r}
    if "fp32" not in kept:
        return
    for mode, cache_dir in kept.items():
        if mode == "fp32":
            continue
        dev = cache_deviation(kept["fp32"], cache_dir)
        for r in records:
            if r["batching"] == batching and r["mode"] == mode:
                r["deviation_from_fp32"] = dev
        print(
            f"[{batching} {mode}] deviation from fp32: {dev['max_abs']:.3g} max abs, {dev['max_rel']:.3g} relative "
            f"({dev['videos']} videos matched, {dev['unmatched']} not)"
        )


def main() -> None:
    a = parse_args()
    device = resolve_device(a.device)
    a.utilisation, a.utilisation_source = utilisation_reader(device)
    info = device_info(device)
    tmp = tempfile.mkdtemp(prefix="bench-extract-")
    try:
        job, backbone, built = setup(a, tmp)
        videos = load_videos(job)
        batch = a.batch_videos * job.data.num_frames
        line = machine_line(device, info)
        print_header(a, len(videos), len(videos) * job.data.num_frames, built, batch, line)
        frames = predecoded(videos, job, max(a.backbone_frames, batch), max(a.num_workers), device)
        print(f"backbone only on {len(frames)} pre-decoded frames, cycled; each timing capped at {a.max_seconds:g} s")
        loader = measure_loader(videos, job, a, device)
        records = []
        for batching in a.batching:
            for mode in a.modes:
                records += measure_mode(job, a, backbone, frames, mode, batching, device, loader, tmp)
            add_deviations(records, batching)
        lines, result = verdict(records, device, a.backbone == "resnet50" and a.size == 224)
        print("\n".join(lines))
        if a.json:
            write_json(a, line, info, len(videos), built, records, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(a, line: str, info: dict[str, Any], n_videos: int, built: float, records, result) -> None:
    """One JSON object: machine, device, settings, one record per batching, mode and worker count, verdict."""
    # --precision and --channels-last are folded into the modes
    dropped = ("utilisation", "modes", "json", "precision", "channels_last")
    settings = {k: v for k, v in vars(a).items() if k not in dropped}
    settings.update(modes=[m.name for m in a.modes], n_videos=n_videos, dataset_build_s=built)
    for r in records:
        r.pop("cache_dir", None)  # removed with the temporary folder
    doc = {"machine": line, "device": info, "settings": settings, "records": records, "verdict": result}
    with open(a.json, "w") as f:
        json.dump(finite(doc), f, indent=1, allow_nan=False)
    print(f"wrote {a.json}")


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float made ``None`` (strict JSON has neither)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


if __name__ == "__main__":
    main()
