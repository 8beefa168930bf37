"""Issue 20: faults of the machine and the file system (long names, a full disk, killed workers, a cache a
remote worker does not share) end in one line naming what failed, with nothing half written left trusted."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import imageio_ffmpeg
import psutil  # installed with dask.distributed
import pytest
from click.testing import CliRunner
from helpers import ROOT, copy_cache

from cache.manifest import read_manifest, verify_shard
from cli import main
from frameexit.atomic import LOCK_NAME

BUNDLED = imageio_ffmpeg.get_ffmpeg_exe()  # the static ffmpeg of the imageio-ffmpeg wheel
ENV = dict(os.environ, PYTHONPATH=ROOT)  # the processes run this tree's code
CLI = [sys.executable, "-m", "cli"]


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
    assert _entries(frames) == sorted(["prepare-frames.json", "v_a.mp4", key])  # nothing temporary left
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
    assert r.output.rstrip().splitlines()[-1] == "Error: 1 video(s) failed (listed above with the reason)"
    assert _entries(frames) == ["prepare-frames.json", "v_a.mp4"]


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


# ---------------------------------------------------------------------------------------------- item 14: a full disk

# the command runs in a private mount namespace with a tmpfs of SIZE on MOUNT; what MOUNT holds afterwards is
# copied to SAVE (the tmpfs goes with the namespace), and the command's exit status is the script's
IN_TMPFS = 'mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; m="$2"; s="$3"; shift 3; "$@"; rc=$?; cp -a "$m"/. "$s"/; exit $rc'


@pytest.fixture(scope="module")
def tmpfs_works(tmp_path_factory):
    """Skip unless this process may mount a tmpfs in a private mount namespace (root, unshare available)."""
    mount = tmp_path_factory.mktemp("probe")
    try:
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", IN_TMPFS, "sh", "4k", mount, mount, "true"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot run unshare: {exc}")
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace: {probe.stderr.decode().strip()}")


def _in_tmpfs(tmp_path, size, argv, *, mount=None, cwd=ROOT):
    """Run ``argv`` with a tmpfs of ``size`` on ``mount`` (default ``tmp_path/full``); returns the completed
    process and the folder holding a copy of what the tmpfs held at the end."""
    mount = mount or tmp_path / "full"
    saved = tmp_path / "saved"
    os.makedirs(mount, exist_ok=True)
    saved.mkdir()
    argv = ["unshare", "-m", "sh", "-c", IN_TMPFS, "sh", size, str(mount), str(saved), *map(str, argv)]
    done = subprocess.run(argv, env=ENV, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 99, done.stderr
    return done, saved


def _one_error_line(done):
    """The error line of a failed command, checking that it is the only thing on stderr besides warnings."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), done.stderr
    return lines[-1]


def _files(root):
    """Every file under ``root`` but the lock files writers hold (and leave: an flock needs no cleaning)."""
    paths = (os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)
    return sorted(p for p in paths if not p.endswith(".lock"))


def _entries(folder):
    """``folder``'s entries but the lock file prepare frames holds there."""
    return sorted(n for n in os.listdir(folder) if n != LOCK_NAME)


@pytest.fixture(scope="module")
def two_videos(anet, tmp_path_factory):
    """A split of two of the fixture's videos (quicker to extract in another process)."""
    path = tmp_path_factory.mktemp("split") / "split.txt"
    path.write_text("v_alpha.mp4\nv_charlie.mp4\n")
    return str(path)


def test_extract_on_a_full_disk_names_the_shard_and_leaves_nothing_a_rerun_would_trust(
    tmpfs_works, job_file, two_videos, tmp_path
):
    argv = [*CLI, "extract", job_file, "--cache", tmp_path / "full", "--shard-size", "1", "--no-progress"]
    done, saved = _in_tmpfs(tmp_path, "16k", [*argv, "--data.path_split", two_videos])
    line = _one_error_line(done)
    key = next(n for n in os.listdir(saved) if not n.startswith("."))
    assert line.startswith(f"Error: no space left on device writing {tmp_path / 'full' / key}/shard-0000"), line
    assert not [f for f in _files(saved) if f.endswith(".tmp")]  # no temporary file left
    manifest = read_manifest(str(saved / key))
    for entry in manifest.shards if manifest else []:  # what the manifest records as written is there, whole
        if entry.done:
            verify_shard(str(saved / key / entry.name), entry.sha256)
    assert manifest is None or not manifest.complete


