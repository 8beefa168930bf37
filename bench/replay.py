"""Replay cost at ActivityNet-validation scale against the sequential exit loop.

Builds a synthetic cache (4,926 videos x 10 frames x 2,048-d float32 features,
200 classes, written through the cache writer) and a random ResNet-50-format
FrameExit head, then measures in one run:

(a) the exit-table pass: every shard through the head (dask, threaded scheduler);
(b) a 1,000-setting sweep (40 first thresholds x 25 gate thresholds): exit steps,
    mAP, top-1, histogram for every setting (dask, blocks of gate thresholds);
(c) the sequential exit loop over the same cached features (frameexit.inference,
    one video and one step at a time, the backbone replaced by the cached
    feature), for a few settings, per setting;

and prints (a), (b), the per-setting ratio (c) / (((a) + (b)) / 1000) and the
peak resident memory. Also times the whole `frameexit replay` job on the cache.

    .venv/bin/python bench/replay.py [--videos 4926] [--loop-videos 600] [--keep DIR]

Targets (DESIGN.md, 2-core CPU): (a) + (b) at most 30 s; ratio at least 1,000.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time

import dask
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cache.key import FORMAT_VERSION  # noqa: E402
from cache.manifest import Manifest, ShardEntry, write_manifest  # noqa: E402
from cache.shard import write_shard  # noqa: E402
from frameexit.backbone import random_backbone  # noqa: E402
from frameexit.checkpoint import BACKBONE, backbone_digest, build_model, read_state_dict, save_checkpoint  # noqa: E402
from frameexit.head import FrameExit  # noqa: E402
from frameexit.inference import infer_video  # noqa: E402
from frameexit.sampling import COARSE_TO_FINE  # noqa: E402
from jobs.replay import HeadState, merge_tables, shard_exit_tables, sweep_block  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CachedFeature(torch.nn.Module):
    """Stands in for the backbone: the 'frame' it gets is already the cached feature vector."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=4926)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--loop-videos", type=int, default=600, help="videos timed in the sequential loop (c)")
    ap.add_argument("--keep", default=None, help="build the cache here and keep it")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n, steps, dim, n_class = a.videos, 10, 2048, 200
    tmp = a.keep or tempfile.mkdtemp(prefix="bench-replay-")
    cache_dir = os.path.join(tmp, "cache")
    os.makedirs(cache_dir, exist_ok=True)

    torch.manual_seed(0)
    ckpt = os.path.join(tmp, "frameexit_resnet50_random.pth")
    save_checkpoint(FrameExit(random_backbone("torchvision.resnet50", seed=0), dim, n_class).eval(), ckpt)
    state = read_state_dict(ckpt)
    head_state = {k: v for k, v in state.items() if not k.startswith(BACKBONE)}

    t0 = time.perf_counter()
    keys = [f"v_{i:06d}.mp4" for i in range(n)]
    labels = np.zeros((n, n_class), dtype=np.uint8)
    labels[np.arange(n), rng.integers(0, n_class, n)] = 1
    extra = rng.random(n) < 0.2  # some multi-label videos
    labels[np.flatnonzero(extra), rng.integers(0, n_class, int(extra.sum()))] = 1
    shards = []
    for s, lo in enumerate(range(0, n, a.shard_size)):
        hi = min(lo + a.shard_size, n)
        feats = np.abs(rng.normal(0, 1, size=(hi - lo, steps, dim))).astype(np.float32)
        name = f"shard-{s:05d}.h5"
        sha = write_shard(
            os.path.join(cache_dir, name),
            videos=keys[lo:hi],
            features=feats,
            labels=labels[lo:hi],
            frame_indices=np.tile(np.arange(steps, dtype=np.int32), (hi - lo, 1)),
            attrs={"key": "bench", "inputs": {}, "format_version": FORMAT_VERSION},
        )
        shards.append(ShardEntry(name=name, videos=keys[lo:hi], sha256=sha))
    write_manifest(
        cache_dir,
        Manifest(
            key="bench",
            inputs={"backbone_digest": backbone_digest(state)},
            format_version=FORMAT_VERSION,
            shard_size=a.shard_size,
            n_listed=n,
            shards=shards,
            skipped=[],
            complete=True,
        ),
    )
    build_s = time.perf_counter() - t0

    first = np.linspace(0.05, 1.0, 40).tolist()
    gate = np.linspace(0.0, 1.0, 25).tolist()
    order = tuple(COARSE_TO_FINE)
    head_d = dask.delayed(HeadState("bench", "bench", head_state), name="bench-head", traverse=False)
    parts = [dask.delayed(shard_exit_tables)(os.path.join(cache_dir, e.name), e.sha256, head_d, order) for e in shards]
    t0 = time.perf_counter()
    (merged,) = dask.compute(dask.delayed(merge_tables)(parts), scheduler="threads")
    table_s = time.perf_counter() - t0
    mem_a = peak_mib()
    workers = os.cpu_count() or 1
    block = max(1, -(-len(gate) // (2 * workers)))
    merged_d = dask.delayed(merged, name="bench-merged", traverse=False)
    t0 = time.perf_counter()
    blocks = dask.compute(
        *[dask.delayed(sweep_block)(merged_d, first, gate[i : i + block]) for i in range(0, len(gate), block)],
        scheduler="threads",
    )
    sweep_s = time.perf_counter() - t0
    mem_b = peak_mib()
    settings = len(first) * len(gate)
    assert sum(b.map.size for b in blocks) == settings

    # (c) the sequential loop over the same cached features
    loop = build_model(head_state, backbone_name=None)
    loop.backbone = CachedFeature()
    features = {}
    for e in shards:
        import h5py

        with h5py.File(os.path.join(cache_dir, e.name), "r") as f:
            for k, row in zip(e.videos, f["features"][()], strict=True):
                features[k] = row
            if len(features) >= a.loop_videos:
                break
    loop_keys = list(features)[: a.loop_videos]
    loop_settings = [(0.5, 0.5), (0.9, 0.3)]
    per_setting = []
    for ft, gt in loop_settings:
        t0 = time.perf_counter()
        for k in loop_keys:
            infer_video(
                loop, lambda j, _f=features[k]: torch.from_numpy(_f[j]), order, first_threshold=ft, gate_threshold=gt
            )
        per_setting.append((time.perf_counter() - t0) * n / len(loop_keys))
    loop_s = float(np.mean(per_setting))
    ratio = loop_s / ((table_s + sweep_s) / settings)

    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, numpy {np.__version__}"
    )
    print(
        f"cache: {n} videos x {steps} frames x {dim}-d float32, {n_class} classes, {len(shards)} shards "
        f"(written in {build_s:.1f} s)"
    )
    print(f"(a) exit-table pass:          {table_s:7.2f} s   (peak RSS {mem_a:.0f} MiB)")
    print(f"(b) {settings}-setting sweep:     {sweep_s:7.2f} s   (peak RSS {mem_b:.0f} MiB)")
    print(f"(a) + (b):                    {table_s + sweep_s:7.2f} s   target <= 30 s")
    print(
        f"(c) sequential loop per setting: {loop_s:7.1f} s   (timed on {len(loop_keys)} videos x "
        f"{len(loop_settings)} settings, scaled to {n})"
    )
    print(f"per-setting ratio (c) / ((a)+(b))/{settings}: {ratio:,.0f}   target >= 1,000")

    del head_d, parts  # the benchmark's own head would otherwise stay alive during the whole job
    # the whole job, as a user runs it (writes sweep.parquet and videos.parquet)
    import yaml

    from jobs.config import load_job
    from jobs.replay import ReplayOptions, replay

    job_file = os.path.join(tmp, "job.yml")
    with open(os.path.join(ROOT, "jobs", "activitynet_inference_2d.yml")) as f:
        job = yaml.safe_load(f)
    job["checkpoint"]["init"] = ckpt
    with open(job_file, "w") as f:
        yaml.safe_dump(job, f, sort_keys=False)
    t0 = time.perf_counter()
    replay(
        load_job(job_file),
        os.path.join(tmp, "out"),
        ReplayOptions(cache_root=tmp, features=cache_dir, first_thresholds=tuple(first), gate_thresholds=tuple(gate)),
        progress=False,
    )
    job_s = time.perf_counter() - t0
    print(
        f"whole `frameexit replay` job (1,000 settings, checkpoint read, outputs written): {job_s:.1f} s, "
        f"peak RSS {peak_mib():.0f} MiB"
    )
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
