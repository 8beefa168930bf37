"""`frameexit replay` refuses what it cannot evaluate, before any work, and leaves no stale report behind."""

import json
import os
import shutil
import time

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import jobs.replay
from cache.exit_tables import TABLES_DIR
from cache.shard import file_sha256
from cli import main
from frameexit.errors import UsageError
from jobs.config import load_job
from jobs.memory import memory_estimate
from jobs.replay import ReplayOptions, replay

REPORT_FILES = ("summary.md", "summary.json", "curve.png")


@pytest.fixture(scope="module")
def setup(job_file, extracted):
    """The session's job file, cache root and cache directory (read only)."""
    return job_file, os.path.dirname(extracted.cache_dir), extracted.cache_dir


def _copy_cache(cache_dir, dest, edit=None):
    """A copy of the cache directory's features (not the exit tables earlier replays stored there: a replay reading
    them reads no shard); ``edit(manifest_dict)`` changes its manifest."""
    shutil.copytree(cache_dir, dest, ignore=shutil.ignore_patterns(TABLES_DIR))
    if edit is not None:
        path = os.path.join(dest, "manifest.json")
        with open(path) as f:
            doc = json.load(f)
        edit(doc)
        with open(path, "w") as f:
            json.dump(doc, f)
    return str(dest)


def _stale_report(out):
    os.makedirs(out, exist_ok=True)
    for name in (*REPORT_FILES, "sweep.parquet", "videos.parquet", "replay.json"):
        with open(os.path.join(out, name), "w") as f:
            f.write("from an earlier run")


def _invoke(*args):
    return CliRunner().invoke(main, ["replay", *map(str, args)])


# ------------------------------------------------------------------------------ 3: nothing to evaluate


def test_a_cache_without_videos_is_an_error_naming_it(setup, tmp_path):
    job_file, _, cache_dir = setup

    def no_video(doc):
        # every listed video skipped before extraction: no shard at all
        doc["skipped"] = [{"video": f"v_{i}.mp4", "reason": "no frame folder"} for i in range(doc["n_listed"])]
        doc["shards"] = []

    empty = _copy_cache(cache_dir, tmp_path / "empty", no_video)
    r = _invoke(job_file, "--features", empty, "--out", tmp_path / "out")
    assert r.exit_code == 1, r.output
    assert f"feature cache {empty} holds no video to evaluate" in r.output
    assert "8 listed in the split, 8 skipped" in r.output and "v_0.mp4: no frame folder" in r.output
    assert "Traceback" not in r.output and "concatenate" not in r.output

    def all_failed(doc):
        # shards planned, but every one of their videos failed at decoding time
        for entry in doc["shards"]:
            entry["skipped"] = [{"video": v, "reason": "unreadable JPEG"} for v in entry["videos"]]

    failed = _copy_cache(cache_dir, tmp_path / "failed", all_failed)
    r = _invoke(job_file, "--features", failed, "--out", tmp_path / "out")
    assert r.exit_code == 1 and f"feature cache {failed} holds no video to evaluate" in r.output, r.output


# ------------------------------------------------------------------------------ 5: stale report files


def test_replay_removes_an_earlier_report(setup, tmp_path):
    job_file, cache_root, cache_dir = setup
    out = tmp_path / "out"
    _stale_report(out)
    r = _invoke(job_file, "--cache", cache_root, "--out", out, "--scheduler", "sync")
    assert r.exit_code == 0, r.output
    assert pq.read_table(out / "sweep.parquet").column("policy").to_pylist().count("frameexit") == 1
    for name in REPORT_FILES:
        assert not (out / name).exists(), name

    # a replay that fails while computing (a corrupt shard) leaves the previous files as they were, nothing else
    corrupt = _copy_cache(cache_dir, tmp_path / "corrupt")
    with open(os.path.join(corrupt, "shard-00001.h5"), "r+b") as f:
        f.seek(100)
        f.write(b"\0corrupt\0")
    _stale_report(out)
    before = {name: (out / name).read_bytes() for name in os.listdir(out) if name != ".frameexit.lock"}
    r = _invoke(job_file, "--features", corrupt, "--out", out, "--scheduler", "sync")
    assert r.exit_code == 1 and "is corrupt" in r.output, r.output
    assert {name: (out / name).read_bytes() for name in os.listdir(out) if name != ".frameexit.lock"} == before


# ------------------------------------------------------------------------------ 6: --features of another dataset


