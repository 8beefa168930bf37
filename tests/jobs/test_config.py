"""SEMANTICS 11: the official config files, their overrides and clear errors for bad keys and types."""

import pytest
import yaml
from helpers import ANET_JOB, HVU_JOB, MINIK_JOB

from frameexit.errors import ConfigError
from jobs.config import bundled_jobs, load_job, parse_overrides


def test_official_files_are_valid_with_the_official_values():
    a, m = load_job(ANET_JOB), load_job(MINIK_JOB)
    assert a.data.name == "activitynet1.3" and m.data.name == "minikinetics"
    assert a.model.first_threshold == 0.99 and m.model.first_threshold == 0.95
    assert a.model.gate_threshold == 0.5
    assert a.checkpoints == ("resources/checkpoints/activitynet_checkpoint_25gmac.pth",)
    assert m.data.path_frame == "/minikinetics/fps5_res256_hq/"
    for job in (a, m):
        assert job.model.backbone_name == "torchvision.resnet50" and job.model.output_dim == 2048
        assert job.model.input_order == (5, 0, 9, 2, 7, 4, 6, 3, 8, 1)
        assert job.model.num_class == 200 and job.data.num_frames == 10
        assert (job.data.preprocessing.resize, job.data.preprocessing.crop) == (224, 224)
        assert job.data.preprocessing.mean == (0.485, 0.456, 0.406)
        assert job.model.pretrained is True and job.model.truncate_modules == -1
    raw = yaml.safe_load(open(ANET_JOB))
    assert list(raw["data"]["preprocessing"]) == ["to_tensor", "resize", "crop_center", "normalize"]


def test_bundled_jobs_found_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"activitynet_inference_2d.yml", "minikinetics_inference_2d.yml"} <= set(bundled_jobs())
    assert load_job("activitynet_inference_2d.yml").data.name == "activitynet1.3"
    with pytest.raises(ConfigError, match="job file not found: nope.yml. Bundled jobs: activitynet"):
        load_job("nope.yml")


def test_official_override_syntax():
    job = load_job(
        ANET_JOB,
        [
            "--data.path_frame",
            "/data/123",
            "--checkpoint.init",
            "ck.pth",
            "--model.first_threshold",
            "0.9",
            "--model.gate_threshold=0.25",
            "--model.adaptive.input_order",
            "[0,1,2,3,4,5,6,7,8,9]",
        ],
    )
    assert job.data.path_frame == "/data/123"
    assert job.checkpoints == ("ck.pth",)
    assert job.model.first_threshold == 0.9 and job.model.gate_threshold == 0.25
    assert job.model.input_order == tuple(range(10))
    assert load_job(ANET_JOB, ["--data.path_split", "0123"]).data.path_split == "0123"  # strings stay verbatim
    assert load_job(ANET_JOB, ["--model.first_threshold", "1"]).model.first_threshold == 1.0
    assert parse_overrides(["--a.b", "x", "--c.d=y=z"]) == [("a.b", "x"), ("c.d", "y=z")]


def test_misspelled_keys_are_named(tmp_path):
    text = open(ANET_JOB).read().replace("first_threshold", "first_treshold")
    path = tmp_path / "job.yml"
    path.write_text(text)
    with pytest.raises(
        ConfigError, match=r"job.yml: unknown key model.first_treshold; did you mean model.first_threshold\?"
    ):
        load_job(str(path))
    with pytest.raises(ConfigError, match=r"unknown key data.path_frames; did you mean data.path_frame\?"):
        load_job(ANET_JOB, ["--data.path_frames", "x"])
    with pytest.raises(ConfigError, match="names a section"):
        load_job(ANET_JOB, ["--data.preprocessing", "x"])
    with pytest.raises(ConfigError, match="override --data.path_frame needs a value"):
        load_job(ANET_JOB, ["--data.path_frame"])
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        load_job(ANET_JOB, ["stray"])


