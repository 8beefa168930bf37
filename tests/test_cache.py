"""The cache directory: found by its recorded inputs without the frames, locked by one writer, flags left alone."""

import json
import os
import shutil
import time

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from filelock import FileLock
from helpers import key_inputs, write_job

import jobs.extract
from cache.manifest import CacheError, Manifest, ShardEntry, write_manifest
from cli import main
from jobs.config import load_job
from jobs.extract import ExtractOptions, extract
from jobs.replay import ReplayOptions, replay

GRID = dict(first_thresholds=(0.0, 0.5, 0.99), gate_thresholds=(0.1, 0.5), scheduler="sync")


@pytest.fixture(scope="module")
def dataset(anet, tmp_path_factory):
    """A private copy of the ActivityNet fixture: these tests remove its frames."""
    root = tmp_path_factory.mktemp("data")
    top = os.path.dirname(anet["frames"])
    shutil.copytree(top, root / "data")
    return {k: str(root / "data" / os.path.relpath(v, top)) for k, v in anet.items()}


@pytest.fixture(scope="module")
def extracted(dataset, checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("cached")
    job_file = write_job(str(root / "job.yml"), dataset, checkpoint)
    result = extract(load_job(job_file), ExtractOptions(cache_root=str(root / "cache"), shard_size=4))
    return job_file, str(root / "cache"), result


def _copy(cache_dir, dest, **inputs):
    """A copy of a cache directory whose manifest records other inputs (``frames_digest='x'``...)."""
    shutil.copytree(cache_dir, dest, ignore=shutil.ignore_patterns(".lock"))
    path = os.path.join(dest, "manifest.json")
    with open(path) as f:
        doc = json.load(f)
    doc["inputs"].update(inputs)
    with open(path, "w") as f:
        json.dump(doc, f)
    return str(dest)


def _sweep(job_file, root, out, **options):
    result = replay(load_job(job_file), str(out), ReplayOptions(cache_root=root, **GRID, **options))
    return pq.read_table(result.sweep_path)


# ---------------------------------------------------------------------------------------------- locate


def test_replay_finds_its_cache_without_the_frames(dataset, checkpoint, tmp_path):
    top = os.path.dirname(dataset["frames"])
    shutil.copytree(top, tmp_path / "data")
    paths = {k: str(tmp_path / "data" / os.path.relpath(v, top)) for k, v in dataset.items()}
    job_file = write_job(str(tmp_path / "job.yml"), paths, checkpoint)
    root = str(tmp_path / "cache")
    extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    before = _sweep(job_file, root, tmp_path / "before")
    shutil.rmtree(paths["frames"])  # the frames are gone (or on another machine than the cache)
    after = _sweep(job_file, root, tmp_path / "after")
    assert after.equals(before) and after.num_rows == 6


def test_verify_frames_refuses_a_cache_of_re_prepared_frames(dataset, checkpoint, tmp_path):
    top = os.path.dirname(dataset["frames"])
    shutil.copytree(top, tmp_path / "data")
    paths = {k: str(tmp_path / "data" / os.path.relpath(v, top)) for k, v in dataset.items()}
    job_file = write_job(str(tmp_path / "job.yml"), paths, checkpoint)
    root = str(tmp_path / "cache")
    cache_dir = extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4)).cache_dir
    before = _sweep(job_file, root, tmp_path / "before", verify_frames=True)  # the same frames: accepted
    # the frames are prepared again under the same split file (another frame rate): 23 frames become 22
    os.remove(os.path.join(paths["frames"], "v_alpha.mp4", "img_00023.jpeg"))
    assert _sweep(job_file, root, tmp_path / "unverified").equals(before)  # documented: frames not read
    for features in (None, cache_dir):
        with pytest.raises(CacheError, match="frame listing under data.path_frame: SHA-256") as info:
            _sweep(job_file, root, tmp_path / "o", verify_frames=True, features=features)
        assert "run frameexit extract" in str(info.value).lower()
    r = CliRunner().invoke(
        main,
        ["replay", job_file, "--cache", root, "--out", str(tmp_path / "o"), "--verify-frames", "--scheduler", "sync"],
    )
    assert r.exit_code == 1 and "frame listing" in r.output, r.output
    assert not (tmp_path / "o" / "sweep.parquet").exists()


