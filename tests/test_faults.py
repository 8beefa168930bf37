"""Issue 20: faults of the machine and the file system (long names, a full disk, killed workers, a cache a
remote worker does not share) end in one line naming what failed, with nothing half written left trusted."""

import os
import shutil
import subprocess

import imageio_ffmpeg
import pytest
from click.testing import CliRunner

from cli import main

BUNDLED = imageio_ffmpeg.get_ffmpeg_exe()  # the static ffmpeg of the imageio-ffmpeg wheel


def _video(path, seconds=2):
    """A small test-pattern video (96x64, 5 fps, mpeg4) of ``seconds`` seconds."""
    pattern = f"testsrc=size=96x64:rate=5:duration={seconds}"
    argv = [BUNDLED, "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", pattern, "-c:v", "mpeg4", str(path)]
    subprocess.run(argv, check=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "v_a.mp4"
    _video(path)
    return path


def _prepare(*args):
    return CliRunner().invoke(main, ["prepare", "frames", *map(str, args), "--dataset", "activitynet"])


def _jpegs(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".jpeg"))


# ---------------------------------------------------------------------------------------------- item 13


def test_a_252_byte_video_name_is_prepared_and_leftover_temporary_folders_are_removed(clip, tmp_path):
    videos, frames = tmp_path / "videos", tmp_path / "frames"
    videos.mkdir()
    long_name = "v_" + "b" * 246 + ".mkv"  # 252 bytes: a legal file name, as is its split key
    assert len(long_name) == 252
    shutil.copy(clip, videos / "v_a.mp4")
    shutil.copy(clip, videos / long_name)
    # what a killed run leaves: temporary folders of the old (named after the key) and the new form
    for leftover in (".partial-v_a.mp4.0123abcd", ".partial-0123456789abcdef.0123abcd"):
        (frames / leftover).mkdir(parents=True)
        (frames / leftover / "img_00001.jpeg").write_bytes(b"half written")
    r = _prepare(videos, frames)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and "2 videos written" in r.output
    key = long_name[: -len(".mkv")] + ".mp4"
    assert sorted(os.listdir(frames)) == sorted(["prepare-frames.json", "v_a.mp4", key])  # nothing temporary left
    assert _jpegs(frames / key) == ["img_00001.jpeg", "img_00002.jpeg"]


def test_a_frame_folder_whose_path_is_too_long_is_a_failed_video_with_its_reason(clip, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    long_name = "v_" + "c" * 240 + ".mp4"
    shutil.copy(clip, videos / "v_a.mp4")
    shutil.copy(clip, videos / long_name)
    # a FRAMES_DIR whose own path is legal, but too long (PATH_MAX, 4096 bytes) to hold the long video's folder
    frames = str(tmp_path)
    while len(frames) < 4096 - 200:
        frames = os.path.join(frames, "d" * 150)
    os.makedirs(frames)
    r = _prepare(videos, frames)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "1 videos written" in r.output and "1 failed" in r.output
    assert f"{long_name}: the path of its frame files would be" in r.output, r.output
    assert "bytes long, more than the 4095 the system allows" in r.output
    assert r.output.rstrip().splitlines()[-1] == "Error: 1 video(s) could not be decoded (listed above)"
    assert sorted(os.listdir(frames)) == ["prepare-frames.json", "v_a.mp4"]


@pytest.mark.parametrize("layout", ["same", "frames inside videos", "videos inside frames", "same by a link"])
def test_videos_and_frames_in_one_folder_are_refused_before_any_work(clip, tmp_path, layout):
    top = tmp_path / "top"
    videos = {"videos inside frames": top / "videos"}.get(layout, top)
    videos.mkdir(parents=True)
    shutil.copy(clip, videos / "v_a.mp4")
    shutil.copy(clip, videos / "v_b.mkv")
    frames = {"same": top, "frames inside videos": top / "frames", "videos inside frames": top}.get(layout)
    if layout == "same by a link":
        frames = tmp_path / "link"
        frames.symlink_to(top)
    before = sorted(os.listdir(top))
    r = _prepare(videos, frames)
    assert r.exit_code == 2, r.output
    last = r.output.rstrip().splitlines()[-1]
    assert last.startswith("Error: ") and "VIDEOS_DIR" in last and "FRAMES_DIR" in last, r.output
    assert "Traceback" not in r.output
    assert sorted(os.listdir(top)) == before  # nothing written: no manifest, no frame folder
