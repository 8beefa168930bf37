"""Finding an existing cache under a cache root by the inputs its manifest records, without the frames.

The directory name is the key of *every* input, and two of them are expensive:
the frames digest needs a listing of every frame folder of the split (minutes
on network storage at ActivityNet scale; impossible where only the cache was
copied) and the backbone digest needs the checkpoint read and hashed. A reader
does not compute the key: it reads the ``manifest.json`` of every directory
under the root (a few milliseconds each) and keeps those whose recorded inputs
equal the job's cheap ones (:func:`cache.inputs.cheap_inputs`: backbone name,
preprocessing, sampling, dtype, precision, dataset name and the digests of the
split, label and class-list files).

Then, in this order:

1. An expensive input is computed only when the remaining caches disagree on it,
   and only those that equal it are kept (``resolve``). When it cannot be
   computed (no frames here) the caches that differ in it are refused, named,
   with the advice to pass one with ``--features``. When they all agree on it,
   it is not computed: the backbone digest is then checked by the reader per
   checkpoint (with its own message), and the frame listing is trusted: a
   replay reads the features that were extracted for the split, labels and
   classes it evaluates.
2. A *loose* input (``channels_last``: the memory format changes which
   convolution algorithm runs, not what the features are) is not required to
   match: it only breaks a tie, preferring the cache with the value asked for.
   So a cache extracted with ``--channels-last`` is found by a replay, which has
   no such option.
3. Caches with equal inputs (copies of one directory) resolve to the one whose
   directory name is its key, then to the first by path.

A cache that matches but is incomplete is named (``extract`` resumes it); no
cache at all gives the differences of the nearest ones (same dataset and
split), input by input.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .inputs import INPUT_NAMES, differences
from .manifest import MANIFEST, CacheError, Manifest, read_manifest
from .reader import FeatureCache

log = logging.getLogger(__name__)

#: Inputs that only break ties (see the module docstring).
LOOSE = ("channels_last",)
#: What makes a cache one "for this split" in the messages: the nearest caches to name.
SAME_SPLIT = ("dataset", "split_digest")


@dataclass(frozen=True)
class Found:
    """A cache directory under the root and its manifest."""

    directory: str
    manifest: Manifest

    @property
    def inputs(self) -> dict[str, Any]:
        return self.manifest.inputs

    def describe(self) -> str:
        provenance = self.manifest.provenance
        where = provenance.get("frames_root")
        when = provenance.get("date")
        extra = ", ".join(x for x in (f"frames {where}" if where else "", f"extracted {when}" if when else "") if x)
        return f"{self.directory} ({extra})" if extra else self.directory


def scan(root: str) -> list[Found]:
    """Every directory directly under ``root`` with a readable manifest, sorted by path.

    A manifest that cannot be read is logged and left out (it is another cache's
    problem; ``extract`` names it when it writes there).
    """
    try:
        entries = sorted(e.path for e in os.scandir(root) if e.is_dir())
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise CacheError(f"the cache root {root} is not a directory") from None
    found = []
    for directory in entries:
        if not os.path.isfile(os.path.join(directory, MANIFEST)):
            continue
        try:
            manifest = read_manifest(directory)
        except CacheError as exc:
            log.warning("%s", exc)
            continue
        if manifest is not None:
            found.append(Found(directory, manifest))
    return found


def locate(
    root: str,
    wanted: Mapping[str, Any],
    *,
    resolve: Mapping[str, Callable[[], str | None]] | None = None,
    loose: Sequence[str] = LOOSE,
    data: Any = None,
    hint: str = "",
) -> FeatureCache:
    """The complete cache under ``root`` whose recorded inputs equal ``wanted`` (see the module docstring).

    Parameters
    ----------
    root : str
        The cache root.
    wanted : mapping
        The job's inputs, as a manifest records them, that are compared as they are
        (:func:`cache.inputs.cheap_inputs`).
    resolve : mapping of str to callable
        Expensive inputs by name: a function computing the job's value, or giving
        ``None`` when it cannot (no frames here). Called at most once, and only
        when the caches left disagree on that input.
    loose : sequence of str
        Inputs of ``wanted`` that only break ties.
    data : object, optional
        The job's ``data`` settings, to name its files in messages.
    hint : str
        Appended to the "no cache" message (which checkpoint, which command).

    Raises
    ------
    CacheError
        No cache matches (naming the nearest ones and how they differ), several
        match and nothing decides (naming them), or the one that matches is
        incomplete.
    """
    resolve = dict(resolve or {})
    caches = scan(root)
    strict = [name for name in wanted if name not in loose]
    candidates = [c for c in caches if all(c.inputs.get(n) == wanted[n] for n in strict)]
    if not candidates:
        raise CacheError(_no_match(root, caches, wanted, strict, data, hint))
    computed: dict[str, Any] = {}
    for name, compute in resolve.items():
        values = {c.inputs.get(name) for c in candidates}
        if len(values) < 2:
            continue
        value = compute()
        if value is None:
            listed = "; ".join(c.describe() for c in candidates)
            raise CacheError(
                f"several feature caches under {root} match this job but differ in their "
                f"{_name(name)}, which cannot be computed here to tell which is this job's: {listed}. "
                "Give the one to use with --features DIR, or remove the stale ones"
            )
        computed[name] = value
        kept = [c for c in candidates if c.inputs.get(name) == value]
        if not kept:
            raise CacheError(_no_match(root, candidates, {**wanted, **computed}, [*strict, name], data, hint))
        log.info("several caches under %s match this job: chose by the %s", root, _name(name))
        candidates = kept
    for name in loose:
        if name in wanted and len({c.inputs.get(name) for c in candidates}) > 1:
            candidates = [c for c in candidates if c.inputs.get(name) == wanted[name]] or candidates
    if len(candidates) > 1:
        candidates.sort(key=lambda c: (os.path.basename(c.directory) != c.manifest.key, c.directory))
        log.info(
            "%d caches under %s hold the same inputs; using %s",
            len(candidates),
            root,
            candidates[0].directory,
        )
    return FeatureCache.open(candidates[0].directory)


def _name(name: str) -> str:
    return INPUT_NAMES.get(name, name)


def _no_match(
    root: str, caches: list[Found], wanted: Mapping[str, Any], compared: Sequence[str], data: Any, hint: str
) -> str:
    near = [c for c in caches if all(c.inputs.get(n) == wanted.get(n) for n in SAME_SPLIT if n in wanted)]
    if not near:
        return f"no feature cache for this job under {root}{hint}; run frameexit extract with the same job and checkpoint first"
    shown = [f"{c.describe()}: {'; '.join(differences(c.inputs, dict(wanted), compared, data))}" for c in near[:5]]
    more = f"; and {len(near) - 5} more" if len(near) > 5 else ""
    return (
        f"no feature cache under {root} matches this job; the caches for this split were extracted with other "
        f"inputs: {' | '.join(shown)}{more}. Run frameexit extract with this job and options, or replay with the "
        "options those were extracted with"
    )
