"""The process-wide settings frameexit relies on, defined once: torch's intra-op threads, TF32, glibc's malloc.

Library code (``frameexit/``, ``cache/``) changes none of them; the jobs layer sets them here:

- **threads**: a worker process gets its thread count once, when it starts (:func:`configure_process`). Frames
  are resized on one thread (:func:`one_thread`): torch's CPU bilinear kernel rounds differently when its work
  is split between threads (a 350x467 frame resized to 224 pixels: 73,246 of 200,256 values differ between 1
  and 2 threads, by up to 1.2e-7; the official frames are one thread's), so a frame would depend on the thread
  count of the process that decoded it. One count per process cannot serve both the resize and the backbone
  where one process runs both (``infer``, ``extract --num-workers 0``, a dask worker): the backbone's forward
  passes come between frame reads and need the cores. Nor can a decoding thread of its own: a thread that sets
  its count (OpenMP's is per thread) also sets the count of every thread started later (tried with torch 2.14:
  replay's dask threads would then run the head on one core).
- **TF32** (:func:`backbone_precision`): set around the backbone's forward passes only, because training, the
  demo and library callers go on in the same process with their own settings.
- **malloc** (``jobs.memory.limit_fragmentation``): made once by a replay whose exit tables are large, never
  restored (glibc cannot say what the threshold was).
- **random numbers**: nothing here seeds torch's global generator; code that needs seeded draws forks it
  (``torch.random.fork_rng``) or uses its own ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: The arithmetic of each ``extract --precision`` (``cache.inputs.PRECISIONS``): TF32 allowed in CUDA matmuls and
#: cuDNN convolutions or not, and the autocast dtype (None: float32).
ARITHMETIC: dict[str, tuple[bool, torch.dtype | None]] = {
    "fp32": (False, None),
    "tf32": (True, None),
    "bf16": (False, torch.bfloat16),
    "fp16": (False, torch.float16),
}


def configure_process(threads: int | None = None) -> None:
    """Set this process's torch intra-op thread count (``None``: leave torch's default), where a worker starts."""
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def head_threads(share: int | None) -> Iterator[None]:
    """torch's intra-op threads at ``share`` in this thread while a replay's head pass runs in it (None: left as
    they are), then this thread's count again: each pass's float64 products on every core, beside the other
    passes', would oversubscribe the cores (measured on 2 cores: the head pass 8 % slower). The count is per thread
    for threads that already ran torch (OpenMP's, tried with torch 2.14): a dask thread sets and restores its own,
    and the tasks after the head passes (the bootstrap's products) have every core."""
    if share is None:
        yield
        return
    before = torch.get_num_threads()
    if share != before:
        torch.set_num_threads(share)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def dataloader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of frameexit's DataLoaders: one intra-op thread per worker (torch's own default for
    its workers, stated here so that frames are resized on one thread without switching per frame)."""
    configure_process(threads=1)


def dask_worker_setup(threads: int | None = None) -> object:
    """A dask worker plugin (``Client.register_plugin``) running :func:`configure_process` in every worker, those
    there now and those started later. distributed is imported here: infer and single-process commands never load it.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    # defined here because distributed refuses plugins that do not inherit WorkerPlugin; cloudpickle ships
    # the class to the workers by value
    class ProcessSetup(WorkerPlugin):
        # registering it again (a second extract in this process) replaces it instead of adding another
        name = "frameexit-process-setup"

        def __init__(self, threads: int | None):
            self.threads = threads

        def setup(self, worker: object) -> None:
            # runs before the worker's first task: the executor thread that runs tasks starts later and takes
            # torch's thread count from the process then
            configure_process(self.threads)

    return ProcessSetup(threads)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the body on one torch intra-op thread, the count restored afterwards; wrap frame preprocessing only
    (why: the module docstring)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def backbone_precision(precision: str, device: torch.device) -> Iterator[None]:
    """The backbone's arithmetic (:data:`ARITHMETIC`) for the body: ``fp32`` turns TF32 off for CUDA matmuls and
    cuDNN convolutions (cuDNN allows it by default), ``tf32`` on, ``bf16``/``fp16`` autocast.

    ``infer``, the exactness probes and ``extract --precision fp32`` compute in exact float32, which per-step
    extraction needs to equal infer's features bit for bit. The switches are process-wide and restored when the
    body ends: wrap forward passes only, never a ``yield`` to a caller (it would run with them changed).
    """
    tf32, dtype = ARITHMETIC[precision]
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        if dtype is not None:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def exact_fp32() -> contextlib.AbstractContextManager[None]:
    """:func:`backbone_precision` ``fp32`` (exact float32; it sets no autocast, so the device does not matter)."""
    return backbone_precision("fp32", torch.device("cpu"))
