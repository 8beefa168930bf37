"""The paper's other backbones: X3D-S with clip-level steps (pytorchvideo) and EfficientNet-B3 at 300 pixels.

The end-to-end tests run the bundled job files as shipped (13x160x160 clips, 300-pixel frames) on two
small videos: these backbones are not free on a CPU.
"""

import copy
import os
import sys

import h5py
import pyarrow.parquet as pq
import pytest
import torch
from helpers import activitynet_dataset, data_overrides, frameexit_rows, invoke, job_setting_rows, official_state, x3d_s
from oracles import paper_gflops

from frameexit.backbone import feature_dim, model_name, pretrained_state_dict
from frameexit.checkpoint import build_backbone_from_state, read_state_dict
from frameexit.cost import measure_step_costs, paper_per_frame
from frameexit.errors import BackboneError
from frameexit.sampling import sample_indices
from frameexit.x3d import zoo_weights_path
from jobs.config import load_job
from jobs.model import checkpoint_state

X3D_JOB = "activitynet_x3d_s.yml"
B3_JOB = "activitynet_efficientnet_b3.yml"
# one video longer than the clips reach, one shorter than T=10 (sampled positions repeat, clips clamp at both ends)
SMALL = [("alpha", 23, (213, 160), [3]), ("bravo", 4, (160, 200), [7])]


@pytest.fixture(scope="module")
def small_anet(tmp_path_factory):
    return activitynet_dataset(str(tmp_path_factory.mktemp("anet-small")), SMALL)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """One cache root per job file, shared by the tests of this module (extraction is the expensive part)."""
    root = tmp_path_factory.mktemp("clip-caches")
    return {job: root / job for job in (X3D_JOB, B3_JOB)}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random FrameExit checkpoints in the official format: X3D-S and EfficientNet-B3 backbones."""
    root = tmp_path_factory.mktemp("clip-ckpt")
    paths = {}
    for job, backbone, seed in ((X3D_JOB, "x3d_s", 1), (B3_JOB, "efficientnet_b3", 2)):
        paths[job] = str(root / f"frameexit_{backbone}.pth")
        torch.save(official_state(backbone, seed=seed), paths[job])
    return paths


def _x3d_reference(net):
    """pytorchvideo's X3D-S with its classification projection and softmax taken out: features (n, 2048)."""
    reference = copy.deepcopy(net)
    reference.blocks[5].proj = torch.nn.Identity()
    reference.blocks[5].activation = None
    return reference


