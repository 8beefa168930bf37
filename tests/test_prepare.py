"""`frameexit prepare`: frames from videos with FFmpeg's filters, splits, checks."""

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import psutil  # installed with dask.distributed
import pytest
from click.testing import CliRunner
from helpers import class_names, official_state, write_job
from PIL import Image

from cli import main

av = pytest.importorskip("av")
EXE = os.path.join(os.path.dirname(sys.executable), "frameexit")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _prepare(*args):
    """``frameexit prepare ARGS`` in this process (arguments turned into strings)."""
    return CliRunner().invoke(main, ["prepare", *map(str, args)])


def test_activitynet_frames_counts_sizes_and_rerun(videos, tmp_path):
    out = tmp_path / "frames"
    r = CliRunner().invoke(
        main, ["prepare", "frames", str(videos), str(out), "--dataset", "activitynet", "--workers", "2"]
    )
    assert r.exit_code == 1, r.output  # a failed video fails the command, after what could be written
    assert "2 videos written" in r.output and "1 failed" in r.output and "could not decode v_broken.mp4" in r.output
    assert r.output.rstrip().splitlines()[-1] == "Error: 1 video(s) could not be decoded (listed above)"
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
    assert r.exit_code == 1 and "1 videos written" in r.output and "1 already done" in r.output
    assert {n: (out / "v_land25.mp4" / n).read_bytes() for n in land} == first  # identical bytes


def test_minikinetics_rate_and_size(videos, tmp_path):
    out = tmp_path / "frames"
    r = CliRunner().invoke(main, ["prepare", "frames", str(videos), str(out), "--dataset", "minikinetics"])
    assert r.exit_code == 1, r.output  # v_broken.mp4
    assert len(_frames(out / "v_land25.mp4")) == 20 and len(_frames(out / "v_port30.mp4")) == 15  # 5 per second
    with Image.open(out / "v_land25.mp4" / "img_00001.jpeg") as img:
        assert img.size == (341, 256)


def _tree(root):
    """(relative path, size in bytes) of every file under ``root``, sorted."""
    return sorted(
        (os.path.relpath(os.path.join(d, f), root), os.path.getsize(os.path.join(d, f)))
        for d, _, files in os.walk(root)
        for f in files
    )


def _running(process):
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE  # a zombie has finished
    except psutil.NoSuchProcess:
        return False


def _still_running(processes, timeout):
    """Those of ``processes`` still running after waiting up to ``timeout`` seconds for them to end."""
    deadline = time.time() + timeout
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.time() >= deadline:
            return alive
        time.sleep(0.05)


