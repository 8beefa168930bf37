"""`frameexit extract`: shards, exactness against the sequential path, resume, corruption, the cache key."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import (
    EXE,
    cached_video,
    cached_videos,
    copy_cache,
    invoke,
    key_inputs,
    load_fixture,
    official_state,
    write_frames,
    write_job,
)

from cache.key import CacheKeyInputs, cache_key
from cache.manifest import CacheCorruptError, FeatureCache, read_manifest
from cli import main
from frameexit.checkpoint import build_model, read_state_dict
from frameexit.preprocess import Preprocessing
from frameexit.sampling import sample_indices
from jobs.config import load_job
from jobs.extract import ExtractOptions, extract, resolved
from jobs.frames import read_frame


def _shas(cache_dir):
    return {e.name: e.sha256 for e in read_manifest(cache_dir).shards}


def test_features_equal_the_sequential_inference_path(extracted, anet, checkpoint):
    cache = FeatureCache.open(extracted.cache_dir)
    assert len(cache.manifest.shards) == 2 and extracted.n_videos == 6
    model = build_model(read_state_dict(checkpoint), backbone_name="torchvision.resnet18")
    ds = load_fixture(anet)
    assert cached_videos(cache) == [v.key for v in ds.videos]
    for video in ds.videos:
        feats, labels, indices = cached_video(cache, video.key)
        expected_idx = sample_indices(len(video.frames))
        assert indices.tolist() == expected_idx.tolist()
        assert np.flatnonzero(labels).tolist() == list(video.labels)
        with torch.no_grad():  # the infer path: one frame at a time through the backbone
            ref = torch.cat([model.backbone(read_frame(video.frames[j], Preprocessing())[None]) for j in expected_idx])
        assert feats.shape == (10, 512) and feats.dtype == np.float32
        np.testing.assert_allclose(feats, ref.numpy(), atol=1e-5, rtol=0)


def test_shards_readable_with_plain_h5py(extracted):
    with h5py.File(os.path.join(extracted.cache_dir, "shard-00000.h5"), "r") as f:
        assert f["features"].shape == (4, 10, 512)
        assert [v.decode() for v in f["videos"][()]] == ["v_alpha.mp4", "v_bravo.mp4", "v_charlie.mp4", "v_delta.mp4"]
        assert f["labels"].shape == (4, 200) and f["frame_indices"].shape == (4, 10)
        assert f.attrs["key"] == os.path.basename(extracted.cache_dir)
        assert json.loads(f.attrs["inputs"])["backbone"] == "resnet18"


def test_second_run_does_no_backbone_work(job_file, extracted, tmp_path):
    copy_cache(extracted.cache_dir, tmp_path)
    r = CliRunner().invoke(main, ["extract", job_file, "--cache", str(tmp_path), "--shard-size", "4"])
    assert r.exit_code == 0, r.output
    assert "cache complete, nothing to do (no backbone work): 6 videos in 2 shards" in r.output
    assert "v_empty.mp4: no *.jpeg frames" in r.output and "v_nofolder.mp4: no frame folder" in r.output


def test_killed_run_resumes_to_the_same_cache(job_file, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = ["extract", job_file, "--shard-size", "1", "--batch-videos", "2", "--no-progress", "--cache"]
    extract(load_job(job_file), ExtractOptions(cache_root=str(whole), shard_size=1, batch_videos=2))
    # only the killed run needs a process of its own
    proc = subprocess.Popen([EXE, *args, str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    cache_dir = None
    while time.time() < deadline:
        dirs = os.listdir(killed) if killed.exists() else []
        cache_dir = str(killed / dirs[0]) if dirs else None
        try:
            manifest = read_manifest(cache_dir) if cache_dir else None
        except Exception:
            manifest = None  # caught mid-rename: try again
        if manifest and any(e.done for e in manifest.shards):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    interrupted = read_manifest(cache_dir)
    assert not interrupted.complete and 1 <= sum(e.done for e in interrupted.shards) < 6
    r = invoke(*args, killed)
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "reused" in r.output
    assert os.listdir(killed) == os.listdir(whole)  # same key
    whole_dir = str(whole / os.listdir(whole)[0])
    assert read_manifest(cache_dir).complete
    assert _shas(cache_dir) == _shas(whole_dir)  # every shard's checksum equals the uninterrupted run's
    assert not [n for n in os.listdir(cache_dir) if n.endswith(".tmp")]


def test_corrupt_shard_is_refused_then_rebuilt(job_file, extracted, tmp_path):
    root = tmp_path / "copy"
    cache_dir = copy_cache(extracted.cache_dir, root)
    before = _shas(cache_dir)
    shard = os.path.join(cache_dir, "shard-00001.h5")
    with open(shard, "r+b") as f:
        f.seek(os.path.getsize(shard) // 2)
        f.write(b"\x00garbage\x00")
    cache = FeatureCache.open(cache_dir)
    cache.read(0)
    with pytest.raises(
        CacheCorruptError,
        match=r"shard .*shard-00001.h5 is corrupt: its SHA-256 is [0-9a-f]{64}, "
        r"the manifest says " + before["shard-00001.h5"],
    ):
        cache.read(1)
    result = extract(load_job(job_file), ExtractOptions(cache_root=str(root), shard_size=4, batch_videos=3))
    assert result.shards_written == 1 and result.frames == 20  # only the corrupt shard (2 videos)
    assert _shas(cache_dir) == before
    FeatureCache.open(cache_dir).read(1)


def test_bad_videos_are_recorded_in_the_manifest(anet, checkpoint, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(os.path.dirname(anet["frames"]), data)
    broken = data / "frames" / "v_echo.mp4"
    for name in os.listdir(broken):
        (broken / name).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths = {k: str(data / os.path.relpath(v, os.path.dirname(anet["frames"]))) for k, v in anet.items()}
    job = load_job(write_job(str(tmp_path / "job.yml"), paths, checkpoint))
    result = extract(job, ExtractOptions(cache_root=str(tmp_path / "cache"), shard_size=64))
    reasons = {s["video"]: s["reason"] for s in read_manifest(result.cache_dir).all_skipped()}
    assert reasons["v_echo.mp4"].startswith("cannot read frame ") and "v_echo.mp4" in reasons["v_echo.mp4"]
    assert reasons["v_empty.mp4"].startswith("no *.jpeg frames in")
    assert reasons["v_nofolder.mp4"].startswith("no frame folder")
    assert result.n_videos == 5 and "v_echo.mp4" not in cached_videos(FeatureCache.open(result.cache_dir))


BASE = key_inputs()


def test_cache_key_changes_when_and_only_when_an_input_changes():
    key = cache_key(BASE)
    assert key == cache_key(dataclasses.replace(BASE)) and len(key) == 20 and key.isalnum()
    changed = {
        "backbone": "resnet18",
        "truncate_modules": -2,
        "backbone_digest": "f" * 64,
        "resize": 256,
        "crop": 240,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.2, 0.2, 0.2),
        "num_frames": 8,
        "sampling": "other",
        "dtype": "float16",
        "precision": "bf16",
        "channels_last": True,
        "dataset": "minikinetics",
        "split_digest": "0" * 64,
        "labels_digest": "1" * 64,
        "classes_digest": "2" * 64,
        "key_format": "{youtube_id}.mp4",
        "num_class": 3142,
        "format_version": 99,
        "clip_length": 13,
        "clip_stride": 6,
        "normalize_first": True,
        "batching": "per-step",
    }
    assert set(changed) == {f.name for f in dataclasses.fields(CacheKeyInputs)}  # every input is exercised
    keys = {name: cache_key(dataclasses.replace(BASE, **{name: value})) for name, value in changed.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keys)


def test_key_follows_backbone_weights_preprocessing_and_split(job_file, extracted, anet, tmp_path):
    root = str(tmp_path / "cache")
    cache_dir = copy_cache(extracted.cache_dir, root)
    before = _shas(cache_dir)
    # a checkpoint with the same backbone and another head shares the cache
    state = torch.load(load_job(job_file).checkpoints[0], weights_only=True)
    state["module.classifiers.0.bias"] = state["module.classifiers.0.bias"] + 1
    other_head = tmp_path / "other_head.pth"
    torch.save(state, other_head)
    same = extract(
        load_job(job_file, ["--checkpoint.init", str(other_head)]), ExtractOptions(cache_root=root, shard_size=4)
    )
    assert same.cache_dir == cache_dir and same.shards_written == 0
    # another backbone, preprocessing or split: a new key (computed without running the backbone)
    from cache.inputs import key_inputs
    from frameexit.checkpoint import backbone_digest
    from jobs.model import checkpoint_state

    def key_of(job, state):
        inputs = key_inputs(
            job.data,
            job.model,
            dtype="float32",
            precision="fp32",
            channels_last=False,
            backbone_digest=backbone_digest(state),
            batching=resolved(job, "auto").extract.batching,  # auto: per-step on a CPU
        )
        return cache_key(inputs)

    job = load_job(job_file)
    base_key = os.path.basename(extracted.cache_dir)
    assert key_of(job, checkpoint_state(job, str(other_head))) == base_key
    other_backbone = {k: (v + 1e-3 if k == "module.backbone.0.weight" else v) for k, v in state.items()}
    torch.save(other_backbone, tmp_path / "other_backbone.pth")
    assert key_of(job, checkpoint_state(job, str(tmp_path / "other_backbone.pth"))) != base_key
    split = tmp_path / "split.txt"
    split.write_text("v_alpha.mp4\n")
    small = load_job(job_file, ["--data.path_split", str(split)])
    assert key_of(small, checkpoint_state(small, small.checkpoints[0])) != base_key
    # and a real run with changed preprocessing writes a new directory, leaving the old one untouched
    resized = extract(
        load_job(job_file, ["--data.path_split", str(split), "--data.preprocessing.resize", "256"]),
        ExtractOptions(cache_root=root, shard_size=4),
    )
    assert resized.cache_dir != cache_dir and resized.n_videos == 1
    assert _shas(cache_dir) == before


def test_float16_storage(job_file, tmp_path, anet):
    split = tmp_path / "split.txt"
    split.write_text("v_bravo.mp4\n")
    job = load_job(job_file, ["--data.path_split", str(split)])
    r16 = extract(job.with_value("extract.dtype", "float16"), ExtractOptions(cache_root=str(tmp_path)))
    r32 = extract(job, ExtractOptions(cache_root=str(tmp_path)))
    assert r16.key != r32.key
    f16 = cached_video(FeatureCache.open(r16.cache_dir), "v_bravo.mp4")[0]
    f32 = cached_video(FeatureCache.open(r32.cache_dir), "v_bravo.mp4")[0]
    assert f16.dtype == np.float16
    np.testing.assert_allclose(f16.astype(np.float32), f32, rtol=1e-3, atol=1e-3)


def test_existing_scheduler_by_address_gives_the_same_cache_on_two_processes(job_file, extracted, cluster, tmp_path):
    argv = [
        "extract",
        job_file,
        "--cache",
        tmp_path,
        "--shard-size",
        "4",
        "--batch-videos",
        "3",
        "--scheduler",
        cluster,
    ]
    r = invoke(*argv)
    assert r.exit_code == 0, r.output
    assert _shas(str(tmp_path / extracted.key)) == _shas(extracted.cache_dir)


@pytest.mark.parametrize("command", ["extract", "replay"])
def test_unreachable_scheduler_is_an_error_naming_it(job_file, extracted, tmp_path, monkeypatch, command):
    import jobs.scheduling

    monkeypatch.setattr(jobs.scheduling, "CONNECT_TIMEOUT", 0.5)
    out = ["--out", str(tmp_path / "o"), "--features", extracted.cache_dir] if command == "replay" else []
    r = CliRunner().invoke(
        main, [command, job_file, "--cache", str(tmp_path), *out, "--scheduler", "tcp://127.0.0.1:1"]
    )
    assert r.exit_code == 1, r.output
    assert "cannot reach the dask scheduler 'tcp://127.0.0.1:1'" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_extract_cli_help_and_errors(job_file, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["extract", "--help"])
    assert r.exit_code == 0 and "--shard-size" in r.output and "FRAMEEXIT_CACHE" in r.output
    r = runner.invoke(main, ["extract", job_file, "--shard-size", "0", "--cache", str(tmp_path)])
    assert r.exit_code == 2 and "--shard-size" in r.output
    r = runner.invoke(
        main, ["extract", job_file, "--checkpoint.init", str(tmp_path / "nope.pth"), "--cache", str(tmp_path)]
    )
    assert r.exit_code == 1 and "Error: checkpoint file not found" in r.output and "Traceback" not in r.output


def test_cache_root_from_environment(job_file, tmp_path, monkeypatch, anet):
    split = tmp_path / "split.txt"
    split.write_text("v_delta.mp4\n")
    monkeypatch.setenv("FRAMEEXIT_CACHE", str(tmp_path / "env-cache"))
    r = CliRunner().invoke(main, ["extract", job_file, "--data.path_split", str(split)])
    assert r.exit_code == 0, r.output
    assert str(tmp_path / "env-cache") in r.output and len(os.listdir(tmp_path / "env-cache")) == 1


def test_empty_frames_are_never_inside_the_source_tree():
    from cli_options import default_cache_root

    assert default_cache_root() == os.path.join(os.path.expanduser("~"), ".cache", "frameexit")
    assert write_frames and official_state  # helpers used by other fixtures of this module
