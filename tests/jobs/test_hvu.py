"""HVU end to end: the bundled job on a generated multi-label fixture, mAP per tag category, replay equal to infer."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import HVU_CATEGORIES, HVU_JOB, copy_cache, frameexit_rows, hvu_overrides, job_setting_rows

from cli import main


@pytest.fixture(scope="module")
def runs(hvu, checkpoint, hvu_extracted, tmp_path_factory):
    """``frameexit infer`` and ``frameexit run`` of the bundled HVU job, at a first threshold some videos pass."""
    root = tmp_path_factory.mktemp("hvu-runs")
    copy_cache(hvu_extracted.cache_dir, root / "cache")  # the job's features: run checks them against the frames
    args = hvu_overrides(hvu, checkpoint, 0.61)
    r = CliRunner().invoke(main, ["infer", HVU_JOB, *args, "--out", str(root / "infer")])
    assert r.exit_code == 0, r.output
    grid = ["--first-thresholds", "0.5:0.7:5", "--gate-thresholds", "0.3,0.5,0.7", "--per-video", "all"]
    r = CliRunner().invoke(
        main, ["run", HVU_JOB, *args, "--cache", str(root / "cache"), "--out", str(root / "run"), *grid]
    )
    assert r.exit_code == 0, r.output
    return root / "infer", root / "run", r.output


def test_map_per_category_by_hand_from_the_per_tag_ap(runs):
    infer_dir, _, _ = runs
    metrics = json.loads((infer_dir / "metrics.json").read_text())
    ap = [math.nan if a is None else a for a in metrics["ap_per_class"]]
    assert metrics["dataset"]["categories"].endswith("HVU_Tags_Categories_V1.0.csv")
    assert set(metrics["map_per_category"]) == set(HVU_CATEGORIES)
    for k, name in enumerate(HVU_CATEGORIES):
        # the fixture puts tag i in category i % 6; tags without a positive video do not count
        values = [a for i, a in enumerate(ap) if i % 6 == k and not math.isnan(a)]
        expected = sum(values) / len(values) if values else None
        assert metrics["map_per_category"][name] == pytest.approx(expected, abs=1e-12), name
    # the fixture's tags: 3, 7, 8, 10, 11, 17, 22, 41, 100 -> categories 3, 1, 2, 4, 5, 5, 4, 5, 4: no scene tag
    assert metrics["map_per_category"]["scene"] is None and metrics["map_per_category"]["action"] is not None
    assert metrics["map"] == pytest.approx(np.nanmean(ap), abs=1e-12)


def test_replay_equals_infer_on_multi_label_videos(runs):
    infer_dir, run_dir, _ = runs
    metrics = json.loads((infer_dir / "metrics.json").read_text())
    infer_rows = {r["video"]: r for r in pq.read_table(infer_dir / "videos.parquet").to_pylist()}
    replay_rows = frameexit_rows(pq.read_table(run_dir / "videos.parquet").to_pylist(), gate_threshold=0.5)
    # the job's setting (0.61, 0.5) is not on the grid: replay computes it beside the grid for replay.json
    record = json.loads((run_dir / "replay.json").read_text())
    (default,) = record["default_metrics"]
    assert (default["first_threshold"], default["gate_threshold"]) == (0.61, 0.5)
    for key in ("map", "top1", "mean_frames"):
        assert default[key] == pytest.approx(metrics[key], abs=1e-12), key
    assert default["exit_histogram"] == pytest.approx(metrics["exit_histogram"], abs=1e-12)
    assert default["map_per_category"].keys() == metrics["map_per_category"].keys()
    for name, value in metrics["map_per_category"].items():
        assert default["map_per_category"][name] == pytest.approx(value, abs=1e-12, nan_ok=True), name
    # the grid's, and the job's setting (named: its per-video rows kept for a later run to pair with)
    assert sorted({r["first_threshold"] for r in replay_rows}) == pytest.approx([0.5, 0.55, 0.6, 0.61, 0.65, 0.7])
    assert len(infer_rows) == 6 and {r["video"] for r in replay_rows} == set(infer_rows)
    assert sorted(infer_rows["ytcharlie_000006_000016.mp4"]["labels"]) == [3, 7, 22, 41]


def test_replay_at_the_job_setting_equals_infer_video_by_video(hvu, checkpoint, runs, tmp_path):
    infer_dir, run_dir, _ = runs
    job_setting = ["--first-thresholds", "0.61", "--gate-thresholds", "0.5"]
    args = [*hvu_overrides(hvu, checkpoint, 0.61), "--cache", str(run_dir.parent / "cache"), *job_setting]
    r = CliRunner().invoke(main, ["replay", HVU_JOB, *args, "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    replayed = {r["video"]: r for r in job_setting_rows(tmp_path / "r")}
    inferred = {r["video"]: r for r in pq.read_table(infer_dir / "videos.parquet").to_pylist()}
    assert replayed.keys() == inferred.keys()
    steps = set()
    for video, row in inferred.items():
        for key in ("exit_step", "prediction", "confidence", "labels"):
            assert replayed[video][key] == row[key], (video, key)
        steps.add(row["exit_step"])
    assert len(steps) >= 2  # some videos exit at step 0, others later


def test_reports_show_map_per_category(runs):
    _, run_dir, output = runs
    sweep = pq.read_table(run_dir / "sweep.parquet")
    kind = sweep.schema.field("map_per_category").type
    assert (str(kind.key_type), str(kind.item_type)) == ("string", "double")
    rows = frameexit_rows(sweep.to_pylist())
    assert len(rows) == 15 and all(dict(r["map_per_category"]).keys() == set(HVU_CATEGORIES) for r in rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["default"][0]["map_per_category"]) == set(HVU_CATEGORIES)
    markdown = (run_dir / "summary.md").read_text()
    assert "## mAP per category at the job's setting" in markdown
    assert "| action ↑ | attribute ↑ | concept ↑ | event ↑ | object ↑ | scene ↑ |" in markdown
    assert "# FrameExit report: hvu" in markdown and "summary.md" in output


def test_training_on_hvu_uses_the_per_tag_loss_by_default(hvu, checkpoint, hvu_extracted, tmp_path):
    import torch

    from jobs.config import load_job
    from jobs.extract import ExtractOptions
    from jobs.train import train

    small = ["--train.epochs_classifier", "2", "--train.epochs_gates", "1", "--train.hidden_dim", "16"]
    small += ["--train.batch_size", "3"]
    copy_cache(hvu_extracted.cache_dir, tmp_path / "cache")  # the split's features: train extracts nothing
    options = ExtractOptions(cache_root=str(tmp_path / "cache"))
    heads = {}
    for name, extra in (("default", []), ("bce", ["--train.loss", "bce"]), ("softmax", ["--train.loss", "softmax"])):
        job = load_job(HVU_JOB, [*hvu_overrides(hvu, checkpoint, 0.61), *small, *extra])
        result = train(job, str(tmp_path / f"{name}.pth"), extract_options=options)
        heads[name] = (result.loss, torch.load(result.checkpoint, weights_only=True))
    assert [heads[k][0] for k in ("default", "bce", "softmax")] == ["bce", "bce", "softmax"]
    default, bce, softmax = (heads[k][1] for k in ("default", "bce", "softmax"))
    assert all(torch.equal(default[k], bce[k]) for k in default)  # the default is BCE, bit for bit
    gates = [k for k in default if "exit_selector" in k and k.endswith("weight")]
    assert any(not torch.equal(default[k], softmax[k]) for k in gates)  # a softmax head is another head
