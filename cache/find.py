"""A reader's way to the cache of a job: the directory its key names, or one given, checked against the job.

The reader computes the key from the job (:func:`cache.inputs.key_inputs`, the same function ``extract`` uses) and
opens ``<root>/<key>``: no manifest is scanned to decide anything, and no input is compared by a rule of its own. The
frames are not in the key, so a cache can be replayed where its frames are gone; :func:`frames_differences` compares
them with what the manifest recorded when asked to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .inputs import differences
from .key import CacheKeyInputs, cache_key
from .manifest import MANIFEST, CacheError, FeatureCache, Manifest, read_manifest

#: Extraction settings in the key, with the job key and the option that set each: named when a cache differs only
#: in them.
OPTIONS = {
    "dtype": "extract.dtype (--dtype)",
    "precision": "extract.precision (--precision)",
    "channels_last": "extract.channels_last (--channels-last)",
    "batching": "extract.batching (--batching)",
}


def open_cache(
    root: str,
    inputs: CacheKeyInputs | Sequence[CacheKeyInputs],
    *,
    features: str | None = None,
    data: Any = None,
    hint: str = "",
) -> FeatureCache:
    """The complete cache ``root/<key>`` of ``inputs``, holding at least one video to evaluate.

    Several ``inputs`` when the job accepts either of some caches (``--batching auto``: per-step, then
    batched): the first whose directory exists is opened. ``features``: a cache directory to use instead,
    every input its manifest records equal to the job's (a hand-made one that records fewer is compared on
    those). ``data``: the job's settings, to name its files in messages; ``hint`` ends the "no cache" one.
    Raises :class:`CacheError`: no such cache (naming caches of this job with other options, or the nearest
    ones and how they differ), an incomplete one, one for other inputs, or one without a video to evaluate.
    """
    choices = [inputs] if isinstance(inputs, CacheKeyInputs) else list(inputs)
    if features:
        cache = FeatureCache.open(features)
        recorded = cache.manifest.inputs
        wanted = next((c for c in choices if c.batching == recorded.get("batching")), choices[0]).to_json()
        found = differences(recorded, wanted, [n for n in wanted if n in recorded], data)
        if found:
            raise CacheError(
                f"the feature cache {cache.directory} was extracted for other inputs than this job: "
                f"{'; '.join(found)}. Give this job's cache, or run frameexit extract with this job and options"
            )
    else:
        keys = [cache_key(c) for c in choices]
        key = next((k for k in keys if os.path.isfile(os.path.join(root, k, MANIFEST))), None)
        if key is None:
            raise CacheError(_no_cache(root, keys[0], choices[0].to_json(), data, hint))
        directory = os.path.join(root, key)
        cache = FeatureCache.open(directory)
        if cache.manifest.key != key:
            raise CacheError(f"{directory}/{MANIFEST} belongs to key {cache.manifest.key}, not {key}")
    cache.require_features()
    return cache


def frames_differences(manifest: Manifest, videos: Sequence[str], now: Mapping[str, str | None]) -> list[str]:
    """How the split's frames now differ from those a cache was extracted from, in words (empty: the same).
    ``videos``: the split's videos that have frames now; ``now``: their frame records."""
    out = []
    planned = set(manifest.planned())
    gained, lost = sorted(set(videos) - planned), sorted(planned - set(videos))
    if gained:
        out.append(f"{_count(gained)} {_has(gained)} frames now and had none: {_first(gained)}")
    if lost:
        out.append(f"{_count(lost)} had frames and {_has(lost)} none now: {_first(lost)}")
    recorded = manifest.recorded_frames()
    changed = sorted(v for v in videos if v in recorded and recorded[v] is not None and now.get(v) != recorded[v])
    if changed:
        out.append(f"the frames of {_count(changed)} are not those the features were computed from: {_first(changed)}")
    readable = sorted(v for v in videos if v in recorded and recorded[v] is None and now.get(v) is not None)
    if readable:
        out.append(f"{_count(readable)} could not be read when extracted and can be now: {_first(readable)}")
    return out


def _count(videos: Sequence[str]) -> str:
    return f"{len(videos)} video{'s' if len(videos) != 1 else ''}"


def _has(videos: Sequence[str]) -> str:
    return "has" if len(videos) == 1 else "have"


def _first(videos: Sequence[str], n: int = 5) -> str:
    return ", ".join(videos[:n]) + (f" and {len(videos) - n} more" if len(videos) > n else "")


def _no_cache(root: str, key: str, wanted: dict[str, Any], data: Any, hint: str) -> str:
    """The "no cache" message; the manifests under the root are read for it only, to name what differs."""
    plain = f"no feature cache for this job under {root} (key {key}){hint}"
    try:
        directories = sorted(e.path for e in os.scandir(root) if e.is_dir())
    except OSError:
        return f"{plain}; run frameexit extract with the same job and checkpoint first"
    near = []
    for directory in directories:
        try:
            manifest = read_manifest(directory)
        except CacheError:
            continue
        recorded = manifest.inputs if manifest else {}
        if manifest and all(recorded.get(n) == wanted[n] for n in ("dataset", "split_digest")):
            names = [n for n in wanted if recorded.get(n) != wanted[n]]
            near.append((directory, names, differences(recorded, wanted, names, data)))
    options = [(d, found) for d, names, found in near if names and set(names) <= set(OPTIONS)]
    if options:
        shown = "; ".join(f"{d}: {', '.join(found)}" for d, found in options[:3])
        return (
            f"{plain}; a cache of this job extracted with other settings is there ({shown}): give replay the "
            f"settings it was extracted with ({', '.join(OPTIONS.values())}), or extract with these"
        )
    if near:
        shown = " | ".join(f"{d}: {'; '.join(found)}" for d, _, found in near[:5])
        return (
            f"{plain}; the caches for this split were extracted with other inputs: {shown}. Run frameexit "
            "extract with this job and options, or replay with the options those were extracted with"
        )
    return f"{plain}; run frameexit extract with the same job and checkpoint first"
