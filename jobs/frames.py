"""Reading JPEG frames from disk into preprocessed tensors, a step's backbone input from them, and the record of
the frames a video's features come from."""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TypeVar

import torch
from PIL import Image, UnidentifiedImageError

from cache.inputs import frame_files, video_frames_digest
from frameexit.errors import FrameExitError
from frameexit.preprocess import Preprocessing, preprocess_image

from .process import one_thread
from .progress import progress as progress_bar

T = TypeVar("T")


class FrameReadError(FrameExitError, OSError):
    """A frame file that cannot be decoded; the video is skipped with this reason."""


class FrameUnreadableError(FrameReadError):
    """A frame file whose bytes cannot be read (missing, an I/O error): a reason that can pass."""


def read_frame_bytes(path: str) -> bytes:
    """The bytes of a frame file; :class:`FrameUnreadableError` naming it if they cannot be read (also when it is
    not a regular file: a FIFO would block the reader for ever)."""
    try:
        _require_regular(path)
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise FrameUnreadableError(f"cannot read frame {path}: {exc.strerror or exc}") from None


def _require_regular(path: str) -> None:
    """Raise ``OSError`` unless ``path`` is a regular file (a FIFO, a device or a folder is not read)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise OSError(f"{kind}, not a frame file")


def decode_frame(path: str, content: bytes, params: Preprocessing) -> torch.Tensor:
    """:func:`read_frame` of bytes already read from ``path`` (named in the error)."""
    return _decoded(path, lambda image: _preprocess(image, params), io.BytesIO(content))


def video_frames_record(
    frames: Sequence[str], num_frames: int, clip_length: int = 1, clip_stride: int = 1
) -> str | None:
    """The record of the frames a video's steps read as they are on disk now
    (:func:`cache.inputs.video_frames_digest`), or ``None`` when one of them cannot be read."""
    try:
        files = [
            (frames[j], read_frame_bytes(frames[j]))
            for j in frame_files(len(frames), num_frames, clip_length, clip_stride)
        ]
    except FrameUnreadableError:
        return None
    return video_frames_digest(len(frames), files)


def frames_records(
    videos: Sequence, num_frames: int, clip_length: int = 1, clip_stride: int = 1, *, progress: bool | None = None
) -> dict[str, str | None]:
    """:func:`video_frames_record` of each video (``key``, ``frames``), read by a few threads (I/O bound:
    hashing releases the GIL), with a progress bar."""
    threads = min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        records = pool.map(lambda v: video_frames_record(v.frames, num_frames, clip_length, clip_stride), videos)
        bar = progress_bar(records, desc="check frames", total=len(videos), unit="video", enabled=progress)
        return {video.key: record for video, record in zip(videos, bar, strict=True)}


def read_frame(path: str, params: Preprocessing) -> torch.Tensor:
    """Decode ``path`` with PIL (converted to RGB) and preprocess it: (3, crop, crop) float32;
    :class:`FrameReadError` naming the file if it is missing, truncated or not an image."""
    return _decoded(path, lambda image: _preprocess(image, params))


def _preprocess(image: Image.Image, params: Preprocessing) -> torch.Tensor:
    # on one thread, so that a frame is the same tensor in every process (jobs.process.one_thread)
    with one_thread():
        return preprocess_image(image, params)


def step_input(frames: Sequence[torch.Tensor], clips: bool) -> torch.Tensor:
    """One step's backbone input from its preprocessed frames (each (3, H, W) float32): a 2D backbone's one frame,
    or a 3D backbone's clip, (3, clip_length, H, W), frames in temporal order (pytorchvideo's layout)."""
    if clips:
        return torch.stack(list(frames), dim=1)
    (frame,) = frames
    return frame


def check_frame(path: str) -> None:
    """Decode ``path`` as :func:`read_frame` does, without preprocessing; :class:`FrameReadError` if it cannot."""
    _decoded(path, lambda image: None)


def _decoded(path: str, use: Callable[[Image.Image], T], source: IO[bytes] | None = None) -> T:
    try:
        if source is None:
            _require_regular(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if source is None else source) as image:
                image.load()
                return use(image)
    except (
        OSError,
        UnidentifiedImageError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        reason = str(exc) or type(exc).__name__
        raise FrameReadError(f"cannot read frame {path}: {reason}") from None
