import os
import shutil

import pytest
import torch
from helpers import activitynet_dataset, hvu_dataset, minikinetics_dataset, official_state, write_job


@pytest.fixture(scope="session")
def anet(tmp_path_factory):
    """ActivityNet-layout dataset (paths dict)."""
    return activitynet_dataset(str(tmp_path_factory.mktemp("anet")))


@pytest.fixture(scope="session")
def minik(tmp_path_factory):
    """Mini-Kinetics-layout dataset (paths dict)."""
    return minikinetics_dataset(str(tmp_path_factory.mktemp("minik")))


@pytest.fixture(scope="session")
def hvu(tmp_path_factory):
    """HVU-layout dataset (paths dict, with the Tag,Category file under 'categories')."""
    return hvu_dataset(str(tmp_path_factory.mktemp("hvu")))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A random ResNet-18 FrameExit checkpoint in the official (module.-prefixed) format."""
    path = os.path.join(str(tmp_path_factory.mktemp("ckpt")), "frameexit_resnet18.pth")
    torch.save(official_state("resnet18", seed=1), path)
    return path


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch, tmp_path):
    """Point torch's hub cache at an empty folder: a test that tried to download would fail loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _refuse, raising=True)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse, raising=True)


def _refuse(*args, **kwargs):
    raise AssertionError(f"a download was attempted: {args}")


@pytest.fixture
def private(anet, checkpoint, tmp_path):
    """A private copy of the ActivityNet fixture and its job file."""
    top = os.path.dirname(anet["frames"])
    shutil.copytree(top, tmp_path / "data")
    paths = {k: str(tmp_path / "data" / os.path.relpath(v, top)) for k, v in anet.items()}
    return paths, write_job(str(tmp_path / "job.yml"), paths, checkpoint)


@pytest.fixture(scope="session")
def job_file(anet, checkpoint, tmp_path_factory):
    """The ActivityNet fixture's job file (official format, the random ResNet-18 checkpoint)."""
    return write_job(str(tmp_path_factory.mktemp("job") / "job.yml"), anet, checkpoint)


@pytest.fixture(scope="session")
def extracted(job_file, tmp_path_factory):
    """``frameexit extract`` of the ActivityNet fixture (shards of 4 videos, batches of 3), once per session.

    Returns the :class:`jobs.extract.ExtractResult`; the cache root is ``os.path.dirname(result.cache_dir)``.
    The cache is keyed by content, so every test of this job (whatever its job file's path) finds this one.
    Read only: a test that writes into a cache, or holds its lock, works on a copy (:func:`helpers.copy_cache`).
    """
    from jobs.config import load_job
    from jobs.extract import ExtractOptions, extract

    root = str(tmp_path_factory.mktemp("cache"))
    return extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4, batch_videos=3))


@pytest.fixture(scope="session")
def reported(job_file, extracted, tmp_path_factory):
    """``frameexit replay`` (first thresholds 0.5 and 1, gate 0.5) and ``report`` of the shared cache, once.

    Returns the run folder. Read only: a test that changes it, or writes into it, copies it first.
    """
    from jobs.config import load_job
    from jobs.replay import ReplayOptions, replay
    from jobs.report import report

    run = str(tmp_path_factory.mktemp("reported") / "run")
    root = os.path.dirname(extracted.cache_dir)
    grid = ["--replay.first_thresholds", "[0.5, 1.0]", "--replay.gate_thresholds", "[0.5]"]
    replay(load_job(job_file, grid), run, ReplayOptions(cache_root=root))
    report(run)
    return run


@pytest.fixture(scope="session")
def inferred(job_file, tmp_path_factory):
    """``frameexit infer`` of the ActivityNet fixture's job, once per session: its output folder (read only)."""
    from jobs.config import load_job
    from jobs.infer import infer

    out = str(tmp_path_factory.mktemp("inferred") / "infer")
    infer(load_job(job_file), out, device="cpu")
    return out


@pytest.fixture(scope="session")
def cluster():
    """A dask cluster of two worker processes (one thread each), started once: its scheduler's address.

    For tests of what runs on a cluster (equal results, one head per checkpoint); how ``--workers`` starts one
    is tested where it is started. No test may stop or kill these workers.
    """
    from distributed import LocalCluster

    # its dashboard on a free port, not 8787: a cluster a command starts meanwhile finds that port free
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as running:
        yield running.scheduler_address


@pytest.fixture(scope="session")
def hvu_extracted(hvu, checkpoint, tmp_path_factory):
    """``frameexit extract`` of the bundled HVU job on the HVU fixture (first threshold 0.61), once per session.

    Read only, like :func:`extracted`: a test that writes into it works on a copy (:func:`helpers.copy_cache`).
    """
    from helpers import HVU_JOB, hvu_overrides

    from jobs.config import load_job
    from jobs.extract import ExtractOptions, extract

    job = load_job(HVU_JOB, hvu_overrides(hvu, checkpoint, 0.61))
    return extract(job, ExtractOptions(cache_root=str(tmp_path_factory.mktemp("hvu-cache"))))
