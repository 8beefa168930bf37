"""Report stage and the whole job: frontier, budgets, baseline gate, artefacts and their numbers."""

import itertools
import json
import math
import os

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import write_job
from PIL import Image

from cli import main
from frameexit.errors import OutputError, UsageError
from jobs.report import ReportInputError, ReportOptions, check_report_options, report
from reports.records import MetricRow, ReplayRecord, check_record
from reports.schema import SWEEP
from reports.summary import best_within_budget, choose_budget, compare_baseline, pareto_frontier
from reports.write import write_json, write_table

HAND = [  # (checkpoint, first, gate, map, gflops)
    ("a.pth", 0.1, 0.1, 0.50, 1.0),
    ("a.pth", 0.1, 0.2, 0.40, 2.0),  # dominated by the row before
    ("a.pth", 0.2, 0.1, 0.60, 2.0),
    ("a.pth", 0.2, 0.2, 0.60, 3.0),  # as accurate as a cheaper one: not on the frontier
    ("a.pth", 0.3, 0.1, 0.70, 4.0),
    ("a.pth", 0.3, 0.2, float("nan"), 0.5),  # no accuracy: ignored
]


def _rows(spec=HAND):
    return [
        {
            "checkpoint": c,
            "first_threshold": f,
            "gate_threshold": g,
            "map": m,
            "top1": m,
            "gflops": x,
            "gmacs_measured": x / 2,
            "mean_frames": x,
            "exit_histogram": [1.0] + [0.0] * 9,
            "order": "coarse_to_fine",
            "n_videos": 10,
            "map_per_category": None,
            "n_at_risk": None,
        }
        for c, f, g, m, x in spec
    ]


def test_pareto_frontier_on_a_hand_made_sweep():
    frontier = pareto_frontier(_rows(), accuracy="map", cost="gflops")
    assert [(r["gflops"], r["map"]) for r in frontier] == [(1.0, 0.5), (2.0, 0.6), (4.0, 0.7)]


def test_budget_choice_with_and_without_calibration():
    rows = _rows()
    assert best_within_budget(rows, 2.5, accuracy="map", cost="gflops")["first_threshold"] == 0.2
    assert best_within_budget(rows, 0.9, accuracy="map", cost="gflops") is None
    assert best_within_budget(rows, 10, accuracy="map", cost="gflops")["map"] == 0.7
    # calibration split: within 2.5 GFLOPs the best setting there is (0.1, 0.2); it is then evaluated here
    calibration = _rows([("a.pth", 0.1, 0.1, 0.3, 1.0), ("a.pth", 0.1, 0.2, 0.9, 2.4), ("a.pth", 0.2, 0.1, 0.5, 2.0)])
    chosen = choose_budget(rows, 2.5, accuracy="map", cost="gflops", calibration_rows=calibration)
    entry = chosen["checkpoints"][0]
    assert chosen["calibrated"] and entry["setting"] == {"first_threshold": 0.1, "gate_threshold": 0.2}
    assert entry["evaluated"]["map"] == 0.4 and entry["calibration"]["map"] == 0.9
    uncalibrated = choose_budget(rows, 2.5, accuracy="map", cost="gflops")["checkpoints"][0]
    assert uncalibrated["setting"] == {"first_threshold": 0.2, "gate_threshold": 0.1}
    assert uncalibrated["evaluated"]["map"] == 0.6


def test_baseline_comparison():
    base = [{"checkpoint": "a.pth", "map": 0.70, "top1": 0.80, "gflops": 20.0}]
    same = compare_baseline(base, base, max_drop=0.005, max_cost_rise=0.5, cost="gflops")
    assert same["passed"] and not same["regressions"]
    worse = [{"checkpoint": "a.pth", "map": 0.69, "top1": 0.80, "gflops": 21.0}]
    result = compare_baseline(worse, base, max_drop=0.005, max_cost_rise=0.5, cost="gflops")
    assert not result["passed"] and len(result["regressions"]) == 2
    assert "map fell by 0.0100" in result["regressions"][0] and "gflops rose by 1.00" in result["regressions"][1]
    small = [{"checkpoint": "a.pth", "map": 0.697, "top1": 0.80, "gflops": 20.4}]
    assert compare_baseline(small, base, max_drop=0.005, max_cost_rise=0.5, cost="gflops")["passed"]


