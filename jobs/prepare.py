"""`frameexit prepare`: from raw videos and annotation files to the official frame folders and split files.

Frames are decoded and filtered by FFmpeg's own libraries through PyAV (its
wheels carry FFmpeg, so no binary is needed): the filter graph
``fps=<rate>,scale=<side>:<side>:force_original_aspect_ratio=increase`` and the
mjpeg encoder at quantiser 2 are what ``ffmpeg -vf ... -q:v 2`` runs. Each
video's folder is named by its split key (the file's stem plus ``.mp4``),
written under a temporary name and renamed when complete.

This module is imported by every decoding worker: it imports nothing heavy
(no torch) at module level.
"""

from __future__ import annotations

import ctypes
import fractions
import itertools
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from frameexit.atomic import check_writable_dir
from frameexit.errors import DatasetError, FrameExitError

from .datasets import (
    VIDEO_SUFFIXES,
    FolderHints,
    list_frames,
    read_class_list,
    read_labels,
    read_split,
    split_key,
)

if TYPE_CHECKING:  # jobs.config imports torch: too slow for every worker process
    from .config import Job

PRESETS = {"activitynet": {"fps": 1, "min_side": 350}, "minikinetics": {"fps": 5, "min_side": 256}}
QSCALE = 2  # ffmpeg -q:v 2
PARTIAL = ".partial-"
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_POLL_S = 0.2  # where prctl is missing: how often a worker checks that its parent lives, in seconds


class PrepareError(FrameExitError, ValueError):
    """Inputs of ``prepare`` that cannot be used (missing folder, unknown dataset, bad list), or failed videos."""


def ffmpeg_filter(fps: int, min_side: int) -> str:
    """The official ffmpeg ``-vf`` argument for a frame rate and a minimum side."""
    return f"fps={fps},scale={min_side}:{min_side}:force_original_aspect_ratio=increase"


def decode(video: str, *, fps: int, min_side: int) -> Iterator[Any]:
    """Frames of ``video`` through FFmpeg's ``fps`` and ``scale`` filters, as yuvj420p ``av.VideoFrame``s."""
    import av

    with av.open(video) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        chain = [
            graph.add_buffer(template=stream),
            graph.add("fps", str(fps)),
            graph.add("scale", f"{min_side}:{min_side}:force_original_aspect_ratio=increase"),
            graph.add("format", "yuvj420p"),
            graph.add("buffersink"),
        ]
        for a, b in itertools.pairwise(chain):
            a.link_to(b)
        graph.configure()

        def drain() -> Iterator[Any]:
            while True:
                try:
                    yield graph.pull()
                except (av.BlockingIOError, av.EOFError):
                    return

        for frame in container.decode(stream):
            graph.push(frame)
            yield from drain()
        graph.push(None)
        yield from drain()


def encode_jpeg(frame: Any) -> bytes:
    """One frame as a JPEG from FFmpeg's mjpeg encoder at quantiser 2 (``-q:v 2``)."""
    import av

    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frame.width, frame.height, "yuvj420p"
    ctx.time_base = fractions.Fraction(1, 1)
    ctx.options = {"qmin": str(QSCALE), "qmax": str(QSCALE)}
    frame.pts = None
    return b"".join(bytes(p) for p in ctx.encode(frame)) + b"".join(bytes(p) for p in ctx.encode(None))


def _make_partial_dir(frames_dir: str, key: str) -> str:
    """A new, empty ``<frames_dir>/.partial-<key>.<random>`` folder, with the umask's permissions.

    Not ``tempfile.mkdtemp``: its folders are 0700, and the renamed frame
    folder must be readable as any other folder the user creates.
    """
    while True:
        path = os.path.join(frames_dir, f"{PARTIAL}{key}.{secrets.token_hex(4)}")
        try:
            os.mkdir(path, 0o777)  # the kernel applies the umask
            return path
        except FileExistsError:
            continue


def extract_video(
    video: str, frames_dir: str, *, fps: int, min_side: int, prefix: str = "img"
) -> tuple[str, int, str | None]:
    """Write ``<frames_dir>/<split key>/<prefix>_00001.jpeg ...``; returns (split key, frames, error).

    The split key is the file's stem plus ``.mp4`` (:func:`jobs.datasets.split_key`).
    """
    key = split_key(video)
    final = os.path.join(frames_dir, key)
    tmp = _make_partial_dir(frames_dir, key)
    try:
        count = 0
        for count, frame in enumerate(decode(video, fps=fps, min_side=min_side), start=1):
            with open(os.path.join(tmp, f"{prefix}_{count:05d}.jpeg"), "wb") as handle:
                handle.write(encode_jpeg(frame))
        if count == 0:
            raise ValueError("no frame decoded")
        if os.path.isdir(final):
            shutil.rmtree(final)  # a folder without frames, or left by another tool: redone
        os.rename(tmp, final)
        return key, count, None
    except Exception as exc:  # FFmpeg raises many error types for broken files; each is this video's reason
        shutil.rmtree(tmp, ignore_errors=True)
        return key, 0, f"{type(exc).__name__}: {exc}"


