"""`frameexit prepare`: frames from videos by the official ffmpeg command, splits, checks."""

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

import imageio_ffmpeg
import numpy as np
import psutil  # installed with dask.distributed
import pytest
from click.testing import CliRunner
from helpers import EXE, ROOT, class_names, official_state, write_job
from PIL import Image

from cli import main
from frameexit.atomic import LOCK_NAME
from jobs.ffmpeg import ffmpeg_version, find_ffmpeg

BUNDLED = imageio_ffmpeg.get_ffmpeg_exe()  # the static ffmpeg of the imageio-ffmpeg wheel
MANIFEST = "prepare-frames.json"


def ffmpeg_make(path, *args):
    """Write ``path`` with the bundled ffmpeg (``args``: inputs and encoder options)."""
    subprocess.run([BUNDLED, "-nostdin", "-loglevel", "error", "-y", *map(str, args), str(path)], check=True)


def make_video(path, *, fps, seconds, size, codec="mpeg4", extra=()):
    """FFmpeg's moving test pattern at ``fps`` for ``seconds``; ``size`` is (width, height)."""
    w, h = size
    ffmpeg_make(path, "-f", "lavfi", "-i", f"testsrc=size={w}x{h}:rate={fps}:duration={seconds}", "-c:v", codec, *extra)


