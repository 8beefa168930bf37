"""Exit tables kept with the features: a checkpoint's head pass over a cache, stored so that a later replay of the
same checkpoint reads it instead of running the head (and without importing torch).

Layout, inside the feature cache directory (readable with plain h5py and json)::

    exit-tables/<key>/tables.json       the manifest: key, inputs, per feature shard its table's SHA-256, complete
    exit-tables/<key>/table-NNNNN.h5    the exit tables of feature shard NNNNN:
        probs   (n_videos, n_steps, num_class) float32   softmax of every step's classifier
        gates   (n_videos, n_steps - 1) float32          s_t of steps 1..T-1
        videos  (n_videos,) UTF-8 strings                keys, as in the feature shard
        labels  (n_videos, num_class) uint8              multi-hot ground truth
        attrs: key, format_version, deviation (JSON: the head's deviation on the shard's probe)
    exit-tables/resampled/<digest>.json  a setting's bootstrap resamples (mAP and top-1), by the digest of what
                                         they are computed from (:func:`resampled_digest`)

``<key>`` digests everything the tables depend on (:class:`TablesInputs`): the features (the cache key and every
shard's SHA-256, so re-extracted features get new tables), the checkpoint file's SHA-256, the policy order, the
head's precision, the version of torch whose kernels ran it and the source of frameexit's modules that did. Files
are written like shards: built in memory, written under a temporary name, fsynced and renamed; the manifest is
written last, ``complete`` once every table is there, and a table is read only after its bytes match the SHA-256
the manifest records (:class:`TablesCorruptError` otherwise: a replay refuses it and computes the tables again).
Removing ``exit-tables/`` is always safe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from frameexit.atomic import atomic_path, atomic_write, folder_lock
from frameexit.errors import reporting_disk_full
from frameexit.exactness import HeadDeviation
from frameexit.sweep import ExitTables

from .manifest import CacheCorruptError, CacheError
from .shard import file_sha256

TABLES_DIR = "exit-tables"
RESAMPLED_DIR = "resampled"
TABLES_MANIFEST = "tables.json"
#: Bumped whenever a table file's content or the key's inputs change: older tables are then not found.
TABLES_FORMAT = 1
KEY_LENGTH = 20


class TablesCorruptError(CacheCorruptError):
    """A stored table whose bytes do not match its manifest (or that is missing): refused, never read."""

    def __init__(self, path: str, why: str):
        self.path, self.why = path, why
        super().__init__(f"stored exit table {path} {why}")

    def __reduce__(self):
        # raised on a dask worker, pickled back to the client: rebuilt from its fields, not from its message
        return (type(self), (self.path, self.why))


class TablesBusyError(CacheError):
    """Another replay is writing the same stored tables."""


@dataclass(frozen=True)
class TablesInputs:
    """Everything a checkpoint's exit tables over a cache depend on."""

    cache_key: str  # the features' key (cache.key)
    shards: tuple[str, ...]  # SHA-256 of every feature shard, in shard order: the features themselves
    checkpoint: str  # SHA-256 of the checkpoint file
    order: tuple[int, ...]  # policy order: step t reads sampled frame order[t]
    precision: str  # the head's arithmetic (frameexit.head.HEAD_DTYPE)
    torch: str  # torch's version: its kernels compute the head
    device: str  # where the head ran: "cpu", or "cuda (<GPU name>)" (other kernels, other last bits)
    code: str  # SHA-256 of the source of the modules that compute them (a change of frameexit's head pass)
    format_version: int = TABLES_FORMAT

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True))

    @property
    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def tables_dir(cache_dir: str, inputs: TablesInputs) -> str:
    """The folder of the tables of ``inputs`` in ``cache_dir``."""
    return os.path.join(cache_dir, TABLES_DIR, inputs.key)


def table_name(shard: int) -> str:
    return f"table-{shard:05d}.h5"