def test_features_of_another_dataset_are_refused(setup, anet, tmp_path):
    job_file, _, cache_dir = setup
    # the same videos but one: another split file
    with open(anet["split"]) as f:
        lines = f.read().splitlines()
    other_split = tmp_path / "split_other.txt"
    other_split.write_text("\n".join(lines[1:]) + "\n")
    r = _invoke(job_file, "--features", cache_dir, "--out", tmp_path / "o", "--data.path_split", other_split)
    assert r.exit_code == 1, r.output
    assert f"feature cache {cache_dir} was extracted for other inputs than this job" in r.output
    digests = (file_sha256(anet["split"])[:12], file_sha256(other_split)[:12])
    assert (
        f"split file data.path_split {other_split}: SHA-256 {digests[0]}... in the cache, {digests[1]}..." in r.output
    )
    assert "label file" not in r.output and "class list" not in r.output  # only what differs is named

    def renamed(doc):
        doc["inputs"]["dataset"] = "minikinetics"
        doc["inputs"]["resize"] = 256

    other = _copy_cache(cache_dir, tmp_path / "other", renamed)
    r = _invoke(job_file, "--features", other, "--out", tmp_path / "o")
    assert r.exit_code == 1, r.output
    assert "data.name 'minikinetics' in the cache, 'activitynet1.3' in the job" in r.output
    assert "resize 256 in the cache, 224 in the job" in r.output
    assert not (tmp_path / "o" / "sweep.parquet").exists()


def test_matching_features_need_no_frame_folders(setup, tmp_path):
    job_file, _, cache_dir = setup
    # the frames are not listed for --features: a frame root that does not exist does not matter
    r = _invoke(
        job_file,
        "--features",
        cache_dir,
        "--out",
        tmp_path / "o",
        "--data.path_frame",
        tmp_path / "no-frames-here",
        "--scheduler",
        "sync",
    )
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------------------ 9: unwritable --out


def test_unwritable_out_is_refused_before_any_work(setup, tmp_path):
    job_file, _, _ = setup
    # an empty cache root: any work would fail with "no feature cache"; the --out check comes first
    for out in ("/proc/frameexit-test/out", str(tmp_path / "a-file" / "out")):
        (tmp_path / "a-file").write_text("not a directory")
        r = _invoke(job_file, "--cache", tmp_path / "empty-cache", "--out", out)
        assert r.exit_code == 1, r.output
        assert f"--out {out} is not a writable directory" in r.output and "Traceback" not in r.output


# ------------------------------------------------------------------------------ 11: grids too large for memory


def test_a_grid_too_large_for_memory_is_refused_at_once(setup, tmp_path):
    job_file, cache_root, _ = setup
    started = time.perf_counter()
    r = _invoke(
        job_file,
        "--cache",
        cache_root,
        "--out",
        tmp_path / "o",
        "--first-thresholds",
        "0:1:100000",
        "--gate-thresholds",
        "0:1:100000",
    )
    assert time.perf_counter() - started < 10
    assert r.exit_code == 2, r.output
    assert "10,000,000,000 settings" in r.output and "TB of memory" in r.output and "available" in r.output
    assert "fewer thresholds" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o" / "sweep.parquet").exists()


def test_per_video_rows_for_every_setting_count_in_the_estimate(setup, tmp_path, monkeypatch):
    job_file, cache_root, _ = setup
    small = memory_estimate(n_first=500, n_gate=500, n_checkpoints=1, n_videos=6, num_class=200)
    every = memory_estimate(n_first=500, n_gate=500, n_checkpoints=1, n_videos=6, num_class=200, per_video_all=True)
    assert every.total > small.total and every.video_rows == 250_000 * small.video_rows
    limit = (small.total + every.total) // 2  # the sweep fits, the per-video rows of every setting do not
    monkeypatch.setattr(jobs.replay, "available_memory", lambda: limit)
    grid = ["--first-thresholds", "0:1:500", "--gate-thresholds", "0:1:500"]
    r = _invoke(job_file, "--cache", cache_root, "--out", tmp_path / "o", *grid, "--per-video", "all")
    assert r.exit_code == 2, r.output
    assert "--per-video all" in r.output and "1,500,000 per-video rows" in r.output
    with pytest.raises(UsageError, match="per-video"):
        grid = ["--replay.first_thresholds", "0:1:500", "--replay.gate_thresholds", "0:1:500"]
        job = load_job(job_file, [*grid, "--replay.per_video", "all"])
        replay(job, str(tmp_path / "o"), ReplayOptions(cache_root=cache_root))
