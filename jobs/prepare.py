"""`frameexit prepare`: from raw videos and annotation files to the official frame folders and split files.

Frames are written by the official ffmpeg command itself (:mod:`jobs.ffmpeg`), one process per video, into a
temporary ``.partial-<hash of the key>.<random>`` folder renamed to the split key when complete.
``FRAMES_DIR/prepare-frames.json`` records the command and FFmpeg version; a later run refuses other ones.
Nothing heavy (no torch) is imported at module level: a rerun with nothing to do takes a fraction of a second.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

from frameexit.atomic import atomic_write, check_writable_dir, folder_lock
from frameexit.errors import (
    DISK_FULL_ERRNOS,
    DatasetError,
    DiskFullError,
    FrameExitError,
    UsageError,
    disk_full_reason,
    reporting_disk_full,
)

from .datasets import (
    BY_CLI_NAME,
    REGISTRY,
    VIDEO_SUFFIXES,
    DatasetSpec,
    FolderHints,
    list_frames,
    load_categories,
    read_class_list,
    read_labels,
    read_split,
    split_key,
    unsafe_key,
)
from .ffmpeg import FFmpeg, command_line, find_ffmpeg, frames_argv, input_duration, official_command
from .ffmpeg import problems as ffmpeg_problems
from .ffmpeg import start as start_ffmpeg

if TYPE_CHECKING:  # for check()'s annotation only: prepare frames needs no job
    from .config import Job

PARTIAL = ".partial-"
MANIFEST = "prepare-frames.json"
POLL_S = 0.02  # how often the running ffmpeg processes are checked, in seconds


class PrepareError(FrameExitError, ValueError):
    """Inputs of ``prepare`` that cannot be used (missing folder, unknown dataset, bad list), or failed videos."""


def _make_partial_dir(frames_dir: str, key: str) -> str:
    """A new, empty ``<frames_dir>/.partial-<hash>.<random>`` folder, with the umask's permissions (not mkdtemp's
    0700); a hash, as a legal 252-byte key plus prefix and random part would exceed a file name's 255 bytes."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    while True:
        path = os.path.join(frames_dir, f"{PARTIAL}{digest}.{secrets.token_hex(4)}")
        try:
            os.mkdir(path, 0o777)  # the kernel applies the umask
            return path
        except FileExistsError:
            continue