@dataclass
class TablesManifest:
    """Contents of ``tables.json``. ``files``: per feature shard, its table's SHA-256 (``None``: not written);
    ``head``: what a replay of these tables needs of the checkpoint and the job besides them (measured costs)."""

    key: str
    inputs: dict[str, Any]
    files: list[str | None]
    complete: bool = False
    head: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def read_tables_manifest(directory: str) -> TablesManifest | None:
    """The manifest of a tables folder; ``None`` when there is none or it cannot be used (a replay then computes the
    tables again and writes a new one)."""
    path = os.path.join(directory, TABLES_MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = TablesManifest(**json.load(handle))
    except (OSError, ValueError, TypeError, RecursionError):
        return None
    if not isinstance(manifest.files, list) or not all(f is None or isinstance(f, str) for f in manifest.files):
        return None
    return manifest


def write_tables_manifest(directory: str, manifest: TablesManifest) -> None:
    path = os.path.join(directory, TABLES_MANIFEST)
    text = json.dumps(dataclasses.asdict(manifest), sort_keys=True, indent=1, allow_nan=False)
    with reporting_disk_full(path), atomic_write(path, "w") as handle:
        handle.write(text + "\n")


@dataclass(frozen=True)
class StoredTables:
    """The complete stored tables of one checkpoint over one cache: ``(path, sha256)`` per feature shard."""

    directory: str
    files: tuple[tuple[str, str], ...]
    head: dict[str, Any]


def find_tables(cache_dir: str, inputs: TablesInputs) -> StoredTables | None:
    """The stored tables of ``inputs`` if a complete set is there, else ``None`` (nothing is read but the manifest)."""
    directory = tables_dir(cache_dir, inputs)
    manifest = read_tables_manifest(directory)
    usable = (
        manifest is not None
        and manifest.complete
        and manifest.key == inputs.key
        and manifest.inputs == inputs.to_json()
        and len(manifest.files) == len(inputs.shards)
        and all(manifest.files)
    )
    if not usable:
        return None
    files = tuple((os.path.join(directory, table_name(s)), str(sha)) for s, sha in enumerate(manifest.files))
    return StoredTables(directory, files, dict(manifest.head))


def discard_tables(directory: str) -> None:
    """Forget a stored set (its manifest first: a reader never finds half of one)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, TABLES_MANIFEST))
    shutil.rmtree(directory, ignore_errors=True)


def remove_all_tables(cache_dir: str) -> None:
    """Remove every stored table of a cache (its features are about to change)."""
    shutil.rmtree(os.path.join(cache_dir, TABLES_DIR), ignore_errors=True)


def write_table(path: str, tables: ExitTables, key: str) -> str:
    """Write one shard's exit tables atomically; returns the SHA-256 of the file written."""
    with h5py.File(path, "w", libver=("earliest", "v110"), driver="core", backing_store=False) as f:
        f.create_dataset("probs", data=tables.probs, track_times=False)
        f.create_dataset("gates", data=tables.gates, track_times=False)
        videos = np.asarray(list(tables.videos), dtype=object)
        f.create_dataset("videos", data=videos, dtype=h5py.string_dtype(), track_times=False)
        f.create_dataset("labels", data=tables.labels.astype(np.uint8), track_times=False)
        f.attrs["key"] = key
        f.attrs["format_version"] = TABLES_FORMAT
        f.attrs["deviation"] = json.dumps(_deviation_json(tables.deviation), sort_keys=True)
        f.flush()
        image = f.id.get_file_image()
    with reporting_disk_full(path), atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(image)
    return hashlib.sha256(image).hexdigest()


def read_table(path: str, sha256: str) -> ExitTables:
    """One stored table, after its bytes match ``sha256``; :class:`TablesCorruptError` otherwise."""
    if not os.path.exists(path):
        raise TablesCorruptError(path, "is missing")
    actual = file_sha256(path)
    if actual != sha256:
        raise TablesCorruptError(
            path, f"is corrupt: its SHA-256 is {actual[:12]}..., the manifest says {sha256[:12]}..."
        )
    with h5py.File(path, "r") as f:
        return ExitTables(
            videos=[v.decode() if isinstance(v, bytes) else str(v) for v in f["videos"][()]],
            labels=f["labels"][()].astype(bool),
            probs=f["probs"][()],
            gates=f["gates"][()],
            deviation=_deviation(json.loads(f.attrs["deviation"])),
        )


def _deviation_json(deviation: HeadDeviation | None) -> dict[str, Any] | None:
    return None if deviation is None else {**dataclasses.asdict(deviation), "videos": list(deviation.videos)}


def _deviation(doc: Mapping[str, Any] | None) -> HeadDeviation | None:
    return None if doc is None else HeadDeviation(**{**doc, "videos": tuple(doc["videos"])})


@dataclass(frozen=True)
class TablesWriter:
    """Where a replay stores the tables it computes for one checkpoint (see :func:`storing_tables`)."""

    directory: str
    inputs: TablesInputs
    head: dict[str, Any]

    @property
    def paths(self) -> list[str]:
        """The path of each feature shard's table."""
        return [os.path.join(self.directory, table_name(s)) for s in range(len(self.inputs.shards))]

    def finish(self, digests: Sequence[str | None], provenance: Mapping[str, Any]) -> None:
        """Record every table's SHA-256; the set is complete when none is missing."""
        manifest = TablesManifest(
            key=self.inputs.key,
            inputs=self.inputs.to_json(),
            files=list(digests),
            complete=len(digests) == len(self.inputs.shards) and all(digests),
            head=self.head,
            provenance=dict(provenance),
        )
        write_tables_manifest(self.directory, manifest)


@contextlib.contextmanager
def storing_tables(cache_dir: str, inputs: TablesInputs, head: Mapping[str, Any]) -> Iterator[TablesWriter]:
    """The writer of the tables of ``inputs`` in ``cache_dir``, its folder locked and any earlier set there forgotten
    (its manifest removed first: a reader never finds a half-rewritten set). ``head``: what the manifest records
    besides the tables. Raises :class:`TablesBusyError` when another replay stores the same tables, ``OSError``
    when the folder cannot be written."""
    directory = tables_dir(cache_dir, inputs)
    os.makedirs(directory, exist_ok=True)
    busy = f"another frameexit replay is storing the exit tables {directory}"
    with folder_lock(directory, busy, lock_name=".lock", error=TablesBusyError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, TABLES_MANIFEST))
        yield TablesWriter(directory, inputs, dict(head))


