"""The cache directory: found by its recorded inputs without the frames, locked by one writer, flags left alone."""

import io
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from filelock import FileLock
from helpers import HVU_JOB, copy_cache, frameexit_rows, hvu_overrides, key_inputs, write_job

import jobs.extract
from cache.manifest import CacheError
from cli import main
from jobs.config import load_job
from jobs.extract import ExtractOptions, extract
from jobs.replay import ReplayOptions, replay

GRID = ["--replay.first_thresholds", "[0.0, 0.5, 0.99]", "--replay.gate_thresholds", "[0.1, 0.5]"]


def _copy(cache_dir, dest, **inputs):
    """A copy of a cache directory whose manifest records other inputs (``precision='fp16'``...)."""
    shutil.copytree(cache_dir, dest, ignore=shutil.ignore_patterns(".lock"))
    path = os.path.join(dest, "manifest.json")
    with open(path) as f:
        doc = json.load(f)
    doc["inputs"].update(inputs)
    with open(path, "w") as f:
        json.dump(doc, f)
    return str(dest)


def _sweep(job_file, root, out, **options):
    result = replay(load_job(job_file, GRID), str(out), ReplayOptions(cache_root=root, scheduler="sync", **options))
    return pq.read_table(result.sweep_path)


# ---------------------------------------------------------------------------------------------- the key


def test_replay_finds_its_cache_without_the_frames(private, extracted, tmp_path):
    paths, job_file, root = private
    copy_cache(extracted.cache_dir, root)  # the shared extraction of these frames (the key has no paths)
    before = _sweep(job_file, root, tmp_path / "before")
    shutil.rmtree(paths["frames"])  # the frames are gone (or on another machine than the cache)
    after = _sweep(job_file, root, tmp_path / "after")
    assert after.equals(before) and len(frameexit_rows(after.to_pylist())) == 6


def test_a_reader_opens_the_directory_its_key_names_and_reads_no_other_manifest(
    job_file, extracted, tmp_path, monkeypatch
):
    import cache.manifest
    from cache.inputs import key_inputs
    from cache.key import cache_key
    from frameexit.checkpoint import backbone_digest
    from jobs.model import checkpoint_state

    root = str(tmp_path / "cache")
    cache_dir = copy_cache(extracted.cache_dir, root)
    job = load_job(job_file)
    inputs = key_inputs(
        job.data,
        job.model,
        dtype="float32",
        precision="fp32",
        channels_last=False,
        backbone_digest=backbone_digest(checkpoint_state(job, job.checkpoints[0])),
        batching="per-step",  # what auto means on a CPU
    )
    assert cache_dir == os.path.join(root, cache_key(inputs))
    # a decoy beside it recording the same inputs is never looked at
    _copy(cache_dir, os.path.join(root, "0-decoy"))
    read = []
    original = cache.manifest.read_manifest
    monkeypatch.setattr(cache.manifest, "read_manifest", lambda d: read.append(d) or original(d))
    assert _open(job, root).directory == cache_dir
    assert read == [cache_dir]


def test_a_channels_last_cache_serves_only_a_channels_last_replay(anet, checkpoint, tmp_path):
    # issue 19, item 2: channels-last features differ in the last bits; they are another cache
    job_file = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    root = str(tmp_path / "cache")
    made = extract(
        load_job(job_file, ["--extract.channels_last", "true"]), ExtractOptions(cache_root=root, shard_size=4)
    )
    args = ["replay", job_file, "--cache", root, "--out", str(tmp_path / "o"), "--scheduler", "sync"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert "no feature cache for this job" in r.output and made.cache_dir in r.output
    assert "memory format extract.channels_last (--channels-last) True in the cache, False in the job" in r.output
    # the settings are job keys (issue 21): the message names each by its key and its option
    assert "extracted with other settings is there" in r.output
    assert "give replay the settings it was extracted with (extract.dtype (--dtype), extract.precision" in r.output
    assert not (tmp_path / "o" / "sweep.parquet").exists()
    r = CliRunner().invoke(main, [*args, "--channels-last"])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "o" / "replay.json").read_text())
    assert record["cache"]["directory"] == made.cache_dir


def test_a_changed_key_format_is_another_cache(hvu, checkpoint, hvu_extracted, tmp_path):
    # issue 19, item 3: data.key_format decides the videos and their labels

    root = str(tmp_path / "cache")
    cache_dir = copy_cache(hvu_extracted.cache_dir, root)  # the job's own cache, as extract made it
    other = load_job(HVU_JOB, [*hvu_overrides(hvu, checkpoint, 0.61), "--data.key_format", "{youtube_id}.mp4"])
    with pytest.raises(CacheError, match="no feature cache for this job") as info:
        replay(other, str(tmp_path / "o"), ReplayOptions(cache_root=root, scheduler="sync"))
    assert "video key format data.key_format None in the cache, '{youtube_id}.mp4' in the job" in str(info.value)
    assert cache_dir in str(info.value)