@dataclass
class _Running:
    """One video's ffmpeg process, the temporary folder it writes into and its log."""

    video: str
    key: str
    tmp: str
    proc: subprocess.Popen
    log: IO[bytes]

    def stop(self) -> None:
        """Kill the process if it still runs, and remove what it wrote."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass(frozen=True)
class _Outcome:
    video: str
    key: str
    frames: int = 0
    too_short: str | None = None  # why no frame, for a video that decodes but is shorter than one output frame
    error: str | None = None
    disk_full: int | None = None  # the errno, when ffmpeg failed for lack of space: no video after it can succeed


def _start(ffmpeg: FFmpeg, video: str, frames_dir: str, *, fps: int, min_side: int, prefix: str) -> _Running:
    key = split_key(video)
    tmp = _make_partial_dir(frames_dir, key)
    # a file, not a pipe: a long log would fill a pipe and stall ffmpeg; closed by _finish or _Running.stop
    log = tempfile.TemporaryFile()  # noqa: SIM115
    try:
        proc = start_ffmpeg(frames_argv(ffmpeg.path, video, tmp, fps=fps, min_side=min_side, prefix=prefix), log)
    except BaseException:
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _Running(video, key, tmp, proc, log)


def _holds_anything(frames_dir: str, key: str) -> bool:
    """Whether ``<frames_dir>/<key>`` is there and not an empty folder."""
    path = os.path.join(frames_dir, key)
    if not os.path.lexists(path):
        return False
    try:
        return bool(os.listdir(path))
    except OSError:
        return True  # a file, or a folder that cannot be listed: not ours to replace


def _occupied(path: str) -> str:
    return (
        f"{path} is there without *.jpeg frames but holds other files (another tool's frames?): "
        "not replaced; move it away to have it made"
    )


def _finish(task: _Running, frames_dir: str, *, fps: int) -> _Outcome:
    """Rename a complete folder into place, or say why there is none."""
    status = task.proc.returncode
    task.log.seek(0)
    log = task.log.read().decode("utf-8", "replace")
    task.log.close()
    count = sum(name.endswith(".jpeg") for name in os.listdir(task.tmp))
    if status == 0 and count:
        final = os.path.join(frames_dir, task.key)
        try:
            if os.path.isdir(final):
                os.rmdir(final)  # an empty folder is replaced; one holding anything is another tool's (see below)
            os.rename(task.tmp, final)
        except OSError as exc:
            shutil.rmtree(task.tmp, ignore_errors=True)
            if exc.errno in DISK_FULL_ERRNOS:
                raise  # the folder holding the frames is full: prepare_frames stops, naming it
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                return _Outcome(task.video, task.key, error=_occupied(final))
            return _Outcome(task.video, task.key, error=f"cannot rename its frames to {final}: {exc.strerror or exc}")
        return _Outcome(task.video, task.key, frames=count)
    full = _disk_full(log, task.tmp) if status else None  # before the removal frees the space
    shutil.rmtree(task.tmp, ignore_errors=True)
    if full is not None:
        return _Outcome(task.video, task.key, error=ffmpeg_problems(log) or os.strerror(full), disk_full=full)
    duration = input_duration(log)
    if count == 0 and duration is not None and duration * fps < 1:
        # the official command writes nothing either (and fails, as the encoder never gets a frame)
        return _Outcome(task.video, task.key, too_short=f"shorter than one frame at {fps} fps ({duration:.2f} s)")
    reason = ffmpeg_problems(log) or "no error message"
    if status < 0:
        reason = f"ffmpeg was killed by signal {-status}"
    elif status:
        reason = f"ffmpeg exited with status {status}: {reason}"
    else:
        reason = f"ffmpeg wrote no frame: {reason}"
    return _Outcome(task.video, task.key, error=reason)


def _disk_full(log: str, folder: str) -> int | None:
    """The errno of a full disk (or quota, or file size limit) when ffmpeg failed writing into ``folder``, or None:
    from the system's message in the log, else from the file system having no block left (even for root)."""
    for code in DISK_FULL_ERRNOS:
        if os.strerror(code) in log:
            return code
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return errno.ENOSPC if stat.f_bfree == 0 else None


def _run(ffmpeg: FFmpeg, videos: list[str], frames_dir: str, *, workers: int, **preset: Any) -> Iterator[_Outcome]:
    """Run one ffmpeg per video, ``workers`` at once, from the iterating thread (which their parent-death signal is
    tied to); yield each outcome as it ends; when stopped early, kill the running ones and remove their folders."""
    pending = list(reversed(videos))
    running: list[_Running] = []
    try:
        while pending or running:
            while pending and len(running) < workers:
                running.append(_start(ffmpeg, pending.pop(), frames_dir, **preset))
            ended = [task for task in running if task.proc.poll() is not None]
            if not ended:
                time.sleep(POLL_S)
                continue
            for task in ended:
                running.remove(task)
                yield _finish(task, frames_dir, fps=preset["fps"])
    finally:
        for task in running:
            task.stop()


def check_folders(videos_dir: str, frames_dir: str) -> None:
    """Raise :class:`UsageError` when VIDEOS_DIR and FRAMES_DIR (links followed) are one folder or one holds the
    other: frame folders named ``<video>.mp4`` would pass for videos, and what a rerun may replace would mix
    with what the user keeps."""
    videos, frames = os.path.realpath(videos_dir), os.path.realpath(frames_dir)
    if videos == frames:
        problem = f"VIDEOS_DIR {videos_dir} and FRAMES_DIR {frames_dir} are one folder"
    elif os.path.commonpath([videos, frames]) == videos:
        problem = f"FRAMES_DIR {frames_dir} is inside VIDEOS_DIR {videos_dir}"
    elif os.path.commonpath([videos, frames]) == frames:
        problem = f"VIDEOS_DIR {videos_dir} is inside FRAMES_DIR {frames_dir}"
    else:
        return
    raise UsageError(f"{problem}: keep the videos and the frame folders (named <video>.mp4) in separate folders")


