"""A cache directory and its manifest (:class:`FeatureCache`), for readers and the writer alike.

``manifest.json`` is rewritten atomically after every shard, so an interrupted extraction knows what it finished;
``complete`` becomes true only when every planned shard is written, which makes the manifest the completion marker. A
shard is read only after its bytes match the checksum the manifest records.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from frameexit.atomic import atomic_write
from frameexit.errors import FrameExitError, reporting_disk_full

from .shard import Shard, file_sha256, read_shard

MANIFEST = "manifest.json"
#: The names shards get (:func:`cache.plan.plan`): a manifest naming anything else (a path) is refused, so that
#: nothing a manifest says can make a writer or a reader touch a file outside the cache directory.
SHARD_NAME = re.compile(r"shard-[0-9]{5,}\.h5")


class CacheError(FrameExitError, ValueError):
    """A cache directory that cannot be used as it is (missing, incomplete, unreadable)."""


class CacheCorruptError(CacheError):
    """A shard whose bytes do not match the checksum in the manifest."""


class ShardMissingError(CacheCorruptError):
    """A shard the manifest lists is not there (for the process that reads it: a dask worker may see another
    folder at the cache's path)."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"shard {path} is listed in the manifest but missing; run extract again to rebuild it")

    def __reduce__(self):
        # raised on a dask worker, pickled back to the client: rebuilt from its path, not from its message
        return (type(self), (self.path,))


@dataclass
class ShardEntry:
    """One shard of the plan: the videos it holds, and once written its checksum and what it was made from."""

    name: str
    videos: list[str]
    sha256: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)  # its videos that could not be used, with the reason
    # per video, the record of the frames its features came from (cache.inputs.video_frames_digest), or None
    # where a file could not be read (a reason that can pass: the next extraction tries the video again)
    frames: dict[str, str | None] = field(default_factory=dict)
    # how the backbone ran for this shard and how far its features are from per-step ones
    # (cache.exactness.ShardProbe as a dict); None for a shard not written yet
    probe: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.sha256 is not None


@dataclass
class Manifest:
    """Contents of ``manifest.json``: ``inputs`` holds every input of the key, as :func:`cache.key.canonical_json`."""

    key: str
    inputs: dict[str, Any]
    format_version: int
    shard_size: int
    n_listed: int
    shards: list[ShardEntry]
    skipped: list[dict[str, str]]
    complete: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)

    def planned(self) -> list[str]:
        """Every video planned into a shard, in shard order (sorted keys)."""
        return [v for entry in self.shards for v in entry.videos]

    def recorded_frames(self) -> dict[str, str | None]:
        """The frame record of every video of a written shard (see :class:`ShardEntry`)."""
        return {v: d for entry in self.shards if entry.done for v, d in entry.frames.items()}

    def all_skipped(self) -> list[dict[str, str]]:
        """Skipped before extraction (no frames, no labels) and during it (unreadable JPEG), by video key."""
        out = list(self.skipped) + [s for entry in self.shards for s in entry.skipped]
        return sorted(out, key=lambda s: s["video"])

    def usable_videos(self) -> int:
        """Videos with features in the cache (planned, and not skipped while extracting)."""
        failed = {s["video"] for s in self.all_skipped()}
        return sum(1 for v in self.planned() if v not in failed)


