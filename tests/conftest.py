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
