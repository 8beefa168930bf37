"""Where the dask tasks of a stage run: dask's local schedulers, a local cluster, a remote one, or one per GPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from frameexit.errors import ConfigError, FrameExitError

#: dask's local schedulers, run in this process: no client.
LOCAL_SCHEDULERS = ("threads", "sync")
#: Seconds to wait for a remote scheduler before giving up with an error naming it.
CONNECT_TIMEOUT = 30


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None, *, gpus: int = 0) -> Iterator[object | None]:
    """A ``distributed.Client`` for the tasks, closed (with its cluster) on exit; ``None`` for a local scheduler.

    Parameters
    ----------
    scheduler : str or None
        ``threads``, ``sync`` or ``None``: dask's local schedulers (no client);
        anything else is the address of a running ``dask.distributed`` scheduler.
    workers : int or None
        Start a local cluster of this many single-threaded worker processes instead.
    gpus : int, default=0
        GPUs visible here: more than one, with neither of the above, starts a
        ``dask_cuda.LocalCUDACluster`` (one worker per GPU).
    """
    if workers:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            yield client
    elif scheduler and scheduler not in LOCAL_SCHEDULERS:
        from distributed import Client

        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot reach the dask scheduler {scheduler!r}: {exc}") from None
        with client:
            yield client
    elif gpus > 1:
        from distributed import Client

        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise FrameExitError(
                f"{gpus} GPUs are visible: spreading shards over them needs dask-cuda "
                "(pip install '.[gpu]'); or pass --device cuda:0 to use one"
            ) from None
        with LocalCUDACluster(dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
    else:
        yield None