def _kill_prepare_frames(src, out, *options):
    """Start ``frameexit prepare frames`` in a subprocess and SIGKILL it as soon as a worker writes into ``out``.

    Returns its descendant processes (the pool's workers), recorded just before the kill.
    """
    proc = subprocess.Popen(
        [EXE, "prepare", "frames", str(src), str(out), "--dataset", "minikinetics", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def started():
        # a folder being written (.partial-...) or finished; other dot files are the parent's write probe
        names = os.listdir(out) if out.exists() else []
        return any(n.startswith(".partial-") or not n.startswith(".") for n in names)

    try:
        deadline = time.time() + 60
        while time.time() < deadline and not started():
            time.sleep(0.005)
        assert started(), "prepare frames wrote nothing within 60 s"
        descendants = psutil.Process(proc.pid).children(recursive=True)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return descendants


def test_killed_run_resumes(videos, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    for i in range(6):
        shutil.copy(videos / "v_land25.mp4", many / f"v_copy{i}.mp4")
    out = tmp_path / "frames"
    workers = _kill_prepare_frames(many, out)
    try:
        assert workers and not _still_running(workers, timeout=5)  # the killed run leaves no process behind
    finally:
        for p in _still_running(workers, 0):
            p.kill()
    assert len([n for n in os.listdir(out) if not n.startswith(".")]) < 6  # killed part-way
    r = CliRunner().invoke(main, ["prepare", "frames", str(many), str(out), "--dataset", "minikinetics"])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(out)) == [f"v_copy{i}.mp4" for i in range(6)]  # no partial folder left
    assert all(len(_frames(out / f"v_copy{i}.mp4")) == 20 for i in range(6))


def test_workers_die_with_a_killed_parent(tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    make_video(many / "v_long00.mp4", fps=25, seconds=10, size=(320, 240))
    for i in range(1, 40):  # about 4 s of work for 2 workers: they are busy when the parent is killed
        shutil.copy(many / "v_long00.mp4", many / f"v_long{i:02d}.mp4")
    out = tmp_path / "frames"
    workers = _kill_prepare_frames(many, out, "--workers", "2")
    try:
        assert len(workers) >= 2, workers
        alive = _still_running(workers, timeout=5)
        assert not alive, f"processes outlived the killed parent: {[p.cmdline() for p in alive]}"
        written = _tree(out)
        time.sleep(1)
        assert _tree(out) == written  # nothing more is written after the kill
        assert len([n for n in os.listdir(out) if not n.startswith(".")]) < 40
    finally:
        for p in _still_running(workers, 0):
            p.kill()


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
    assert r.exit_code == 1, r.output  # a check a CI can rely on: a missing or empty video fails it
    lines = r.output.rstrip().splitlines()
    assert lines[0] == (
        "FrameExit prepare check: 6 of 8 split videos have frames; 1 missing, 1 empty; 0 label(s) not in the class list"
    )
    assert "min 1, " in r.output and "max 23" in r.output and "missing: v_nofolder.mp4" in r.output
    # frame counts 1, 4, 9, 12, 15, 23: percentiles by linear interpolation between order statistics
    assert "p10 2.5, median 10.5, p90 19, max 23" in r.output
    assert (
        lines[-1] == "Error: prepare check failed: 2 split video(s) without frames (at most 0 allowed by --max-missing)"
    )
    r = CliRunner().invoke(main, ["prepare", "check", job, "--max-missing", "2"])
    assert r.exit_code == 0, r.output  # videos no longer downloadable can be allowed for
    r = CliRunner().invoke(main, ["prepare", "check", job, "--max-missing", "2", "--data.path_classid", str(classes)])
    assert r.exit_code == 1 and "label(s) not in the class list" in r.output.splitlines()[-1]


def readme_preparing_commands():
    """The ``frameexit`` command lines of README.md's "Preparing" section, continuations joined, as word lists."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        section = handle.read().split("## Preparing ActivityNet / Mini-Kinetics\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            words = shlex.split(line)
            assert words[0] == "frameexit", line
            commands.append(words[1:])
    return commands


def test_readme_preparing_commands_run_as_written(videos, tmp_path, monkeypatch):
    """README.md's "Preparing" block, command after command, in a working directory laid out as it says."""
    import torch

    commands = readme_preparing_commands()
    assert [c[:2] for c in commands] == [["prepare", "frames"], ["prepare", "splits"], ["prepare", "check"]] * 2 + [
        ["run", "jobs/activitynet_inference_2d.yml"]
    ]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRAMEEXIT_CACHE", str(tmp_path / "cache"))
    os.makedirs("videos/activitynet")
    os.makedirs("videos/kinetics_val")
    os.makedirs("data/activitynet")
    os.makedirs("data/minikinetics")
    shutil.copy(videos / "v_land25.mp4", "videos/activitynet/v_land25.mp4")
    shutil.copy(videos / "v_port30.mp4", "videos/activitynet/v_port30.mkv")  # downloaders often save .mkv
    shutil.copy(videos / "v_land25.mp4", "videos/kinetics_val/abc_000005_000015.mp4")
    names = class_names()
    database = {
        "land25": {"subset": "validation", "annotations": [{"label": names[3]}]},
        "port30": {"subset": "validation", "annotations": [{"label": names[7]}]},
    }
    database.update({f"t{i}": {"subset": "training", "annotations": [{"label": n}]} for i, n in enumerate(names)})
    with open("data/activitynet/activity_net.v1-3.min.json", "w") as handle:
        json.dump({"database": database}, handle)
    with open("data/minikinetics/kinetics_val.csv", "w") as handle:
        handle.write('label,youtube_id,time_start,time_end,split,is_cc\n"archery",abc,5.0,15.0,val,0\n')
        handle.write('"baking",zzz,1.0,11.0,val,0\n')  # a Kinetics-400 video outside Mini-Kinetics
    with open("data/minikinetics/mini_val_videofolder.txt", "w") as handle:
        handle.write("abc 50 0\n")
    torch.save(official_state("resnet18", seed=1), "activitynet_checkpoint_25gmac.pth")
    # the README's checkpoint is a ResNet-50; the generated one is a ResNet-18, to keep the test fast
    resnet18 = ["--model.backbone.name", "torchvision.resnet18", "--model.backbone.output_dim", "512"]
    outputs = []
    for args in commands:
        r = CliRunner().invoke(main, args + (resnet18 if args[0] == "run" else []))
        assert r.exit_code == 0, (args, r.output)
        outputs.append(r.output)
    assert "2 of 2 split videos have frames; 0 missing, 0 empty" in outputs[2]
    assert "1 of 1 split videos have frames; 0 missing, 0 empty" in outputs[5]
    assert sorted(os.listdir("data/activitynet_v1.3/fps1_res350_hq")) == ["v_land25.mp4", "v_port30.mp4"]
    with open("data/activitynet/classes.txt") as handle:
        assert handle.read().splitlines() == sorted(names)
    with open("data/minikinetics/minik_classInd.txt") as handle:
        assert handle.read() == "archery\n"
    with open("runs/anet/summary.json") as handle:
        summary = json.load(handle)
    assert summary["n_videos_evaluated"] == 2 and summary["n_videos_skipped"] == 0


def test_frame_folders_are_named_by_split_key(videos, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(videos / "v_land25.mp4", raw / "v_land25.mkv")
    shutil.copy(videos / "v_port30.mp4", raw / "abc_000001_000011.webm")
    out = tmp_path / "frames"
    args = ["prepare", "frames", str(raw), str(out), "--dataset", "activitynet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(out)) == ["abc_000001_000011.mp4", "v_land25.mp4"]  # the split keys
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "0 videos written" in r.output and "2 already done" in r.output
    shutil.copy(videos / "v_land25.mp4", raw / "v_land25.mp4")  # two videos for one split key
    r = CliRunner().invoke(main, ["prepare", "frames", str(raw), str(tmp_path / "other"), "--dataset", "activitynet"])
    assert r.exit_code == 1
    assert "Error: v_land25.mkv and v_land25.mp4 would both be written to frame folder v_land25.mp4" in r.output
    assert not os.path.exists(tmp_path / "other") or not os.listdir(tmp_path / "other")  # found before any work


def test_check_hints_at_folders_named_after_the_video_file(tmp_path):
    frames = tmp_path / "frames"
    (frames / "v_x.mkv").mkdir(parents=True)
    (frames / "v_x.mkv" / "img_00001.jpeg").write_bytes(b"")
    paths = {
        "frames": str(frames),
        "split": str(tmp_path / "split.txt"),
        "labels": str(tmp_path / "anet.json"),
        "classes": str(tmp_path / "classes.txt"),
    }
    (tmp_path / "split.txt").write_text("v_x.mp4\n")
    (tmp_path / "anet.json").write_text(json.dumps({"database": {"x": {"annotations": [{"label": "A"}]}}}))
    (tmp_path / "classes.txt").write_text("A\n")
    job = write_job(str(tmp_path / "job.yml"), paths, "unused.pth")
    r = CliRunner().invoke(main, ["prepare", "check", job])
    assert r.exit_code == 1
    assert "missing: v_x.mp4 (found v_x.mkv: frame folders are named by split key; rename it to v_x.mp4)" in r.output


def test_splits_write_the_class_list(tmp_path):
    ann = tmp_path / "anet.json"
    ann.write_text(
        json.dumps(
            {
                "database": {
                    "a1": {"subset": "validation", "annotations": [{"label": "Baking"}]},
                    "b2": {"subset": "training", "annotations": [{"label": "Zumba"}, {"label": "Archery"}]},
                    "c3": {"subset": "testing", "annotations": []},
                }
            }
        )
    )
    r = _prepare(
        "splits",
        ann,
        "--dataset",
        "activitynet",
        "--out",
        tmp_path / "s.txt",
        "--classes-out",
        tmp_path / "classes.txt",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "classes.txt").read_text() == "Archery\nBaking\nZumba\n"  # every subset's labels, sorted
    assert "3 classes written to" in r.output and "model.num_class is 200" in r.output
    csv = tmp_path / "k.csv"
    csv.write_text(
        'label,youtube_id,time_start,time_end,split,is_cc\n"zumba",abc,5.0,15.0,val,0\n"baking",def,1,11,val,0\n'
        '"archery",ghi,1,11,val,0\n'
    )
    val = tmp_path / "mini_val_videofolder.txt"
    val.write_text("abc 250 0\nghi 250 1\n")
    r = _prepare(
        "splits",
        csv,
        "--dataset",
        "minikinetics",
        "--val-list",
        val,
        "--out",
        tmp_path / "mk.txt",
        "--classes-out",
        tmp_path / "mk_classes.txt",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mk_classes.txt").read_text() == "archery\nzumba\n"  # the labels of the split's videos
    classes = ["--classes", tmp_path / "classes.txt", "--classes-out", tmp_path / "c2.txt"]
    r = _prepare("splits", ann, "--dataset", "activitynet", "--out", tmp_path / "s.txt", *classes)
    assert r.exit_code == 2 and "--classes and --classes-out" in r.output


def test_frames_honour_the_umask(videos, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(videos / "v_land25.mp4", raw / "v_land25.mp4")
    out = tmp_path / "frames"
    old = os.umask(0o022)
    try:
        r = CliRunner().invoke(main, ["prepare", "frames", str(raw), str(out), "--dataset", "activitynet"])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(out / "v_land25.mp4").st_mode) == 0o755
    assert {stat.S_IMODE(os.stat(out / "v_land25.mp4" / n).st_mode) for n in _frames(out / "v_land25.mp4")} == {0o644}


def test_prepare_help_texts():
    helps = {}
    for command in ([], ["frames"], ["splits"], ["check"]):
        r = CliRunner().invoke(main, ["prepare", *command, "--help"], terminal_width=80)
        assert r.exit_code == 0, r.output
        helps[" ".join(command)] = r.output
        assert "\n\n\n" not in r.output
        for line in r.output.splitlines():
            assert line == line.rstrip() and len(line) <= 80, line
            assert not re.search(r"\w-$", line), line  # a word or path cut at a hyphen by the wrapping
            # prose has single spaces; click's tables have one gap between name and text, and "  [default: ..."
            text = line.strip().replace("  [", " [")
            if re.match(r"-|\w+ {2,}", text):
                text = re.sub(r" {2,}", " ", text, count=1)
            assert not re.search(r"\S {2,}\S", text), line
    assert "FRAMES_DIR/KEY/PREFIX_00001.jpeg" in helps["frames"] and "split key" in helps["frames"]
    assert "exit status 1" in helps["frames"]
    assert "--classes-out" in helps["splits"] and "sorted" in helps["splits"]
    assert "--max-missing" in helps["check"] and "--data.path_frame DIR" in helps["check"]
    assert "exit status 1" in helps["check"]
