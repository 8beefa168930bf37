"""`frameexit prepare`: from raw videos and annotation files to the official frame folders and split files.

Frames are decoded and filtered by FFmpeg's own libraries through PyAV (its
wheels carry FFmpeg, so no binary is needed): the filter graph
``fps=<rate>,scale=<side>:<side>:force_original_aspect_ratio=increase`` and the
mjpeg encoder at quantiser 2 are what ``ffmpeg -vf ... -q:v 2`` runs. Each
video's folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import fractions
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from frameexit.errors import DatasetError, FrameExitError

from .config import Job
from .datasets import list_frames, read_class_list, read_labels, read_split

PRESETS = {"activitynet": {"fps": 1, "min_side": 350}, "minikinetics": {"fps": 5, "min_side": 256}}
QSCALE = 2  # ffmpeg -q:v 2
PARTIAL = ".partial-"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp")


class PrepareError(FrameExitError, ValueError):
    """Inputs of ``prepare`` that cannot be used (missing folder, unknown dataset, bad list)."""


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


def extract_video(
    video: str, frames_dir: str, *, fps: int, min_side: int, prefix: str = "img"
) -> tuple[str, int, str | None]:
    """Write ``<frames_dir>/<video file name>/<prefix>_00001.jpeg ...``; returns (name, frames, error)."""
    name = os.path.basename(video)
    final = os.path.join(frames_dir, name)
    tmp = tempfile.mkdtemp(prefix=f"{PARTIAL}{name}.", dir=frames_dir)
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
        return name, count, None
    except Exception as exc:  # FFmpeg raises many error types for broken files; each is this video's reason
        shutil.rmtree(tmp, ignore_errors=True)
        return name, 0, f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class FramesResult:
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

    A video whose folder already holds frames is skipped; folders left half
    written by a killed run (temporary names) are removed and their videos redone.
    """
    if dataset not in PRESETS:
        raise PrepareError(f"--dataset must be one of {', '.join(PRESETS)}, got {dataset!r}")
    if not os.path.isdir(videos_dir):
        raise PrepareError(f"videos folder not found: {videos_dir}")
    os.makedirs(frames_dir, exist_ok=True)
    for entry in os.listdir(frames_dir):
        if entry.startswith(PARTIAL):
            shutil.rmtree(os.path.join(frames_dir, entry), ignore_errors=True)
    videos = sorted(
        os.path.join(videos_dir, f)
        for f in os.listdir(videos_dir)
        if os.path.isfile(os.path.join(videos_dir, f)) and f.lower().endswith(VIDEO_SUFFIXES)
    )
    done = [os.path.basename(v) for v in videos if list_frames(frames_dir, os.path.basename(v))]
    todo = [v for v in videos if os.path.basename(v) not in set(done)]
    preset = PRESETS[dataset]
    written, failed = {}, []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(extract_video, v, frames_dir, prefix=prefix, **preset) for v in todo]
        iterator = as_completed(futures)
        if progress is not None:
            iterator = progress(iterator, len(futures))
        for future in iterator:
            name, count, error = future.result()
            if error:
                failed.append({"video": name, "reason": error})
            else:
                written[name] = count
    return FramesResult(written, done, sorted(failed, key=lambda f: f["video"]))


def build_split(
    annotation: str, *, dataset: str, val_list: str | None = None, classes: str | None = None
) -> tuple[list[str], list[str]]:
    """``(split keys, labels missing from the class list)`` as the official help text builds them.

    ActivityNet: every video of the JSON whose ``subset`` is ``validation``, as ``v_<id>.mp4``.
    Mini-Kinetics: the videos of ``mini_val_videofolder.txt`` (``val_list``, first column) found in the CSV.
    """
    if dataset == "activitynet":
        try:
            with open(annotation, encoding="utf-8") as handle:
                database = json.load(handle)["database"]
        except (OSError, ValueError, KeyError) as exc:
            raise PrepareError(f"cannot read ActivityNet annotations {annotation}: {exc}") from None
        keys = sorted(f"v_{vid}.mp4" for vid, entry in database.items() if entry.get("subset") == "validation")
        labels = read_labels("activitynet1.3", annotation)
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
    else:
        raise PrepareError(f"--dataset must be one of {', '.join(PRESETS)}, got {dataset!r}")
    missing: list[str] = []
    if classes:
        known = set(read_class_list(classes))
        missing = sorted({lab for k in keys for lab in labels.get(k, []) if lab not in known})
    return keys, missing


@dataclass(frozen=True)
class CheckResult:
    n_listed: int
    with_frames: int
    missing: list[str]
    empty: list[str]
    unknown_labels: dict[str, list[str]]
    frame_counts: dict[str, float]


def check(job: Job) -> CheckResult:
    """Before a long run: which split videos have frames, which labels are unknown, how many frames."""
    job.require("data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    data = job.data
    keys = read_split(data.path_split)
    labels = read_labels(data.name, data.path_label)
    known = set(read_class_list(data.path_classid))
    if not os.path.isdir(data.path_frame):
        raise DatasetError(f"frames root not found: {data.path_frame} (from data.path_frame)")
    counts, missing, empty = {}, [], []
    for key in keys:
        folder = os.path.join(data.path_frame, key)
        if not os.path.isdir(folder):
            missing.append(key)
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
        pick = lambda q: float(values[min(len(values) - 1, int(q * len(values)))])  # noqa: E731
        stats = {
            "min": float(values[0]),
            "p10": pick(0.1),
            "median": pick(0.5),
            "p90": pick(0.9),
            "max": float(values[-1]),
            "under_10": float(sum(v < 10 for v in values)),
        }
    return CheckResult(len(keys), len(counts), missing, empty, unknown, stats)
