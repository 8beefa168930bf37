"""Reading a feature cache: shards are verified against the manifest before use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from .manifest import CacheCorruptError, CacheError, Manifest, read_manifest
from .shard import Shard, file_sha256, read_shard


class ShardMissingError(CacheCorruptError):
    """A shard the manifest lists is not there (for the process that reads it: a dask worker may see another
    folder at the cache's path)."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"shard {path} is listed in the manifest but missing; run extract again to rebuild it")

    def __reduce__(self):
        # raised on a dask worker, pickled back to the client: rebuilt from its path, not from its message
        return (type(self), (self.path,))


def verify_shard(path: str, expected: str) -> None:
    """Raise :class:`CacheCorruptError` naming the shard and both checksums unless they match
    (:class:`ShardMissingError` when there is no file)."""
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
    """A complete cache directory: its manifest and verified access to its shards."""

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

    def read(self, index: int) -> Shard:
        """Shard ``index``, after checking its checksum."""
        entry = self.manifest.shards[index]
        path = os.path.join(self.directory, entry.name)
        verify_shard(path, entry.sha256 or "")
        return read_shard(path)

    def iter_shards(self) -> Iterator[Shard]:
        for index in range(len(self.manifest.shards)):
            yield self.read(index)
