"""`frameexit infer` writes a replay's files of its one setting: `frameexit report` reads its folder, and its sweep
row is the one a per-step replay computes at that setting (one definition of a metric row)."""

import json
import math
import os

import pyarrow.parquet as pq
import pytest
from helpers import frameexit_rows, invoke, write_job

from jobs.config import load_job
from jobs.extract import ExtractOptions, extract
from jobs.infer import infer
from jobs.outputs import INFER_FILES, REPLAY_FILES, REPORT_FILES
from jobs.replay import ReplayOptions, replay
from reports.records import ReplayRecord, read_record

#: Settings where the fixture's videos exit at several steps (first threshold above every step-0 confidence).
SETTING = ["--model.first_threshold", "0.99", "--model.gate_threshold", "0.5"]


@pytest.fixture(scope="module")
def runs(hvu, checkpoint, tmp_path_factory):
    """infer and a per-step replay of the same job (HVU: categories), each reported."""
    root = tmp_path_factory.mktemp("infer-report")
    job_file = write_job(str(root / "job.yml"), hvu, checkpoint, name="hvu")
    job = load_job(job_file, SETTING).with_value("extract.batching", "per-step")
    infer(job, str(root / "infer"), device="cpu")
    extract(job, ExtractOptions(cache_root=str(root / "cache")))
    replay(job, str(root / "replay"), ReplayOptions(cache_root=str(root / "cache")))
    for name in ("infer", "replay"):
        r = invoke("report", "--out", root / name)
        assert r.exit_code == 0, r.output
    return root


def _sweep_row(folder):
    rows = frameexit_rows(pq.read_table(folder / "sweep.parquet").to_pylist())  # a replay's gates
    assert len(rows) == 1
    return rows[0]


def _plain(value):
    """A value with NaN as None (parquet keeps NaN, JSON writes null) and map columns as dicts: compared with ==."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return {k: _plain(v) for k, v in value}
    return value


def test_infer_writes_a_replays_files_and_its_sweep_row_equals_a_per_step_replays(runs):
    infer_dir, replay_dir = runs / "infer", runs / "replay"
    assert _files(infer_dir) == {*INFER_FILES, *REPORT_FILES}
    ours, theirs = _sweep_row(infer_dir), _sweep_row(replay_dir)
    assert ours["order"] == theirs["order"] == "coarse_to_fine" and ours["n_at_risk"] == theirs["n_at_risk"] == 0
    assert ours["checkpoint"] == theirs["checkpoint"] and ours["map_per_category"]  # HVU's categories
    assert 1 < ours["mean_frames"] < 10  # the setting moves exits around
    # per-step features give infer's decisions bit for bit, and the metrics are computed alike: equal rows
    assert {k: _plain(v) for k, v in ours.items()} == {k: _plain(v) for k, v in theirs.items()}
    # one definition: metrics.json's and replay.json's figures are the sweep row's, bit for bit
    metrics = json.loads((infer_dir / "metrics.json").read_text())
    record = read_record(infer_dir / "replay.json", ReplayRecord)
    (default,) = record["default_metrics"]
    for key in ("map", "top1", "gflops", "gmacs_measured", "mean_frames", "exit_histogram", "map_per_category"):
        assert metrics[key] == default[key] == _plain(ours[key]), key
    assert metrics["n_videos"] == record["n_videos"] == ours["n_videos"]
    assert record["cache"] is None and record["exactness"]["status"] == "exact"
    inputs = read_record(replay_dir / "replay.json", ReplayRecord)["cache"]["inputs"]
    assert record["dataset_digests"] == {k: inputs[k] for k in ("split_digest", "labels_digest", "classes_digest")}


def test_reports_of_infer_and_of_a_per_step_replay_say_the_same(runs):
    ours, theirs = (json.loads((runs / n / "summary.json").read_text()) for n in ("infer", "replay"))
    for key in (
        "dataset",
        "accuracy_metric",
        "cost_metric",
        "default",
        "frontier",
        "n_settings",
        "n_videos_listed",
        "n_videos_evaluated",
        "n_videos_labelled",
        "n_videos_skipped",
        "skipped",
        "videos",
        "video_results",
        "gflops_per_frame",
    ):
        assert ours[key] == theirs[key], key
    assert ours["provenance"]["cache"] is None and ours["exactness"]["status"] == "exact"
    assert "sequential reference itself" in (runs / "infer" / "summary.md").read_text()
    assert "sequential reference itself" not in (runs / "replay" / "summary.md").read_text()


def test_a_replay_report_gates_against_an_infer_baseline_and_back(runs, tmp_path):
    for run, base in (("replay", "infer"), ("infer", "replay")):
        baseline = tmp_path / f"{base}.json"
        baseline.write_text((runs / base / "summary.json").read_text())
        r = invoke("report", "--out", runs / run, "--baseline", baseline)
        assert r.exit_code == 0, r.output
        gate = json.loads((runs / run / "summary.json").read_text())["baseline"]
        assert gate["passed"] and gate["videos"]["compared_over"] == "all", gate
    r = invoke("report", "--out", runs / "infer")
    assert r.exit_code == 0 and "this is frameexit infer's own run" in r.output, r.output


def test_an_infer_baseline_of_other_labels_is_not_comparable(runs, hvu, checkpoint, tmp_path):
    """infer records the digests of the dataset files that a replay's cache records: a label file changed since
    is named, not compared over."""
    baseline = tmp_path / "infer.json"
    document = json.loads((runs / "infer" / "summary.json").read_text())
    document["provenance"]["dataset_digests"]["labels_digest"] = "0" * 64
    baseline.write_text(json.dumps(document))
    r = invoke("report", "--out", runs / "replay", "--baseline", baseline)
    assert r.exit_code == 1 and "label file SHA-256 000000000000... in the baseline" in r.output, r.output


def test_a_folder_holds_one_commands_files(hvu, checkpoint, tmp_path):
    """infer replaces a replay's files and its report; a replay removes infer's metrics.json."""
    job = load_job(write_job(str(tmp_path / "job.yml"), hvu, checkpoint, name="hvu"), SETTING)
    out = tmp_path / "out"
    extract(job, ExtractOptions(cache_root=str(tmp_path / "cache")))
    replay(job, str(out), ReplayOptions(cache_root=str(tmp_path / "cache")))
    assert invoke("report", "--out", out).exit_code == 0
    infer(job, str(out), device="cpu")
    assert _files(out) == set(INFER_FILES)
    assert read_record(out / "replay.json", ReplayRecord)["cache"] is None
    replay(job, str(out), ReplayOptions(cache_root=str(tmp_path / "cache")))
    assert _files(out) == set(REPLAY_FILES)


def _files(folder):
    return {name for name in os.listdir(folder) if not name.startswith(".")}  # the lock file is not an output


def test_a_report_of_one_setting_says_setting(runs):
    r = invoke("report", "--out", runs / "infer")
    assert r.exit_code == 0, r.output
    assert "FrameExit report: 1 setting, 1 on the frontier" in r.output
    assert "1 settings" not in r.output
    assert "1 setting swept" in (runs / "infer" / "summary.md").read_text()
