"""`frameexit prepare`: frames from videos with FFmpeg's filters, splits, checks."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import write_job
from PIL import Image

from cli import main

av = pytest.importorskip("av")
EXE = os.path.join(os.path.dirname(sys.executable), "frameexit")


def make_video(path, *, fps, seconds, size):
    """Moving colour blocks, mpeg4 at the given rate; size is (width, height)."""
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(fps * seconds)):
            img = np.zeros((h, w, 3), np.uint8)
            x = (i * 7) % max(w - 40, 1)
            img[:, x : x + 40] = (200, 60, 40)
            img[h // 4 : h // 2, w // 4 : w // 2] = (40, (i * 9) % 255, 220)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    make_video(root / "v_land25.mp4", fps=25, seconds=4, size=(320, 240))  # landscape 25 fps
    make_video(root / "v_port30.mp4", fps=30, seconds=3, size=(240, 320))  # portrait 30 fps
    (root / "v_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return root


def _frames(folder):
    return sorted(os.listdir(folder))


def test_activitynet_frames_counts_sizes_and_rerun(videos, tmp_path):
    out = tmp_path / "frames"
    r = CliRunner().invoke(
        main, ["prepare", "frames", str(videos), str(out), "--dataset", "activitynet", "--workers", "2"]
    )
    assert r.exit_code == 0, r.output
    assert "2 videos written" in r.output and "1 failed" in r.output and "could not decode v_broken.mp4" in r.output
    land, port = _frames(out / "v_land25.mp4"), _frames(out / "v_port30.mp4")
    assert land == [f"img_{i:05d}.jpeg" for i in range(1, 5)]  # 1 frame per second of a 4 s video
    assert len(port) == 3
    with Image.open(out / "v_land25.mp4" / land[0]) as img:
        assert img.format == "JPEG" and img.size == (467, 350)  # 320x240 scaled so both sides >= 350
    with Image.open(out / "v_port30.mp4" / port[0]) as img:
        assert img.size == (350, 467)
    assert not os.path.exists(out / "v_broken.mp4")
    first = {n: (out / "v_land25.mp4" / n).read_bytes() for n in land}
    shutil.rmtree(out / "v_land25.mp4")
    r = CliRunner().invoke(main, ["prepare", "frames", str(videos), str(out), "--dataset", "activitynet"])
    assert "1 videos written" in r.output and "1 already done" in r.output
    assert {n: (out / "v_land25.mp4" / n).read_bytes() for n in land} == first  # identical bytes


def test_minikinetics_rate_and_size(videos, tmp_path):
    out = tmp_path / "frames"
    r = CliRunner().invoke(main, ["prepare", "frames", str(videos), str(out), "--dataset", "minikinetics"])
    assert r.exit_code == 0, r.output
    assert len(_frames(out / "v_land25.mp4")) == 20 and len(_frames(out / "v_port30.mp4")) == 15  # 5 per second
    with Image.open(out / "v_land25.mp4" / "img_00001.jpeg") as img:
        assert img.size == (341, 256)


def test_killed_run_resumes(videos, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    for i in range(6):
        shutil.copy(videos / "v_land25.mp4", many / f"v_copy{i}.mp4")
    out = tmp_path / "frames"
    proc = subprocess.Popen(
        [EXE, "prepare", "frames", str(many), str(out), "--dataset", "minikinetics"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and any(not n.startswith(".") for n in os.listdir(out))):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len([n for n in os.listdir(out) if not n.startswith(".")]) < 6  # killed part-way
    r = CliRunner().invoke(main, ["prepare", "frames", str(many), str(out), "--dataset", "minikinetics"])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(out)) == [f"v_copy{i}.mp4" for i in range(6)]  # no partial folder left
    assert all(len(_frames(out / f"v_copy{i}.mp4")) == 20 for i in range(6))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg binary on this machine to compare with")
def test_same_frames_as_the_ffmpeg_command_line(videos, tmp_path):
    """Our filter graph against the command line's; then the JPEG files.

    PyAV bundles its own FFmpeg, which may be another version than the binary: swscale's rounding of
    the full-range chroma has changed between versions by one level, so planes are compared within 1.
    """
    from jobs.prepare import decode

    vf = "fps=1,scale=350:350:force_original_aspect_ratio=increase"
    video = str(videos / "v_land25.mp4")
    raw = tmp_path / "ref.yuv"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", video, "-vf", vf + ",format=yuvj420p", "-f", "rawvideo", str(raw)],
        check=True,
    )
    ref = np.fromfile(raw, np.uint8)
    ours = list(decode(video, fps=1, min_side=350))
    w, h = ours[0].width, ours[0].height
    cw, ch = (w + 1) // 2, (h + 1) // 2
    size = w * h + 2 * cw * ch
    assert len(ref) == size * len(ours)  # same number of frames, same size
    for i, frame in enumerate(ours):
        planes = np.split(ref[i * size : (i + 1) * size], [w * h, w * h + cw * ch])
        for plane, (pw, ph), mine in zip(planes, ((w, h), (cw, ch), (cw, ch)), frame.planes, strict=True):
            got = np.frombuffer(bytes(mine), np.uint8).reshape(-1, mine.line_size)[:ph, :pw].astype(int)
            assert np.abs(got - plane.reshape(ph, pw).astype(int)).max() <= 1
    out = tmp_path / "frames"
    CliRunner().invoke(main, ["prepare", "frames", str(videos), str(out), "--dataset", "activitynet"])
    jpegs = tmp_path / "jpegs"
    jpegs.mkdir()
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", video, "-vf", vf, "-q:v", "2", str(jpegs / "img_%05d.jpeg")], check=True
    )
    assert _frames(jpegs) == _frames(out / "v_land25.mp4")
    for name in _frames(jpegs):
        with Image.open(jpegs / name) as a, Image.open(out / "v_land25.mp4" / name) as b:
            assert a.size == b.size and a.quantization == b.quantization  # same quantiser (-q:v 2)
            luma = np.abs(np.asarray(a.convert("L"), dtype=int) - np.asarray(b.convert("L"), dtype=int))
            assert luma.max() <= 3 and luma.mean() < 0.5


def test_splits_and_check(anet, tmp_path):
    ann = tmp_path / "anet.json"
    ann.write_text(
        json.dumps(
            {
                "database": {
                    "a1": {"subset": "validation", "annotations": [{"label": "Archery"}]},
                    "b2": {"subset": "training", "annotations": [{"label": "Archery"}]},
                    "c3": {"subset": "validation", "annotations": [{"label": "Unknown sport"}]},
                }
            }
        )
    )
    classes = tmp_path / "classes.txt"
    classes.write_text("Archery\nBaking\n")
    r = CliRunner().invoke(
        main,
        [
            "prepare",
            "splits",
            str(ann),
            "--dataset",
            "activitynet",
            "--out",
            str(tmp_path / "split.txt"),
            "--classes",
            str(classes),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "split.txt").read_text() == "v_a1.mp4\nv_c3.mp4\n"
    assert "1 label(s) missing" in r.output and "Unknown sport" in r.output
    csv = tmp_path / "k.csv"
    csv.write_text(
        'label,youtube_id,time_start,time_end,split,is_cc\n"archery",abc,5.0,15.0,val,0\n"baking",def,1,11,val,0\n'
    )
    val = tmp_path / "mini_val_videofolder.txt"
    val.write_text("abc 250 0\n")
    r = CliRunner().invoke(
        main,
        [
            "prepare",
            "splits",
            str(csv),
            "--dataset",
            "minikinetics",
            "--val-list",
            str(val),
            "--out",
            str(tmp_path / "mk.txt"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mk.txt").read_text() == "abc_000005_000015.mp4\n"
    job = write_job(str(tmp_path / "job.yml"), anet, "unused.pth")
    r = CliRunner().invoke(main, ["prepare", "check", job])
    assert r.exit_code == 0, r.output
    assert "6 of 8 split videos have frames; 1 missing, 1 empty; 0 label(s) not in the class list" in r.output
    assert "min 1, " in r.output and "max 23" in r.output and "missing: v_nofolder.mp4" in r.output


def test_from_videos_and_annotations_to_a_report(videos, tmp_path):
    import torch
    from helpers import official_state

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("v_land25.mp4", "v_port30.mp4"):
        shutil.copy(videos / name, raw / name)
    names = [f"Class {i}" for i in range(200)]
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    (tmp_path / "anet.json").write_text(
        json.dumps(
            {
                "database": {
                    "land25": {"subset": "validation", "annotations": [{"label": "Class 3"}]},
                    "port30": {"subset": "validation", "annotations": [{"label": "Class 7"}]},
                    "gone": {"subset": "training", "annotations": [{"label": "Class 1"}]},
                }
            }
        )
    )
    torch.save(official_state("resnet18", seed=1), tmp_path / "ckpt.pth")
    runner = CliRunner()
    steps = [
        ["prepare", "frames", str(raw), str(tmp_path / "frames"), "--dataset", "activitynet"],
        [
            "prepare",
            "splits",
            str(tmp_path / "anet.json"),
            "--dataset",
            "activitynet",
            "--out",
            str(tmp_path / "split.txt"),
            "--classes",
            str(tmp_path / "classes.txt"),
        ],
        [
            "run",
            "jobs/activitynet_inference_2d.yml",
            "--data.path_frame",
            str(tmp_path / "frames"),
            "--data.path_split",
            str(tmp_path / "split.txt"),
            "--data.path_label",
            str(tmp_path / "anet.json"),
            "--data.path_classid",
            str(tmp_path / "classes.txt"),
            "--checkpoint.init",
            str(tmp_path / "ckpt.pth"),
            "--model.backbone.name",
            "torchvision.resnet18",
            "--model.backbone.output_dim",
            "512",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "run"),
        ],
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for args in steps:
            r = runner.invoke(main, args)
            assert r.exit_code == 0, (args[:2], r.output)
    finally:
        os.chdir(cwd)
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["n_videos_evaluated"] == 2 and summary["n_videos_skipped"] == 0