def test_wrong_types_are_named(tmp_path):
    path = tmp_path / "job.yml"
    path.write_text(open(ANET_JOB).read().replace("num_frames: 10", "num_frames: ten"))
    with pytest.raises(ConfigError, match="data.num_frames must be an integer, got 'ten'"):
        load_job(str(path))
    with pytest.raises(ConfigError, match="override --model.first_threshold: model.first_threshold must be a number"):
        load_job(ANET_JOB, ["--model.first_threshold", "high"])
    with pytest.raises(ConfigError, match="data.preprocessing.to_tensor must be a boolean"):
        load_job(ANET_JOB, ["--data.preprocessing.to_tensor", "7"])
    with pytest.raises(ConfigError, match="model.pooling.name must be one of 'max', got 'avg'"):
        load_job(ANET_JOB, ["--model.pooling.name", "avg"])
    with pytest.raises(ConfigError, match=r"model.first_threshold must be in \[0, 1\]"):
        load_job(ANET_JOB, ["--model.first_threshold", "1.5"])
    with pytest.raises(ConfigError, match="one_hot_encoding \\(100\\) must equal model.num_class \\(200\\)"):
        load_job(ANET_JOB, ["--data.preprocessing_label.one_hot_encoding", "100"])


def test_required_keys_and_preprocessing_order(tmp_path):
    path = tmp_path / "job.yml"
    path.write_text("data:\n  name: minikinetics\nmodel:\n  first_threshold: 0.9\n  backbone:\n    output_dim: 2048\n")
    with pytest.raises(ConfigError, match="model.backbone.name is required"):
        load_job(str(path))
    raw = yaml.safe_load(open(ANET_JOB))
    pre = raw["data"]["preprocessing"]
    raw["data"]["preprocessing"] = {
        "resize": pre["resize"],
        "to_tensor": True,
        "crop_center": 224,
        "normalize": pre["normalize"],
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match="runs its keys in file order.*got resize, to_tensor"):
        load_job(str(path))
    path.write_text("data: {name: minikinetics}\nmodel: [1, 2]\n")
    with pytest.raises(ConfigError, match="model must be a mapping"):
        load_job(str(path))
    path.write_text("data: {name: x\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_job(str(path))


def test_require_names_missing_keys():
    job = load_job(ANET_JOB, ["--checkpoint.init", ""])
    with pytest.raises(
        ConfigError, match="this command needs checkpoint.init; set it in the job file or as --checkpoint.init"
    ):
        job.require("checkpoint.init", "data.path_frame")


def test_a_job_has_one_source_of_truth(tmp_path):
    import dataclasses
    import pickle

    from jobs.config import load_job

    job = load_job("activitynet_inference_2d.yml", ["--data.path_split", "a.txt"])
    other = job.with_value("data.path_split", str(tmp_path / "b.txt"))
    # the typed section and the key tree (written to replay.json) move together
    assert other.data.path_split == other.resolved["data"]["path_split"] == str(tmp_path / "b.txt")
    assert job.data.path_split == job.resolved["data"]["path_split"] == "a.txt"
    with pytest.raises(ValueError, match="init=False"):
        dataclasses.replace(job, data=other.data)  # a section cannot drift from the tree
    assert pickle.loads(pickle.dumps(other)) == other  # jobs travel to dask workers
    with pytest.raises(ConfigError, match="data.num_frames must be an integer"):
        job.with_value("data.num_frames", "ten")


def test_the_papers_other_backbones_as_bundled_jobs():
    x3d = load_job("activitynet_x3d_s.yml")
    assert (x3d.model.backbone_type, x3d.model.clips) == ("3d", True)
    assert (x3d.model.backbone_name, x3d.model.output_dim) == ("pytorchvideo.x3d_s", 2048)
    assert (x3d.model.clip_length, x3d.model.clip_stride) == (13, 1)
    pre = x3d.data.preprocessing
    assert (pre.resize, pre.crop, pre.mean, pre.std) == (160, 160, (0.45,) * 3, (0.225,) * 3)
    assert pre.normalize_first  # the file lists normalize before resize: pytorchvideo's order
    assert x3d.with_value("data.preprocessing.resize", 182).data.preprocessing.normalize_first  # kept by changes
    b3 = load_job("activitynet_efficientnet_b3.yml")
    assert (b3.model.backbone_type, b3.model.clips, b3.model.clip_length) == ("2d", False, 1)
    assert (b3.model.backbone_name, b3.model.output_dim) == ("torchvision.efficientnet_b3", 1536)
    assert (b3.data.preprocessing.resize, b3.data.preprocessing.crop) == (300, 300)
    assert not b3.data.preprocessing.normalize_first
    assert not load_job(ANET_JOB).data.preprocessing.normalize_first


def test_clip_settings_are_checked_against_the_backbone():
    x3d = "activitynet_x3d_s.yml"
    with pytest.raises(ConfigError, match="pytorchvideo.x3d_s is a 3D backbone .*set model.backbone.type: 3d"):
        load_job(x3d, ["--model.backbone.type", "2d"])
    with pytest.raises(ConfigError, match="type 3d needs a 3D backbone .*torchvision.resnet50 reads single frames"):
        load_job(ANET_JOB, ["--model.backbone.type", "3d", "--model.backbone.clip_length", "8"])
    with pytest.raises(ConfigError, match="model.backbone.clip_length is only meaningful with model.backbone.type: 3d"):
        load_job(ANET_JOB, ["--model.backbone.clip_length", "8"])
    with pytest.raises(ConfigError, match="model.backbone.clip_stride must be at least 1, got 0"):
        load_job(x3d, ["--model.backbone.clip_stride", "0"])
    with pytest.raises(ConfigError, match="model.backbone.clip_length must be set for model.backbone.type: 3d"):
        load_job(x3d, ["--model.backbone.clip_length", ""])
    with pytest.raises(ConfigError, match="model.backbone.type must be one of '2d', '3d', got '4d'"):
        load_job(x3d, ["--model.backbone.type", "4d"])


def test_only_the_official_and_pytorchvideos_preprocessing_orders(tmp_path):
    raw = yaml.safe_load(open(ANET_JOB))
    pre = raw["data"]["preprocessing"]
    raw["data"]["preprocessing"] = {"to_tensor": True, "normalize": pre["normalize"], "resize": 224, "crop_center": 224}
    path = tmp_path / "job.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_job(str(path)).data.preprocessing.normalize_first
    raw["data"]["preprocessing"] = {"to_tensor": True, "resize": 224, "normalize": pre["normalize"], "crop_center": 224}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match="or to_tensor, normalize, resize, crop_center .pytorchvideo's. is supported"):
        load_job(str(path))


