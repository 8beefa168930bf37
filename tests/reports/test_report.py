"""Report stage and the whole job: frontier, budgets, baseline gate, artefacts and their numbers."""

import itertools
import json
import math
import os

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import copy_cache, frameexit_rows, write_job
from PIL import Image

from cli import main
from frameexit.errors import OutputError, UsageError
from jobs.report import ReportInputError, ReportOptions, check_report_options, report
from reports.records import MetricRow, ReplayRecord, check_record
from reports.schema import SWEEP, VIDEOS
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
            "policy": "frameexit",
            "first_threshold": f,
            "gate_threshold": g,
            "tau": None,
            "frames": None,
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
    setting = {"policy": "frameexit", "first_threshold": 0.1, "gate_threshold": 0.2}
    assert chosen["calibrated"] and entry["setting"] == setting
    assert entry["evaluated"]["map"] == 0.4 and entry["calibration"]["map"] == 0.9
    uncalibrated = choose_budget(rows, 2.5, accuracy="map", cost="gflops")["checkpoints"][0]
    assert uncalibrated["setting"] == {"policy": "frameexit", "first_threshold": 0.2, "gate_threshold": 0.1}
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


def _keys(n, start=0):
    return [f"v_{i:03d}.mp4" for i in range(start, start + n)]


def _video_result(key, worse=False):
    """A fake per-video result at the job's setting, a function of the key: (exit_step, prediction, labels)."""
    n = int(key[2:5])
    prediction = n % 7
    labels = [] if n % 9 == 8 else [prediction + 1 if worse or n % 3 == 0 else prediction]
    return n % 4, prediction, labels


