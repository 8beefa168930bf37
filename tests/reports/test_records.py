"""metrics.json, replay.json and summary.json: written and read through one definition each; a missing key is an
error naming the file and the key, never a silent null."""

import json
import os
import platform

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from helpers import frameexit_rows

import frameexit
from cli import main
from jobs.report import ReportInputError, read_baseline, report
from reports.records import (
    InferMetrics,
    MetricRow,
    RecordError,
    ReplayRecord,
    Runtime,
    Summary,
    Versions,
    check_record,
    read_record,
    runtime,
    versions,
)
from reports.summary import common_rows


@pytest.fixture(scope="module")
def outputs(inferred, reported):
    """The session's infer output folder and its replayed-and-reported one (read only), from the same job."""
    return inferred, reported


def _edited(path, dest, edit):
    """A copy of the JSON document at ``path`` in ``dest`` (same file name), changed by ``edit(doc)``."""
    with open(path) as f:
        doc = json.load(f)
    edit(doc)
    os.makedirs(dest, exist_ok=True)
    out = os.path.join(dest, os.path.basename(path))
    with open(out, "w") as f:
        json.dump(doc, f)
    return out


def test_runtime_block():
    block = runtime()
    assert set(block) == set(Runtime.__annotations__) == {"date", "frameexit", "torch", "torchvision", "python"}
    assert block["frameexit"] == frameexit.__version__ and block["torch"] == torch.__version__
    assert block["python"] == platform.python_version() and block["date"].endswith("+00:00")
    assert versions(block) == {k: block[k] for k in Versions.__annotations__} and "date" not in versions(block)


def test_every_document_reads_back_through_its_record(outputs):
    infer_dir, run = outputs
    metrics = read_record(os.path.join(infer_dir, "metrics.json"), InferMetrics)
    assert set(metrics) == set(InferMetrics.__annotations__)
    assert set(metrics["runtime"]) == set(Runtime.__annotations__) | {"device", "seconds", "frames_read"}
    rec = read_record(os.path.join(run, "replay.json"), ReplayRecord)
    assert set(rec) == set(ReplayRecord.__annotations__) - {"dataset_digests"}  # infer's only
    assert set(rec["runtime"]) == set(Runtime.__annotations__) | {"scheduler", "head_device"}
    assert [set(r) for r in rec["default_metrics"]] == [set(MetricRow.__annotations__)]
    summary = read_record(os.path.join(run, "summary.json"), Summary)
    assert set(summary) == set(Summary.__annotations__)
    assert summary["provenance"]["versions"] == versions(rec["runtime"])
    assert summary["provenance"]["replayed"] == rec["runtime"]["date"]
    assert summary["provenance"]["dataset_files"] == rec["dataset_files"]


def test_a_missing_or_renamed_key_is_an_error_naming_file_and_key(outputs, tmp_path):
    infer_dir, run = outputs
    path = _edited(os.path.join(infer_dir, "metrics.json"), tmp_path / "m", lambda d: d["runtime"].pop("date"))
    with pytest.raises(RecordError, match=f"{path} is not a frameexit metrics.json: key 'runtime.date' is missing"):
        read_record(path, InferMetrics)

    def rename(doc):
        doc["default_metrics"][0]["mAP"] = doc["default_metrics"][0].pop("map")

    path = _edited(os.path.join(run, "replay.json"), tmp_path / "r", rename)
    with pytest.raises(RecordError, match=r"key 'default_metrics\[0\]\.map' is missing"):
        read_record(path, ReplayRecord)
    with pytest.raises(RecordError, match="the document is not a JSON object"):
        check_record([], ReplayRecord, "x")


def test_report_refuses_replay_outputs_without_a_key(outputs, tmp_path):
    _, run = outputs
    broken = tmp_path / "old-replay"
    broken.mkdir()
    with open(os.path.join(run, "sweep.parquet"), "rb") as src, open(broken / "sweep.parquet", "wb") as dst:
        dst.write(src.read())
    path = _edited(os.path.join(run, "replay.json"), broken, lambda d: d.pop("dataset_files"))
    with pytest.raises(ReportInputError, match="key 'dataset_files' is missing"):
        report(str(broken))
    r = CliRunner().invoke(main, ["report", "--out", str(broken)])
    assert r.exit_code == 1 and f"{path} is not a frameexit replay.json: key 'dataset_files' is missing" in r.output
    assert not os.path.exists(broken / "summary.json")


def test_a_baseline_without_a_key_is_refused(outputs, tmp_path):
    _, run = outputs
    path = _edited(os.path.join(run, "summary.json"), tmp_path, lambda d: d["provenance"].pop("cache"))
    with pytest.raises(ReportInputError, match="is not a frameexit summary.json: key 'provenance.cache' is missing"):
        read_baseline(path)
    assert read_baseline(os.path.join(run, "summary.json")).document["default"][0]["checkpoint"]


def test_summary_records_each_video_and_what_its_metrics_are_recomputed_from(outputs):
    """summary.json's videos and per-video results (what the gate compares over a subset) give back the job's
    setting's top-1, frames and cost over every video."""
    _, run = outputs
    summary = read_record(os.path.join(run, "summary.json"), Summary)
    setting = summary["provenance"]["job"]["model"]
    rows = frameexit_rows(
        pq.read_table(os.path.join(run, "videos.parquet")).to_pylist(),
        first_threshold=setting["first_threshold"],
        gate_threshold=setting["gate_threshold"],
    )
    assert summary["videos"] == sorted({r["video"] for r in rows}) and len(summary["videos"]) == 6
    assert summary["n_videos_evaluated"] == 6 and summary["gflops_per_frame"] is None
    by_key = {r["video"]: r for r in rows}
    results = summary["video_results"]["frameexit_resnet18.pth"]
    assert results["exit_step"] == [by_key[k]["exit_step"] for k in summary["videos"]]
    hits = [by_key[k]["prediction"] in by_key[k]["labels"] if by_key[k]["labels"] else None for k in summary["videos"]]
    assert results["hit"] == hits and hits.count(None) == 1  # v_delta.mp4 has no label
    (row,) = common_rows(summary, set(summary["videos"]))
    (default,) = summary["default"]
    assert row["top1"] == pytest.approx(default["top1"], abs=1e-12) and row["map"] is None
    assert row["mean_frames"] == pytest.approx(default["mean_frames"], abs=1e-12)
    assert row["gmacs_measured"] == pytest.approx(default["gmacs_measured"], rel=1e-12)
    assert row["gflops_measured"] == pytest.approx(default["gflops_measured"], rel=1e-12) and row["gflops"] is None