def resampled_dir(cache_dir: str) -> str:
    """The folder of the bootstrap resamples kept beside a cache's exit tables."""
    return os.path.join(cache_dir, TABLES_DIR, RESAMPLED_DIR)


def resampled_digest(scores: np.ndarray, labels: np.ndarray, resamples: int, seed: int, code: str) -> str:
    """SHA-256 of everything a setting's bootstrap resamples depend on: every video's class probabilities at its
    exit (``scores``, rows in key order), the labels, the resamples and their seed, and ``code`` (the digest of the
    bootstrap's source)."""
    scores = np.ascontiguousarray(scores)
    head = {"resamples": resamples, "seed": seed, "code": code, "shape": list(scores.shape), "dtype": str(scores.dtype)}
    digest = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    digest.update(scores.tobytes())
    digest.update(np.packbits(np.asarray(labels, dtype=bool), axis=None).tobytes())
    return digest.hexdigest()


def read_resampled(directory: str, digest: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The resampled mAP and top-1 kept under ``digest`` (float64 arrays), or None: none kept, or a file whose own
    checksum does not match its values (never read)."""
    try:
        with open(os.path.join(directory, f"{digest}.json"), encoding="utf-8") as handle:
            doc = json.load(handle)
        values = {"map": doc["map"], "top1": doc["top1"]}
        if doc["digest"] != digest or doc["sha256"] != _values_sha256(values):
            return None
        return np.asarray(values["map"], dtype=np.float64), np.asarray(values["top1"], dtype=np.float64)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_resampled(directory: str, digest: str, maps: np.ndarray, top1: np.ndarray) -> None:
    """Keep a setting's resampled mAP and top-1 under ``digest``, atomically; where it cannot be written, nothing
    is kept (the next replay computes them again)."""
    values = {"map": [float(v) for v in maps], "top1": [float(v) for v in top1]}
    doc = {"digest": digest, **values, "sha256": _values_sha256(values)}
    with contextlib.suppress(OSError):
        os.makedirs(directory, exist_ok=True)
        with atomic_write(os.path.join(directory, f"{digest}.json"), "w") as handle:
            json.dump(doc, handle, allow_nan=True)


def _values_sha256(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, allow_nan=True).encode()).hexdigest()
