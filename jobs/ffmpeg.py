"""The ffmpeg command line that writes the official frame folders, run as it is.

That command runs, so its own behaviour (timestamps rebased to the file's start, autorotation, the image2
muxer's constant-rate output from time 0, the mjpeg encoder's pixel format) comes with it instead of being
imitated; the only options added change what ffmpeg prints, not what it writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import IO

from frameexit.errors import FrameExitError

QSCALE = 2  # ffmpeg -q:v 2
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# what ffmpeg prints; none of these options changes a frame
QUIET = ("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info")
_VERSION = re.compile(r"^ffmpeg version (\S+)")
_DURATION = re.compile(r"^\[info\]\s+Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", re.M)
# "[ctx @ 0x...] [ctx2 @ 0x...] [error] message": the contexts hold addresses, which differ from run to run
_PROBLEM = re.compile(r"^(?:\[[^\]]*\] )*\[(?:error|fatal)\] (.*)$", re.M)


class FFmpegNotFoundError(FrameExitError, FileNotFoundError):
    """No usable ffmpeg executable: ``--ffmpeg`` names something else, or none is installed."""


@dataclass(frozen=True)
class FFmpeg:
    """An ffmpeg executable and what it says it is."""

    path: str  # absolute
    version: str  # of ffmpeg -version: frames are equal byte for byte between two runs of one version
    source: str  # why this one: --ffmpeg, PATH, or imageio-ffmpeg <version> (its bundled binary)


def ffmpeg_filter(fps: int, min_side: int) -> str:
    """The official ffmpeg ``-vf`` argument for a frame rate and a minimum side."""
    return f"fps={fps},scale={min_side}:{min_side}:force_original_aspect_ratio=increase"


def official_command(*, fps: int, min_side: int, prefix: str = "img") -> str:
    """The official command line for one video, with ``VIDEO`` and ``FRAMES_DIR/KEY`` standing for the paths."""
    return f"ffmpeg -i VIDEO -vf {ffmpeg_filter(fps, min_side)} -q:v {QSCALE} FRAMES_DIR/KEY/{prefix}_%05d.jpeg"


def _argv(ffmpeg: str, video: str, pattern: str, fps: int, min_side: int) -> list[str]:
    return [ffmpeg, *QUIET, "-i", video, "-vf", ffmpeg_filter(fps, min_side), "-q:v", str(QSCALE), pattern]


def frames_argv(ffmpeg: str, video: str, out_dir: str, *, fps: int, min_side: int, prefix: str = "img") -> list[str]:
    """The official command with ``ffmpeg`` as the executable, writing ``out_dir/<prefix>_00001.jpeg, ...``; paths
    absolute (a name starting with ``-`` is no option), ``%`` escaped from the image2 muxer's pattern."""
    pattern = os.path.join(os.path.abspath(out_dir), f"{prefix}_").replace("%", "%%") + "%05d.jpeg"
    return _argv(ffmpeg, os.path.abspath(video), pattern, fps, min_side)


def command_line(ffmpeg: str, *, fps: int, min_side: int, prefix: str = "img") -> str:
    """The command :func:`frames_argv` runs, with ``VIDEO`` and ``FRAMES_DIR/KEY`` standing for the paths."""
    return shlex.join(_argv(ffmpeg, "VIDEO", f"FRAMES_DIR/KEY/{prefix}_%05d.jpeg", fps, min_side))


def find_ffmpeg(explicit: str | None = None) -> FFmpeg:
    """The ffmpeg to run: ``explicit`` (``--ffmpeg``), else ``ffmpeg`` on ``PATH`` (what the official command would
    run here), else imageio-ffmpeg's binary; :class:`FFmpegNotFoundError` when none can be run."""
    if explicit:
        path, source = explicit, "--ffmpeg"
    elif shutil.which("ffmpeg"):
        path, source = shutil.which("ffmpeg"), "PATH"
    else:
        try:
            import imageio_ffmpeg

            path = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError) as exc:
            raise FFmpegNotFoundError(
                f"no ffmpeg found: none on PATH and none bundled by imageio-ffmpeg ({exc}); "
                "install imageio-ffmpeg or FFmpeg, or give --ffmpeg PATH"
            ) from None
        source = f"imageio-ffmpeg {imageio_ffmpeg.__version__}"
    path = os.path.abspath(path)
    return FFmpeg(path, ffmpeg_version(path, source), source)


def ffmpeg_version(path: str, source: str = "--ffmpeg") -> str:
    """The version ``path -version`` prints; :class:`FFmpegNotFoundError` if it is not an ffmpeg."""
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FFmpegNotFoundError(f"ffmpeg {path} (from {source}) cannot be run: {exc}") from None
    found = _VERSION.match(out.stdout)
    if out.returncode != 0 or not found:
        first = (out.stdout or out.stderr).strip().splitlines()[:1]
        raise FFmpegNotFoundError(f"{path} (from {source}) is not an ffmpeg: -version printed {first}")
    return found.group(1)


def _arm_parent_death_signal(parent: int, prctl) -> None:
    """Run in the child between fork and exec: SIGKILL it when this process dies, even by SIGKILL."""
    prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: no signal would ever come
        os._exit(1)


_PRCTL = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def start(argv: list[str], log: IO[bytes]) -> subprocess.Popen:
    """Start ``argv`` with stdout and stderr into ``log``; on Linux it is killed when this process dies.

    Else the ffmpeg processes of a SIGKILLed run would keep writing into the frames folder. The signal is tied
    to the thread that starts the process: start them from the thread that waits for them.
    """
    preexec = None if _PRCTL is None else functools.partial(_arm_parent_death_signal, os.getpid(), _PRCTL)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=preexec)


def input_duration(log: str) -> float | None:
    """Seconds of the input file as ffmpeg printed them (``Duration: 00:00:00.40``), or None (``N/A``)."""
    found = _DURATION.search(log)
    if not found:
        return None
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def problems(log: str, limit: int = 2) -> str:
    """The first ``limit`` distinct error messages of an ffmpeg log, without their addresses, joined by ``; ``;
    its last line when none is tagged ``[error]`` or ``[fatal]`` (an ffmpeg too old for ``-loglevel level+``)."""
    messages = [message for message in dict.fromkeys(m.strip() for m in _PROBLEM.findall(log)) if message]
    if not messages:
        messages = [line.strip() for line in log.splitlines() if line.strip()][-1:]
    return "; ".join(messages[:limit])
