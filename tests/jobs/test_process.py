"""Process-wide state (torch's thread count, the TF32 switches, the global random generator) is set once per
process by jobs.process, never left changed by a library call (issue 21)."""

import os
import re

import numpy as np
import pytest
import torch
from helpers import ANET_JOB, ROOT, write_job
from PIL import Image

from frameexit.backbone import random_backbone
from frameexit.preprocess import preprocess_image
from jobs.config import load_job
from jobs.extract import ExtractOptions, extract
from jobs.frames import read_frame
from jobs.model import LazyModel
from jobs.process import configure_process, dask_worker_setup, dataloader_worker_init
from jobs.scheduling import NO_DASHBOARD


def _state():
    return (
        torch.get_num_threads(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.random.get_rng_state(),
    )


def _same(before, after):
    return before[:3] == after[:3] and torch.equal(before[3], after[3])


@pytest.fixture
def threads():
    """Two intra-op threads for the test (the process's count restored after it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(threads)


def test_preprocessing_a_frame_leaves_the_process_as_it_was(threads, tmp_path):
    path = str(tmp_path / "frame.png")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(240, 320, 3), dtype=np.uint8))
    image.save(path)
    before = _state()
    preprocess_image(image)
    read_frame(path, load_job(ANET_JOB).data.preprocessing)
    assert _same(before, _state())


def test_extracting_in_process_leaves_the_process_as_it_was(anet, checkpoint, threads, tmp_path):
    job_file = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    before = _state()
    extract(
        load_job(job_file, ["--data.num_workers", "0"]),
        ExtractOptions(cache_root=str(tmp_path / "cache"), shard_size=4),
    )
    assert _same(before, _state())


def test_a_random_backbone_leaves_the_random_state_as_it_was():
    before = torch.random.get_rng_state()
    first = random_backbone("torchvision.resnet18", seed=3)
    assert torch.equal(before, torch.random.get_rng_state())
    again = random_backbone("torchvision.resnet18", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))


def test_configure_process_sets_the_thread_count_once(threads):
    configure_process()  # None: torch's count is left alone
    assert torch.get_num_threads() == threads
    dataloader_worker_init(0)  # a DataLoader worker resizes frames on its one thread
    assert torch.get_num_threads() == 1
    configure_process(3)
    configure_process(3)
    assert torch.get_num_threads() == 3


def test_dask_workers_are_configured_when_they_start():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, **NO_DASHBOARD) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(dask_worker_setup(3))
        assert client.submit(torch.get_num_threads, pure=False).result() == 3


@pytest.mark.parametrize("package", ["frameexit", "cache"])
def test_library_code_sets_no_process_wide_state(package):
    # threads, TF32 and malloc are jobs.process's (and jobs.memory's); seeds only on a forked generator
    for name in sorted(os.listdir(os.path.join(ROOT, package))):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, package, name), encoding="utf-8") as handle:
                source = handle.read()
            assert not re.search(r"set_num_threads|allow_tf32|mallopt|set_rng_state", source), name
            for seed in re.finditer(r"\n( *)torch\.manual_seed\(", source):
                assert "fork_rng" in source[: seed.start()].rsplit("\n", 1)[-1], (name, seed.group())


class _Counted(LazyModel):
    """A lazy model counting its builds (module level: pickle finds the class by name)."""

    TRAVELS = ("name",)

    def __init__(self, name):
        super().__init__()
        self.name, self.builds = name, []

    def build(self, key):
        self.__dict__.setdefault("builds", []).append(key)
        return (self.name, key, object())


def test_a_lazy_model_is_built_once_per_key_and_travels_without_it():
    import pickle
    import threading

    holder = _Counted("ckpt")
    threads = [threading.Thread(target=holder.built, args=("cpu",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = holder.built("cpu")
    assert holder.builds == ["cpu"] and holder.built("cpu") is first  # one build, shared by every thread
    assert holder.built("cuda:0")[1] == "cuda:0" and holder.builds == ["cpu", "cuda:0"]  # another key: rebuilt
    copy = pickle.loads(pickle.dumps(holder))
    assert copy.name == "ckpt" and copy._built is None and not hasattr(copy, "builds")  # only TRAVELS travel
    assert copy.built("cpu")[:2] == ("ckpt", "cpu") and copy.builds == ["cpu"]