def test_train_on_a_full_disk_names_the_checkpoint_not_an_unexpected_pos(tmpfs_works, job_file, extracted, tmp_path):
    out = tmp_path / "full" / "head.pth"
    stages = ["--train.epochs_classifier", "1", "--train.epochs_gates", "1", "--train.hidden_dim", "16"]
    copy_cache(extracted.cache_dir, tmp_path / "cache")  # train takes the cache's writer lock
    argv = [*CLI, "train", job_file, "--cache", tmp_path / "cache", "--out", out, *stages]
    done, saved = _in_tmpfs(tmp_path, "600k", [*argv, "--no-progress"])
    assert _one_error_line(done).startswith(f"Error: no space left on device writing {out}: free some space"), done
    assert _files(saved) == []  # no half-written checkpoint, no temporary file


def test_replay_on_a_full_disk_is_one_line(tmpfs_works, job_file, extracted, tmp_path):
    out = tmp_path / "full" / "replay"
    argv = [*CLI, "replay", job_file, "--features", extracted.cache_dir, "--out", out, "--scheduler", "sync"]
    done, _ = _in_tmpfs(tmp_path, "8k", [*argv, "--no-progress"])
    assert "no space left on device" in _one_error_line(done)


def test_prepare_frames_on_a_full_disk_stops_saying_so(tmpfs_works, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    _video(videos / "v_0.mp4", seconds=4)
    for i in range(1, 8):
        shutil.copy(videos / "v_0.mp4", videos / f"v_{i}.mp4")
    argv = [*CLI, "prepare", "frames", videos, tmp_path / "full", "--dataset", "minikinetics", "--workers", "2"]
    done, saved = _in_tmpfs(tmp_path, "400k", argv)
    line = _one_error_line(done)
    assert line.startswith("Error: no space left on device writing the frames of v_"), line
    assert f"into {tmp_path / 'full'} (ffmpeg: " in line and "free some space and run again" in line
    assert "could not decode" not in done.stdout + done.stderr
    folders = [n for n in _entries(saved) if n != "prepare-frames.json"]
    assert len(folders) < 8 and not [n for n in folders if n.startswith(".")]  # stopped; no temporary folder left
    for name in folders:  # every folder left is complete: 20 frames at 5 fps
        assert len(_jpegs(saved / name)) == 20, name


# ---------------------------------------------------------------------------------------------- item 14: killed workers


def _kill_when(argv, ready, *, env=ENV, timeout=120):
    """Run ``argv``; SIGKILL each descendant process for which ``ready(process)`` is true, as the out-of-memory
    killer would; returns the completed process and how many were killed."""
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = 0, time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if ready(child):
                        child.send_signal(signal.SIGKILL)
                        killed += 1
                except psutil.Error:  # ended meanwhile
                    pass
            time.sleep(0.01)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), killed


def test_a_killed_dataloader_worker_is_one_line_naming_it(job_file, tmp_path):
    argv = [*CLI, "extract", job_file, "--cache", tmp_path / "cache", "--num-workers", "1", "--no-progress"]
    done, killed = _kill_when(argv, lambda child: True)  # extract's only child processes are DataLoader workers
    assert killed >= 1
    line = _one_error_line(done)
    assert line.startswith("Error: the DataLoader worker (pid ") and "decoding JPEGs was killed by SIGKILL" in line
    assert "out-of-memory killer; lower --num-workers" in line


