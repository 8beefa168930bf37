"""The CUDA path on a real GPU (``pytest -m cuda``; skipped without one): extraction, infer and replay's head on the
GPU against the CPU, per-step CUDA extraction against infer on CUDA, and the dask-cuda cluster against the plain path.

Each test prints what it measured (run with ``-s`` to see it): ``bench/device.sh`` keeps the log. The tolerances are
the README's: features extracted on CUDA in fp32 (TF32 off) within 1e-4 of the video's largest feature of the CPU's
(TF32 would round about 5e-4 per operation); the head's float64 tables within one float32 ulp of the CPU's (float64
kernels that differ in the last bits round to float32 alike, except beside a rounding boundary); decisions equal.
"""

import dataclasses
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import frameexit_rows, job_setting_rows

from cache.manifest import FeatureCache, read_manifest
from frameexit.checkpoint import build_model, read_state_dict
from frameexit.head_pass import exit_tables
from jobs.config import load_job, with_options
from jobs.extract import ExtractOptions, extract
from jobs.infer import infer
from jobs.replay import ReplayOptions, replay

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m cuda on a machine with one)"),
]
#: features on CUDA (fp32, TF32 off) against the CPU's: largest difference over the video's largest |feature|
FEATURE_TOLERANCE = 1e-4
ROWS = ("exit_step", "prediction")


@pytest.fixture(scope="module")
def cpu_cache(job_file, tmp_path_factory):
    """The fixture's features extracted on the CPU (the session's ``extracted`` runs on CUDA where it is present)."""
    options = ExtractOptions(cache_root=str(tmp_path_factory.mktemp("cpu-cache")), shard_size=4, batch_videos=3)
    return extract(load_job(job_file), dataclasses.replace(options, device="cpu")).cache_dir


def _features(cache_dir):
    cache = FeatureCache.open(cache_dir)
    return {v: f for shard in cache.iter_shards() for v, f in zip(shard.videos, shard.features, strict=True)}


def _relative_deviation(mine, reference):
    worst = 0.0
    for video, ref in reference.items():
        scale = float(np.abs(ref).max()) or 1.0
        worst = max(worst, float(np.abs(mine[video].astype(np.float64) - ref).max()) / scale)
    return worst


def _by_video(rows):
    return {r["video"]: r for r in rows}


def _spread_threshold(job_file, cache_dir, checkpoint):
    """A first threshold half-way between two videos' step-0 confidences (CPU tables): exits vary, and no video's
    decision hangs on the last bit of its confidence."""
    model = build_model(read_state_dict(checkpoint), backbone_name=None)
    order = load_job(job_file).model.input_order
    conf = np.sort(
        np.concatenate(
            [
                exit_tables(model, s.features, order, videos=s.videos, labels=s.labels).confidence0
                for s in FeatureCache.open(cache_dir).iter_shards()
            ]
        )
    )
    middle = len(conf) // 2
    return float((conf[middle - 1] + conf[middle]) / 2)


@pytest.mark.parametrize("batching", ["per-step", "batched"])
def test_features_extracted_on_cuda_are_within_tolerance_of_the_cpus(job_file, cpu_cache, tmp_path, batching):
    job = with_options(load_job(job_file), dict(batching=batching))
    result = extract(job, ExtractOptions(cache_root=str(tmp_path), shard_size=4, batch_videos=3, device="cuda"))
    deviation = _relative_deviation(_features(result.cache_dir), _features(cpu_cache))
    print(f"\nCUDA {batching} features against the CPU's: {deviation:.3g} of the video's largest feature")
    assert deviation <= FEATURE_TOLERANCE


def test_per_step_extraction_and_replay_on_cuda_equal_infer_on_cuda(job_file, extracted, checkpoint, tmp_path):
    """The README's claim on a GPU: per-step features equal infer's bit for bit, and so do replay's decisions,
    exit steps, predictions and confidences, with the head on the GPU as infer runs it."""
    t0 = _spread_threshold(job_file, extracted.cache_dir, checkpoint)
    job = load_job(job_file, ["--model.first_threshold", repr(t0)])
    per_step = with_options(job, dict(batching="per-step"))
    root = str(tmp_path / "cache")
    extract(per_step, ExtractOptions(cache_root=root, shard_size=4, batch_videos=3, device="cuda"))
    grid = dict(first_thresholds=(t0,), gate_thresholds=(job.model.gate_threshold,))
    replay(with_options(per_step, grid), str(tmp_path / "replay"), ReplayOptions(cache_root=root, head_device="cuda"))
    inferred = infer(job, str(tmp_path / "infer"), device="cuda")
    mine = _by_video(job_setting_rows(tmp_path / "replay"))
    theirs = _by_video(pq.read_table(inferred.videos_path).to_pylist())
    assert mine.keys() == theirs.keys()
    exits = set()
    for video, r in theirs.items():
        assert [mine[video][k] for k in ROWS] == [r[k] for k in ROWS], video
        assert mine[video]["confidence"] == r["confidence"], video  # bit for bit
        exits.add(r["exit_step"])
    print(f"\nreplay (head on CUDA) = infer on CUDA for {len(theirs)} videos, exit steps {sorted(exits)}")