def official_frames(video, out_dir, *, fps=1, side=350):
    """The official command line, as written, with the bundled ffmpeg: ``out_dir/img_00001.jpeg, ...``."""
    out_dir.mkdir(parents=True)
    vf = f"fps={fps},scale={side}:{side}:force_original_aspect_ratio=increase"
    argv = [BUNDLED, "-i", str(video), "-vf", vf, "-q:v", "2", str(out_dir / "img_%05d.jpeg")]
    subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)  # fails on a video too short for a frame
    return sorted(os.listdir(out_dir))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    make_video(root / "v_land25.mp4", fps=25, seconds=4, size=(320, 240))  # landscape 25 fps
    make_video(root / "v_port30.mp4", fps=30, seconds=3, size=(240, 320))  # portrait 30 fps
    (root / "v_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return root


def _frames(folder):
    return sorted(os.listdir(folder))


def _entries(frames_dir):
    """FRAMES_DIR's entries but the lock file every prepare frames holds there while it writes."""
    return sorted(e for e in os.listdir(frames_dir) if e != LOCK_NAME)


def _prepare(*args):
    """``frameexit prepare ARGS`` in this process (arguments turned into strings)."""
    return CliRunner().invoke(main, ["prepare", *map(str, args)])


def test_activitynet_frames_counts_sizes_and_rerun(videos, tmp_path):
    out = tmp_path / "frames"
    r = CliRunner().invoke(
        main, ["prepare", "frames", str(videos), str(out), "--dataset", "activitynet", "--workers", "2"]
    )
    assert r.exit_code == 1, r.output  # a failed video fails the command, after what could be written
    assert "2 videos written" in r.output and "1 failed" in r.output and "failed v_broken.mp4" in r.output
    assert r.output.rstrip().splitlines()[-1] == "Error: 1 video(s) failed (listed above with the reason)"
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


def _kill_prepare_frames(src, out, *options, running=1):
    """Start ``frameexit prepare frames`` in a subprocess and SIGKILL it once ``running`` ffmpeg processes write
    into ``out``.

    Returns its descendant processes (the ffmpeg processes), recorded just before the kill.
    """
    proc = subprocess.Popen(
        [EXE, "prepare", "frames", str(src), str(out), "--dataset", "minikinetics", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def started():
        # folders being written (.partial-...), or finished; other dot files are the parent's write probe
        names = os.listdir(out) if out.exists() else []
        if not any(n.startswith(".partial-") or n.endswith(".mp4") for n in names):
            return []
        children = psutil.Process(proc.pid).children(recursive=True)
        return children if len(children) >= running else []

    try:
        deadline = time.time() + 60
        while time.time() < deadline and not started():
            time.sleep(0.005)
        descendants = started()
        assert descendants, f"prepare frames did not run {running} ffmpeg process(es) within 60 s"
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
    assert len([n for n in os.listdir(out) if n.endswith(".mp4")]) < 6  # killed part-way
    r = CliRunner().invoke(main, ["prepare", "frames", str(many), str(out), "--dataset", "minikinetics"])
    assert r.exit_code == 0, r.output
    assert _entries(out) == [MANIFEST] + [f"v_copy{i}.mp4" for i in range(6)]  # no partial folder left
    assert all(len(_frames(out / f"v_copy{i}.mp4")) == 20 for i in range(6))


def test_workers_die_with_a_killed_parent(tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    make_video(many / "v_long00.mp4", fps=25, seconds=10, size=(320, 240))
    for i in range(1, 40):  # about 4 s of work for 2 workers: they are busy when the parent is killed
        shutil.copy(many / "v_long00.mp4", many / f"v_long{i:02d}.mp4")
    out = tmp_path / "frames"
    workers = _kill_prepare_frames(many, out, "--workers", "2", running=2)
    try:
        assert len(workers) >= 2, workers
        alive = _still_running(workers, timeout=5)
        assert not alive, f"processes outlived the killed parent: {[p.cmdline() for p in alive]}"
        written = _tree(out)
        time.sleep(1)
        assert _tree(out) == written  # nothing more is written after the kill
        assert len([n for n in os.listdir(out) if n.endswith(".mp4")]) < 40
    finally:
        for p in _still_running(workers, 0):
            p.kill()


# the videos of real datasets whose frames an imitation of the command line got wrong (issue 12): name ->
# (how it is made from a 3 s 96x64 test pattern at 15 fps, frames at 1 fps, size, chroma subsampling)
CASES = {
    "v_plain.mp4": ([], 3, (525, 350), "4:2:0"),
    # H.264 with B-frames, no edit list: the stream starts at 0.133 s
    "v_noedit.mp4": (
        ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-pix_fmt", "yuv420p", "-use_editlist", "0"],
        3,
        (525, 350),
        "4:2:0",
    ),
    "v_offset.mkv": (["-c:v", "mpeg4", "-output_ts_offset", "1.3"], 3, (525, 350), "4:2:0"),  # first pts 1.3 s
    "v_rot90.mp4": (None, 3, (350, 525), "4:2:0"),  # display matrix 90 (v_plain's stream copied)
    "v_rot180.mp4": (None, 3, (525, 350), "4:2:0"),
    "v_444.mp4": (["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"], 3, (525, 350), "4:4:4"),
    "v_422.mp4": (["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv422p"], 3, (525, 350), "4:2:2"),
    "v_late.mp4": (None, 5, (525, 350), "4:2:0"),  # 4.5 s of audio, the video from 0.5 s to 4.5 s
}
PATTERN = ["-f", "lavfi", "-i", "testsrc=size=96x64:rate=15:duration=3"]


def _sampling(path):
    """Chroma subsampling of a JPEG from its components' sampling factors."""
    with Image.open(path) as img:
        (_, yh, yv, _), (_, ch, cv, _), _ = img.layer
    return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0"}[(yh // ch, yv // cv)]


def _pixels(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """The case videos, their frames by ``prepare frames`` and by the official command (bundled ffmpeg)."""
    root = tmp_path_factory.mktemp("cases")
    src = root / "videos"
    src.mkdir()
    for name, (options, *_) in CASES.items():
        if options is not None:
            ffmpeg_make(src / name, *PATTERN, *(options or ["-c:v", "mpeg4"]))
    for angle in (90, 180):
        ffmpeg_make(src / f"v_rot{angle}.mp4", "-display_rotation", angle, "-i", src / "v_plain.mp4", "-c", "copy")
    audio = ["-f", "lavfi", "-i", "sine=duration=4.5"]
    video = ["-itsoffset", "0.5", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=15:duration=4"]
    ffmpeg_make(src / "v_late.mp4", *audio, *video, "-c:v", "mpeg4", "-c:a", "aac")
    make_video(src / "v_short.mp4", fps=25, seconds=0.4, size=(96, 64))
    r = _prepare("frames", src, root / "ours", "--dataset", "activitynet", "--workers", "2")
    official = {}
    for name in [*CASES, "v_short.mp4"]:
        official[name] = root / "official" / name
        official_frames(src / name, official[name])
    return {"src": src, "ours": root / "ours", "official": official, "result": r}


@pytest.mark.parametrize("name", sorted(CASES))
def test_frames_are_those_of_the_official_command(cases, name):
    _, count, size, sampling = CASES[name]
    ours = cases["ours"] / (name.rsplit(".", 1)[0] + ".mp4")  # v_offset.mkv -> v_offset.mp4/
    official = cases["official"][name]
    assert _frames(ours) == _frames(official) == [f"img_{i:05d}.jpeg" for i in range(1, count + 1)]
    same_build = find_ffmpeg().version == ffmpeg_version(BUNDLED)  # an ffmpeg on PATH wins over the bundled one
    for frame in _frames(ours):
        with Image.open(ours / frame) as a, Image.open(official / frame) as b:
            assert a.size == b.size == size
        assert _sampling(ours / frame) == _sampling(official / frame) == sampling
        if same_build:
            assert (ours / frame).read_bytes() == (official / frame).read_bytes(), frame
        else:  # another FFmpeg version: swscale's rounding may differ by a level
            diff = np.abs(_pixels(ours / frame) - _pixels(official / frame))
            assert diff.mean() <= 1 and np.percentile(diff, 99) <= 4, frame


@pytest.mark.parametrize(("name", "turns"), [("v_rot90.mp4", 1), ("v_rot180.mp4", 2)])
def test_rotated_videos_are_turned_upright(cases, name, turns):
    """Display matrix 90 means 90 degrees counter-clockwise: the frames are the plain video's, turned."""
    for frame in _frames(cases["ours"] / name):
        plain = _pixels(cases["ours"] / "v_plain.mp4" / frame)
        rotated = _pixels(cases["ours"] / name / frame)
        right = np.abs(rotated - np.rot90(plain, turns)).mean()
        wrong = np.abs(rotated - np.rot90(plain, -turns if turns == 1 else 0)).mean()
        assert right < 3 and wrong > 10 * right, (frame, right, wrong)


def test_a_late_video_repeats_its_first_frame_from_time_0(cases, tmp_path):
    """Mini-Kinetics rate: the image2 muxer writes frames at a constant rate from time 0 of the file."""
    src = tmp_path / "videos"
    src.mkdir()
    shutil.copy(cases["src"] / "v_late.mp4", src / "v_late.mp4")
    r = _prepare("frames", src, tmp_path / "ours", "--dataset", "minikinetics")
    assert r.exit_code == 0, r.output
    ours = tmp_path / "ours" / "v_late.mp4"
    official = official_frames(src / "v_late.mp4", tmp_path / "official", fps=5, side=256)
    assert _frames(ours) == official and len(official) == 23  # 4.5 s at 5 frames/s, from 0 s
    first = [(ours / n).read_bytes() for n in official[:3]]
    assert first[0] == first[1] == first[2]  # 0, 0.2 and 0.4 s, before the video starts, show its first frame


def test_a_video_shorter_than_one_frame_is_not_a_decode_failure(cases):
    r = cases["result"]
    assert r.exit_code == 0, r.output  # the official command writes no frame either: not a failure
    assert "no frames from v_short.mp4: shorter than one frame at 1 fps (0.40 s)" in r.output
    assert "could not decode" not in r.output and not os.path.exists(cases["ours"] / "v_short.mp4")
    assert cases["official"]["v_short.mp4"].is_dir() and not _frames(cases["official"]["v_short.mp4"])


def _fake_ffmpeg(folder, version=None):
    """``folder/ffmpeg``, a script that runs the bundled ffmpeg (and says it is ``version`` when asked)."""
    folder.mkdir(exist_ok=True)
    path = folder / "ffmpeg"
    ask = f'if [ "$1" = -version ]; then echo "ffmpeg version {version} Copyright"; exit 0; fi\n' if version else ""
    path.write_text(f'#!/bin/sh\n{ask}exec {shlex.quote(BUNDLED)} "$@"\n')
    path.chmod(0o755)
    return str(path)


def test_ffmpeg_given_wins_over_path_which_wins_over_the_bundled_one(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    on_path = _fake_ffmpeg(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    found = find_ffmpeg()
    assert (found.path, found.source, found.version) == (on_path, "PATH", ffmpeg_version(BUNDLED))
    assert (find_ffmpeg(BUNDLED).path, find_ffmpeg(BUNDLED).source) == (BUNDLED, "--ffmpeg")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    bundled = find_ffmpeg()
    assert bundled.path == BUNDLED and bundled.source == f"imageio-ffmpeg {imageio_ffmpeg.__version__}"


def test_the_manifest_records_the_command_and_one_folder_holds_one_ffmpegs_frames(videos, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "frames"
    raw.mkdir()
    shutil.copy(videos / "v_land25.mp4", raw / "v_land25.mp4")
    (out / "v_old.mp4").mkdir(parents=True)  # frames another tool wrote
    (out / "v_old.mp4" / "img_00001.jpeg").write_bytes(b"")
    r = _prepare("frames", raw, out, "--dataset", "activitynet", "--ffmpeg", BUNDLED)
    assert r.exit_code == 0, r.output
    version = ffmpeg_version(BUNDLED)
    assert f"  ffmpeg {version} (--ffmpeg): {BUNDLED}" in r.output and MANIFEST in r.output
    manifest = json.loads((out / MANIFEST).read_text())
    vf = "fps=1,scale=350:350:force_original_aspect_ratio=increase"
    assert manifest["official_command"] == f"ffmpeg -i VIDEO -vf {vf} -q:v 2 FRAMES_DIR/KEY/img_%05d.jpeg"
    command = shlex.split(manifest["command"])
    assert command[0] == BUNDLED and command[command.index("-vf") :] == [
        *("-vf", vf, "-q:v", "2", "FRAMES_DIR/KEY/img_%05d.jpeg")
    ]
    assert manifest["ffmpeg"]["version"] == version and manifest["dataset"] == "activitynet"
    assert manifest["folders_before_manifest"] == ["v_old.mp4"]  # not vouched for, and said so
    assert "note: 1 frame folder(s) were made before prepare frames recorded its command" in r.output
    # another command in the same folder is refused, even with nothing to do
    r = _prepare("frames", raw, out, "--dataset", "minikinetics")
    assert r.exit_code == 1 and f"were written by `ffmpeg -i VIDEO -vf {vf} -q:v 2" in r.output, r.output
    # another FFmpeg version is refused before any frame is written
    shutil.copy(videos / "v_port30.mp4", raw / "v_port30.mp4")
    other = _fake_ffmpeg(tmp_path / "other", version="0.0-other")
    r = _prepare("frames", raw, out, "--dataset", "activitynet", "--ffmpeg", other)
    assert r.exit_code == 1 and f"written by FFmpeg {version}" in r.output and "would use FFmpeg 0.0-other" in r.output
    assert _entries(out) == [MANIFEST, "v_land25.mp4", "v_old.mp4"]
    # the same version elsewhere is the same FFmpeg
    r = _prepare("frames", raw, out, "--dataset", "activitynet", "--ffmpeg", _fake_ffmpeg(tmp_path / "same"))
    assert r.exit_code == 0 and "1 videos written" in r.output and json.loads((out / MANIFEST).read_text()) == manifest
    not_ffmpeg = tmp_path / "echo"
    not_ffmpeg.write_text("#!/bin/sh\necho hello\n")
    not_ffmpeg.chmod(0o755)
    (raw / "v_land25.mp4").rename(raw / "v_new.mp4")
    r = _prepare("frames", raw, out, "--dataset", "activitynet", "--ffmpeg", not_ffmpeg)
    assert (
        r.exit_code == 1
        and r.output == f"Error: {not_ffmpeg} (from --ffmpeg) is not an ffmpeg: -version printed ['hello']\n"
    )


def test_prepare_imports_no_torch(videos, anet, tmp_path):
    """A rerun with nothing to do, and prepare check, stay well under a second: no torch."""
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(videos / "v_land25.mp4", raw / "v_land25.mp4")
    assert _prepare("frames", raw, tmp_path / "frames", "--dataset", "activitynet").exit_code == 0
    job = write_job(str(tmp_path / "job.yml"), anet, "unused.pth")
    frames = ["prepare", "frames", str(raw), str(tmp_path / "frames"), "--dataset", "activitynet"]
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "import cli\n"
        f"r = CliRunner().invoke(cli.main, {frames!r})\n"
        f"c = CliRunner().invoke(cli.main, ['prepare', 'check', {job!r}])\n"
        "print(r.exit_code, c.exit_code, 'torch' in sys.modules, r.output.splitlines()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("0 1 False FrameExit prepare frames"), out.stdout + out.stderr
    assert "0 videos written (0 frames), 1 already done" in out.stdout


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


def test_hvu_splits_class_list_and_check(hvu, tmp_path):
    from helpers import HVU_TAGS, class_names

    args = ["splits", hvu["labels"], "--dataset", "hvu", "--out", tmp_path / "split.txt"]
    r = _prepare(*args, "--categories", hvu["categories"], "--classes-out", tmp_path / "classes.txt")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "split.txt").read_text() == open(hvu["split"]).read()  # every row of the CSV, sorted
    # every tag of the Tag,Category file (the class list of HVU), not only those of the validation CSV
    assert (tmp_path / "classes.txt").read_text().splitlines() == sorted(class_names())
    assert "model.num_class is 3142" in r.output
    r = _prepare(*args, "--classes-out", tmp_path / "val_tags.txt")
    tags = {class_names()[c] for labels in HVU_TAGS.values() for c in labels} | {class_names()[5]}
    assert r.exit_code == 0 and (tmp_path / "val_tags.txt").read_text().splitlines() == sorted(tags)
    r = _prepare(*args, "--key-format", "{youtube_id}.mp4")
    assert r.exit_code == 0 and (tmp_path / "split.txt").read_text().splitlines()[0] == "ytalpha.mp4"
    r = _prepare(
        "splits", hvu["labels"], "--dataset", "minikinetics", "--out", tmp_path / "s", "--categories", hvu["categories"]
    )
    assert r.exit_code == 1 and "--categories and --key-format are for --dataset hvu" in r.output
    job = write_job(str(tmp_path / "job.yml"), hvu, "unused.pth", name="hvu")
    r = _prepare("check", job, "--max-missing", "1")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("FrameExit prepare check: 6 of 7 split videos have frames; 1 missing, 0 empty")
    categories = tmp_path / "categories.csv"
    categories.write_text("".join(open(hvu["categories"]).readlines()[:-1]))  # the last class has no category
    r = _prepare("check", job, "--max-missing", "1", "--data.path_category", categories)
    assert r.exit_code == 1 and "gives no category for the class(es)" in r.output


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
    assert _entries("data/activitynet_v1.3/fps1_res350_hq") == [MANIFEST, "v_land25.mp4", "v_port30.mp4"]
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
    assert _entries(out) == ["abc_000001_000011.mp4", MANIFEST, "v_land25.mp4"]  # the split keys
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


def test_ffmpeg_log_reading():
    from jobs.ffmpeg import input_duration, problems

    log = (
        "[info]   Duration: 00:01:02.50, start: 0.000000, bitrate: 75 kb/s\n"
        "[in#0 @ 0x55d97080] [error] moov atom not found\n"
        "[in#0 @ 0x55d96d40] [error] Error opening input: Invalid data found when processing input\n"
        "[in#0 @ 0x55d96d40] [error] moov atom not found\n"
        "[fatal] Error opening input files: Invalid data found when processing input\n"
    )
    assert input_duration(log) == 62.5 and input_duration("[info]   Duration: N/A, start: 0") is None
    assert problems(log) == "moov atom not found; Error opening input: Invalid data found when processing input"
    assert problems('Unrecognized option "x"\nInvalid loglevel "level+info"\n') == 'Invalid loglevel "level+info"'


def test_prepare_frames_replaces_only_folders_it_made(videos, tmp_path):
    # issue 20, item 3: a folder without *.jpeg that holds another tool's frames or notes is not deleted
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(videos / "v_land25.mp4", raw / "v_land25.mp4")
    shutil.copy(videos / "v_port30.mp4", raw / "v_port30.mp4")
    out = tmp_path / "frames"
    theirs = out / "v_land25.mp4"
    theirs.mkdir(parents=True)
    (theirs / "frame_0001.jpg").write_bytes(b"another tool's frame")
    (theirs / "notes.txt").write_text("keep me")
    (out / "v_port30.mp4").mkdir()  # an empty folder: replaced
    r = _prepare("frames", raw, out, "--dataset", "activitynet")
    assert r.exit_code == 1, r.output
    assert f"{theirs} is there without *.jpeg frames but holds other files" in r.output
    assert sorted(os.listdir(theirs)) == ["frame_0001.jpg", "notes.txt"]
    assert len([f for f in os.listdir(out / "v_port30.mp4") if f.endswith(".jpeg")]) == 3