def _unmakeable(frames_dir: str, key: str, prefix: str, limits: tuple[int, int]) -> str | None:
    """Why the frame folder of ``key`` cannot be made in ``frames_dir`` (``limits``: its ``(NAME_MAX, PATH_MAX)``),
    or None: the videos' file system may allow longer names, so such a video fails instead of the run."""
    name_max, path_max = limits
    name = len(os.fsencode(key))
    if name > name_max:
        return (
            f"its frame folder name {key} would be {name} bytes long, more than the {name_max} a file name can "
            f"have in {frames_dir}: rename the video file (the folder is named after it)"
        )
    # the longest path written: FRAMES_DIR/KEY/PREFIX_00001.jpeg (PATH_MAX counts the final NUL)
    longest = len(os.fsencode(os.path.join(os.path.abspath(frames_dir), key, f"{prefix}_00001.jpeg")))
    if longest >= path_max:
        return (
            f"the path of its frame files would be {longest} bytes long, more than the {path_max - 1} the "
            "system allows: give a FRAMES_DIR with a shorter path, or rename the video file"
        )
    return None


def _name_limits(frames_dir: str) -> tuple[int, int]:
    """``(NAME_MAX, PATH_MAX)`` of ``frames_dir``'s file system (Linux's 255 and 4096 where it cannot say)."""
    limits = []
    for name, default in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            limits.append(os.pathconf(frames_dir, name))
        except (OSError, ValueError, AttributeError):  # no pathconf (not POSIX), or no such limit
            limits.append(default)
    return limits[0], limits[1]


def find_videos(videos_dir: str) -> dict[str, str]:
    """``{split key: video path}`` of the video files in ``videos_dir`` (by extension, not recursive);
    :class:`PrepareError` when two have one split key (``v_x.mkv``, ``v_x.mp4``)."""
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


