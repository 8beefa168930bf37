"""`frameexit infer` end to end on generated fixtures, its outputs, help and errors."""

import json
import math
import os
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from helpers import ANET_JOB, EXE, MINIK_JOB, data_overrides, invoke, official_state, write_job

from cli import main


@pytest.fixture(scope="module")
def resnet50_checkpoint(tmp_path_factory):
    path = os.path.join(str(tmp_path_factory.mktemp("r50")), "activitynet_checkpoint.pth")
    torch.save(official_state("resnet50", seed=2, logit_scale=8.0), path)
    return path


def test_official_activitynet_job_with_resnet50_end_to_end(anet, resnet50_checkpoint, tmp_path):
    out = tmp_path / "out"
    r = invoke("infer", ANET_JOB, *data_overrides(anet), "--checkpoint.init", resnet50_checkpoint, "--out", out)
    assert r.exit_code == 0, r.output
    assert "6 videos evaluated (5 with a label), 2 skipped (of 8 listed)" in r.output
    assert "mAP" in r.output and "top-1" in r.output and "exits per step" in r.output
    assert "v_nofolder.mp4: no frame folder" in r.output
    rows = pq.read_table(out / "videos.parquet").to_pylist()
    assert [r["video"] for r in rows] == sorted(r["video"] for r in rows)
    assert {"video", "exit_step", "prediction", "confidence", "labels"} <= set(rows[0])
    by_key = {r["video"]: r for r in rows}
    assert by_key["v_charlie.mp4"]["labels"] == [3, 7] and by_key["v_delta.mp4"]["labels"] == []
    assert all(0 <= r["exit_step"] <= 9 and 0 < r["confidence"] <= 1 for r in rows)
    m = json.load(open(out / "metrics.json"))
    assert m["n_videos"] == 6 and m["n_videos_listed"] == 8
    assert {s["video"] for s in m["skipped"]} == {"v_empty.mp4", "v_nofolder.mp4"}
    exits = np.array([r["exit_step"] for r in rows])
    assert m["gflops"] == pytest.approx(4.12 * (exits + 1).mean())  # paper convention for ResNet-50
    assert 4.09 * (exits + 1).mean() < m["gmacs_measured"] < 4.11 * (exits + 1).mean()
    assert m["exit_histogram"] == pytest.approx(np.bincount(exits, minlength=10) / 6)
    labelled = [r for r in rows if r["labels"]]
    assert m["top1"] == pytest.approx(np.mean([r["prediction"] in r["labels"] for r in labelled]))
    assert 0 <= m["map"] <= 1 and len(m["ap_per_class"]) == 200
    assert m["ap_per_class"][0] is None  # a class without positives is NaN, written as null


