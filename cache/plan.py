"""Writing a cache directory: the plan of its shards, what is left to do, and the manifest kept up to date.

``extract`` computes features; everything about the directory it writes them to
is here: it is created under the root and named by the key, locked for one
writer, cleared of the temporary files a killed run left, planned (which videos
go to which shard) or resumed from its manifest, checked (a written shard whose
checksum does not match is planned again), and its manifest rewritten after
every shard, ``complete`` once every shard is written.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from frameexit.atomic import TMP_SUFFIX

from .key import FORMAT_VERSION, CacheKeyInputs, cache_key
from .lock import writer_lock
from .manifest import CacheError, Manifest, ShardEntry, read_manifest, write_manifest
from .reader import verify_shard

log = logging.getLogger(__name__)


def plan(
    key: str,
    inputs: CacheKeyInputs,
    videos: Sequence[str],
    *,
    shard_size: int,
    n_listed: int,
    skipped: Sequence[dict[str, str]],
) -> Manifest:
    """The manifest of a new cache: ``videos`` (sorted keys) in shards of ``shard_size``, none written yet."""
    shards = [
        ShardEntry(name=f"shard-{i // shard_size:05d}.h5", videos=list(videos[i : i + shard_size]))
        for i in range(0, len(videos), shard_size)
    ]
    return Manifest(
        key=key,
        inputs=inputs.to_json(),
        format_version=FORMAT_VERSION,
        shard_size=shard_size,
        n_listed=n_listed,
        shards=shards,
        skipped=list(skipped),
    )


def pending_shards(cache_dir: str, manifest: Manifest) -> list[int]:
    """Shards not written yet, or whose file does not match its checksum (they are planned again)."""
    pending = []
    for i, entry in enumerate(manifest.shards):
        if not entry.done:
            pending.append(i)
            continue
        try:
            verify_shard(os.path.join(cache_dir, entry.name), entry.sha256 or "")
        except CacheError as exc:
            log.warning("%s", exc)
            entry.sha256, entry.skipped = None, []
            manifest.complete = False
            pending.append(i)
    return pending


def remove_stale_temporaries(cache_dir: str) -> None:
    """Remove the temporary files a run killed between creating a shard and renaming it left behind."""
    for path in glob.glob(os.path.join(glob.escape(cache_dir), f".*{TMP_SUFFIX}")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def usable_videos(manifest: Manifest) -> int:
    """Videos with features in the cache (planned, and not skipped while extracting)."""
    failed = {s["video"] for s in manifest.all_skipped()}
    return sum(1 for entry in manifest.shards for v in entry.videos if v not in failed)


@dataclass
class CacheWriter:
    """A cache directory held by this process for writing (see :func:`open_for_writing`).

    Attributes
    ----------
    directory : str
    inputs : CacheKeyInputs
        Those of its key.
    manifest : Manifest
    pending : list of int
        Indices of the shards to compute.
    """

    directory: str
    inputs: CacheKeyInputs
    manifest: Manifest
    pending: list[int]

    @property
    def key(self) -> str:
        return self.manifest.key

    @property
    def complete(self) -> bool:
        return not self.pending and self.manifest.complete

    def shard_path(self, index: int) -> str:
        return os.path.join(self.directory, self.manifest.shards[index].name)

    def attrs(self) -> dict[str, Any]:
        """The attributes every shard of this cache carries."""
        return {"key": self.key, "inputs": self.inputs.to_json(), "format_version": FORMAT_VERSION}

    def set_provenance(self, provenance: dict[str, Any]) -> None:
        self.manifest.provenance = provenance

    def record(
        self, index: int, sha256: str, skipped: list[dict[str, str]], probe: dict[str, Any] | None = None
    ) -> None:
        """Shard ``index`` is written: its checksum, the videos it had to skip and its exactness probe
        (:mod:`cache.exactness`) go to the manifest at once."""
        entry = self.manifest.shards[index]
        entry.sha256, entry.skipped, entry.probe = sha256, skipped, probe
        write_manifest(self.directory, self.manifest)

    def finish(self) -> None:
        """Mark the cache complete when every shard is written."""
        self.manifest.complete = all(entry.done for entry in self.manifest.shards)
        write_manifest(self.directory, self.manifest)


@contextlib.contextmanager
def open_for_writing(
    root: str,
    inputs: CacheKeyInputs,
    videos: Sequence[str],
    *,
    shard_size: int,
    n_listed: int,
    skipped: Sequence[dict[str, str]],
) -> Iterator[CacheWriter]:
    """The cache directory of ``inputs`` under ``root``, locked, resumed from its manifest or planned anew.

    A resumed cache keeps the shard size it was started with. Raises
    :class:`CacheError` when another process writes there, or when its manifest
    belongs to another key.
    """
    key = cache_key(inputs)
    cache_dir = os.path.join(root, key)
    os.makedirs(cache_dir, exist_ok=True)
    with writer_lock(cache_dir):
        remove_stale_temporaries(cache_dir)
        manifest = read_manifest(cache_dir)
        if manifest is None:
            manifest = plan(key, inputs, videos, shard_size=shard_size, n_listed=n_listed, skipped=skipped)
        elif manifest.key != key:
            raise CacheError(
                f"{cache_dir}/manifest.json belongs to key {manifest.key}, not {key}; remove the directory"
            )
        pending = pending_shards(cache_dir, manifest)
        if pending and manifest.shard_size != shard_size:
            log.warning("resuming with the shard size the cache was started with (%d)", manifest.shard_size)
        yield CacheWriter(cache_dir, inputs, manifest, pending)