def read_manifest(frames_dir: str) -> dict[str, Any] | None:
    """``FRAMES_DIR/prepare-frames.json`` (how the frames were made), or None where there is none."""
    path = os.path.join(frames_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:  # json's parser recurses once per level
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise PrepareError(f"cannot read {path}: {why}; remove it only if every frame folder is redone") from None
    if not (
        isinstance(manifest, dict)
        and isinstance(manifest.get("official_command"), str)
        and isinstance(manifest.get("ffmpeg"), dict)
        and isinstance(manifest["ffmpeg"].get("version"), str)
    ):
        raise PrepareError(f"{path} is not a prepare frames manifest (no official_command or ffmpeg.version)")
    return manifest


def _check_command(manifest: dict[str, Any] | None, command: str, frames_dir: str) -> None:
    if manifest is not None and manifest["official_command"] != command:
        raise PrepareError(
            f"the frames in {frames_dir} were written by `{manifest['official_command']}` "
            f"(recorded in {os.path.join(frames_dir, MANIFEST)}), not by this run's `{command}`: "
            "use the --dataset and --prefix they were written with, or another FRAMES_DIR"
        )


def _record(
    manifest: dict[str, Any] | None, ffmpeg: FFmpeg, frames_dir: str, *, dataset: str, **preset: Any
) -> dict[str, Any]:
    """Write the manifest before the first frame, or check that this run uses the FFmpeg it records; returns it.
    One folder holds frames of one FFmpeg version: another may differ by a level here and there."""
    path = os.path.join(frames_dir, MANIFEST)
    if manifest is not None:
        recorded = manifest["ffmpeg"]["version"]
        if recorded != ffmpeg.version:
            where = manifest["ffmpeg"].get("path", "?")
            raise PrepareError(
                f"the frames in {frames_dir} were written by FFmpeg {recorded} ({where}; recorded in {path}), "
                f"this run would use FFmpeg {ffmpeg.version} ({ffmpeg.path}, from {ffmpeg.source}): "
                f"give --ffmpeg an FFmpeg {recorded}, or write to another FRAMES_DIR"
            )
        return manifest
    done = sorted(e for e in os.listdir(frames_dir) if not e.startswith(".") and list_frames(frames_dir, e))
    record = {
        "official_command": official_command(**preset),
        "command": command_line(ffmpeg.path, **preset),
        "dataset": dataset,
        "ffmpeg": asdict(ffmpeg),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # folders already there when the manifest was first written: another tool (or an older frameexit) made them
        "folders_before_manifest": done,
    }
    with atomic_write(path, "w") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return record


@dataclass(frozen=True)
class FramesResult:
    """What :func:`prepare_frames` did; ``failed`` and ``too_short`` hold ``{'video': file name, 'reason': ...}``."""

    written: dict[str, int]  # frames written, by split key
    already_done: list[str]  # split keys whose folder already held frames (skipped)
    failed: list[dict[str, str]] = field(default_factory=list)  # videos ffmpeg could not turn into frames
    # videos shorter than one output frame (they decode, but the official command writes no frame either)
    too_short: list[dict[str, str]] = field(default_factory=list)
    ffmpeg: FFmpeg | None = None  # the ffmpeg that ran (None when there was nothing to do)
    manifest: str | None = None  # path of prepare-frames.json (None when none was written or read)
    # frame folders the manifest lists as there when it was written: made by another tool or an older frameexit
    predating: int = 0


def check_prefix(prefix: str) -> None:
    """Raise :class:`PrepareError` unless ``prefix`` makes frame file names ``<prefix>_00001.jpeg`` in the video's
    own folder (a path separator would write elsewhere; ``%`` is ffmpeg's pattern character)."""
    checks = (
        (not prefix, "is empty"),
        ("/" in prefix or os.sep in prefix or (os.altsep and os.altsep in prefix), "holds a path separator"),
        ("%" in prefix, "holds '%', ffmpeg's pattern character"),
        (prefix.startswith("."), "starts with '.'"),
        (any(c in prefix for c in "\0\n\r"), "holds a NUL or a line break"),
    )
    bad = next((why for failed, why in checks if failed), None)
    # 255 bytes: the longest file name of common file systems (ext4, XFS, tmpfs), frame numbers to 999999
    if not bad and len(f"{prefix}_000001.jpeg".encode("utf-8", "surrogateescape")) > 255:
        bad = f"is too long: {prefix}_000001.jpeg would be a file name over 255 bytes"
    if bad:
        raise PrepareError(
            f"--prefix {prefix!r} {bad}: frames are written as FRAMES_DIR/<video>/<prefix>_00001.jpeg, so the "
            "prefix is part of a file name (the official one is img)"
        )


def prepare_frames(
    videos_dir: str,
    frames_dir: str,
    *,
    dataset: str,
    workers: int = 1,
    prefix: str = "img",
    ffmpeg: str | None = None,
    progress: Callable[[Any, int], Any] | None = None,
) -> FramesResult:
    """Run the official ffmpeg command on every video of ``videos_dir`` into ``<frames_dir>/<split key>/``,
    ``workers`` at once, resumably, as ``frameexit prepare frames --help`` says."""
    spec = prepare_dataset(dataset)
    if not os.path.isdir(videos_dir):
        raise PrepareError(f"videos folder not found: {videos_dir}")
    check_prefix(prefix)
    check_folders(videos_dir, frames_dir)
    preset = dict(spec.frames_preset, prefix=prefix)
    videos = find_videos(videos_dir)
    check_writable_dir(frames_dir, "FRAMES_DIR")
    busy = f"another frameexit prepare frames is writing {frames_dir}; wait for it to finish"
    with folder_lock(frames_dir, busy):
        return _prepare_frames(videos, frames_dir, dataset, preset, workers=workers, ffmpeg=ffmpeg, progress=progress)


def _prepare_frames(
    videos: dict[str, str],
    frames_dir: str,
    dataset: str,
    preset: dict[str, Any],
    *,
    workers: int,
    ffmpeg: str | None,
    progress: Callable[[Any, int], Any] | None,
) -> FramesResult:
    """:func:`prepare_frames` once its arguments are checked and ``frames_dir``'s lock is held."""
    manifest = read_manifest(frames_dir)
    _check_command(manifest, official_command(**preset), frames_dir)
    for entry in os.listdir(frames_dir):
        if entry.startswith(PARTIAL):
            shutil.rmtree(os.path.join(frames_dir, entry), ignore_errors=True)
    done = [key for key in videos if list_frames(frames_dir, key)]
    finished = set(done)  # built once: a set per key made a rerun over 10,000 videos take seconds
    pending = [key for key in videos if key not in finished]
    # a folder without our frames that holds anything (another tool's .jpg frames, notes) is not ours to replace
    occupied = {k: _occupied(os.path.join(frames_dir, k)) for k in pending if _holds_anything(frames_dir, k)}
    limits = _name_limits(frames_dir)
    unmakeable = {k: _unmakeable(frames_dir, k, preset["prefix"], limits) for k in pending if k not in occupied}
    refusals = {**dict(sorted(occupied.items())), **{k: why for k, why in sorted(unmakeable.items()) if why}}
    todo = [videos[key] for key in pending if key not in refusals]
    refused = [{"video": os.path.basename(videos[k]), "reason": why} for k, why in refusals.items()]
    if not todo:
        if refused or manifest is None:
            return FramesResult({}, sorted(done), refused)
        predating = len(manifest.get("folders_before_manifest", []))
        return FramesResult({}, sorted(done), manifest=os.path.join(frames_dir, MANIFEST), predating=predating)
    binary = find_ffmpeg(ffmpeg)
    with reporting_disk_full(frames_dir):  # the manifest, a temporary folder, a rename
        manifest = _record(manifest, binary, frames_dir, dataset=dataset, **preset)
    written: dict[str, int] = {}
    failed = list(refused)
    too_short: list[dict[str, str]] = []
    run = _run(binary, todo, frames_dir, workers=workers, **preset)
    with reporting_disk_full(frames_dir), contextlib.closing(run):
        outcomes = run if progress is None else progress(run, len(todo))
        for outcome in outcomes:
            name = os.path.basename(outcome.video)
            if outcome.disk_full is not None:
                # every later video would fail the same way: stop (closing the run kills and cleans the others)
                raise DiskFullError(
                    f"{disk_full_reason(outcome.disk_full)} writing the frames of {name} into {frames_dir} "
                    f"(ffmpeg: {outcome.error}); the {len(written)} video(s) finished before it are kept: "
                    "free some space and run again to do the rest"
                )
            if outcome.error:
                failed.append({"video": name, "reason": outcome.error})
            elif outcome.too_short:
                too_short.append({"video": name, "reason": outcome.too_short})
            else:
                written[outcome.key] = outcome.frames
    return FramesResult(
        written,
        sorted(done),
        sorted(failed, key=lambda f: f["video"]),
        sorted(too_short, key=lambda f: f["video"]),
        ffmpeg=binary,
        manifest=os.path.join(frames_dir, MANIFEST),
        predating=len(manifest.get("folders_before_manifest", [])),
    )


@dataclass(frozen=True)
class Split:
    """A split built from an annotation file."""

    keys: list[str]  # the split file's video keys, sorted
    missing: list[str]  # labels of its videos not in the given class list (sorted; empty without one)
    classes: list[str]  # a class list for it (SplitRows.names), sorted by code points
    num_class: int  # model.num_class of the dataset's bundled job file
    left_out: list[str] = field(default_factory=list)  # what the annotations hold that the split leaves out


def prepare_dataset(dataset: str) -> DatasetSpec:
    """The registry entry of ``--dataset``; :class:`PrepareError` naming the choices for another name."""
    spec = BY_CLI_NAME.get(dataset)
    if spec is None:
        raise PrepareError(f"--dataset must be one of {', '.join(BY_CLI_NAME)}, got {dataset!r}")
    return spec


def _read_val_list(val_list: str) -> list[str]:
    """The video ids of a split list such as ``mini_val_videofolder.txt``: the first column of each line."""
    try:
        with open(val_list, encoding="utf-8") as handle:
            return [line.split()[0] for line in handle if line.strip()]
    except OSError as exc:
        raise PrepareError(f"cannot read {val_list}: {exc.strerror}") from None


def build_split(
    annotation: str,
    *,
    dataset: str,
    val_list: str | None = None,
    classes: str | None = None,
    categories: str | None = None,
    key_format: str | None = None,
) -> Split:
    """The validation split as the official help text builds it (:attr:`jobs.datasets.DatasetSpec.build_split`),
    and a class list for it; ``classes``: a class list to check the split's labels against."""
    spec = BY_CLI_NAME.get(dataset)
    if (spec is None or spec.key_format is None) and (categories or key_format):
        keyed = ", ".join(s.cli_name for s in REGISTRY if s.key_format is not None)
        raise PrepareError(f"--categories and --key-format are for --dataset {keyed}, not {dataset}")
    spec = prepare_dataset(dataset)
    if spec.val_list and not val_list:
        raise PrepareError(f"{spec.title} splits come from {spec.val_list}: give --val-list")
    rows = spec.build_split(
        annotation,
        val_list=val_list,
        read_val_list=lambda: _read_val_list(val_list or ""),
        categories=categories,
        key_format=key_format,
    )
    keys, labels, names, left_out = rows.keys, rows.labels, rows.names, rows.left_out
    if not keys:
        raise PrepareError(
            f"{annotation} gives no validation video: the split would be empty"
            + (f" ({'; '.join(left_out)})" if left_out else "")
        )
    for key in keys:
        why = unsafe_key(key)
        if why:
            raise PrepareError(
                f"{annotation}: the video key {why}: its id cannot name a frame folder under FRAMES_DIR; "
                "fix the annotation file"
            )
    missing: list[str] = []
    if classes:
        known = set(read_class_list(classes))
        missing = sorted({lab for k in keys for lab in labels.get(k, []) if lab not in known})
    return Split(keys, missing, sorted(names), spec.num_class, left_out)


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found; ``hints`` maps a missing key to why (a folder named after the video file);
    ``unlabelled``: split videos without an entry in ``label_file`` (in split order)."""

    n_listed: int
    with_frames: int
    missing: list[str]
    empty: list[str]
    unknown_labels: dict[str, list[str]]
    frame_counts: dict[str, float]
    hints: dict[str, str] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)
    label_file: str = ""

    def failure(self, max_missing: int = 0) -> str | None:
        """Why the check fails (one sentence), or None: more than ``max_missing`` split videos the evaluation
        would skip (no frames or no label entry, each counted once), or any label not in the class list."""
        reasons = []
        if self.unknown_labels:
            reasons.append(f"{len(self.unknown_labels)} label(s) not in the class list")
        frameless = {*self.missing, *self.empty}
        skipped = len(frameless | set(self.unlabelled))
        if skipped > max_missing:
            allowed = f"(at most {max_missing} allowed by --max-missing)"
            if not self.unlabelled:
                reasons.append(f"{skipped} split video(s) without frames {allowed}")
            else:
                shown = ", ".join(self.unlabelled[:5]) + (", ..." if len(self.unlabelled) > 5 else "")
                reasons.append(
                    f"{skipped} split video(s) would be skipped, {len(frameless)} without frames and "
                    f"{len(self.unlabelled)} without an entry in the label file {self.label_file} ({shown}) {allowed}"
                )
        return f"prepare check failed: {'; '.join(reasons)}" if reasons else None


def check(job: Job) -> CheckResult:
    """Before a long run: which split videos have frames and a label entry, which labels are unknown, how many
    frames."""
    job.require("data.path_frame", "data.path_split", "data.path_label", "data.path_classid")
    data = job.data
    keys = read_split(data.path_split)
    labels = read_labels(data.name, data.path_label, data.key_format)
    known = set(read_class_list(data.path_classid))
    load_categories(data)  # a class without a category stops the run: say so now
    if not os.path.isdir(data.path_frame):
        raise DatasetError(f"frames root not found: {data.path_frame} (from data.path_frame)")
    counts, missing, empty, hints = {}, [], [], {}
    hint = FolderHints(data.path_frame)
    for key in keys:
        folder = os.path.join(data.path_frame, key)
        if not os.path.isdir(folder):
            missing.append(key)
            if found := hint(key):
                hints[key] = found.strip()
        elif n := len(list_frames(data.path_frame, key)):
            counts[key] = n
        else:
            empty.append(key)
    unlabelled = [key for key in keys if key not in labels]  # the evaluation skips them, as videos without frames
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
        under_10 = float(sum(v < 10 for v in values))
        stats = dict(min=float(values[0]), p10=p10, median=median, p90=p90, max=float(values[-1]), under_10=under_10)
    return CheckResult(len(keys), len(counts), missing, empty, unknown, stats, hints, unlabelled, data.path_label)
