"""One writer per cache directory: a lock file held while ``extract`` writes there."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from frameexit.atomic import folder_lock

from .manifest import CacheError

LOCK = ".lock"


@contextlib.contextmanager
def writer_lock(cache_dir: str) -> Iterator[None]:
    """Hold ``<cache_dir>/.lock``, or raise :class:`CacheError` at once if another process holds it.

    An operating-system lock (released when its process dies, so a killed run
    leaves nothing to clean up); readers do not take it: they read complete
    shards only, checked against the manifest.
    """
    busy = f"another frameexit extract is writing {cache_dir}; wait for it to finish"
    with folder_lock(cache_dir, busy, lock_name=LOCK, error=CacheError):
        yield