def test_replay_finds_a_channels_last_cache(dataset, checkpoint, tmp_path):
    # extract --channels-last, then replay (which has no such option): the cache is the job's
    job_file = write_job(str(tmp_path / "job.yml"), dataset, checkpoint)
    root = str(tmp_path / "cache")
    extract(load_job(job_file), ExtractOptions(cache_root=root, channels_last=True))
    r = CliRunner().invoke(
        main, ["replay", job_file, "--cache", root, "--out", str(tmp_path / "o"), "--scheduler", "sync"]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "sweep.parquet").exists()


def test_a_hand_made_cache_that_records_no_input_is_not_compared(extracted, tmp_path):
    # e.g. bench/replay.py's synthetic caches: their manifest records the backbone digest alone; the inputs added
    # later (clip length, ...) are read at their defaults, and must not make such a cache look comparable
    job_file, _, result = extracted
    made = shutil.copytree(result.cache_dir, tmp_path / "made", ignore=shutil.ignore_patterns(".lock"))
    path = made / "manifest.json"
    doc = json.loads(path.read_text())
    doc["inputs"] = {"backbone_digest": doc["inputs"]["backbone_digest"]}
    path.write_text(json.dumps(doc))
    job = load_job(job_file, ["--data.path_split", str(tmp_path / "elsewhere.txt")])
    out = replay(job, str(tmp_path / "o"), ReplayOptions(cache_root="", features=str(made), **GRID))
    assert pq.read_table(out.sweep_path).num_rows == 6


def test_a_cache_with_other_inputs_is_refused_naming_them(extracted, tmp_path):
    job_file, _, result = extracted
    root = tmp_path / "root"
    _copy(result.cache_dir, root / "fp16", precision="fp16")
    with pytest.raises(CacheError) as info:
        _sweep(job_file, str(root), tmp_path / "o")
    message = str(info.value)
    assert f"no feature cache under {root} matches this job" in message
    assert "precision (--precision) 'fp16' in the cache, 'fp32' in the job" in message
    assert str(root / "fp16") in message
    assert not (tmp_path / "o" / "sweep.parquet").exists()
    # nothing for this split at all: the plain message
    with pytest.raises(CacheError, match="no feature cache for this job under .*run frameexit extract"):
        _sweep(job_file, str(tmp_path / "empty"), tmp_path / "o")


def test_caches_of_other_frames_are_told_apart_by_the_frames(extracted, dataset, checkpoint, tmp_path):
    job_file, _, result = extracted
    root = tmp_path / "root"
    ours = _copy(result.cache_dir, root / "b-ours")
    _copy(result.cache_dir, root / "a-stale", frames_digest="0" * 64)
    job = load_job(job_file)
    assert _locate(job, root).directory == ours  # the frame listing decides
    # without the frames nothing can decide: refused, naming both
    gone = write_job(str(tmp_path / "job.yml"), dict(dataset, frames=str(tmp_path / "nothing")), checkpoint)
    with pytest.raises(CacheError) as info:
        _locate(load_job(gone), root)
    message = str(info.value)
    assert "several feature caches" in message and str(root / "a-stale") in message and ours in message
    assert "--features" in message


def test_the_memory_format_only_breaks_ties(extracted, tmp_path):
    job_file, _, result = extracted
    root = tmp_path / "root"
    _copy(result.cache_dir, root / "a-channels-last", channels_last=True)
    plain = _copy(result.cache_dir, root / "b-plain")
    assert _locate(load_job(job_file), root).directory == plain
    assert _locate(load_job(job_file), root, channels_last=True).directory == str(root / "a-channels-last")


def test_an_incomplete_cache_is_named(extracted, tmp_path):
    job_file, _, result = extracted
    root = tmp_path / "root"
    copy = _copy(result.cache_dir, root / "interrupted")
    path = os.path.join(copy, "manifest.json")
    with open(path) as f:
        doc = json.load(f)
    doc["complete"] = False
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(CacheError, match=f"cache {copy} is incomplete"):
        _locate(load_job(job_file), root)


def _locate(job, root, **options):
    from jobs.replay import _open_cache

    return _open_cache(job, ReplayOptions(cache_root=str(root), **options))


def test_locating_reads_manifests_only(tmp_path):
    from cache.locate import locate

    # ActivityNet scale: 20 caches of 10,000 videos (157 shards each) under one root
    keys = [f"v_{i:011d}.mp4" for i in range(10_000)]
    shards = [ShardEntry(f"shard-{i:05d}.h5", keys[j : j + 64], "0" * 64) for i, j in enumerate(range(0, 10_000, 64))]
    wanted = {"dataset": "activitynet1.3", "split_digest": "s", "precision": "fp32", "channels_last": False}
    for n in range(20):
        inputs = dict(wanted, frames_digest=f"{n:064d}", precision="fp32" if n == 7 else "fp16")
        directory = tmp_path / f"cache-{n:02d}"
        directory.mkdir()
        manifest = Manifest(f"cache-{n:02d}", inputs, 1, 64, 10_000, shards, [], complete=True)
        write_manifest(str(directory), manifest)
    started = time.perf_counter()
    cache = locate(str(tmp_path), wanted, resolve={"frames_digest": lambda: None})
    seconds = time.perf_counter() - started
    assert cache.directory == str(tmp_path / "cache-07")
    assert seconds < 1.0, seconds