def _die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker as soon as ``parent`` (the process that started it) dies.

    Without it the workers of a killed run (SIGKILL gives the parent no chance
    to stop them) keep writing into the frames folder, then wait forever for
    work. On Linux the kernel sends SIGKILL to the worker when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread polls the parent's pid.
    The signal is tied to the thread that spawned the worker: the pool spawns
    its workers from ``submit``, in the thread that runs :func:`prepare_frames`
    and outlives the pool.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    # the parent may have died before prctl ran: no signal would ever come, and this worker is already an orphan
    if os.getppid() != parent:
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def find_videos(videos_dir: str) -> dict[str, str]:
    """``{split key: video path}`` of the video files in ``videos_dir`` (by extension, not recursive).

    Raises :class:`PrepareError` when two files have the same split key
    (``v_x.mkv`` and ``v_x.mp4``): both would be written to one folder.
    """
    by_key: dict[str, str] = {}
    for name in sorted(os.listdir(videos_dir)):
        path = os.path.join(videos_dir, name)
        if not (os.path.isfile(path) and name.lower().endswith(VIDEO_SUFFIXES)):
            continue
        key = split_key(name)
        if key in by_key:
            other = os.path.basename(by_key[key])
            raise PrepareError(
                f"{other} and {name} would both be written to frame folder {key} "
                f"(folders are named by split key): keep one of them in {videos_dir}"
            )
        by_key[key] = path
    return by_key


@dataclass(frozen=True)
class FramesResult:
    """``written``: frames per split key; ``already_done``: split keys skipped; ``failed``: ``{'video': file
    name, 'reason': ...}`` per video that could not be decoded."""

    written: dict[str, int]
    already_done: list[str]
    failed: list[dict[str, str]] = field(default_factory=list)


def prepare_frames(
    videos_dir: str,
    frames_dir: str,
    *,
    dataset: str,
    workers: int = 1,
    prefix: str = "img",
    progress: Callable[[Any, int], Any] | None = None,
) -> FramesResult:
    """Decode every video of ``videos_dir`` into the official frame folders, in parallel and resumably.

    Each video goes to ``<frames_dir>/<split key>/`` (``v_x.mkv`` -> ``v_x.mp4/``).
    A video whose folder already holds frames is skipped; folders left half
    written by a killed run (temporary names) are removed and their videos
    redone. ``workers`` processes decode at once; they die with this process.
    ``FramesResult.written`` and ``already_done`` are by split key,
    ``failed`` by video file name.
    """
    if dataset not in PRESETS:
        raise PrepareError(f"--dataset must be one of {', '.join(PRESETS)}, got {dataset!r}")
    if not os.path.isdir(videos_dir):
        raise PrepareError(f"videos folder not found: {videos_dir}")
    videos = find_videos(videos_dir)
    check_writable_dir(frames_dir, "FRAMES_DIR")
    for entry in os.listdir(frames_dir):
        if entry.startswith(PARTIAL):
            shutil.rmtree(os.path.join(frames_dir, entry), ignore_errors=True)
    done = [key for key in videos if list_frames(frames_dir, key)]
    todo = [videos[key] for key in videos if key not in set(done)]
    written: dict[str, int] = {}
    failed: list[dict[str, str]] = []
    if todo:
        # spawn, not fork: a worker's parent is this process whatever the platform's default (forkserver would
        # be the parent otherwise), and forking a process that runs threads can deadlock
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(todo)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )
        try:
            futures = {pool.submit(extract_video, v, frames_dir, prefix=prefix, **PRESETS[dataset]): v for v in todo}
            iterator = as_completed(futures)
            if progress is not None:
                iterator = progress(iterator, len(futures))
            for future in iterator:
                key, count, error = future.result()
                if error:
                    failed.append({"video": os.path.basename(futures[future]), "reason": error})
                else:
                    written[key] = count
        finally:
            # on Ctrl-C or SIGTERM, drop the videos not started instead of decoding them all before exiting
            pool.shutdown(wait=True, cancel_futures=True)
    return FramesResult(written, sorted(done), sorted(failed, key=lambda f: f["video"]))


@dataclass(frozen=True)
class Split:
    """A split built from an annotation file.

    Attributes
    ----------
    keys : list of str
        The split file's video keys, sorted.
    missing : list of str
        Labels of the split's videos that are not in the given class list (sorted; empty without one).
    classes : list of str
        A class list for it, sorted by Python string order (code points): ActivityNet,
        every label of the annotation file (all subsets: the 200 classes);
        Mini-Kinetics, the labels of the split's videos (the CSV holds all 400
        Kinetics classes, Mini-Kinetics uses 200 of them).
    """

    keys: list[str]
    missing: list[str]
    classes: list[str]


