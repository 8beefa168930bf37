"""Where the dask tasks of a stage run: dask's local schedulers, a local cluster, a remote one, or one per GPU."""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator

from frameexit.errors import ConfigError, FrameExitError, WorkerLostError, exception_chain

#: dask's local schedulers, run in this process: no client.
LOCAL_SCHEDULERS = ("threads", "sync")
#: ``--scheduler cuda``: extraction on a ``dask_cuda.LocalCUDACluster``, one worker per visible GPU (even one).
CUDA_SCHEDULER = "cuda"
#: Seconds to wait for a remote scheduler before giving up with an error naming it.
CONNECT_TIMEOUT = 30
#: A local cluster's scheduler without a dashboard; its HTTP server (started even then) on a free local port, not
#: distributed's 8787, which another command's cluster may hold (stderr would say so)
NO_DASHBOARD = {"dashboard_address": "127.0.0.1:0", "scheduler_kwargs": {"dashboard": False}}


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None, *, gpus: int = 0) -> Iterator[object | None]:
    """A ``distributed.Client`` for the tasks, closed (with its cluster) on exit; ``None`` for a local scheduler.

    ``scheduler``: ``threads``, ``sync`` or ``None`` (dask's local schedulers), ``cuda`` (:data:`CUDA_SCHEDULER`)
    or a running scheduler's address; ``workers``: start a local cluster of this many single-threaded worker
    processes instead; ``gpus`` the stage can use here: ``cuda``, or more than one with neither of the above,
    starts a ``dask_cuda.LocalCUDACluster`` (one worker per GPU).
    """
    check_scheduler(scheduler, gpus)
    if workers:
        from distributed import Client, LocalCluster

        with explaining_lost_workers(
            "starting", f"give this machine more free memory or use fewer --workers ({workers})"
        ):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, **NO_DASHBOARD)
        with cluster, Client(cluster) as client:
            yield client
    elif scheduler and scheduler not in (*LOCAL_SCHEDULERS, CUDA_SCHEDULER):
        from distributed import Client

        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot reach the dask scheduler {scheduler!r}: {exc}") from None
        with client:
            yield client
    elif gpus > 1 or scheduler == CUDA_SCHEDULER:
        from distributed import Client

        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            why = "--scheduler cuda" if scheduler == CUDA_SCHEDULER else f"{gpus} GPUs are visible: spreading shards"
            raise FrameExitError(
                f"{why} needs dask-cuda (pip install '.[gpu]'); or pass --device cuda:0 to use one GPU without it"
            ) from None
        import dask

        # each GPU's worker decodes JPEGs in DataLoader processes (data.num_workers), which a daemonic process cannot
        # start: its workers are started as ordinary processes (the nanny still ends them with the cluster)
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = LocalCUDACluster(**NO_DASHBOARD)
        with cluster, Client(cluster) as client:
            yield client
    else:
        yield None


def check_scheduler(scheduler: str | None, gpus: int) -> None:
    """Refuse ``--scheduler cuda`` (:data:`CUDA_SCHEDULER`) for a stage that has no GPU to use (``gpus``)."""
    if scheduler == CUDA_SCHEDULER and gpus < 1:
        raise ConfigError(
            "--scheduler cuda starts one dask-cuda worker per GPU, but this extraction has none: torch sees no CUDA "
            "device, or --device names the CPU or one GPU (cuda:N)"
        )


# torch's DataLoader: "DataLoader worker (pid 123) is killed by signal: Killed.", then, as the error raised
# where the batch was awaited, "DataLoader worker (pid(s) 123) exited unexpectedly"
_DATALOADER_KILLED = re.compile(r"DataLoader worker \(pid (\d+)\) is killed by signal: ([^.]+)")
_DATALOADER_EXITED = re.compile(r"DataLoader worker \(pid\(s\) ([\d, ]+)\) exited unexpectedly")
_FAILED_TO_START = re.compile(r"\b(?:Nanny|Worker) failed to start")


def lost_worker(exc: BaseException, doing: str, advice: str) -> WorkerLostError | None:
    """A one-line :class:`WorkerLostError` when ``exc`` (distributed's ``KilledWorker``, torch's DataLoader errors)
    says that a worker process died, else None; ``doing``: what it was doing, ``advice``: what to change."""
    chain = list(exception_chain(exc))
    likely = "most likely killed for lack of memory (the out-of-memory killer; see the worker's log)"
    text = " ".join(str(error) for error in chain)
    for error in chain:
        kind = type(error).__name__
        if kind == "KilledWorker" and len(error.args) >= 3:  # distributed.KilledWorker: the cluster gave up on it
            task, worker, allowed = error.args[:3]
            where = getattr(worker, "address", worker)
            tries = f" (and on {allowed} worker(s) before it)" if allowed else ""
            return WorkerLostError(
                f"the dask worker {where} died while {doing} (task {task!r}){tries}: {likely}; {advice}"
            )
        if kind == "CommClosedError":  # a worker that died while data was sent to it or fetched from it
            return WorkerLostError(
                f"the connection to a dask worker (or the scheduler) closed while {doing}: the worker most likely "
                f"died, {likely}; {advice}"
            )
    if _FAILED_TO_START.search(text):  # a worker process of a local cluster died before it was up
        return WorkerLostError(f"a dask worker process died while {doing}: {likely}; {advice}")
    killed, exited = _DATALOADER_KILLED.search(text), _DATALOADER_EXITED.search(text)
    if killed:
        said = killed.group(2).strip()  # strsignal's text: "Killed" is SIGKILL
        name = next((s.name for s in signal.Signals if signal.strsignal(s) == said), f"signal {said}")
        how = f"DataLoader worker (pid {killed.group(1)}) {doing} was killed by {name}"
    elif exited:
        how = f"DataLoader worker (pid {exited.group(1).strip()}) {doing} exited unexpectedly"
    else:
        return None
    return WorkerLostError(f"the {how}: most likely by the out-of-memory killer; {advice}")


@contextlib.contextmanager
def explaining_lost_workers(doing: str, advice: str) -> Iterator[None]:
    """Turn a worker process that died in the body into a one-line :class:`WorkerLostError` (:func:`lost_worker`)."""
    try:
        yield
    except Exception as exc:
        lost = lost_worker(exc, doing, advice)
        if lost is None:
            raise
        raise lost from None
