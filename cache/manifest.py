"""The manifest: which shards a cache holds, their checksums, and the skipped videos.

``manifest.json`` is rewritten atomically after every shard, so an interrupted
extraction knows what it finished; ``complete`` becomes true only when every
planned shard is written, which makes the manifest the completion marker.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from frameexit.atomic import atomic_write
from frameexit.errors import FrameExitError, reporting_disk_full

MANIFEST = "manifest.json"
#: The names shards get (:func:`cache.plan.plan`): a manifest naming anything else (a path) is refused, so that
#: nothing a manifest says can make a writer or a reader touch a file outside the cache directory.
SHARD_NAME = re.compile(r"shard-[0-9]{5,}\.h5")


class CacheError(FrameExitError, ValueError):
    """A cache directory that cannot be used as it is (missing, incomplete, unreadable)."""


class CacheCorruptError(CacheError):
    """A shard whose bytes do not match the checksum in the manifest."""


@dataclass
class ShardEntry:
    """One shard of the plan: the videos it holds, and once written its checksum and what it was made from.

    ``frames`` maps each of its videos to the record of the frames its
    features were computed from (:func:`cache.inputs.video_frames_digest`), or
    to ``None`` where a file could not be read (a reason that can pass: the
    video is tried again by the next extraction). ``skipped`` lists its videos
    that could not be used, with the reason.
    """

    name: str
    videos: list[str]
    sha256: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
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


def manifest_path(cache_dir: str) -> str:
    return os.path.join(cache_dir, MANIFEST)


def write_manifest(cache_dir: str, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (a full disk: :class:`~frameexit.errors.DiskFullError` naming it)."""
    doc = asdict(manifest)
    text = json.dumps(doc, sort_keys=True, indent=1, allow_nan=False)
    path = manifest_path(cache_dir)
    with reporting_disk_full(path), atomic_write(path, "w") as handle:
        handle.write(text + "\n")


def read_manifest(cache_dir: str) -> Manifest | None:
    """The manifest of ``cache_dir``, or ``None`` if there is none yet."""
    path = manifest_path(cache_dir)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
        shards = [ShardEntry(**entry) for entry in doc.pop("shards")]
        manifest = Manifest(shards=shards, **doc)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CacheError(f"cannot read cache manifest {path}: {exc}; remove {cache_dir} to rebuild it") from None
    except RecursionError:  # json's parser recurses once per level
        raise CacheError(
            f"cannot read cache manifest {path}: nested too deeply; remove {cache_dir} to rebuild it"
        ) from None
    for entry in manifest.shards:
        if not isinstance(entry.name, str) or not SHARD_NAME.fullmatch(entry.name):
            raise CacheError(
                f"cache manifest {path} lists the shard name {entry.name!r}, not a shard of this directory "
                f"(shard-NNNNN.h5); it is not used: remove {cache_dir} to rebuild it"
            )
    return manifest
