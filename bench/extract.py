"""Extraction throughput: end-to-end frames/s against backbone-only frames/s, same device and batch size.

End to end = `jobs.extract.extract` on a generated ActivityNet-layout dataset
(JPEG decode, preprocessing, backbone, HDF5 write, manifest), timed around the
whole call on a fresh cache. Backbone only = the same backbone on the same
number of frames, already decoded and preprocessed in memory, in batches of
the same size. The ratio is what the input pipeline lets the backbone keep.

Each ``--batching`` mode is measured: ``batched`` (batches of ``--batch-videos``
videos; end to end includes the exactness probes, ``--probe-videos`` per shard
run again one frame per forward pass) and ``per-step`` (one frame per forward
pass, as ``frameexit infer`` runs the backbone; its backbone-only figure is
batch 1). The batched run also prints the deviation its probes measured.

    .venv/bin/python bench/extract.py [--backbone resnet50] [--size 224] [--videos 24] [--batch-videos 4]
                                      [--num-workers 0 1 2] [--batching batched per-step] [--device auto]

Target (DESIGN.md): ratio >= 0.9; on one H100, >= 3,000 ResNet-50 frames/s end to end.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from frameexit.backbone import random_backbone  # noqa: E402
from frameexit.checkpoint import save_checkpoint  # noqa: E402
from frameexit.head import FrameExit  # noqa: E402
from jobs.config import load_job, with_options  # noqa: E402
from jobs.datasets import load_dataset  # noqa: E402
from jobs.demo import CLASSES, make_dataset  # noqa: E402
from jobs.extract import ClipDataset, ExtractOptions, extract  # noqa: E402
from jobs.model import resolve_device  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--batch-videos", type=int, default=4)
    ap.add_argument("--num-workers", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"])
    ap.add_argument("--size", type=int, default=224, help="resize and crop side in pixels (the demo: 112)")
    ap.add_argument("--batching", nargs="+", default=["batched", "per-step"], choices=["batched", "per-step"])
    ap.add_argument("--probe-videos", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=64)
    a = ap.parse_args()
    device = resolve_device(a.device)
    tmp = tempfile.mkdtemp(prefix="bench-extract-")
    # the project's synthetic generator at the official ActivityNet frame size (shorter side 350)
    paths = make_dataset(os.path.join(tmp, "data"), n_train=0, n_val=a.videos, seed=0, size=350)
    backbone = random_backbone(f"torchvision.{a.backbone}", seed=0)
    with torch.no_grad():
        dim = backbone(torch.zeros(1, 3, 64, 64)).shape[1]
    ckpt = os.path.join(tmp, "ckpt.pth")
    save_checkpoint(FrameExit(backbone, dim, len(CLASSES)).eval(), ckpt)
    overrides = [
        "--data.path_frame",
        paths["frames"],
        "--data.path_split",
        paths["split_val"],
        "--data.path_label",
        paths["labels"],
        "--data.path_classid",
        paths["classes"],
        "--checkpoint.init",
        ckpt,
        "--model.backbone.name",
        f"torchvision.{a.backbone}",
        "--model.backbone.output_dim",
        str(dim),
        "--model.num_class",
        str(len(CLASSES)),
        "--data.preprocessing_label.one_hot_encoding",
        str(len(CLASSES)),
        "--data.preprocessing.resize",
        str(a.size),
        "--data.preprocessing.crop_center",
        str(a.size),
    ]
    job = load_job(os.path.join(ROOT, "jobs", "activitynet_inference_2d.yml"), overrides)
    data = job.data
    ds = load_dataset(
        data.name,
        path_frame=data.path_frame,
        path_split=data.path_split,
        path_label=data.path_label,
        path_classid=data.path_classid,
        num_class=len(CLASSES),
    )
    clips = ClipDataset(ds.videos, job)
    frames = torch.cat([clips[i][1] for i in range(len(clips))])
    n_frames = frames.shape[0]
    batch = a.batch_videos * data.num_frames

    # backbone only: pre-decoded frames, same batch size (1 for per-step), same device and precision settings
    net = backbone.to(device).eval()
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
    from jobs.process import backbone_precision

    def backbone_only(size: int) -> float:
        with torch.inference_mode(), backbone_precision(a.precision, device):
            net(frames[:size].to(device).contiguous(memory_format=fmt))  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            for i in range(0, n_frames, size):
                net(frames[i : i + size].to(device, non_blocking=True).contiguous(memory_format=fmt)).float().cpu()
            _sync(device)
            return n_frames / (time.perf_counter() - t0)

    print(
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{a.backbone} at {a.size}x{a.size}, {len(ds.videos)} videos, {n_frames} frames, batch {a.batch_videos} "
        f"videos ({batch} frames), shards of {a.shard_size} videos, precision {a.precision}"
        f"{', channels_last' if a.channels_last else ''}"
    )
    for batching in a.batching:
        size = batch if batching == "batched" else 1
        backbone_fps = backbone_only(size)
        print(f"[{batching}] backbone only, batch of {size} frames: {backbone_fps:.1f} frames/s")
        for workers in a.num_workers:
            cache = tempfile.mkdtemp(prefix="cache-", dir=tmp)
            options = ExtractOptions(
                cache_root=cache,
                shard_size=a.shard_size,
                batch_videos=a.batch_videos,
                device=str(device),
                probe_videos=a.probe_videos,
            )
            settings = dict(
                num_workers=workers, precision=a.precision, channels_last=a.channels_last, batching=batching
            )
            t0 = time.perf_counter()
            result = extract(with_options(job, settings), options, progress=False)
            _sync(device)
            seconds = time.perf_counter() - t0
            e2e = result.frames / seconds
            exact = result.exactness or {}
            probes = len(exact.get("probe_videos", []))
            deviation = (
                f"{exact['max_abs_deviation']:.2g} max abs, {exact['max_rel_deviation']:.2g} relative, "
                f"{probes} probed videos"
                if exact.get("status") == "measured"
                else exact.get("status")
            )
            print(
                f"[{batching}] end to end, {workers} loader workers: {e2e:.1f} frames/s, {seconds:.1f} s "
                f"(ratio to backbone only: {e2e / backbone_fps:.3f}); exactness: {deviation}"
            )


if __name__ == "__main__":
    main()