def build_split(annotation: str, *, dataset: str, val_list: str | None = None, classes: str | None = None) -> Split:
    """The validation split as the official help text builds it, and a class list for it.

    ActivityNet: every video of the JSON whose ``subset`` is ``validation``, as ``v_<id>.mp4``.
    Mini-Kinetics: the videos of ``mini_val_videofolder.txt`` (``val_list``, first column) found in the CSV.
    ``classes``: a class list to check the split's labels against.
    """
    if dataset == "activitynet":
        try:
            with open(annotation, encoding="utf-8") as handle:
                database = json.load(handle)["database"]
        except (OSError, ValueError, KeyError) as exc:
            raise PrepareError(f"cannot read ActivityNet annotations {annotation}: {exc}") from None
        keys = sorted(f"v_{vid}.mp4" for vid, entry in database.items() if entry.get("subset") == "validation")
        labels = read_labels("activitynet1.3", annotation)
        names = {lab for labs in labels.values() for lab in labs}
    elif dataset == "minikinetics":
        if not val_list:
            raise PrepareError("Mini-Kinetics splits come from mini_val_videofolder.txt: give --val-list")
        labels = read_labels("minikinetics", annotation)
        try:
            with open(val_list, encoding="utf-8") as handle:
                wanted = [line.split()[0] for line in handle if line.strip()]
        except OSError as exc:
            raise PrepareError(f"cannot read {val_list}: {exc.strerror}") from None
        by_id: dict[str, list[str]] = {}
        for key in labels:
            by_id.setdefault(key.rsplit("_", 2)[0], []).append(key)
        keys = sorted({k for w in wanted for k in (by_id.get(w.removesuffix(".mp4"), []) if w not in labels else [w])})
        names = {lab for k in keys for lab in labels[k]}
    else:
        raise PrepareError(f"--dataset must be one of {', '.join(PRESETS)}, got {dataset!r}")
    missing: list[str] = []
    if classes:
        known = set(read_class_list(classes))
        missing = sorted({lab for k in keys for lab in labels.get(k, []) if lab not in known})
    return Split(keys, missing, sorted(names))


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found; ``hints`` maps a missing key to why (a folder named after the video file)."""

    n_listed: int
    with_frames: int
    missing: list[str]
    empty: list[str]
    unknown_labels: dict[str, list[str]]
    frame_counts: dict[str, float]
    hints: dict[str, str] = field(default_factory=dict)

    def failure(self, max_missing: int = 0) -> str | None:
        """Why the check fails (one sentence), or None.

        It fails on more than ``max_missing`` split videos without frames
        (missing or empty folders), and on any label not in the class list
        (the evaluation would stop on it).
        """
        reasons = []
        if self.unknown_labels:
            reasons.append(f"{len(self.unknown_labels)} label(s) not in the class list")
        without = len(self.missing) + len(self.empty)
        if without > max_missing:
            reasons.append(f"{without} split video(s) without frames (at most {max_missing} allowed by --max-missing)")
        return f"prepare check failed: {'; '.join(reasons)}" if reasons else None


def check(job: Job) -> CheckResult:
    """Before a long run: which split videos have frames, which labels are unknown, how many frames."""
    job.require("data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    data = job.data
    keys = read_split(data.path_split)
    labels = read_labels(data.name, data.path_label)
    known = set(read_class_list(data.path_classid))
    if not os.path.isdir(data.path_frame):
        raise DatasetError(f"frames root not found: {data.path_frame} (from data.path_frame)")
    counts, missing, empty, hints = {}, [], [], {}
    hint = FolderHints(data.path_frame)
    for key in keys:
        folder = os.path.join(data.path_frame, key)
        if not os.path.isdir(folder):
            missing.append(key)
            found = hint(key)
            if found:
                hints[key] = found.strip()
            continue
        n = len(list_frames(data.path_frame, key))
        if n == 0:
            empty.append(key)
        else:
            counts[key] = n
    unknown: dict[str, list[str]] = {}
    for key in keys:
        for lab in labels.get(key, []):
            if lab not in known:
                unknown.setdefault(lab, []).append(key)
    values = sorted(counts.values())
    stats: dict[str, float] = {}
    if values:
        import numpy as np

        p10, median, p90 = np.percentile(values, [10, 50, 90]).tolist()  # linear interpolation
        stats = {
            "min": float(values[0]),
            "p10": p10,
            "median": median,
            "p90": p90,
            "max": float(values[-1]),
            "under_10": float(sum(v < 10 for v in values)),
        }
    return CheckResult(len(keys), len(counts), missing, empty, unknown, stats, hints)
