"""Writing a cache directory: the plan of its shards, what is left to do, and the manifest kept up to date.

``extract`` computes features; everything about the directory it writes them to is here: it is created under the root
and named by the key, locked for one writer, cleared of the temporary files a killed run left, planned (which videos
go to which shard) or resumed from its manifest, and checked. A written shard is planned again when its file does not
match its checksum, when the frames of one of its videos are not those its features were computed from (another
listing or other bytes), or when one of its videos could not be read and now can (a file that was being copied, a
network mount that failed). A split whose frame folders changed (videos gained or lost their frames) is planned anew,
keeping the shards that hold the same videos. The manifest is rewritten after every shard, ``complete`` once every
shard is written.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from frameexit.atomic import TMP_SUFFIX, folder_lock

from .exit_tables import remove_all_tables
from .key import FORMAT_VERSION, CacheKeyInputs, cache_key
from .manifest import CacheError, FeatureCache, Manifest, ShardEntry, read_manifest

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


#: The frame records of some videos as they are now on disk (:func:`cache.inputs.video_frames_digest`, ``None``
#: where a file cannot be read), computed by the caller, which reads the frames.
FrameCheck = Callable[[Sequence[str]], Mapping[str, "str | None"]]


@dataclass
class Checked:
    """What checking a cache's written shards against their files and frames found."""

    pending: list[int] = field(default_factory=list)  # shards to compute: never written, corrupt, other frames
    changed: list[str] = field(default_factory=list)  # videos whose frames are not those their features came from
    retried: list[str] = field(default_factory=list)  # videos that could not be read when extracted and can be now
    replanned: bool = False  # the split's frame folders changed since the cache was planned: it was planned anew


def pending_shards(cache: FeatureCache, check_frames: FrameCheck | None = None) -> Checked:
    """Shards to (re)compute (see the module docstring); those planned again are reset in its manifest.

    Without ``check_frames`` the frames are trusted: a shard is planned again only when missing or corrupt.
    """
    checked, manifest = Checked(), cache.manifest
    written = [i for i, entry in enumerate(manifest.shards) if entry.done]
    now = check_frames([v for i in written for v in manifest.shards[i].videos]) if check_frames else None
    for i, entry in enumerate(manifest.shards):
        stale = not entry.done
        if entry.done:
            try:
                cache.verify(i)
            except CacheError as exc:
                log.warning("%s", exc)
                stale = True
        if entry.done and now is not None:
            for video in entry.videos:
                recorded = entry.frames.get(video)
                if now.get(video) == recorded:
                    continue
                stale = True
                (checked.retried if recorded is None else checked.changed).append(video)
        if stale:
            if entry.done:
                entry.sha256, entry.skipped, entry.frames, entry.probe = None, [], {}, None
                manifest.complete = False
            checked.pending.append(i)
    return checked


def shard_attrs(inputs: CacheKeyInputs) -> dict[str, Any]:
    """The attributes every shard of the cache of ``inputs`` carries."""
    return {"key": cache_key(inputs), "inputs": inputs.to_json(), "format_version": FORMAT_VERSION}


@contextlib.contextmanager
def open_for_writing(
    root: str,
    inputs: CacheKeyInputs,
    videos: Sequence[str],
    *,
    shard_size: int,
    n_listed: int,
    skipped: Sequence[dict[str, str]],
    check_frames: FrameCheck | None = None,
) -> Iterator[tuple[FeatureCache, Checked]]:
    """The cache directory of ``inputs`` under ``root``, locked, resumed from its manifest or planned anew, and
    what is left to do in it (:class:`Checked`).

    ``videos`` are the split's videos that have frames now, ``skipped`` those that have none (with the
    reason). A resumed cache keeps the shard size it was started with. Raises :class:`CacheError` when
    another process writes there, or when its manifest belongs to another key.
    """
    key = cache_key(inputs)
    cache_dir = os.path.join(root, key)
    os.makedirs(cache_dir, exist_ok=True)
    # one writer: an operating-system lock, released when its process dies (a killed run leaves nothing to clean
    # up); readers do not take it: they read complete shards only, checked against the manifest
    busy = f"another frameexit extract is writing {cache_dir}; wait for it to finish"
    with folder_lock(cache_dir, busy, lock_name=".lock", error=CacheError):
        # the temporary files a run killed between creating a shard and renaming it left behind
        for path in glob.glob(os.path.join(glob.escape(cache_dir), f".*{TMP_SUFFIX}")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        old = read_manifest(cache_dir)
        if old is not None and old.key != key:
            raise CacheError(f"{cache_dir}/manifest.json belongs to key {old.key}, not {key}; remove the directory")
        replanned = old is not None and old.planned() != list(videos)
        manifest = old
        if old is None or replanned:  # a resumed cache that still holds the split's videos keeps its plan
            size = shard_size if old is None else old.shard_size
            manifest = plan(key, inputs, videos, shard_size=size, n_listed=n_listed, skipped=skipped)
        if replanned:
            log.warning("the frame folders of the split changed since %s was planned: planning it anew", cache_dir)
            # keep the written shards that hold exactly the same videos under the same name
            done = {(e.name, tuple(e.videos)): e for e in old.shards if e.done}
            manifest.shards = [done.get((e.name, tuple(e.videos)), e) for e in manifest.shards]
            manifest.provenance = old.provenance
        cache = FeatureCache(cache_dir, manifest)
        checked = pending_shards(cache, check_frames)
        checked.replanned = replanned
        if checked.pending:  # features about to change: every exit table stored from them is stale
            remove_all_tables(cache_dir)
        if checked.pending and manifest.shard_size != shard_size:
            log.warning("resuming with the shard size the cache was started with (%d)", manifest.shard_size)
        yield cache, checked
