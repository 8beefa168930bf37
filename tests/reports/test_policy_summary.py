"""The report's exit-policy facts and the paired comparison, by hand on small rows (issue 22)."""

import math

import pytest

from frameexit.bootstrap import resample_weights
from reports.summary import (
    baseline_gate,
    budget_matched,
    describe_setting,
    named_settings,
    paired_comparison,
    policy_points,
    setting_of,
    significance_test,
)


def _row(policy, acc, cost, **setting):
    keys = dict.fromkeys(("first_threshold", "gate_threshold", "tau", "frames"))
    return {"checkpoint": "a.pth", "policy": policy, **keys, **setting, "top1": acc, "map": acc, "gflops": cost}


DEFAULT = _row("frameexit", 0.80, 5.0, first_threshold=0.9, gate_threshold=0.5)
ROWS = [
    DEFAULT,
    _row("frameexit", 0.86, 7.0, first_threshold=0.95, gate_threshold=0.5),
    _row("confidence", 0.70, 2.0, tau=0.5),
    _row("confidence", 0.82, 4.5, tau=0.8),
    _row("confidence", 0.85, 5.5, tau=0.9),
    _row("fixed", 0.60, 1.0, frames=1),
    _row("fixed", 0.78, 5.0, frames=2),
    _row("fixed", 0.87, 10.0, frames=3),
    _row("oracle", 0.95, 1.5),
]


def test_policy_points_by_hand():
    points = {p["policy"]: p for p in policy_points(ROWS, DEFAULT, accuracy="top1", cost="gflops")}
    assert list(points) == ["frameexit", "confidence", "fixed", "oracle"]
    # at the job's cost 5.0: frameexit is the job's setting; confidence 0.82 at 4.5 (0.85 costs 5.5); fixed 2 frames
    assert setting_of(points["frameexit"]["at_job_cost"]) == setting_of(DEFAULT)
    assert points["confidence"]["at_job_cost"]["tau"] == 0.8
    assert points["fixed"]["at_job_cost"]["frames"] == 2
    assert points["oracle"]["at_job_cost"]["top1"] == 0.95
    # full T (fixed 3 frames) 0.87: within one point is >= 0.86
    assert points["frameexit"]["within_one_point"]["first_threshold"] == 0.95
    assert points["confidence"]["within_one_point"] is None
    assert points["fixed"]["within_one_point"]["frames"] == 3
    assert points["oracle"]["within_one_point"]["top1"] == 0.95


def test_named_settings_are_each_point_once_the_job_setting_first():
    named = named_settings(ROWS, DEFAULT, cost="gflops", budget=7.0)
    assert named[0] == setting_of(DEFAULT)
    assert len(named) == len({str(s) for s in named})
    assert {"policy": "oracle"} in named and {"policy": "fixed", "frames": 3} in named
    assert {"policy": "frameexit", "first_threshold": 0.95, "gate_threshold": 0.5} in named  # the budget's and close
    # at a budget of 2.0, each policy's choice: confidence tau 0.5 (2.0), fixed 1 frame (1.0); named for it only
    cheap = named_settings(ROWS, DEFAULT, cost="gflops", budget=2.0)
    assert {"policy": "confidence", "tau": 0.5} in cheap and {"policy": "fixed", "frames": 1} in cheap
    assert {"policy": "confidence", "tau": 0.5} not in named_settings(ROWS, DEFAULT, cost="gflops")


def test_describe_setting():
    assert describe_setting({"policy": "confidence", "tau": 0.9}, policy=True) == "confidence tau 0.9"
    assert describe_setting({"policy": "fixed", "frames": 4}) == "4 frames"
    assert describe_setting(setting_of(DEFAULT)) == "first 0.9, gate 0.5"


def _summary(videos, hits, top1, maps=None, resamples=100, seed=0):
    boot = {"resamples": resamples, "seed": seed, "level": 0.95, "map_resampled": {"a.pth": maps} if maps else {}}
    return {
        "videos": videos,
        "video_results": {"a.pth": {"exit_step": [0] * len(videos), "hit": hits}},
        "default": [{"checkpoint": "a.pth", "top1": top1, "map": 0.5}],
        "bootstrap": boot,
    }


def test_a_run_against_itself_changes_by_nothing_with_a_zero_width_interval():
    run = _summary(list("abcdef"), [True, False, True, None, True, False], 0.6, maps=[0.5] * 100)
    paired = paired_comparison(run, run, level=0.95)
    check = paired["checkpoints"][0]
    assert check["top1"]["change"] == 0 and check["top1"]["interval"] == [0.0, 0.0]
    assert check["map"]["interval"] == [0.0, 0.0]