def test_a_hand_made_cache_is_compared_on_the_inputs_it_records(job_file, extracted, tmp_path):
    # e.g. bench/replay.py's synthetic caches record the backbone digest alone
    made = shutil.copytree(extracted.cache_dir, tmp_path / "made", ignore=shutil.ignore_patterns(".lock"))
    path = made / "manifest.json"
    doc = json.loads(path.read_text())
    digest = doc["inputs"]["backbone_digest"]
    doc["inputs"] = {"backbone_digest": digest}
    path.write_text(json.dumps(doc))
    split = tmp_path / "elsewhere.txt"
    split.write_text("v_alpha.mp4\n")
    job = load_job(job_file, ["--data.path_split", str(split), *GRID])
    out = replay(job, str(tmp_path / "o"), ReplayOptions(cache_root="", features=str(made), scheduler="sync"))
    assert len(frameexit_rows(pq.read_table(out.sweep_path).to_pylist())) == 6
    doc["inputs"] = {"backbone_digest": "0" * 64}
    path.write_text(json.dumps(doc))
    with pytest.raises(
        CacheError, match=r"backbone weights \(checkpoint.init\): SHA-256 000000000000\.\.\. in the cache"
    ):
        replay(job, str(tmp_path / "o"), ReplayOptions(cache_root="", features=str(made), scheduler="sync"))


def test_a_cache_with_other_inputs_is_refused_naming_them(job_file, extracted, tmp_path):
    root = tmp_path / "root"
    fp16 = _copy(extracted.cache_dir, root / "fp16", precision="fp16")
    with pytest.raises(CacheError) as info:
        _sweep(job_file, str(root), tmp_path / "o")
    message = str(info.value)
    assert f"no feature cache for this job under {root}" in message
    assert (
        "precision extract.precision (--precision) 'fp16' in the cache, 'fp32' in the job" in message
        and fp16 in message
    )
    assert not (tmp_path / "o" / "sweep.parquet").exists()
    with pytest.raises(CacheError, match="extracted for other inputs than this job: precision"):
        _sweep(job_file, str(root), tmp_path / "o", features=fp16)
    # nothing for this split at all: the plain message
    with pytest.raises(CacheError, match="no feature cache for this job under .*run frameexit extract"):
        _sweep(job_file, str(tmp_path / "empty"), tmp_path / "o")


def test_an_incomplete_cache_is_named(job_file, extracted, tmp_path):
    root = tmp_path / "root"
    copy = _copy(extracted.cache_dir, root / os.path.basename(extracted.cache_dir))
    path = os.path.join(copy, "manifest.json")
    with open(path) as f:
        doc = json.load(f)
    doc["complete"] = False
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(CacheError, match=f"cache {copy} is incomplete"):
        _open(load_job(job_file), root)


def _open(job, root, **options):
    from frameexit.checkpoint import backbone_digest
    from jobs.model import checkpoint_state
    from jobs.replay_inputs import open_job_cache

    digest = backbone_digest(checkpoint_state(job, job.checkpoints[0]))  # replay_into's: the first checkpoint's
    return open_job_cache(job, ReplayOptions(cache_root=str(root), **options), digest)[0]


# ---------------------------------------------------------------------------------------------- frames


@pytest.fixture
def private(private, tmp_path):
    """conftest's private copy of the ActivityNet fixture and its job file, with a cache root."""
    paths, job_file = private
    return paths, job_file, str(tmp_path / "cache")


def _same_size_other_jpeg(path):
    """Replace a JPEG by another picture of exactly the same byte size (padded after its end marker)."""
    from PIL import Image

    size = os.path.getsize(path)
    buffer = io.BytesIO()
    Image.new("RGB", Image.open(path).size, (10, 200, 30)).save(buffer, format="JPEG", quality=50)
    data = buffer.getvalue()
    assert len(data) < size
    with open(path, "wb") as f:
        f.write(data + b"\0" * (size - len(data)))
    assert os.path.getsize(path) == size


def test_frames_replaced_by_other_bytes_of_the_same_size_are_extracted_again(private, tmp_path):
    # issue 19, item 4: the frame listing (names, sizes) is the same; the contents are not
    paths, job_file, root = private
    first = extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    before = _sweep(job_file, root, tmp_path / "before", verify_frames=True)
    _same_size_other_jpeg(os.path.join(paths["frames"], "v_alpha.mp4", "img_00001.jpeg"))  # sampled: position 0
    with pytest.raises(
        CacheError, match="the frames of 1 video are not those the features were computed from: v_alpha"
    ):
        _sweep(job_file, root, tmp_path / "o", verify_frames=True)
    assert _sweep(job_file, root, tmp_path / "unverified").equals(before)  # documented: replay reads no frame
    again = extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    assert again.cache_dir == first.cache_dir and again.frames_changed == ["v_alpha.mp4"]
    assert again.shards_written == 1  # the shard holding v_alpha only
    fresh = extract(load_job(job_file), ExtractOptions(cache_root=str(tmp_path / "fresh"), shard_size=4))
    assert _shas(again.cache_dir) == _shas(fresh.cache_dir)  # as if extracted from these frames at once
    assert not _sweep(job_file, root, tmp_path / "after", verify_frames=True).equals(before)
    assert extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4)).shards_written == 0