def test_infer_on_cuda_decides_as_on_the_cpu(job_file, extracted, checkpoint, tmp_path):
    t0 = _spread_threshold(job_file, extracted.cache_dir, checkpoint)
    job = load_job(job_file, ["--model.first_threshold", repr(t0)])
    runs = {d: infer(job, str(tmp_path / d), device=d).videos_path for d in ("cpu", "cuda")}
    cpu, cuda = (_by_video(pq.read_table(runs[d]).to_pylist()) for d in ("cpu", "cuda"))
    assert cpu.keys() == cuda.keys()
    worst = 0.0
    for video, r in cpu.items():
        assert [cuda[video][k] for k in ROWS] == [r[k] for k in ROWS], video
        worst = max(worst, abs(cuda[video]["confidence"] - r["confidence"]))
    print(f"\ninfer on CUDA decides as on the CPU for {len(cpu)} videos; confidences differ by {worst:.3g} at most")
    assert worst <= 1e-4


def test_the_heads_tables_on_cuda_are_within_one_float32_ulp_of_the_cpus(job_file, extracted, checkpoint, tmp_path):
    model = build_model(read_state_dict(checkpoint), backbone_name=None)
    on_gpu = build_model(read_state_dict(checkpoint), backbone_name=None).to("cuda")
    order = load_job(job_file).model.input_order
    differ = total = 0
    for shard in FeatureCache.open(extracted.cache_dir).iter_shards():
        args = dict(videos=shard.videos, labels=shard.labels)
        cpu, gpu = (exit_tables(m, shard.features, order, **args) for m in (model, on_gpu))
        for name in ("probs", "gates"):
            a, b = getattr(cpu, name), getattr(gpu, name)
            np.testing.assert_array_max_ulp(a, b, maxulp=1)
            differ, total = differ + int((a != b).sum()), total + a.size
    print(f"\nhead on CUDA against the CPU: {differ} of {total} table entries differ (by one float32 ulp)")
    # and the replay's decisions at every setting of a grid are the same
    t0 = _spread_threshold(job_file, extracted.cache_dir, checkpoint)
    grid = dict(first_thresholds=(0.0, t0, 1.0), gate_thresholds=(0.0, 0.5, 1.0), per_video="all")
    root = os.path.dirname(extracted.cache_dir)
    outs = {}
    for device in ("cpu", "cuda"):
        options = ReplayOptions(cache_root=root, head_device=device, exit_tables="off")
        replay(with_options(load_job(job_file), grid), str(tmp_path / device), options)
        rows = frameexit_rows(pq.read_table(tmp_path / device / "videos.parquet").to_pylist())
        outs[device] = {(r["first_threshold"], r["gate_threshold"], r["video"]): [r[k] for k in ROWS] for r in rows}
    assert outs["cuda"] == outs["cpu"]


def test_scheduler_cuda_extracts_the_same_cache_as_the_plain_cuda_path(job_file, tmp_path):
    pytest.importorskip("dask_cuda")
    job = load_job(job_file)
    options = ExtractOptions(cache_root=str(tmp_path / "plain"), shard_size=4, batch_videos=3, device="cuda")
    plain = extract(job, options)
    clustered = extract(job, dataclasses.replace(options, cache_root=str(tmp_path / "dask-cuda"), scheduler="cuda"))
    assert clustered.key == plain.key
    shas = [{e.name: e.sha256 for e in read_manifest(r.cache_dir).shards} for r in (plain, clustered)]
    assert shas[0] == shas[1]
    print(f"\n--scheduler cuda: the same {len(shas[0])} shards, byte for byte, as the plain CUDA path")
