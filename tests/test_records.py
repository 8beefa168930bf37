"""metrics.json, replay.json and summary.json: written and read through one definition each; a missing key is an
error naming the file and the key, never a silent null."""

import json
import os
import platform

import pytest
import torch
from click.testing import CliRunner
from helpers import write_job

import frameexit
from cli import main
from jobs.config import load_job
from jobs.extract import ExtractOptions, extract
from jobs.infer import infer
from jobs.replay import ReplayOptions, replay
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


@pytest.fixture(scope="module")
def outputs(anet, checkpoint, tmp_path_factory):
    """An infer output directory and a replayed-and-reported one, from the same job."""
    root = tmp_path_factory.mktemp("records")
    job_file = write_job(str(root / "job.yml"), anet, checkpoint)
    cache = str(root / "cache")
    extract(load_job(job_file), ExtractOptions(cache_root=cache, shard_size=4))
    run = str(root / "run")
    replay(
        load_job(job_file), run, ReplayOptions(cache_root=cache, first_thresholds=(0.5, 1.0), gate_thresholds=(0.5,))
    )
    report(run)
    infer(load_job(job_file), str(root / "infer"), device="cpu")
    return str(root / "infer"), run


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
    assert set(rec) == set(ReplayRecord.__annotations__)
    assert set(rec["runtime"]) == set(Runtime.__annotations__) | {"scheduler"}
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
    assert read_baseline(os.path.join(run, "summary.json")).rows[0]["checkpoint"]
