"""Issue 20: inputs that are bounded or refused with a reason, never a hang, a traceback or a silent change."""

import io
import os
import struct

import pytest
from click.testing import CliRunner
from helpers import copy_cache
from PIL import Image

from cache.manifest import CacheError, read_manifest
from cli import main
from jobs.config import load_job
from jobs.extract import ExtractOptions, extract


def _bomb(path, width=30000, height=30000):
    """A small JPEG whose header claims ``width`` x ``height`` pixels (PIL refuses it as a decompression bomb)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    with open(path, "wb") as f:
        f.write(bytes(data))


def test_a_decompression_bomb_and_a_fifo_are_skipped_with_their_reason(private, tmp_path):
    paths, job_file = private
    _bomb(os.path.join(paths["frames"], "v_alpha.mp4", "img_00001.jpeg"))  # sampled: position 0
    fifo = os.path.join(paths["frames"], "v_echo.mp4", "img_00001.jpeg")
    os.remove(fifo)
    os.mkfifo(fifo)  # opening it for reading would block for ever
    result = extract(load_job(job_file), ExtractOptions(cache_root=str(tmp_path / "cache"), shard_size=4))
    reasons = {s["video"]: s["reason"] for s in result.skipped}
    assert "decompression bomb" in reasons["v_alpha.mp4"].lower() and "img_00001.jpeg" in reasons["v_alpha.mp4"]
    assert reasons["v_echo.mp4"] == f"cannot read frame {fifo}: a FIFO, not a frame file"
    assert result.n_videos == 4
    r = CliRunner().invoke(main, ["infer", job_file, "--out", str(tmp_path / "infer"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "v_alpha.mp4" in r.output and "v_echo.mp4" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("name", ["../../outside.h5", "/tmp/outside.h5", "sub/shard-00000.h5", "manifest.json"])
def test_a_manifest_naming_a_shard_outside_the_cache_is_refused(private, extracted, tmp_path, name):
    _, job_file = private
    cache_dir = copy_cache(extracted.cache_dir, tmp_path / "cache")  # the same key: the frames are not in it
    manifest = os.path.join(cache_dir, "manifest.json")
    text = open(manifest).read()
    open(manifest, "w").write(text.replace('"shard-00000.h5"', f'"{name}"'))
    with pytest.raises(CacheError, match=f"shard name {name!r}"):
        read_manifest(cache_dir)
    # extract names the manifest and writes nothing outside the cache
    r = CliRunner().invoke(main, ["extract", job_file, "--cache", str(tmp_path / "cache"), "--shard-size", "4"])
    assert r.exit_code == 1 and "shard name" in r.output and "Traceback" not in r.output, r.output
    assert not os.path.exists(os.path.join(cache_dir, name)) or name == "manifest.json"
    assert not (tmp_path / "outside.h5").exists() and not os.path.exists("/tmp/outside.h5")


@pytest.mark.parametrize("key", ["../../../etc/passwd", "/abs/path", "a/../../x", ".."])
def test_a_split_key_that_would_leave_the_frames_root_is_refused_naming_its_line(private, tmp_path, key):
    paths, job_file = private
    with open(paths["split"], "a") as f:
        f.write(f"{key}\n")
    line = len(open(paths["split"]).read().splitlines())
    for command in (["infer", job_file, "--out", str(tmp_path / "o")], ["prepare", "check", job_file]):
        r = CliRunner().invoke(main, command)
        assert r.exit_code == 1, r.output
        assert f"split file {paths['split']}, line {line}: the video key {key!r}" in r.output, r.output
        assert "Traceback" not in r.output
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_prepare_splits_refuses_an_annotation_id_that_is_a_path(tmp_path):
    import json

    annotation = tmp_path / "anet.json"
    database = {
        "abc": {"subset": "validation", "annotations": [{"label": "Dancing", "segment": [0, 1]}]},
        "../../x": {"subset": "validation", "annotations": [{"label": "Dancing", "segment": [0, 1]}]},
    }
    annotation.write_text(json.dumps({"database": database}))
    out = tmp_path / "split.txt"
    r = CliRunner().invoke(main, ["prepare", "splits", str(annotation), "--dataset", "activitynet", "--out", str(out)])
    assert r.exit_code == 1 and "the video key 'v_../../x.mp4' holds a path separator" in r.output, r.output
    assert not out.exists()


@pytest.mark.parametrize("prefix", ["../../x", "/tmp/abs", "a/b", "img%d", ".hidden", "", "p" * 250])
def test_prepare_frames_refuses_a_prefix_that_is_not_a_file_name_before_any_work(tmp_path, prefix):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "v_abc.mp4").write_bytes(b"not decoded: the prefix is refused first")
    out = tmp_path / "frames"
    r = CliRunner().invoke(
        main, ["prepare", "frames", str(videos), str(out), "--dataset", "activitynet", "--prefix", prefix]
    )
    assert r.exit_code == 1 and f"--prefix {prefix!r}" in r.output and "Traceback" not in r.output, r.output
    assert not out.exists() or not os.listdir(out)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x_00001.jpeg").exists()


def test_prepare_splits_counts_what_it_leaves_out_and_refuses_an_empty_split(tmp_path, minik):
    import json

    annotation = tmp_path / "anet.json"
    dancing = {"annotations": [{"label": "Dancing", "segment": [0, 1]}]}
    database = {"a": {"subset": "validation", **dancing}, "b": {"subset": "Validation", **dancing}}
    annotation.write_text(json.dumps({"database": database}))
    out = tmp_path / "split.txt"
    r = CliRunner().invoke(main, ["prepare", "splits", str(annotation), "--dataset", "activitynet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "1 videos written" in r.output and "left out: 1 video(s) whose subset is written otherwise" in r.output
    assert "v_b.mp4" in r.output and out.read_text() == "v_a.mp4\n"
    database["a"]["subset"] = "training"
    annotation.write_text(json.dumps({"database": database}))
    out.unlink()
    r = CliRunner().invoke(main, ["prepare", "splits", str(annotation), "--dataset", "activitynet", "--out", str(out)])
    assert r.exit_code == 1 and "gives no validation video: the split would be empty" in r.output, r.output
    assert not out.exists()
    # Mini-Kinetics: ids of the list without a row in the CSV are counted
    val_list = tmp_path / "mini_val_videofolder.txt"
    import csv

    first_id = next(csv.DictReader(open(minik["labels"], newline="")))["youtube_id"]
    val_list.write_text(f"{first_id} 10 3\nnot_in_the_csv 10 3\n")
    args = ["prepare", "splits", minik["labels"], "--dataset", "minikinetics", "--val-list", str(val_list)]
    r = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"left out: 1 id(s) of {val_list} without a row in {minik['labels']}: not_in_the_csv" in r.output


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"database": [1, 2]}', "has no 'database' mapping"),
        ("[1, 2]", "has no 'database' mapping"),
        ('{"database": {"abc": 5}}', "database['abc'] is 5, not an entry"),
        ('{"database": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ],
)
def test_prepare_splits_names_a_malformed_activitynet_file(tmp_path, text, why):
    annotation = tmp_path / "anet.json"
    annotation.write_text(text)
    out = tmp_path / "split.txt"
    r = CliRunner().invoke(main, ["prepare", "splits", str(annotation), "--dataset", "activitynet", "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert f"ActivityNet label file {annotation}" in r.output and why in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("text", ["[" * 100000, "[1, 2]", '{"shards": 5}'])
def test_a_cache_manifest_nested_too_deeply_or_of_another_shape_is_one_line(private, extracted, tmp_path, text):
    _, job_file = private
    cache_dir = copy_cache(extracted.cache_dir, tmp_path / "cache")  # the same key: the frames are not in it
    with open(os.path.join(cache_dir, "manifest.json"), "w") as f:
        f.write(text)
    r = CliRunner().invoke(main, ["extract", job_file, "--cache", str(tmp_path / "cache"), "--shard-size", "4"])
    assert r.exit_code == 1 and "cannot read cache manifest" in r.output and "Traceback" not in r.output, r.output


def test_a_prepare_frames_manifest_nested_too_deeply_is_one_line(tmp_path):
    frames, videos = tmp_path / "frames", tmp_path / "videos"
    frames.mkdir()
    videos.mkdir()
    (videos / "v_a.mp4").write_bytes(b"not read")
    (frames / "prepare-frames.json").write_text("[" * 100000)
    r = CliRunner().invoke(main, ["prepare", "frames", str(videos), str(frames), "--dataset", "activitynet"])
    assert r.exit_code == 1 and "nested too deeply" in r.output and "Traceback" not in r.output, r.output