def test_minikinetics_job_with_overrides(minik, checkpoint, tmp_path):
    out = tmp_path / "out"
    r = invoke(
        "infer",
        MINIK_JOB,
        *data_overrides(minik),
        "--checkpoint.init",
        checkpoint,
        "--model.backbone.name",
        "torchvision.resnet18",
        "--model.backbone.output_dim=512",
        "--model.first_threshold",
        "1",
        "--model.gate_threshold",
        "0",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    m = json.load(open(out / "metrics.json"))
    assert m["exit_histogram"][9] == 1.0  # nothing exits before the last step with these thresholds
    assert m["gflops"] is None  # no paper-convention cost for ResNet-18 (the official code says 0)
    assert m["n_videos"] == 4 and m["skipped"][0]["video"] == "ytnofolder_000005_000015.mp4"
    rows = pq.read_table(out / "videos.parquet").to_pylist()
    assert {r["first_threshold"] for r in rows} == {1.0} and {r["gate_threshold"] for r in rows} == {0.0}


def test_corrupt_jpeg_is_skipped_with_its_reason(anet, checkpoint, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(os.path.dirname(anet["frames"]), data)
    for name in os.listdir(data / "frames" / "v_bravo.mp4"):
        (data / "frames" / "v_bravo.mp4" / name).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    paths = {k: str(data / os.path.relpath(v, os.path.dirname(anet["frames"]))) for k, v in anet.items()}
    job = write_job(str(tmp_path / "job.yml"), paths, checkpoint, first_threshold=0.5)
    r = invoke("infer", job, "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    m = json.load(open(tmp_path / "out" / "metrics.json"))
    reasons = {s["video"]: s["reason"] for s in m["skipped"]}
    assert reasons["v_bravo.mp4"].startswith("cannot read frame ") and "img_0000" in reasons["v_bravo.mp4"]
    assert m["n_videos"] == 5


def test_help_texts():
    r = invoke("--help")
    assert r.exit_code == 0 and "infer" in r.output
    r = invoke("infer", "--help")
    assert r.exit_code == 0
    assert "--data.path_frame DIR" in r.output and "--out" in r.output and "Example" in r.output


def test_user_errors_exit_1_without_traceback(anet, tmp_path):
    r = invoke(
        "infer", ANET_JOB, *data_overrides(anet), "--checkpoint.init", tmp_path / "missing.pth", "--out", tmp_path / "o"
    )
    assert r.exit_code == 1
    assert "Error: checkpoint file not found: " in r.output and "Traceback" not in r.output
    r = invoke("infer", ANET_JOB, "--model.first_treshold", "0.9", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "did you mean model.first_threshold?" in r.output
    r = invoke("infer", ANET_JOB, "--model.gate_threshold", "2", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "gate_threshold must be in [0, 1]" in r.output
    r = invoke("infer", ANET_JOB, "--out", tmp_path / "o")  # the official paths do not exist here
    assert r.exit_code == 1 and "not found" in r.output


def test_mismatched_checkpoint_is_named(anet, checkpoint, tmp_path):
    # the official job says ResNet-50 / 2048; the checkpoint holds a ResNet-18 projection of 512
    r = invoke("infer", ANET_JOB, *data_overrides(anet), "--checkpoint.init", checkpoint, "--out", tmp_path / "o")
    assert r.exit_code == 1
    assert "projects 512-d backbone features but model.backbone.output_dim is 2048" in r.output
    r = invoke(
        "infer",
        ANET_JOB,
        *data_overrides(anet),
        "--checkpoint.init",
        checkpoint,
        "--model.backbone.output_dim",
        "512",
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 1 and "torchvision.resnet50 truncated at -1 gives 2048-d features" in r.output


def test_no_partial_outputs_after_a_failure(anet, checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # stale result of an earlier run
    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    import jobs.infer

    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = jobs.infer.infer_video
    monkeypatch.setattr(jobs.infer, "infer_video", fail_on_second)
    r = CliRunner().invoke(main, ["infer", job, "--out", str(out)])
    assert r.exit_code == 130 and "Interrupted" in r.output  # Ctrl-C: 128 + SIGINT, as shells report it
    # what was there stays as it was, and nothing of the interrupted run is left (but the lock file)
    assert sorted(os.listdir(out)) == [".frameexit.lock", "metrics.json"]
    assert (out / "metrics.json").read_text() == "{}"


def test_console_script_runs(anet, checkpoint, tmp_path):
    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint, first_threshold=0.0)
    p = subprocess.run(
        [EXE, "infer", job, "--out", str(tmp_path / "o"), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "exits per step 0:100.0%" in p.stdout  # first_threshold 0: every video exits at the first frame
    m = json.load(open(tmp_path / "o" / "metrics.json"))
    assert m["runtime"]["frames_read"] == 6 and m["mean_frames"] == 1.0
    assert not math.isnan(m["gmacs_measured"])


def test_head_only_checkpoint_needs_imagenet_weights_on_disk(anet, tmp_path):
    state = {k: v for k, v in official_state("resnet18", seed=1).items() if not k.startswith("module.backbone.")}
    ckpt = tmp_path / "head.pth"
    torch.save(state, ckpt)
    job = write_job(str(tmp_path / "job.yml"), anet, str(ckpt))
    r = invoke("infer", job, "--out", tmp_path / "o")  # pretrained: True, but nothing on disk
    assert r.exit_code == 1 and "ImageNet weights for torchvision.resnet18 are not on disk" in r.output
    assert "never downloads" in r.output
    r = invoke("infer", job, "--model.backbone.pretrained", "False", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "has no backbone weights and model.backbone.pretrained is False" in r.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tau", "0.9"], "--tau is the threshold of --policy confidence, not of --policy frameexit"),
        (["--policy", "fixed", "--tau", "0.9"], "--tau is the threshold of --policy confidence, not of --policy fixed"),
        (["--policy", "confidence", "--frames", "3"], "--frames is the setting of --policy fixed, not of --policy "),
        (["--policy", "oracle", "--frames", "3"], "give --policy fixed, or leave --frames out"),
        (["--policy", "fixed", "--frames", "11"], "--frames must be a number of frames in 1..10 (the job's policy"),
        (["--policy", "fixed", "--frames", "0"], "Invalid value for '--frames': 0 is not in the range x>=1"),
        (["--policy", "confidence", "--tau", "1.5"], "Invalid value for '--tau': 1.5 is not in the range 0<=x<=1"),
        (["--policy", "confidence", "--tau", "nan"], "must be a finite number, got nan"),
        (["--policy", "gates"], "'gates' is not one of 'frameexit', 'confidence', 'fixed', 'oracle'"),
    ],
)
def test_policy_options_that_contradict_each_other_are_usage_errors(options, message, tmp_path):
    # checked before any work: the official job's dataset paths do not even exist here
    r = invoke("infer", ANET_JOB, *options, "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_policy_help():
    r = invoke("infer", "--help")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for words in ("--policy [frameexit|confidence|fixed|oracle]", "--tau PROB", "--frames K", "oracle, the earliest"):
        assert words in text, words
    from cli_options import EXIT_POLICIES
    from frameexit.policies import POLICIES

    assert EXIT_POLICIES == POLICIES  # the command line's choices, without importing numpy for --help