def test_hvu_job_file_and_its_additions():
    hvu = load_job(HVU_JOB)
    assert hvu.data.name == "hvu" and hvu.model.num_class == 3142
    assert hvu.data.path_category == "data/hvu/HVU_Tags_Categories_V1.0.csv" and hvu.data.key_format is None
    # the training loss fits the labels: BCE for HVU's many tags per video, softmax elsewhere, unless set
    assert hvu.train.config.loss == "bce" and load_job(ANET_JOB).train.config.loss == "softmax"
    assert load_job(ANET_JOB, ["--train.loss", "bce"]).train.config.loss == "bce"
    assert load_job("hvu_inference_2d.yml", ["--train.loss", "softmax"]).train.config.loss == "softmax"
    fmt = "{youtube_id}.mp4"
    assert load_job("hvu_inference_2d.yml", ["--data.key_format", fmt]).data.key_format == fmt
    with pytest.raises(ConfigError, match=r"data.key_format .*'\{id\}.mp4' must be a Python format of youtube_id"):
        load_job("hvu_inference_2d.yml", ["--data.key_format", "{id}.mp4"])
    with pytest.raises(ConfigError, match="data.key_format names the videos of HVU's CSV; data.name is 'minikinetics'"):
        load_job(MINIK_JOB, ["--data.key_format", fmt])
