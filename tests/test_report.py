"""Report stage and the whole job: frontier, budgets, baseline gate, artefacts and their numbers."""

import itertools
import json
import math
import os

import pyarrow.parquet as pq
from click.testing import CliRunner
from helpers import write_job
from PIL import Image

from cli import main
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


def _fake_run(path, spec=HAND, default=(0.2, 0.1)):
    os.makedirs(path, exist_ok=True)
    rows = _rows(spec)
    write_table(os.path.join(path, "sweep.parquet"), {k: [r[k] for r in rows] for k in SWEEP.names}, SWEEP)
    d = next(r for r in rows if (r["first_threshold"], r["gate_threshold"]) == default)
    write_json(
        os.path.join(path, "replay.json"),
        {
            "dataset": "activitynet1.3",
            "backbone": "torchvision.resnet50",
            "n_videos": 10,
            "n_videos_listed": 11,
            "skipped": [{"video": "v_x.mp4", "reason": "no frame folder frames/v_x.mp4"}],
            "order_name": "coarse_to_fine",
            "default_metrics": [
                {
                    k: d[k]
                    for k in (
                        "checkpoint",
                        "first_threshold",
                        "gate_threshold",
                        "map",
                        "top1",
                        "gflops",
                        "gmacs_measured",
                        "mean_frames",
                        "exit_histogram",
                    )
                }
            ],
            "cache": {"key": "k" * 20, "inputs": {"backbone": "resnet50", "backbone_digest": "d" * 64}},
            "checkpoints": [{"name": "a.pth", "path": "/x/a.pth", "sha256": "s" * 64}],
            "runtime": {"frameexit": "0.1.0", "torch": "2.14.1", "date": "2026-11-24T00:00:00+00:00"},
            "job": {"data": {"path_split": "split.txt"}},
        },
    )
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
    assert r.exit_code == 1 and "give --budget too" in r.output


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