def write_manifest(cache_dir: str, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (a full disk: :class:`~frameexit.errors.DiskFullError` naming it)."""
    text = json.dumps(asdict(manifest), sort_keys=True, indent=1, allow_nan=False)
    path = os.path.join(cache_dir, MANIFEST)
    with reporting_disk_full(path), atomic_write(path, "w") as handle:
        handle.write(text + "\n")


def read_manifest(cache_dir: str) -> Manifest | None:
    """The manifest of ``cache_dir``, or ``None`` if there is none yet."""
    path = os.path.join(cache_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
        shards = [ShardEntry(**entry) for entry in doc.pop("shards")]
        manifest = Manifest(shards=shards, **doc)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc  # json's parser recurses per level
        raise CacheError(f"cannot read cache manifest {path}: {why}; remove {cache_dir} to rebuild it") from None
    for entry in manifest.shards:
        if not isinstance(entry.name, str) or not SHARD_NAME.fullmatch(entry.name):
            raise CacheError(
                f"cache manifest {path} lists the shard name {entry.name!r}, not a shard of this directory "
                f"(shard-NNNNN.h5); it is not used: remove {cache_dir} to rebuild it"
            )
    return manifest


def verify_shard(path: str, expected: str) -> None:
    """Raise :class:`CacheCorruptError` unless they match (:class:`ShardMissingError` when there is no file)."""
    if not os.path.exists(path):
        raise ShardMissingError(path)
    actual = file_sha256(path)
    if actual != expected:
        raise CacheCorruptError(
            f"shard {path} is corrupt: its SHA-256 is {actual}, the manifest says {expected}; "
            "it will not be read. Run extract again to rebuild it"
        )


@dataclass(frozen=True)
class FeatureCache:
    """A cache directory and its manifest: verified access to its shards, and the record of those written."""

    directory: str
    manifest: Manifest

    @classmethod
    def open(cls, directory: str) -> FeatureCache:
        """Open a cache written by ``frameexit extract``; it must be complete."""
        manifest = read_manifest(directory)
        if manifest is None:
            raise CacheError(f"{directory} is not a frameexit feature cache (no manifest.json)")
        if not manifest.complete:
            raise CacheError(f"cache {directory} is incomplete (an extraction was interrupted); run extract again")
        return cls(directory, manifest)

    @property
    def key(self) -> str:
        return self.manifest.key

    def shard_path(self, index: int) -> str:
        return os.path.join(self.directory, self.manifest.shards[index].name)

    def shards(self) -> list[tuple[str, str | None]]:
        """``(path, sha256)`` of every shard, in shard order."""
        return [(self.shard_path(i), e.sha256) for i, e in enumerate(self.manifest.shards)]

    def verify(self, index: int) -> None:
        """Raise :class:`CacheCorruptError` unless shard ``index`` matches its checksum (see :func:`verify_shard`)."""
        verify_shard(self.shard_path(index), self.manifest.shards[index].sha256 or "")

    def read(self, index: int) -> Shard:
        """Shard ``index``, after checking its checksum."""
        self.verify(index)
        return read_shard(self.shard_path(index))

    def iter_shards(self) -> Iterator[Shard]:
        return (self.read(index) for index in range(len(self.manifest.shards)))

    def require_features(self) -> int:
        """Videos with features in the cache; raises :class:`CacheError` naming the cache when there are none."""
        n_videos = self.manifest.usable_videos()
        if n_videos == 0:
            skipped = self.manifest.all_skipped()
            reasons = "; ".join(f"{s['video']}: {s['reason']}" for s in skipped[:3])
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            raise CacheError(
                f"the feature cache {self.directory} holds no video to evaluate: {self.manifest.n_listed} listed in "
                f"the split, {len(skipped)} skipped ({reasons or 'none'}{more}); fix the dataset (frameexit prepare "
                "check lists what is missing) and run frameexit extract again"
            )
        return n_videos

    def record(
        self,
        index: int,
        sha256: str,
        skipped: list[dict[str, str]],
        frames: Mapping[str, str | None],
        probe: dict[str, Any] | None = None,
    ) -> None:
        """Shard ``index`` is written: its checksum, skipped videos, frame records and exactness probe
        (:mod:`cache.exactness`) go to the manifest at once."""
        entry = self.manifest.shards[index]
        entry.sha256, entry.skipped, entry.frames, entry.probe = sha256, skipped, dict(frames), probe
        write_manifest(self.directory, self.manifest)

    def finish(self) -> None:
        """Mark the cache complete when every shard is written."""
        self.manifest.complete = all(entry.done for entry in self.manifest.shards)
        write_manifest(self.directory, self.manifest)