def test_a_killed_dask_worker_is_one_line_naming_it(job_file, checkpoint, two_videos, tmp_path):
    argv = [*CLI, "extract", job_file, "--cache", tmp_path / "cache", "--workers", "1", "--no-progress"]
    # the scheduler gives up on a task at the first death of a worker running it (by default, the third)
    env = dict(ENV, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")

    def running_a_task(child):
        # the worker process reads the checkpoint in its shard task (a worker killed before is restarted)
        return "spawn_main" in " ".join(child.cmdline()) and any(f.path == checkpoint for f in child.open_files())

    done, killed = _kill_when([*argv, "--data.path_split", two_videos], running_a_task, env=env)
    assert killed >= 1
    line = _one_error_line(done)
    assert line.startswith("Error: the dask worker tcp://") and "died while extracting a shard (task " in line, line
    assert "lack of memory" in line


# ---------------------------------------------------------------------------------------------- item 5


@pytest.fixture
def scheduler():
    """The address of a dask scheduler in this process, without workers (the tests start their own)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as cluster:
        yield cluster.scheduler_address


def _worker(address, cwd, *, prefix=()):
    """A ``dask worker`` process on ``address``, run from ``cwd``; skips the test if it is not up within 60 s."""
    from distributed import Client

    worker = subprocess.Popen(
        [*prefix, os.path.join(os.path.dirname(sys.executable), "dask"), "worker", address, "--nthreads", "1", "--no-nanny",
         "--no-dashboard", "--local-directory", str(cwd)],
        cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    with Client(address, timeout=30) as client:
        try:
            client.wait_for_workers(1, timeout=60)
        except TimeoutError:
            worker.kill()
            pytest.skip("no dask worker came up within 60 s")
    return worker


def _extract_on(address, job_file, cache, split):
    argv = ["extract", job_file, "--cache", cache, "--shard-size", "1", "--scheduler", address, "--no-progress"]
    return CliRunner().invoke(main, [*argv, "--data.path_split", split])


def test_a_relative_cache_is_written_where_the_client_sees_it(scheduler, job_file, two_videos, tmp_path, monkeypatch):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    worker = _worker(scheduler, elsewhere)
    try:
        monkeypatch.chdir(here)
        r = _extract_on(scheduler, job_file, "cache", two_videos)
    finally:
        worker.kill()
        worker.wait()
    assert r.exit_code == 0, r.output
    (key,) = os.listdir(here / "cache")
    manifest = read_manifest(str(here / "cache" / key))
    assert manifest.complete and len(manifest.shards) == 2
    for entry in manifest.shards:
        verify_shard(str(here / "cache" / key / entry.name), entry.sha256)
    assert not (elsewhere / "cache").exists()  # nothing under the worker's working directory


def test_a_cache_the_worker_does_not_share_is_an_error_and_records_nothing(
    tmpfs_works, scheduler, job_file, two_videos, tmp_path
):
    cache = tmp_path / "cache"
    cache.mkdir()
    # the worker sees a folder of its own at the cache's path, as a worker on another machine would
    mount = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"', "sh", str(cache)]
    worker = _worker(scheduler, tmp_path, prefix=mount)
    try:
        r = _extract_on(scheduler, job_file, str(cache), two_videos)
    finally:
        worker.kill()
        worker.wait()
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    (key,) = [n for n in os.listdir(cache) if not n.startswith(".")]
    expected = rf"Error: a dask worker wrote shard {re.escape(str(cache / key))}/shard-0000[01]\.h5, but for this "
    expected += (
        r"process it is not there: the cache \(--cache\) must be a folder every worker shares, at the same path\n"
    )
    assert re.fullmatch(expected, r.output), r.output
    manifest = read_manifest(str(cache / key))
    assert manifest is None or not any(entry.done for entry in manifest.shards)


def test_replay_on_a_worker_that_does_not_share_the_cache_says_so(
    tmpfs_works, scheduler, job_file, extracted, tmp_path
):
    # the worker sees an empty folder of its own at the cache's path, as a worker on another machine would
    cache = extracted.cache_dir
    mount = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"', "sh", cache]
    worker = _worker(scheduler, tmp_path, prefix=mount)
    try:
        argv = ["replay", job_file, "--features", cache, "--out", str(tmp_path / "out"), "--scheduler", scheduler]
        r = CliRunner().invoke(main, [*argv, "--no-progress"])
    finally:
        worker.kill()
        worker.wait()
    assert r.exit_code == 1, r.output
    assert r.output.startswith(f"Error: a dask worker cannot find shard {cache}/shard-"), r.output
    assert "must be a folder every worker shares, at the same path" in r.output and "extract again" not in r.output
