"""`run` reads each input once: every dataset file and the checkpoint once (their SHA-256 from the bytes parsed),
each shard verified once per replay, whatever the number of checkpoints (issue 21)."""

import builtins
import collections
import glob
import os

import pytest
import torch
from click.testing import CliRunner
from helpers import write_job

from cache.exit_tables import TABLES_DIR
from cli import main


@pytest.fixture
def reads(monkeypatch):
    """Counts, by path, the files opened for reading (``open``) and the shards read as HDF5 by replay's tasks."""
    import jobs.replay_head

    opened, hdf5 = collections.Counter(), collections.Counter()
    real_open, real_read = builtins.open, jobs.replay_head.read_shard

    def counting_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and not set(mode) & set("wax+"):
            opened[os.path.realpath(file)] += 1
        return real_open(file, mode, *args, **kwargs)

    def counting_read(path):
        hdf5[os.path.realpath(path)] += 1
        return real_read(path)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(jobs.replay_head, "read_shard", counting_read)
    return opened, hdf5


def _dataset_files(paths):
    return [os.path.realpath(paths[k]) for k in ("split", "labels", "classes", "categories")]


def _shards(cache_dir):
    return sorted(os.path.realpath(os.path.join(cache_dir, n)) for n in os.listdir(cache_dir) if n.endswith(".h5"))


def test_run_reads_every_dataset_file_and_the_checkpoint_once(hvu, checkpoint, tmp_path, reads):
    opened, hdf5 = reads
    job = write_job(str(tmp_path / "job.yml"), hvu, checkpoint, name="hvu")
    cache = tmp_path / "cache"
    args = ["run", job, "--cache", str(cache), "--shard-size", "2", "--gate-thresholds", "0.5"]
    for attempt in ("extracts", "reuses the cache"):
        opened.clear()
        hdf5.clear()
        r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / attempt)])
        assert r.exit_code == 0, r.output
        (cache_dir,) = [str(p) for p in cache.iterdir()]
        for path in [*_dataset_files(hvu), os.path.realpath(checkpoint)]:
            assert opened[path] == 1, (attempt, path, opened[path])
        shards = _shards(cache_dir)
        assert len(shards) == 3
        # a shard extract writes is hashed from its bytes in memory, and the first replay checks it before reading
        # it; that replay stores the exit tables, which the second reads (each checked once) instead of any shard,
        # after extract checked each shard it found once
        reads = 1 if attempt == "extracts" else 0
        assert {s: opened[s] for s in shards} == dict.fromkeys(shards, 1), attempt
        assert {s: hdf5[s] for s in shards} == dict.fromkeys(shards, reads), attempt
        tables = glob.glob(os.path.join(cache_dir, TABLES_DIR, "*", "table-*.h5"))
        assert len(tables) == 3 and {t: opened[os.path.realpath(t)] for t in tables} == dict.fromkeys(tables, 1 - reads)
        assert opened[os.path.realpath(os.path.join(cache_dir, "manifest.json"))] == (attempt != "extracts")


def test_run_against_a_baseline_reads_the_checkpoint_once(hvu, checkpoint, tmp_path, reads):
    # the baseline and calibration checks need the checkpoint's SHA-256 before extracting: from the same read
    opened, _ = reads
    # the run and its calibration run evaluate other videos: each half of the split
    lines = open(hvu["split"]).readlines()
    halves = {name: tmp_path / f"{name}_split.txt" for name in ("job", "calibration")}
    halves["job"].write_text("".join(lines[: len(lines) // 2]))
    halves["calibration"].write_text("".join(lines[len(lines) // 2 :]))
    common = ["--cache", str(tmp_path / "cache"), "--shard-size", "2", "--gate-thresholds", "0.5"]
    for name in ("calibration", "job"):
        paths = {**hvu, "split": str(halves[name])}
        args = ["run", write_job(str(tmp_path / f"{name}.yml"), paths, checkpoint, name="hvu"), *common]
        r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    for extra in (["--baseline", tmp_path / "job" / "summary.json"], ["--calibrate-on", tmp_path / "calibration"]):
        opened.clear()
        r = CliRunner().invoke(main, [*args, *map(str, extra), "--budget", "5", "--out", str(tmp_path / "again")])
        assert r.exit_code == 0, r.output
        assert opened[os.path.realpath(checkpoint)] == 1, (extra, opened[os.path.realpath(checkpoint)])


def test_a_replay_of_several_checkpoints_verifies_and_reads_each_shard_once(hvu, checkpoint, tmp_path, reads):
    opened, hdf5 = reads
    job = write_job(str(tmp_path / "job.yml"), hvu, checkpoint, name="hvu")
    cache = tmp_path / "cache"
    r = CliRunner().invoke(main, ["extract", job, "--cache", str(cache), "--shard-size", "2"])
    assert r.exit_code == 0, r.output
    state = torch.load(checkpoint, weights_only=True)
    other = str(tmp_path / "other.pth")
    torch.save({k: (v * 1.5 if k.startswith("module.classifiers") else v) for k, v in state.items()}, other)
    opened.clear()
    hdf5.clear()
    both = f"[{checkpoint}, {other}]"
    args = ["replay", job, "--cache", str(cache), "--out", str(tmp_path / "o"), "--checkpoint.init", both]
    r = CliRunner().invoke(main, [*args, "--gate-thresholds", "0.5"])
    assert r.exit_code == 0, r.output
    (cache_dir,) = [str(p) for p in cache.iterdir()]
    shards = _shards(cache_dir)
    assert {s: opened[s] for s in shards} == dict.fromkeys(shards, 1)
    assert {s: hdf5[s] for s in shards} == dict.fromkeys(shards, 1)
    for path in (checkpoint, other, hvu["split"], hvu["labels"], hvu["classes"], hvu["categories"]):
        assert opened[os.path.realpath(path)] == 1, path


def test_infer_reads_every_dataset_file_and_the_checkpoint_once(hvu, checkpoint, tmp_path, reads):
    """metrics.json's checkpoint digest and replay.json's dataset digests come from the bytes infer used."""
    import hashlib
    import json

    opened, _ = reads
    job = write_job(str(tmp_path / "job.yml"), hvu, checkpoint, name="hvu")
    r = CliRunner().invoke(main, ["infer", job, "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    for path in [*_dataset_files(hvu), os.path.realpath(checkpoint)]:
        assert opened[path] == 1, (path, opened[path])
    with open(checkpoint, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["checkpoint"]["sha256"] == digest
    with open(hvu["labels"], "rb") as f:
        labels = hashlib.sha256(f.read()).hexdigest()
    assert json.loads((tmp_path / "o" / "replay.json").read_text())["dataset_digests"]["labels_digest"] == labels


def test_a_replay_that_verifies_the_frames_reads_every_dataset_file_once(hvu, checkpoint, tmp_path, reads):
    # --verify-frames lists the videos from the dataset files: their digests for the cache key come from that read
    opened, _ = reads
    job = write_job(str(tmp_path / "job.yml"), hvu, checkpoint, name="hvu")
    cache = str(tmp_path / "cache")
    r = CliRunner().invoke(main, ["extract", job, "--cache", cache, "--shard-size", "2"])
    assert r.exit_code == 0, r.output
    opened.clear()
    args = ["replay", job, "--cache", cache, "--out", str(tmp_path / "o"), "--gate-thresholds", "0.5"]
    r = CliRunner().invoke(main, [*args, "--verify-frames"])
    assert r.exit_code == 0, r.output
    for path in [*_dataset_files(hvu), os.path.realpath(checkpoint)]:
        assert opened[path] == 1, (path, opened[path])