def _fake_run(path, spec=HAND, default=(0.2, 0.1), *, names=("a.pth",), dataset="activitynet1.3", split="1" * 64):
    """Replay outputs of ``spec`` for each checkpoint of ``names``, from the dataset and split file given."""
    os.makedirs(path, exist_ok=True)
    rows = [{**r, "checkpoint": name} for name in names for r in _rows(spec)]
    write_table(os.path.join(path, "sweep.parquet"), {k: [r[k] for r in rows] for k in SWEEP.names}, SWEEP)
    defaults = [r for r in rows if (r["first_threshold"], r["gate_threshold"]) == default]
    parts = {"backbone": 1.0, "projection": 0.1, "classifier": 0.01, "gate": 0.01}
    record = ReplayRecord(
        dataset=dataset,
        dataset_files={"path_split": "/data/split.txt", "path_label": "/data/labels.json"},
        backbone="torchvision.resnet50",
        n_videos=10,
        n_videos_listed=11,
        skipped=[{"video": "v_x.mp4", "reason": "no frame folder frames/v_x.mp4"}],
        order=[5, 0, 9, 2, 7, 1, 3, 4, 6, 8],
        order_name="coarse_to_fine",
        first_thresholds=sorted({f for _, f, _, _, _ in spec}),
        gate_thresholds=sorted({g for _, _, g, _, _ in spec}),
        default_setting={"first_threshold": default[0], "gate_threshold": default[1]},
        default_metrics=[{k: d[k] for k in MetricRow.__annotations__} for d in defaults],
        per_video="default",
        n_settings=len(spec),
        gflops_per_frame=4.1,
        cache={
            "directory": "/cache/" + "k" * 20,
            "key": "k" * 20,
            "inputs": {"backbone": "resnet50", "backbone_digest": "d" * 64, "split_digest": split},
        },
        checkpoints=[
            {"name": name, "path": f"/x/{name}", "sha256": "s" * 64, "hidden_dim": 4096, "gmacs_measured_parts": parts}
            for name in names
        ],
        runtime={
            "scheduler": "threads",
            "frameexit": "0.1.0",
            "torch": "2.14.1",
            "torchvision": "0.29.1",
            "python": "3.11.7",
            "date": "2026-11-24T00:00:00+00:00",
        },
        job={"data": {"path_split": "split.txt"}},
    )
    check_record(record, ReplayRecord, "the fake replay.json")  # every key, as replay writes them
    write_json(os.path.join(path, "replay.json"), record)
    return str(path)


def test_baseline_gate_exit_codes_and_regression_on_top(tmp_path):
    runner = CliRunner()
    base = _fake_run(tmp_path / "base")
    assert runner.invoke(main, ["report", "--out", base]).exit_code == 0
    same = _fake_run(tmp_path / "same")
    r = runner.invoke(
        main,
        [
            "report",
            "--out",
            same,
            "--baseline",
            os.path.join(base, "summary.json"),
            "--max-drop",
            "0.005",
            "--max-cost-rise",
            "0.5",
        ],
    )
    assert r.exit_code == 0, r.output
    worse = _fake_run(tmp_path / "worse", default=(0.1, 0.1))  # default setting: mAP 0.5 instead of 0.6
    r = runner.invoke(
        main,
        [
            "report",
            "--out",
            worse,
            "--baseline",
            os.path.join(base, "summary.json"),
            "--max-drop",
            "0.005",
            "--max-cost-rise",
            "0.5",
        ],
    )
    assert r.exit_code == 3
    assert "REGRESSION: a.pth: map fell by 0.1000 (0.6000 -> 0.5000), more than 0.005" in r.output
    md = open(os.path.join(worse, "summary.md")).read()
    assert md.startswith("> [!CAUTION]\n> **Regression against the baseline**")
    assert json.load(open(os.path.join(worse, "summary.json")))["baseline"]["passed"] is False