def test_a_video_that_could_not_be_read_is_tried_again(private, tmp_path):
    # issue 19, item 5: a frame being copied (truncated), a file that could not be opened; then both fixed
    paths, job_file, root = private
    alpha = os.path.join(paths["frames"], "v_alpha.mp4", "img_00001.jpeg")
    echo = os.path.join(paths["frames"], "v_echo.mp4", "img_00001.jpeg")
    good_alpha, good_echo = open(alpha, "rb").read(), open(echo, "rb").read()
    open(alpha, "wb").write(good_alpha[: len(good_alpha) // 3])
    os.remove(echo)
    os.mkdir(echo)  # listed as a frame, cannot be read as a file
    first = extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    reasons = {s["video"]: s["reason"] for s in first.skipped}
    assert "v_alpha.mp4" in reasons and "v_echo.mp4" in reasons and first.n_videos == 4
    # nothing changed: the truncated file gives the same failure; the unreadable one cannot be read yet
    same = extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    assert same.shards_written == 0 and same.retried == [] and same.frames_changed == []
    open(alpha, "wb").write(good_alpha)
    os.rmdir(echo)
    open(echo, "wb").write(good_echo)
    with pytest.raises(CacheError) as info:
        _sweep(job_file, root, tmp_path / "o", verify_frames=True)
    assert "the frames of 1 video are not those the features were computed from: v_alpha.mp4" in str(info.value)
    assert "1 video could not be read when extracted and can be now: v_echo.mp4" in str(info.value)
    fixed = extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    assert fixed.frames_changed == ["v_alpha.mp4"] and fixed.retried == ["v_echo.mp4"]
    assert fixed.n_videos == 6 and not {"v_alpha.mp4", "v_echo.mp4"} & {s["video"] for s in fixed.skipped}
    fresh = extract(load_job(job_file), ExtractOptions(cache_root=str(tmp_path / "fresh"), shard_size=4))
    assert _shas(fixed.cache_dir) == _shas(fresh.cache_dir)


def test_a_split_whose_frame_folders_changed_is_planned_anew(private, tmp_path):
    paths, job_file, root = private
    first = extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    old = shutil.copytree(first.cache_dir, tmp_path / "old", ignore=shutil.ignore_patterns(".lock"))
    shutil.rmtree(os.path.join(paths["frames"], "v_foxtrot.mp4"))  # the last video: the first shard stays
    again = extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    assert again.replanned and again.cache_dir == first.cache_dir and again.shards_written == 1
    assert again.n_videos == 5 and "v_foxtrot.mp4" in {s["video"] for s in again.skipped}
    fresh = extract(load_job(job_file), ExtractOptions(cache_root=str(tmp_path / "fresh"), shard_size=4))
    assert _shas(again.cache_dir) == _shas(fresh.cache_dir)
    with pytest.raises(CacheError, match="1 video had frames and has none now: v_foxtrot"):
        _sweep(job_file, root, tmp_path / "o", verify_frames=True, features=str(old))


def _shas(cache_dir):
    doc = json.loads(open(os.path.join(cache_dir, "manifest.json")).read())
    return [e["sha256"] for e in doc["shards"]]


# ---------------------------------------------------------------------------------------------- write


def test_a_second_writer_is_refused(job_file, extracted, tmp_path):
    root = str(tmp_path / "cache")
    cache_dir = copy_cache(extracted.cache_dir, root)
    lock = FileLock(os.path.join(cache_dir, ".lock"), timeout=0)
    with lock, pytest.raises(CacheError, match=f"another frameexit extract is writing {cache_dir}"):
        extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    again = extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4))
    assert again.shards_written == 0


def test_extract_leaves_the_tf32_flags_as_they_were(anet, checkpoint, tmp_path, monkeypatch):
    job_file = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
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
        tf32 = load_job(job_file, ["--extract.precision", "tf32"])
        extract(tf32, ExtractOptions(cache_root=str(tmp_path / "tf32"), shard_size=4))
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    assert seen == [(True, True)] * 2 + [(False, False)] * 2


# ---------------------------------------------------------------------------------------------- clip inputs


def test_the_clip_definition_enters_the_key():
    from cache.key import cache_key

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


def test_the_frame_record_covers_the_bytes_of_every_file_of_the_clips(tmp_path):
    from jobs.frames import video_frames_record

    paths = []
    for i in range(30):
        paths.append(str(tmp_path / f"img_{i:05d}.jpeg"))
        open(paths[-1], "wb").write(b"x" * 10)
    frames_only, clips = video_frames_record(paths, 10), video_frames_record(paths, 10, 13, 1)
    assert frames_only == video_frames_record(paths, 10, 1, 1) != clips
    open(paths[1], "wb").write(b"y" * 10)  # not sampled (positions 0, 3, 6, ...), but in a clip
    assert video_frames_record(paths, 10) == frames_only and video_frames_record(paths, 10, 13, 1) != clips
    open(paths[0], "wb").write(b"z" * 10)  # sampled: same name and size, other bytes
    assert video_frames_record(paths, 10) != frames_only
    os.remove(paths[0])
    assert video_frames_record(paths[:1] + paths[1:], 10) is None  # cannot be read
