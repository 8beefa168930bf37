"""Where the work runs, on a machine without a GPU: replay's ``--head-device`` and extraction's ``--scheduler cuda``.

What needs a GPU to run is in ``test_cuda.py`` (``pytest -m cuda``); here, the code paths it takes are exercised on
the CPU (the device pass of the head, the dask-cuda cluster's wiring with a stand-in cluster) and every way of
asking for a GPU that is not there fails with a message naming the option.
"""

import glob
import json
import multiprocessing
import os
import sys
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import copy_cache, invoke

import jobs.replay
import jobs.replay_head
import jobs.replay_inputs
from cache.exit_tables import TABLES_DIR, TABLES_MANIFEST
from cache.manifest import read_manifest
from cache.shard import read_shard
from cli import main
from frameexit.checkpoint import build_model, read_state_dict
from frameexit.head_pass import device_tables, exit_tables
from frameexit.sampling import COARSE_TO_FINE
from jobs.config import load_job, with_options
from jobs.replay import ReplayOptions, replay

GRID = dict(first_thresholds=(0.0, 0.5, 0.9, 1.0), gate_thresholds=(0.0, 0.4, 1.0), per_video="all")
OUTPUTS = ("sweep.parquet", "videos.parquet")
NO_GPU = not torch.cuda.is_available()


@pytest.fixture
def cache(extracted, tmp_path):
    """A private copy of the session's cache (no stored tables yet): its root and directory."""
    root = tmp_path / "cache"
    return str(root), copy_cache(extracted.cache_dir, root)


def _replay(job_file, root, out, **options):
    return replay(with_options(load_job(job_file), GRID), str(out), ReplayOptions(cache_root=root, **options))


def _table_devices(cache_dir):
    paths = glob.glob(os.path.join(cache_dir, TABLES_DIR, "*", TABLES_MANIFEST))
    return sorted(json.loads(open(p).read())["inputs"]["device"] for p in paths)


def test_the_device_pass_of_the_head_equals_the_cpu_pass_bit_for_bit(extracted, checkpoint):
    """The GPU's code path (float32 rows sent, order and float64 made there, tables copied back) run on the CPU."""
    model = build_model(read_state_dict(checkpoint), backbone_name=None)
    entry = read_manifest(extracted.cache_dir).shards[0]
    features = read_shard(os.path.join(extracted.cache_dir, entry.name))
    rows, n = features.features, len(features.videos)
    cpu = exit_tables(model, rows, COARSE_TO_FINE, videos=features.videos, labels=features.labels)
    probs = torch.full((n, 10, model.num_class), np.nan, dtype=torch.float32)
    gates = torch.full((n, 9), np.nan, dtype=torch.float32)
    device_tables(model, rows, COARSE_TO_FINE, (probs, gates), torch.device("cpu"))
    assert np.array_equal(probs.numpy(), cpu.probs) and np.array_equal(gates.numpy(), cpu.gates)


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present")
def test_auto_is_the_cpu_here_reads_the_cpu_tables_and_says_so_in_replay_json(job_file, cache, tmp_path, monkeypatch):
    root, cache_dir = cache
    _replay(job_file, root, tmp_path / "cpu", head_device="cpu")
    assert _table_devices(cache_dir) == ["cpu"]

    def refuse(*args, **kwargs):
        raise AssertionError("a head ran")

    monkeypatch.setattr(jobs.replay_head, "shard_exit_tables", refuse)
    _replay(job_file, root, tmp_path / "auto")  # the default: auto
    for name in OUTPUTS:
        assert (tmp_path / "auto" / name).read_bytes() == (tmp_path / "cpu" / name).read_bytes(), name
    record = json.loads((tmp_path / "auto" / "replay.json").read_text())
    assert record["runtime"]["head_device"] == "cpu"