def test_paired_difference_by_hand():
    # this run gets video c right where the baseline did not; the baseline evaluated an extra video z
    ours = _summary(list("abcd"), [True, True, True, False], 0.75)
    theirs = _summary([*"abcd", "z"], [True, True, False, False, True], 0.6)
    paired = paired_comparison(ours, theirs, level=0.95)
    check = paired["checkpoints"][0]
    assert paired["n_videos"] == 4 and check["top1"]["change"] == pytest.approx(0.25)
    # per resample: the change is (copies of c) / 4, the resamples drawn over the 4 common videos
    weights = resample_weights(4, 100, 0)
    changes = sorted(weights[:, 2] / 4)
    low, high = check["top1"]["interval"]
    assert changes[0] <= low <= high <= changes[-1] and low >= 0
    assert "not_compared" in check["map"]  # other videos: the resampled mAP of the two runs cannot pair


def test_significance_of_a_drop():
    paired = {"level": 0.95, "checkpoints": [{"checkpoint": "a.pth", "top1": {"interval": [-0.05, -0.03]}}]}
    test = significance_test(paired, 0.01)
    assert test("a.pth", "top1")[0] is True  # the drop's interval [0.03, 0.05] is wholly above 0.01
    assert significance_test(paired, 0.04)("a.pth", "top1")[0] is False  # reaches below 0.04
    assert test("a.pth", "map")[0] is None  # no interval: the point estimate decides


def test_budget_matched_reads_this_runs_best_setting_at_the_baseline_cost():
    baseline = {"default": [_row("frameexit", 0.84, 7.5, first_threshold=0.9, gate_threshold=0.5)]}
    (entry,) = budget_matched(ROWS, baseline, accuracy="top1", cost="gflops")
    assert entry["setting"] == {"policy": "frameexit", "first_threshold": 0.95, "gate_threshold": 0.5}
    assert math.isclose(entry["change"], 0.86 - 0.84)


def _gate_summary(hits, top1):
    videos = [f"v{i:03d}" for i in range(len(hits))]
    row = {"checkpoint": "a.pth", "map": 0.5, "top1": top1, "gflops": 5.0}
    boot = {"resamples": 200, "seed": 0, "level": 0.95, "map_resampled": {"a.pth": [0.5] * 200}}
    results = {"a.pth": {"exit_step": [0] * len(hits), "hit": hits}}
    return {"cost_metric": "gflops", "videos": videos, "default": [row], "video_results": results, "bootstrap": boot}


@pytest.mark.parametrize(("flipped", "fails"), [(2, False), (40, True)])
def test_significance_gates_a_drop_only_when_the_paired_interval_confirms_it(flipped, fails):
    """100 videos, 72 right in the baseline; this run gets ``flipped`` of them wrong: a drop beyond max drop in
    both cases, significant at 95 % only for the large one (2 videos are within what resampling moves)."""
    base_hits = [i < 72 for i in range(100)]
    hits = [h and i >= flipped for i, h in enumerate(base_hits)]
    current, baseline = _gate_summary(hits, sum(hits) / 100), _gate_summary(base_hits, 0.72)
    paired = paired_comparison(current, baseline, level=0.95)
    test = significance_test(paired, 0.005)
    plain = baseline_gate(current, baseline, max_drop=0.005, max_cost_rise=None)
    gated = baseline_gate(current, baseline, max_drop=0.005, max_cost_rise=None, significant=test)
    assert not plain["passed"] and plain["regressions"][0].startswith("a.pth: top1 fell by")
    assert gated["passed"] is not fails
    note = gated["checks"][0]["top1"]["significance"]
    assert note.startswith("significant at 95 %" if fails else "not significant at 95 %")
    assert paired["checkpoints"][0]["map"]["interval"] == [0.0, 0.0]  # the same resampled mAP: no change


def test_significance_without_max_drop_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from cli import main

    r = CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--significance", "0.95"])
    assert r.exit_code == 2 and "--significance tests a drop beyond --max-drop" in r.output
    r = CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--significance", "1.5"])
    assert r.exit_code == 2 and "--significance" in r.output


def test_the_report_knows_every_policy_and_its_threshold_columns():
    from frameexit.policies import POLICIES
    from reports.schema import SETTING_COLUMNS
    from reports.summary import POLICY_SETTING_KEYS

    assert tuple(POLICY_SETTING_KEYS) == POLICIES
    assert {k for keys in POLICY_SETTING_KEYS.values() for k in keys} == set(SETTING_COLUMNS) - {"policy"}


def test_one_policy_alone_has_nothing_to_put_side_by_side():
    from reports.summary import policy_summary

    confidence = [r for r in ROWS if r["policy"] == "confidence"][:1]
    assert policy_summary(confidence, confidence, accuracy="top1", cost="gflops", lookup={}) == []
    assert policy_summary(ROWS, [DEFAULT], accuracy="top1", cost="gflops", lookup={})[0]["checkpoint"] == "a.pth"