def test_x3d_s_features_equal_create_x3d_bit_for_bit(tmp_path):
    net = x3d_s(seed=3)
    path = tmp_path / "x3d.pth"
    torch.save(official_state("x3d_s", seed=3), path)  # the same random weights, as a FrameExit checkpoint
    ours = build_backbone_from_state(
        read_state_dict(path), backbone_name="pytorchvideo.x3d_s", clip_length=13, input_size=160
    )
    assert not any(k.startswith("blocks.5.proj") for k in ours.state_dict())
    clips = torch.randn(2, 3, 13, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = _x3d_reference(net)(clips[:1])
        got = ours(clips)
    assert got.shape == (2, 2048) and feature_dim("pytorchvideo.x3d_s", input_size=160, clip_length=13) == 2048
    assert torch.equal(got[:1], expected)
    # a clip's features do not depend on the batch it is computed in (sequential inference reads one at a time);
    # on CPU, torch's batched 3D convolution (oneDNN) rounds differently from its one-clip kernel
    with torch.inference_mode():
        assert torch.equal(got[1:], ours(clips[1:]))
    assert model_name("pytorchvideo.x3d_s") == "x3d_s"
    with pytest.raises(
        BackboneError, match="'pytorchvideo.x3d_m' is not a known 3D backbone; known: pytorchvideo.x3d_s"
    ):
        model_name("pytorchvideo.x3d_m")


def test_without_pytorchvideo_a_3d_job_says_what_to_install(monkeypatch):
    from frameexit.backbone import build_backbone

    monkeypatch.setitem(sys.modules, "pytorchvideo.models.x3d", None)  # as if it were not installed
    with pytest.raises(
        BackboneError, match=r"need pytorchvideo, which is not installed .*pip install 'frameexit\[x3d\]'"
    ):
        build_backbone("pytorchvideo.x3d_s")
    assert build_backbone("torchvision.resnet18") is not None  # 2D backbones do not need it


def test_costs_of_the_papers_backbones():
    x3d = measure_step_costs("pytorchvideo.x3d_s", input_size=160, clip_length=13, num_class=200)
    assert x3d.backbone == pytest.approx(1.96, abs=0.01)  # one 13x160x160 clip
    assert paper_per_frame("pytorchvideo.x3d_s") == 1.96
    assert paper_gflops([9, 9], 1.96) == pytest.approx(19.6)  # the paper's X3D-S row without exiting
    # a longer clip costs proportionally more: the measured figure follows the real input
    longer = measure_step_costs("pytorchvideo.x3d_s", input_size=160, clip_length=26, num_class=200)
    assert longer.backbone == pytest.approx(2 * x3d.backbone, rel=0.02)
    b3 = measure_step_costs("torchvision.efficientnet_b3", input_size=300, num_class=200)
    assert b3.backbone == pytest.approx(1.8, abs=0.05)  # the paper's 1.8 is EfficientNet-B3 at 300 pixels
    assert measure_step_costs("torchvision.efficientnet_b3", input_size=224, num_class=200).backbone < 1.0


def test_pytorchvideo_model_zoo_checkpoint_loads_without_downloads(small_anet, tmp_path):
    net = x3d_s(seed=4)
    # conftest points TORCH_HOME at an empty folder: the file is absent, and nothing downloads it
    with pytest.raises(BackboneError, match=r"not on disk \(expected .*X3D_S\.pyth\).*never downloads"):
        pretrained_state_dict("pytorchvideo.x3d_s")
    path = zoo_weights_path("x3d_s")
    os.makedirs(os.path.dirname(path))
    # the model zoo's format: the network's state dict under model_state, beside training records
    torch.save({"model_state": net.state_dict(), "epoch": 196, "cfg": "MODEL:\n  ARCH: x3d\n"}, path)
    state = pretrained_state_dict("pytorchvideo.x3d_s")
    assert set(state) == {k for k in net.state_dict() if not k.startswith("blocks.5.proj.")}
    # a FrameExit checkpoint without backbone weights takes them from the zoo file (model.backbone.pretrained)
    head_only = {k: v for k, v in official_state("x3d_s", seed=1).items() if not k.startswith("module.backbone.")}
    torch.save(head_only, tmp_path / "head.pth")
    job = load_job(X3D_JOB, [*data_overrides(small_anet), "--checkpoint.init", str(tmp_path / "head.pth")])
    backbone = build_backbone_from_state(
        checkpoint_state(job, str(tmp_path / "head.pth")), backbone_name="pytorchvideo.x3d_s"
    )
    clip = torch.randn(1, 3, 13, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(backbone(clip), _x3d_reference(net)(clip))
    torch.save({"state_dict": net.state_dict()}, path)
    with pytest.raises(BackboneError, match=r"X3D_S\.pyth is not a pytorchvideo model-zoo checkpoint"):
        pretrained_state_dict("pytorchvideo.x3d_s")


def _videos(folder):
    """Each video's decision at the job's setting of an infer or replay folder."""
    return {r["video"]: (r["exit_step"], r["prediction"], r["confidence"]) for r in job_setting_rows(folder)}


@pytest.mark.parametrize("job, per_step", [(X3D_JOB, 1.96), (B3_JOB, 1.8)])
def test_bundled_job_runs_end_to_end_and_replay_equals_infer(job, per_step, small_anet, checkpoints, caches, tmp_path):
    data = [*data_overrides(small_anet), "--checkpoint.init", checkpoints[job]]
    cache = caches[job]
    r = invoke("run", job, *data, "--out", tmp_path / "run", "--cache", cache, "--gate-thresholds", "0:1:5")
    assert r.exit_code == 0, r.output
    for name in ("sweep.parquet", "videos.parquet", "replay.json", "summary.md", "summary.json", "curve.png"):
        assert (tmp_path / "run" / name).is_file(), name
    (cache_dir,) = [p for p in cache.iterdir() if p.is_dir()]
    with h5py.File(cache_dir / "shard-00000.h5") as f:
        assert f["features"].shape == (2, 10, 2048 if job == X3D_JOB else 1536)
        # frame_indices are the sampled positions (for X3D-S the middle frames of the clips)
        assert f["frame_indices"][()].tolist() == [sample_indices(23).tolist(), sample_indices(4).tolist()]
    sweep = pq.read_table(tmp_path / "run" / "sweep.parquet").to_pylist()
    assert len(frameexit_rows(sweep)) == 5
    for row in sweep:  # every policy's
        assert row["gflops"] == pytest.approx(row["mean_frames"] * per_step)  # paper convention, per step
    r = invoke("infer", job, *data, "--out", tmp_path / "infer", "--device", "cpu")
    assert r.exit_code == 0, r.output
    inferred = _videos(tmp_path / "infer")
    assert inferred == _videos(tmp_path / "run")  # video by video, confidence bit for bit
    assert set(inferred) == {"v_alpha.mp4", "v_bravo.mp4"}


@pytest.mark.parametrize("job", [X3D_JOB, B3_JOB])
def test_train_on_the_cache_and_replay_the_new_head(job, small_anet, checkpoints, caches, tmp_path):
    data = [*data_overrides(small_anet), "--checkpoint.init", checkpoints[job]]
    cache, head = caches[job], tmp_path / "head.pth"
    small = ["--train.epochs_classifier", "2", "--train.epochs_gates", "1", "--train.batch_size", "2"]
    r = invoke("train", job, *data, *small, "--train.hidden_dim", "64", "--cache", cache, "--out", head)
    assert r.exit_code == 0, r.output
    state, init = torch.load(head, weights_only=True), torch.load(checkpoints[job], weights_only=True)
    backbone = [k for k in init if k.startswith("module.backbone.")]
    assert backbone and all(torch.equal(state[k], init[k]) for k in backbone)
    # same backbone weights: the new head replays over the cache train used (shared with the test above, or
    # extracted by train), without another extraction
    r = invoke("replay", job, *data[:-1], head, "--cache", cache, "--out", tmp_path / "replay")
    assert r.exit_code == 0, r.output
    assert len(_videos(tmp_path / "replay")) == 2 and len(list(cache.iterdir())) == 1