def test_tables_of_another_device_are_kept_apart_and_not_read(job_file, cache, tmp_path, monkeypatch):
    """Tables a GPU computed (another device label; here the CPU stands in for it) are not what a CPU replay reads:
    its head runs, and each device's tables are kept under their own key."""
    root, cache_dir = cache

    def stand_in(option):
        return "cpu", "cuda (Stand-in GPU)"

    monkeypatch.setattr(jobs.replay_inputs, "head_device", stand_in)
    monkeypatch.setattr(jobs.replay, "head_device", stand_in)
    _replay(job_file, root, tmp_path / "gpu")
    record = json.loads((tmp_path / "gpu" / "replay.json").read_text())
    assert record["runtime"]["head_device"] == "cuda (Stand-in GPU)"
    monkeypatch.undo()
    ran = []
    real = jobs.replay_head.shard_exit_tables
    monkeypatch.setattr(jobs.replay_head, "shard_exit_tables", lambda *a, **k: ran.append(1) or real(*a, **k))
    _replay(job_file, root, tmp_path / "cpu", head_device="cpu")
    assert ran  # the stand-in GPU's tables were not read
    assert _table_devices(cache_dir) == ["cpu", "cuda (Stand-in GPU)"]


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_head_device_that_is_not_there_is_an_error_naming_the_option(job_file, extracted, tmp_path, device):
    out = tmp_path / "o"
    r = CliRunner().invoke(
        main, ["replay", job_file, "--features", extracted.cache_dir, "--out", str(out), "--head-device", device]
    )
    assert r.exit_code == 1, r.output
    assert f"--head-device {device} was asked for, but torch sees no CUDA device" in r.output
    assert "Traceback" not in r.output and not out.exists()


def test_head_device_values_are_checked_and_explained(job_file):
    r = invoke("replay", job_file, "--out", "o", "--head-device", "gpu")
    assert r.exit_code == 2 and "'gpu' is not one of auto, cpu, cuda, cuda:N" in r.output
    assert "--head-device" in invoke("replay", "--help").output and "--head-device" in invoke("run", "--help").output


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present")
def test_scheduler_cuda_without_a_gpu_is_an_error_before_any_work(job_file, tmp_path):
    for device in ("auto", "cpu"):
        r = invoke("extract", job_file, "--cache", tmp_path / "c", "--scheduler", "cuda", "--device", device)
        assert r.exit_code == 1, r.output
        assert "--scheduler cuda starts one dask-cuda worker per GPU, but this extraction has none" in r.output
    assert not (tmp_path / "c").exists() or not os.listdir(tmp_path / "c")


def test_replay_refuses_scheduler_cuda_and_points_to_head_device(job_file, extracted, tmp_path):
    r = invoke("replay", job_file, "--features", extracted.cache_dir, "--out", tmp_path / "o", "--scheduler", "cuda")
    assert r.exit_code == 1 and "--scheduler cuda is for extraction" in r.output and "--head-device" in r.output


def test_scheduler_cuda_without_dask_cuda_says_how_to_install_it(job_file, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import fails, as where it is not installed
    r = invoke("extract", job_file, "--cache", tmp_path / "c", "--scheduler", "cuda")
    assert r.exit_code == 1, r.output
    assert "--scheduler cuda needs dask-cuda (pip install '.[gpu]')" in r.output


@pytest.mark.parametrize("command", ["extract", "run"])
def test_scheduler_cuda_extracts_through_a_local_cuda_cluster_the_same_cache(
    job_file, extracted, tmp_path, monkeypatch, command
):
    """The dask-cuda path's wiring, with a stand-in LocalCUDACluster (a local cluster of one worker process, as
    dask-cuda starts for one GPU; the worker runs on its CPU): the same shards, byte for byte, as the plain path,
    and the worker started as an ordinary process so that it can start DataLoader processes. ``run`` then
    replays on dask's threads."""
    from distributed import Client, LocalCluster

    started = []

    def local_cuda_cluster(**kwargs):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, **kwargs)
        with Client(cluster) as client:
            started.extend(client.run(lambda: multiprocessing.current_process().daemon).values())
        return cluster

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU seen here; the worker uses its CPU
    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=local_cuda_cluster))
    root = tmp_path / "cache"
    out = ["--out", tmp_path / "out"] if command == "run" else []
    r = invoke(command, job_file, "--cache", root, *out, "--shard-size", 4, "--batch-videos", 3, "--scheduler", "cuda")
    assert r.exit_code == 0, r.output
    assert started == [False]
    if command == "run":
        assert json.loads((tmp_path / "out" / "replay.json").read_text())["runtime"]["scheduler"] == "threads"
    mine = {e.name: e.sha256 for e in read_manifest(str(root / extracted.key)).shards}
    assert mine == {e.name: e.sha256 for e in read_manifest(extracted.cache_dir).shards}
