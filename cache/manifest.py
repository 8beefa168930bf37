"""The manifest: which shards a cache holds, their checksums, and the skipped videos.

``manifest.json`` is rewritten atomically after every shard, so an interrupted
extraction knows what it finished; ``complete`` becomes true only when every
planned shard is written, which makes the manifest the completion marker.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from frameexit.atomic import atomic_write
from frameexit.errors import FrameExitError

from .key import with_defaults, without_defaults

MANIFEST = "manifest.json"


class CacheError(FrameExitError, ValueError):
    """A cache directory that cannot be used as it is (missing, incomplete, unreadable)."""


class CacheCorruptError(CacheError):
    """A shard whose bytes do not match the checksum in the manifest."""


@dataclass
class ShardEntry:
    """One shard of the plan: the videos it holds, and its checksum once written."""

    name: str
    videos: list[str]
    sha256: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    # how the backbone ran for this shard and how far its features are from per-step ones
    # (cache.exactness.ShardProbe as a dict); None for shards written before it was recorded
    probe: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.sha256 is not None


@dataclass
class Manifest:
    """Contents of ``manifest.json``.

    ``inputs`` holds every input of the key, those of :data:`cache.key.OPTIONAL`
    included (at their default when the file leaves them out, as it does for
    caches extracted before they existed); the file records them as the key does.
    """

    key: str
    inputs: dict[str, Any]
    format_version: int
    shard_size: int
    n_listed: int
    shards: list[ShardEntry]
    skipped: list[dict[str, str]]
    complete: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)

    def all_skipped(self) -> list[dict[str, str]]:
        """Skipped before extraction (no frames, no labels) and during it (unreadable JPEG), by video key."""
        out = list(self.skipped) + [s for entry in self.shards for s in entry.skipped]
        return sorted(out, key=lambda s: s["video"])


def manifest_path(cache_dir: str) -> str:
    return os.path.join(cache_dir, MANIFEST)


def write_manifest(cache_dir: str, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically."""
    doc = asdict(manifest)
    doc["inputs"] = without_defaults(doc["inputs"])
    text = json.dumps(doc, sort_keys=True, indent=1, allow_nan=False)
    with atomic_write(manifest_path(cache_dir), "w") as handle:
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
        doc["inputs"] = with_defaults(doc["inputs"])
        return Manifest(shards=shards, **doc)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CacheError(f"cannot read cache manifest {path}: {exc}; remove {cache_dir} to rebuild it") from None