def test_calibrated_budget_through_the_cli(tmp_path):
    run = _fake_run(tmp_path / "val")
    held_out = _fake_run(
        tmp_path / "heldout",
        [("a.pth", 0.1, 0.1, 0.3, 1.0), ("a.pth", 0.1, 0.2, 0.9, 2.4), ("a.pth", 0.2, 0.1, 0.5, 2.0)],
    )
    r = CliRunner().invoke(main, ["report", "--out", run, "--budget", "2.5", "--calibrate-on", held_out])
    assert r.exit_code == 0, r.output
    summary = json.load(open(os.path.join(run, "summary.json")))
    entry = summary["budget"]["checkpoints"][0]
    assert entry["setting"] == {"first_threshold": 0.1, "gate_threshold": 0.2} and entry["evaluated"]["map"] == 0.4
    md = open(os.path.join(run, "summary.md")).read()
    assert "## Best setting within 2.5 GFLOPs (chosen on the calibration run, evaluated here)" in md
    r = CliRunner().invoke(main, ["report", "--out", run, "--calibrate-on", held_out])
    assert r.exit_code == 2 and "give --budget too" in r.output


def test_report_errors(tmp_path):
    r = CliRunner().invoke(main, ["report", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "sweep.parquet not found: run frameexit replay" in r.output
    r = CliRunner().invoke(main, ["report", "--help"])
    assert r.exit_code == 0 and "--baseline" in r.output and "3 when" in r.output


def test_run_produces_every_artefact_with_the_sweep_numbers(anet, checkpoint, tmp_path):
    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        [
            "run",
            job,
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--first-thresholds",
            "0:1:6",
            "--gate-thresholds",
            "0:1:5",
            "--budget",
            "10",
        ],
    )
    assert r.exit_code == 0, r.output
    for name in ("sweep.parquet", "videos.parquet", "summary.md", "summary.json", "curve.png"):
        assert (out / name).is_file(), name
    assert f"FrameExit run: artefacts in {out}" in r.output
    with Image.open(out / "curve.png") as img:
        assert img.format == "PNG" and 600 <= img.width <= 2000 and 400 <= img.height <= 1500
    sweep = {
        (r["checkpoint"], r["first_threshold"], r["gate_threshold"]): r
        for r in pq.read_table(out / "sweep.parquet").to_pylist()
    }
    summary = json.load(open(out / "summary.json"))
    assert summary["n_settings"] == len(sweep) == 30 and summary["cost_metric"] == "gflops_measured"
    assert summary["n_videos_evaluated"] == 6 and summary["n_videos_skipped"] == 2
    md = open(out / "summary.md").read()
    for row in summary["frontier"]:
        src = sweep[(row["checkpoint"], row["first_threshold"], row["gate_threshold"])]
        assert row["map"] == src["map"] and row["gflops_measured"] == 2 * src["gmacs_measured"]
        line = (
            f"| {row['checkpoint']} | {row['first_threshold']:.4g} | {row['gate_threshold']:.4g} | "
            f"{src['map']:.4f} | {2 * src['gmacs_measured']:.2f} |"
        )
        assert line in md
    frontier = summary["frontier"]
    assert all(
        a["map"] < b["map"] and a["gflops_measured"] <= b["gflops_measured"] for a, b in itertools.pairwise(frontier)
    )
    best = max((r for r in sweep.values() if 2 * r["gmacs_measured"] <= 10), key=lambda r: r["map"])
    assert summary["budget"]["checkpoints"][0]["evaluated"]["map"] == best["map"]
    d = summary["default"][0]
    assert f"| {d['checkpoint']} | {d['map']:.4f} | {d['top1']:.4f} | n/a | {d['gmacs_measured']:.2f} |" in md
    assert "v_nofolder.mp4" in md and "## Provenance" in md and summary["provenance"]["cache"]["key"]
    assert not math.isnan(d["map"])


# ------------------------------------------------------------------------------ the gate compares something, or fails


def _gate(run, baseline, *extra):
    args = ["report", "--out", run, "--baseline", baseline, "--max-drop", "0.005", "--max-cost-rise", "0.5", *extra]
    return CliRunner().invoke(main, args)


def _baseline(tmp_path, name="base", **kwargs):
    base = _fake_run(tmp_path / name, **kwargs)
    assert CliRunner().invoke(main, ["report", "--out", base]).exit_code == 0
    return os.path.join(base, "summary.json")


def test_gate_fails_when_the_baseline_has_no_checkpoint_of_the_run(tmp_path):
    baseline = _baseline(tmp_path, names=("old.pth",))
    run = _fake_run(tmp_path / "run", names=("new.pth",))
    r = _gate(run, baseline)
    assert r.exit_code == 3, r.output
    assert "REGRESSION: nothing was compared: no checkpoint of this run is in the baseline" in r.output
    assert "REGRESSION: old.pth: in the baseline but not in this run" in r.output
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["baseline"]["passed"] is False and summary["baseline"]["n_compared"] == 0
    md = open(os.path.join(run, "summary.md")).read()
    assert md.startswith("> [!CAUTION]") and "Passed: **no**" in md and "| new.pth | not in the baseline |" in md


def test_gate_needs_every_baseline_checkpoint_and_accepts_new_ones(tmp_path):
    baseline = _baseline(tmp_path, names=("a.pth", "b.pth"))
    r = _gate(_fake_run(tmp_path / "fewer", names=("a.pth",)), baseline)
    assert r.exit_code == 3 and "REGRESSION: b.pth: in the baseline but not in this run" in r.output, r.output
    more = _fake_run(tmp_path / "more", names=("a.pth", "b.pth", "c.pth"))
    r = _gate(more, baseline)
    assert r.exit_code == 0, r.output
    checks = json.load(open(os.path.join(more, "summary.json")))["baseline"]["checks"]
    assert {c["checkpoint"]: c.get("note") for c in checks} == {
        "a.pth": None,
        "b.pth": None,
        "c.pth": "not in the baseline",
    }


def test_gate_refuses_a_baseline_of_another_dataset_split_or_metric(tmp_path):
    run = _fake_run(tmp_path / "run")
    before = open(_baseline(tmp_path, "run-report")).read()  # a report already beside another run's outputs
    cases = [
        (dict(dataset="minikinetics"), "dataset 'minikinetics' in the baseline, 'activitynet1.3' in this run"),
        (dict(split="2" * 64), "split file SHA-256 222222222222... in the baseline, 111111111111... in this run"),
    ]
    for i, (kwargs, message) in enumerate(cases):
        r = _gate(run, _baseline(tmp_path, f"other-{i}", **kwargs))
        assert r.exit_code == 1, r.output
        assert "is not comparable with this run" in r.output and message in r.output
    # another accuracy metric: this run reports top-1, the baseline mAP
    r = _gate(run, _baseline(tmp_path, "map-base"), "--metric", "top1")
    assert r.exit_code == 1 and "accuracy metric 'map' in the baseline, 'top1' in this run" in r.output, r.output
    # another cost metric (a backbone with the paper's figure against one without)
    doc = json.load(open(_baseline(tmp_path, "cost-base")))
    doc["cost_metric"] = "gflops_measured"
    with open(tmp_path / "cost.json", "w") as f:
        json.dump(doc, f)
    r = _gate(run, str(tmp_path / "cost.json"))
    assert r.exit_code == 1 and "cost metric 'gflops_measured' in the baseline, 'gflops' in this run" in r.output
    assert open(os.path.join(tmp_path / "run-report", "summary.json")).read() == before


def test_baseline_comparison_counts_what_it_compares():
    base = [{"checkpoint": "a.pth", "map": 0.70, "top1": 0.80, "gflops": 20.0}]
    gone = [{"checkpoint": "a.pth", "map": float("nan"), "top1": 0.80, "gflops": 20.0}]
    result = compare_baseline(gone, base, max_drop=0.005, max_cost_rise=0.5, cost="gflops")
    assert not result["passed"] and result["n_compared"] == 1
    assert result["regressions"] == ["a.pth: map is not defined in this run (baseline 0.7000)"]
    nothing = compare_baseline(base, [], max_drop=0.005, max_cost_rise=0.5, cost="gflops")
    assert not nothing["passed"] and "nothing was compared" in nothing["regressions"][0]


# ------------------------------------------------------------------------------ options checked before anything is touched


def test_baseline_inside_out_is_read_before_the_report_is_replaced(tmp_path):
    run = _fake_run(tmp_path / "run")
    assert CliRunner().invoke(main, ["report", "--out", run]).exit_code == 0
    previous = os.path.join(run, "summary.json")
    r = _gate(run, previous)  # CI: compare with the report of the previous run in the same directory
    assert r.exit_code == 0, r.output
    summary = json.load(open(previous))
    assert summary["baseline"]["passed"] is True and summary["baseline"]["n_compared"] == 1


def test_report_options_are_checked_before_anything_is_deleted(tmp_path):
    run = _fake_run(tmp_path / "run")
    held_out = _fake_run(tmp_path / "heldout")
    assert CliRunner().invoke(main, ["report", "--out", run]).exit_code == 0
    before = {name: open(os.path.join(run, name), "rb").read() for name in ("summary.md", "summary.json", "curve.png")}
    not_a_summary = tmp_path / "other.json"
    not_a_summary.write_text('{"map": 0.7}')
    usage = [
        (["--budget", "nan"], "--budget"),
        (["--budget", "inf"], "--budget"),
        (["--calibrate-on", held_out], "give --budget too"),
        (["--max-drop", "0.01"], "give --baseline too"),
        (["--max-cost-rise", "0.5"], "give --baseline too"),
        (["--baseline", str(not_a_summary), "--max-drop", "nan"], "--max-drop"),
        (["--budget", "3", "--calibrate-on", run], "--calibrate-on names the --out directory itself"),
    ]
    for args, message in usage:
        r = CliRunner().invoke(main, ["report", "--out", run, *map(str, args)])
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output and "Traceback" not in r.output, (args, r.output)
    errors = [
        (["--baseline", str(not_a_summary)], "is not a frameexit summary.json"),
        (["--budget", "3", "--calibrate-on", tmp_path], "sweep.parquet not found"),
    ]
    for args, message in errors:
        r = CliRunner().invoke(main, ["report", "--out", run, *map(str, args)])
        assert r.exit_code == 1 and message in r.output, (args, r.output)
    for name, content in before.items():
        assert open(os.path.join(run, name), "rb").read() == content, name


def test_check_report_options_for_run(tmp_path):
    """What `frameexit run` checks before extracting: everything that needs no replay output."""
    out = str(tmp_path / "new-out")
    check_report_options(out, ReportOptions(budget=3.0, baseline=_baseline(tmp_path), max_drop=0.01))
    assert os.path.isdir(out)  # created and proven writable
    with pytest.raises(UsageError, match="finite"):
        check_report_options(out, ReportOptions(budget=float("inf")))
    with pytest.raises(UsageError, match="give --baseline too"):
        check_report_options(out, ReportOptions(max_cost_rise=1.0))
    with pytest.raises(UsageError, match="metric"):
        check_report_options(out, ReportOptions(metric="ap"))
    with pytest.raises(ReportInputError, match="cannot read baseline"):
        check_report_options(out, ReportOptions(baseline=str(tmp_path / "missing.json")))
    with pytest.raises(OutputError, match="--out /proc/frameexit-test/out is not a writable directory"):
        check_report_options("/proc/frameexit-test/out", ReportOptions(budget=3.0))
    with pytest.raises(OutputError, match="is not a writable directory"):
        report("/proc/frameexit-test/out")


# ------------------------------------------------------------------------------ provenance is the replay's


def test_dataset_files_are_made_absolute_where_the_replay_ran(anet, checkpoint, tmp_path, monkeypatch):
    """A job with relative dataset paths, replayed in the dataset's directory and reported from another one: the
    report names the files the replay read, not the same names under the report's directory."""
    from jobs.config import load_job
    from jobs.extract import ExtractOptions, extract
    from jobs.replay import ReplayOptions, replay

    files = {"path_frame": "frames", "path_split": "split", "path_label": "labels", "path_classid": "classes"}
    root = os.path.dirname(anet["split"])
    assert all(os.path.dirname(anet[k]) == root for k in files.values())
    relative = {k: os.path.relpath(anet[k], root) for k in files.values()}
    job_file = write_job(str(tmp_path / "job.yml"), relative, checkpoint)
    out, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    monkeypatch.chdir(root)
    extract(load_job(job_file), ExtractOptions(cache_root=cache, shard_size=4))
    replay(load_job(job_file), out, ReplayOptions(cache_root=cache, first_thresholds=(0.5,), gate_thresholds=(0.5,)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = report(out)
    expected = {key: anet[name] for key, name in files.items()}
    assert result.summary["provenance"]["dataset_files"] == expected
    assert json.load(open(os.path.join(out, "summary.json")))["provenance"]["dataset_files"] == expected
    assert all(os.path.exists(path) for path in expected.values())