def test_frames_digest_reads_no_pixels(tmp_path):
    from cache.inputs import frames_digest

    class Video:
        key, frames = "v", (str(tmp_path / "missing.jpeg"),)

    assert frames_digest([Video()], 10) == frames_digest([Video()], 10)


# ---------------------------------------------------------------------------------------------- write


def test_a_second_writer_is_refused(extracted):
    job_file, root, result = extracted
    lock = FileLock(os.path.join(result.cache_dir, ".lock"), timeout=0)
    with lock, pytest.raises(CacheError, match=f"another frameexit extract is writing {result.cache_dir}"):
        extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    again = extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    assert again.shards_written == 0


def test_extract_leaves_the_tf32_flags_as_they_were(dataset, checkpoint, tmp_path, monkeypatch):
    job_file = write_job(str(tmp_path / "job.yml"), dataset, checkpoint)
    seen = []
    write = jobs.extract.write_shard

    def spy(*args, **kwargs):
        # control is outside the backbone's forward pass: the caller's flags hold
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return write(*args, **kwargs)

    monkeypatch.setattr(jobs.extract, "write_shard", spy)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        extract(load_job(job_file), ExtractOptions(cache_root=str(tmp_path / "cache"), shard_size=4))
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        extract(load_job(job_file), ExtractOptions(cache_root=str(tmp_path / "tf32"), precision="tf32", shard_size=4))
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    assert seen == [(True, True)] * 2 + [(False, False)] * 2


# ---------------------------------------------------------------------------------------------- clip inputs


def test_frame_caches_keep_their_keys_and_the_clip_definition_enters_the_key():
    from cache.key import cache_key, canonical_json

    # computed with the code before clip steps existed: caches of 2D backbones keep their directories
    assert cache_key(key_inputs()) == "60308e3c5437c2ca6a6a"
    assert "clip" not in canonical_json(key_inputs()) and "normalize_first" not in key_inputs().to_json()
    keys = {
        cache_key(key_inputs(**changes))
        for changes in (
            {},
            {"clip_length": 13},
            {"clip_length": 13, "clip_stride": 6},
            {"clip_length": 8},
            {"normalize_first": True},
        )
    }
    assert len(keys) == 5
    assert key_inputs(clip_length=13, clip_stride=6).to_json()["clip_stride"] == 6


def test_manifests_record_inputs_as_the_key_and_read_absent_ones_as_their_default(tmp_path):
    from cache.inputs import differences
    from cache.manifest import read_manifest

    inputs = {**key_inputs().to_json(), "clip_length": 1, "clip_stride": 1, "normalize_first": False}
    write_manifest(str(tmp_path), Manifest("k", inputs, 1, 64, 0, [], [], complete=True))
    recorded = json.loads((tmp_path / "manifest.json").read_text())["inputs"]
    assert recorded == key_inputs().to_json()  # as earlier versions wrote it: no clip keys
    manifest = read_manifest(str(tmp_path))
    assert (manifest.inputs["clip_length"], manifest.inputs["normalize_first"]) == (1, False)
    assert differences(manifest.inputs, {"clip_length": 13}, ["clip_length"]) == [
        "model.backbone.clip_length 1 in the cache, 13 in the job"
    ]


def test_frames_digest_covers_every_frame_of_the_clips(tmp_path):
    from cache.inputs import frames_digest

    paths = []
    for i in range(30):
        paths.append(str(tmp_path / f"img_{i:05d}.jpeg"))
        open(paths[-1], "wb").write(b"x" * 10)

    class Video:
        key, frames = "v", tuple(paths)

    frames_only, clips = frames_digest([Video()], 10), frames_digest([Video()], 10, 13, 1)
    assert frames_only == frames_digest([Video()], 10, 1, 1) != clips
    # file 7 is in a clip (around the sampled file 6) but is no sampled frame: only the clip digest sees it
    open(paths[7], "wb").write(b"x" * 11)
    assert frames_digest([Video()], 10) == frames_only and frames_digest([Video()], 10, 13, 1) != clips