def _fake_run(
    path,
    spec=HAND,
    default=(0.2, 0.1),
    *,
    names=("a.pth",),
    dataset="activitynet1.3",
    split="1" * 64,
    videos=None,
    labels="l" * 64,
    classes="c" * 64,
    sha="s" * 64,
    order="coarse_to_fine",
    worse=False,
    video_setting=None,
):
    """Replay outputs of ``spec`` for each checkpoint of ``names``, from the dataset, split file, class list and
    checkpoints given, with per-video rows at the job's setting of ``videos`` (default: 10 videos; ``worse``: no
    video a hit; ``video_setting``: at another setting instead, as --per-video all on a grid without the job's)."""
    videos = _keys(10) if videos is None else videos
    os.makedirs(path, exist_ok=True)
    rows = [{**r, "checkpoint": name, "n_videos": len(videos)} for name in names for r in _rows(spec)]
    write_table(os.path.join(path, "sweep.parquet"), {k: [r[k] for r in rows] for k in SWEEP.names}, SWEEP)
    per_video = [(name, key, *_video_result(key, worse)) for name in names for key in videos]
    columns = {
        "video": [key for _, key, *_ in per_video],
        "exit_step": [step for _, _, step, _, _ in per_video],
        "prediction": [p for *_, p, _ in per_video],
        "confidence": [0.5] * len(per_video),
        "labels": [labels for *_, labels in per_video],
        "policy": ["frameexit"] * len(per_video),
        "first_threshold": [(video_setting or default)[0]] * len(per_video),
        "gate_threshold": [(video_setting or default)[1]] * len(per_video),
        "tau": [None] * len(per_video),
        "frames": [None] * len(per_video),
        "checkpoint": [name for name, *_ in per_video],
    }
    write_table(os.path.join(path, "videos.parquet"), columns, VIDEOS)
    defaults = [r for r in rows if (r["first_threshold"], r["gate_threshold"]) == default]
    parts = {"backbone": 1.0, "projection": 0.1, "classifier": 0.01, "gate": 0.01}
    record = ReplayRecord(
        dataset=dataset,
        dataset_files={"path_split": "/data/split.txt", "path_label": "/data/labels.json"},
        backbone="torchvision.resnet50",
        n_videos=len(videos),
        n_videos_listed=len(videos) + 1,
        skipped=[{"video": "v_x.mp4", "reason": "no frame folder frames/v_x.mp4"}],
        order=[5, 0, 9, 2, 7, 1, 3, 4, 6, 8],
        order_name=order,
        first_thresholds=sorted({f for _, f, _, _, _ in spec}),
        gate_thresholds=sorted({g for _, _, g, _, _ in spec}),
        default_setting={"first_threshold": default[0], "gate_threshold": default[1]},
        default_metrics=[{k: d[k] for k in MetricRow.__annotations__} for d in defaults],
        per_video="default",
        n_settings=len(spec),
        gflops_per_frame=1.0,
        cache={
            "directory": "/cache/" + "k" * 20,
            "key": "k" * 20,
            "inputs": {
                "backbone": "resnet50",
                "backbone_digest": "d" * 64,
                "dataset": dataset,
                "split_digest": split,
                "labels_digest": labels,
                "classes_digest": classes,
            },
        },
        checkpoints=[
            {"name": name, "path": f"/x/{name}", "sha256": sha, "hidden_dim": 4096, "gmacs_measured_parts": parts}
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


HELD_OUT = dict(split="2" * 64, videos=_keys(10, start=100), labels="m" * 64)


def test_calibrated_budget_through_the_cli(tmp_path):
    run = _fake_run(tmp_path / "val")
    held_out = _fake_run(  # held-out training videos: another split, other videos, another label file (a training CSV)
        tmp_path / "heldout",
        [("a.pth", 0.1, 0.1, 0.3, 1.0), ("a.pth", 0.1, 0.2, 0.9, 2.4), ("a.pth", 0.2, 0.1, 0.5, 2.0)],
        **HELD_OUT,
    )
    r = CliRunner().invoke(main, ["report", "--out", run, "--budget", "2.5", "--calibrate-on", held_out])
    assert r.exit_code == 0, r.output
    summary = json.load(open(os.path.join(run, "summary.json")))
    entry = summary["budget"]["checkpoints"][0]
    assert entry["setting"] == {"policy": "frameexit", "first_threshold": 0.1, "gate_threshold": 0.2}
    assert entry["evaluated"]["map"] == 0.4
    md = open(os.path.join(run, "summary.md")).read()
    assert "## Best setting within 2.5 GFLOPs (chosen on the calibration run, evaluated here)" in md
    r = CliRunner().invoke(main, ["report", "--out", run, "--calibrate-on", held_out])
    assert r.exit_code == 2 and "give --budget too" in r.output


def test_report_errors(tmp_path):
    r = CliRunner().invoke(main, ["report", "--out", str(tmp_path)])
    # infer writes the replay's files too (issue 21): the message names every command that does
    assert r.exit_code == 1 and "sweep.parquet not found: run frameexit replay, run or infer with --out" in r.output
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
        for r in frameexit_rows(pq.read_table(out / "sweep.parquet").to_pylist())
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
    # each accuracy with half the width of its bootstrap interval, which the replay computed at the job's setting
    half = {k: (d[f"{k}_interval"][1] - d[f"{k}_interval"][0]) / 2 for k in ("map", "top1")}
    accuracy = f"{d['map']:.4f} ± {half['map']:.4f} | {d['top1']:.4f} ± {half['top1']:.4f}"
    assert f"| {d['checkpoint']} | {accuracy} | n/a | {d['gmacs_measured']:.2f} |" in md
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
    with pytest.raises(ReportInputError, match="--baseline file not found: .*missing.json"):
        check_report_options(out, ReportOptions(baseline=str(tmp_path / "missing.json")))
    with pytest.raises(OutputError, match="--out /proc/frameexit-test/out is not a writable directory"):
        check_report_options("/proc/frameexit-test/out", ReportOptions(budget=3.0))
    with pytest.raises(OutputError, match="is not a writable directory"):
        report("/proc/frameexit-test/out")


# ------------------------------------------------------------------------------ provenance is the replay's


def test_dataset_files_are_made_absolute_where_the_replay_ran(anet, checkpoint, extracted, tmp_path, monkeypatch):
    """A job with relative dataset paths, replayed in the dataset's directory and reported from another one: the
    report names the files the replay read, not the same names under the report's directory."""
    from jobs.config import load_job
    from jobs.replay import ReplayOptions, replay

    files = {"path_frame": "frames", "path_split": "split", "path_label": "labels", "path_classid": "classes"}
    root = os.path.dirname(anet["split"])
    assert all(os.path.dirname(anet[k]) == root for k in files.values())
    relative = {k: os.path.relpath(anet[k], root) for k in files.values()}
    job_file = write_job(str(tmp_path / "job.yml"), relative, checkpoint)
    out, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    copy_cache(extracted.cache_dir, cache)  # the same key: paths are not in it
    monkeypatch.chdir(root)
    grid = ["--replay.first_thresholds", "[0.5]", "--replay.gate_thresholds", "[0.5]"]
    replay(load_job(job_file, grid), out, ReplayOptions(cache_root=cache))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = report(out)
    expected = {key: anet[name] for key, name in files.items()}
    assert result.summary["provenance"]["dataset_files"] == expected
    assert json.load(open(os.path.join(out, "summary.json")))["provenance"]["dataset_files"] == expected
    assert all(os.path.exists(path) for path in expected.values())


# ------------------------------------------------------------------------------ like with like (issue 19, items 6-7)


def test_gate_fails_when_the_run_evaluated_fewer_videos_than_the_baseline(tmp_path):
    """Issue 19, item 6: 19 of the baseline's 40 videos missing; the default rows alone would pass (same numbers)."""
    baseline = _baseline(tmp_path, videos=_keys(40))
    run = _fake_run(tmp_path / "run", videos=_keys(21))
    r = CliRunner().invoke(main, ["report", "--out", run, "--baseline", baseline, "--max-drop", "0"])
    assert r.exit_code == 3, r.output
    assert (
        "REGRESSION: videos: this run evaluated 21 videos, the baseline 40: 19 of the baseline's videos are "
        "missing from this run (v_021.mp4, v_022.mp4, v_023.mp4, ...); metrics over other videos are not the "
        "baseline's: accept this known difference with --accept-missing 19, or make a new baseline"
    ) in r.output
    gate = json.load(open(os.path.join(run, "summary.json")))["baseline"]
    assert gate["passed"] is False and gate["videos"]["missing"] == _keys(19, start=21) and not gate["videos"]["added"]
    assert (gate["videos"]["n_run"], gate["videos"]["n_baseline"], gate["videos"]["n_common"]) == (21, 40, 21)
    md = open(os.path.join(run, "summary.md")).read()
    assert md.startswith("> [!CAUTION]") and "Passed: **no**" in md and "Passed: **yes**" not in md
    assert "| a.pth | not compared |" in md  # mAP over different videos is never shown as compared


def test_an_accepted_difference_is_compared_over_the_common_videos(tmp_path):
    baseline = _baseline(tmp_path, videos=_keys(40))
    run = _fake_run(tmp_path / "run", videos=_keys(21))
    r = CliRunner().invoke(
        main, ["report", "--out", run, "--baseline", baseline, "--max-drop", "0", "--accept-missing", "19"]
    )
    assert r.exit_code == 0, r.output
    assert "baseline: compared over the 21 videos both runs evaluated (this run 21, the baseline 40" in r.output
    summary = json.load(open(os.path.join(run, "summary.json")))
    gate = summary["baseline"]
    assert gate["passed"] and gate["videos"]["compared_over"] == "common" and gate["videos"]["accept_missing"] == 19
    (check,) = gate["checks"]
    assert "not_compared" in check["map"] and gate["not_compared"] == {"map": check["map"]["not_compared"]}
    # top-1, frames and cost of the baseline recomputed over the 21 common videos, exactly those of the run
    common = [_video_result(key) for key in _keys(21)]
    labelled = [prediction in labels for _, prediction, labels in common if labels]
    assert check["top1"] == {
        "baseline": sum(labelled) / len(labelled),
        "current": sum(labelled) / len(labelled),
        "drop": 0,
    }
    frames = sum(step + 1 for step, _, _ in common) / 21
    assert check["gflops"]["baseline"] == check["gflops"]["current"] == frames  # 1 GFLOP per frame in the fake
    md = open(os.path.join(run, "summary.md")).read()
    assert md.startswith("> [!NOTE]\n> **Baseline gate passed over the videos both runs evaluated only**")
    assert "19 of the baseline's videos are missing from this run (v_021.mp4, v_022.mp4, v_023.mp4, ...)" in md
    assert "(accepted: --accept-missing 19)" in md and "mAP is not compared: mAP over the videos both" in md
    assert "| a.pth | not compared | " in md
    # fewer accepted than missing: the gate fails and says how many it would take
    r = CliRunner().invoke(main, ["report", "--out", run, "--baseline", baseline, "--accept-missing", "18"])
    assert r.exit_code == 3 and "--accept-missing 19 (--accept-missing 18 accepts 18)" in r.output, r.output
    # accepted, but worse on the videos both evaluated: a regression of top-1, found over the common videos
    worse = _fake_run(tmp_path / "worse", videos=_keys(21), worse=True)
    r = CliRunner().invoke(
        main, ["report", "--out", worse, "--baseline", baseline, "--max-drop", "0", "--accept-missing", "19"]
    )
    assert r.exit_code == 3, r.output
    top1 = sum(labelled) / len(labelled)
    assert f"REGRESSION: a.pth: top1 fell by {top1:.4f} ({top1:.4f} -> 0.0000), more than 0.0" in r.output
    assert "REGRESSION: videos" not in r.output


def test_without_per_video_results_at_the_job_setting_only_the_same_videos_compare(tmp_path):
    run = _fake_run(tmp_path / "run", videos=_keys(9), video_setting=(0.1, 0.1))
    assert CliRunner().invoke(main, ["report", "--out", run]).exit_code == 0
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["videos"] == _keys(9) and summary["video_results"] == {"a.pth": None}
    r = _gate(run, _baseline(tmp_path, videos=_keys(10)), "--accept-missing", "1")
    assert r.exit_code == 3, r.output
    assert "REGRESSION: a.pth: this run has no per-video results at the job's setting" in r.output
    assert _gate(run, os.path.join(run, "summary.json")).exit_code == 0  # the same videos: the default rows


def test_videos_the_baseline_lacks_fail_the_gate_too(tmp_path):
    baseline = _baseline(tmp_path, videos=_keys(10))
    run = _fake_run(tmp_path / "run", videos=_keys(8) + _keys(3, start=50))
    r = _gate(run, baseline)
    assert r.exit_code == 3, r.output
    assert (
        "this run evaluated 11 videos, the baseline 10: 2 of the baseline's videos are missing from this run "
        "(v_008.mp4, v_009.mp4); 3 videos are not in the baseline (v_050.mp4, v_051.mp4, v_052.mp4)"
    ) in r.output and "--accept-missing 5" in r.output
    assert _gate(run, baseline, "--accept-missing", "5").exit_code == 0


def test_a_baseline_without_its_videos_is_refused(tmp_path):
    """A summary.json of schema_version 1 does not say which videos it evaluated: the gate cannot vouch."""
    doc = json.load(open(_baseline(tmp_path)))
    for key in ("videos", "video_results", "gflops_per_frame"):
        del doc[key]
    doc["schema_version"] = 1
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    r = _gate(_fake_run(tmp_path / "run"), str(old))
    assert r.exit_code == 1, r.output
    assert f"baseline {old} is a summary.json of schema_version 1, which does not record the videos it evaluated" in (
        r.output
    )
    assert "Replay and report the baseline's run again" in r.output
    doc = json.load(open(_baseline(tmp_path, "base2")))
    doc["video_results"]["a.pth"]["hit"].pop()
    (tmp_path / "short.json").write_text(json.dumps(doc))
    r = _gate(_fake_run(tmp_path / "run"), str(tmp_path / "short.json"))
    assert r.exit_code == 1 and "video_results['a.pth'] does not have one entry per video" in r.output, r.output


def test_gate_refuses_a_baseline_of_other_checkpoints_labels_or_classes(tmp_path):
    run = _fake_run(tmp_path / "run")
    cases = [
        (dict(sha="t" * 64), "checkpoint a.pth SHA-256 tttttttttttt... in the baseline, ssssssssssss... in this run"),
        (dict(classes="e" * 64), "class list SHA-256 eeeeeeeeeeee... in the baseline, cccccccccccc... in this run"),
        (dict(labels="m" * 64), "label file SHA-256 mmmmmmmmmmmm... in the baseline, llllllllllll... in this run"),
    ]
    for i, (kwargs, message) in enumerate(cases):
        r = _gate(run, _baseline(tmp_path, f"other-{i}", **kwargs))
        assert r.exit_code == 1, r.output
        assert "is not comparable with this run" in r.output and message in r.output, r.output


def test_calibrate_on_refuses_a_run_of_another_dataset(tmp_path):
    """Issue 19, item 7: an HVU sweep given to an ActivityNet run's --calibrate-on."""
    run = _fake_run(tmp_path / "anet")
    hvu = _fake_run(tmp_path / "hvu", dataset="hvu", classes="h" * 64, **HELD_OUT)
    r = CliRunner().invoke(main, ["report", "--out", run, "--budget", "2.5", "--calibrate-on", hvu])
    assert r.exit_code == 1, r.output
    assert r.output.count("\n") == 1 and r.output.startswith(f"Error: calibration run {hvu} cannot choose this run's")
    assert "dataset 'hvu' in the calibration run, 'activitynet1.3' in this run" in r.output
    assert "class list SHA-256 hhhhhhhhhhhh... in the calibration run, cccccccccccc... in this run" in r.output
    assert not os.path.exists(os.path.join(run, "summary.json"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(classes="e" * 64), "class list SHA-256 eeeeeeeeeeee... in the calibration run, cccccccccccc... in this"),
        (dict(sha="t" * 64), "checkpoint a.pth SHA-256 tttttttttttt... in the calibration run, ssssssssssss... in"),
        (dict(order="sequential"), "policy order 'sequential' in the calibration run, 'coarse_to_fine' in this run"),
        (
            dict(split="1" * 64, videos=_keys(10, start=100)),
            "the calibration run evaluated the same split file as this run (SHA-256 111111111111...): the setting "
            "would be chosen on the videos it is evaluated on",
        ),
        (
            dict(split="2" * 64, videos=_keys(10, start=8)),
            "2 of this run's 10 videos are also in the calibration run (v_008.mp4, v_009.mp4): the setting would be "
            "chosen partly on the videos it is evaluated on",
        ),
    ],
)
def test_calibrate_on_refuses_other_classes_checkpoints_order_or_the_same_videos(tmp_path, kwargs, message):
    run = _fake_run(tmp_path / "run")
    calibration = _fake_run(tmp_path / "cal", **{**HELD_OUT, **kwargs})
    r = CliRunner().invoke(main, ["report", "--out", run, "--budget", "2.5", "--calibrate-on", calibration])
    assert r.exit_code == 1 and message in r.output, r.output


def test_run_checks_the_baseline_and_calibration_run_against_the_job_before_extracting(
    anet, checkpoint, tmp_path, monkeypatch
):
    import jobs.run

    def refuse(*args, **kwargs):
        raise AssertionError("extracted although the calibration run or baseline cannot be compared")

    monkeypatch.setattr(jobs.run, "extract", refuse)
    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    hvu = _fake_run(tmp_path / "hvu", names=("frameexit_resnet18.pth",), dataset="hvu", **HELD_OUT)
    r = CliRunner().invoke(main, ["run", job, "--out", str(tmp_path / "o"), "--budget", "5", "--calibrate-on", hvu])
    assert r.exit_code == 1 and "dataset 'hvu' in the calibration run, 'activitynet1.3' in this run" in r.output
    assert "checkpoint frameexit_resnet18.pth SHA-256 ssssssssssss... in the calibration run" in r.output, r.output
    baseline = _baseline(tmp_path, names=("frameexit_resnet18.pth",))
    r = CliRunner().invoke(main, ["run", job, "--out", str(tmp_path / "o"), "--baseline", baseline])
    assert r.exit_code == 1 and "checkpoint frameexit_resnet18.pth SHA-256 ssssssssssss... in the baseline" in r.output


def test_help_explains_accept_missing():
    for command in ("report", "run"):
        r = CliRunner().invoke(main, [command, "--help"])
        text = " ".join(r.output.split())
        assert r.exit_code == 0 and "--accept-missing N" in text, command
        assert "Accept up to N videos evaluated by only one of this run and the baseline" in text
        assert "mAP is not compared" in text
    text = " ".join(CliRunner().invoke(main, ["report", "--help"]).output.split())
    assert "other videos evaluated than the baseline's (more than --accept-missing N)" in text
    assert "a calibration run must evaluate other videos than this run" in text


def test_gate_with_deleted_frame_folders(anet, checkpoint, extracted, tmp_path):
    """Issue 19, item 6 end to end: frame folders deleted after the baseline was made."""
    import shutil

    root = str(tmp_path / "data")
    shutil.copytree(os.path.dirname(anet["frames"]), root)
    paths = {k: os.path.join(root, os.path.relpath(v, os.path.dirname(anet["frames"]))) for k, v in anet.items()}
    job = write_job(str(tmp_path / "job.yml"), paths, checkpoint)
    cache, base, run = str(tmp_path / "cache"), str(tmp_path / "base"), str(tmp_path / "run")
    copy_cache(extracted.cache_dir, cache)  # these frames' features: the baseline's run extracts nothing
    grid = ["--first-thresholds", "0.5,0.99", "--gate-thresholds", "0.5", "--device", "cpu", "--cache", cache]
    assert CliRunner().invoke(main, ["run", job, "--out", base, *grid]).exit_code == 0
    for key in ("v_bravo.mp4", "v_echo.mp4"):
        shutil.rmtree(os.path.join(paths["frames"], key))
    gate = ["--baseline", os.path.join(base, "summary.json"), "--max-drop", "0", "--max-cost-rise", "0"]
    r = CliRunner().invoke(main, ["run", job, "--out", run, *grid, *gate])
    assert r.exit_code == 3, r.output
    assert (
        "REGRESSION: videos: this run evaluated 4 videos, the baseline 6: 2 of the baseline's videos are missing "
        "from this run (v_bravo.mp4, v_echo.mp4)"
    ) in r.output
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["videos"] == ["v_alpha.mp4", "v_charlie.mp4", "v_delta.mp4", "v_foxtrot.mp4"]
    assert {s["video"] for s in summary["skipped"]} >= {"v_bravo.mp4", "v_echo.mp4"}
    # the known loss accepted: the same features of the 4 videos give the same top-1 and cost, mAP not compared
    r = CliRunner().invoke(main, ["report", "--out", run, *gate, "--accept-missing", "2"])
    assert r.exit_code == 0, r.output
    (check,) = json.load(open(os.path.join(run, "summary.json")))["baseline"]["checks"]
    assert check["top1"]["drop"] == 0 and check["gflops_measured"]["rise"] == 0 and "not_compared" in check["map"]
