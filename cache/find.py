"""A reader's way to the cache of a job: a directory given as it is, checked, or one found under the root.

Neither way lists the frame folders nor computes the key (see :mod:`cache.locate`
for the rules of finding one): the inputs the manifests record are compared with
the job's cheap ones (:func:`cache.inputs.cheap_inputs`). The job is read through
the plain ``data`` and ``model`` objects of :mod:`cache.inputs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .exactness import PER_STEP
from .inputs import cheap_inputs, check_job_files, differences
from .key import OPTIONAL
from .locate import LOOSE, locate
from .manifest import CacheError
from .plan import usable_videos
from .reader import FeatureCache

#: Recorded inputs a cache given as it is (``--features``) is not compared on: the backbone digest is compared
#: per checkpoint by the reader (with its own message), the frame listing is what giving a cache skips, and the
#: storage options (and the backbone's batching, which replay reports from the cache) do not make the features
#: belong to another dataset.
NOT_COMPARED = ("backbone_digest", "frames_digest", "dtype", "precision", "channels_last", "batching")


def find_cache(
    root: str,
    data: Any,
    model: Any,
    *,
    features: str | None = None,
    dtype: str = "float32",
    precision: str = "fp32",
    channels_last: bool = False,
    batching: str = "auto",
    resolve: Mapping[str, Callable[[], str | None]] | None = None,
    verify: Mapping[str, Any] | None = None,
    hint: str = "",
) -> FeatureCache:
    """The complete cache of the job's features, holding at least one video to evaluate.

    Parameters
    ----------
    root : str
        The cache root searched when ``features`` is not given.
    data, model
        The job's settings (see :mod:`cache.inputs`).
    features : str, optional
        A cache directory to use as it is; its recorded inputs are compared with
        the job's (:func:`check_recorded_inputs`).
    dtype, precision, channels_last, batching
        The extraction settings asked for (``channels_last`` only breaks ties; so does ``batching`` when
        ``auto``: either mode, per-step preferred, its features being sequential inference's).
    resolve : mapping of str to callable, optional
        The expensive inputs (``backbone_digest``, ``frames_digest``), computed only
        when two matching caches differ in them (:func:`cache.locate.locate`).
    verify : mapping of str to value, optional
        Expensive inputs the caller computed and wants compared whatever happens
        (``frames_digest`` when asked to verify the frames): a cache recording
        another value is refused, naming the input.
    hint : str
        Appended to the "no cache" message.

    Raises
    ------
    CacheError
        No such cache, one extracted for other inputs (each named), or one
        without any video to evaluate.
    """
    loose = (*LOOSE, "batching") if batching == "auto" else LOOSE
    batching = PER_STEP if batching == "auto" else batching
    settings = dict(dtype=dtype, precision=precision, channels_last=channels_last, batching=batching)
    verify = dict(verify or {})
    if features:
        cache = FeatureCache.open(features)
        check_recorded_inputs(cache, data, model, **settings)
    else:
        check_job_files(data)
        wanted = {**cheap_inputs(data, model, **settings), **verify}
        cache = locate(root, wanted, resolve=resolve, loose=loose, data=data, hint=hint)
    found = differences(cache.manifest.inputs, verify, list(verify), data)
    if found:
        raise CacheError(
            f"the feature cache {cache.directory} was extracted from other inputs than this job's: "
            f"{'; '.join(found)}. Run frameexit extract (or run) to extract them again"
        )
    require_features(cache)
    return cache


def check_recorded_inputs(cache: FeatureCache, data: Any, model: Any, **settings: Any) -> None:
    """Raise :class:`CacheError` when a cache was extracted for another dataset or preprocessing than the job.

    The inputs the manifest records are compared with the job's cheap ones:
    the dataset name, the digests of the split, label and class-list files, and
    the backbone, preprocessing and sampling. Inputs a manifest does not record
    (hand-made caches) are not compared, nor those in :data:`NOT_COMPARED`.
    ``settings`` are the ``dtype``, ``precision``, ``channels_last`` and ``batching`` of
    :func:`cache.inputs.cheap_inputs`.
    """
    recorded = cache.manifest.inputs
    compared = [k for k in recorded if k not in NOT_COMPARED]
    if all(k in OPTIONAL for k in compared):  # those are read at their defaults when a manifest leaves them out
        return
    check_job_files(data)
    found = differences(recorded, cheap_inputs(data, model, **settings), compared, data)
    if found:
        raise CacheError(
            f"the feature cache {cache.directory} was extracted for other inputs than this job: "
            f"{'; '.join(found)}. Give the cache of this job's dataset, or run frameexit extract with this job"
        )


def require_features(cache: FeatureCache) -> int:
    """Videos with features in the cache; raises :class:`CacheError` naming the cache when there are none."""
    n_videos = usable_videos(cache.manifest)
    if n_videos == 0:
        skipped = cache.manifest.all_skipped()
        reasons = "; ".join(f"{s['video']}: {s['reason']}" for s in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise CacheError(
            f"the feature cache {cache.directory} holds no video to evaluate: {cache.manifest.n_listed} listed in the "
            f"split, {len(skipped)} skipped ({reasons or 'none'}{more}); fix the dataset (frameexit prepare check "
            "lists what is missing) and run frameexit extract again"
        )
    return n_videos
