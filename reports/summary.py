"""The facts of a report, computed from replay outputs: headline, Pareto frontier, budgets, baseline gate.

Pure functions over plain rows (dicts as read from ``sweep.parquet``); the JSON document they build is
``summary.json`` (:class:`reports.records.Summary` documents every key) and the input of the Markdown and plot
renderers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from frameexit.bootstrap import (
    DEFAULT_RESAMPLES,
    common_videos,
    paired_difference,
    resample_weights,
    resampled_top1,
)
from frameexit.step_costs import StepCosts

from .records import CheckpointAtRisk, SummaryExactness

#: FrameExit ResNet-50 on ActivityNet-1.3, from the official README: (GFLOPs, mAP in %).
PUBLISHED_ACTIVITYNET_RESNET50 = (
    (17.96, 72.72),
    (19.89, 73.90),
    (23.78, 75.37),
    (26.56, 76.05),
    (29.09, 76.41),
    (41.2, 77.30),
)

HIGHER_IS_BETTER = {"map": True, "top1": True} | dict.fromkeys(
    ("gflops", "gflops_measured", "gmacs_measured", "mean_frames"), False
)

Row = Mapping[str, Any]


def _finite(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def cost_metric(rows: Iterable[Row]) -> str:
    """``gflops`` when every row has the paper-convention figure, else ``gflops_measured``."""
    return "gflops" if all(_finite(r.get("gflops")) for r in rows) else "gflops_measured"


COST_LABELS = {
    "gflops": "GFLOPs per video (paper convention: backbone GMACs per frame x frames read)",
    "gflops_measured": "measured GFLOPs per video (2 x GMACs, backbone + head)",
}


def with_cost(row: Row) -> dict[str, Any]:
    """A copy of the row with ``gflops_measured`` (2 x ``gmacs_measured``) added."""
    out = dict(row)
    gmacs = row.get("gmacs_measured")
    out["gflops_measured"] = 2.0 * gmacs if _finite(gmacs) else None
    return out


#: The setting columns each exit policy uses (frameexit.policies); the others are null in its rows.
POLICY_SETTING_KEYS = {
    "frameexit": ("first_threshold", "gate_threshold"),
    "confidence": ("tau",),
    "fixed": ("frames",),
    "oracle": (),
}
#: One point of accuracy, as a fraction: how close to the full-T accuracy a policy must come (summary.md).
ONE_POINT = 0.01


def setting_problem(row: Row) -> str | None:
    """How a row's setting is not one of its policy's (an unknown policy, or a threshold it needs that is null or not
    finite), in words; ``None`` when it is."""
    policy = policy_of(row)
    if policy not in POLICY_SETTING_KEYS:
        return f"policy {policy!r} is not one of {', '.join(POLICY_SETTING_KEYS)}"
    for key in POLICY_SETTING_KEYS[policy]:
        value = row.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"policy {policy!r} needs a finite {key}, got {value!r}"
    return None


def policy_of(row: Row) -> str:
    """The exit policy of a row (a replay.json row written before policies were: frameexit)."""
    return row.get("policy") or "frameexit"


def setting_of(row: Row) -> dict[str, Any]:
    """The setting of a row: its policy and that policy's thresholds (``{"policy": "fixed", "frames": 4}``)."""
    policy = policy_of(row)
    return {"policy": policy, **{k: row[k] for k in POLICY_SETTING_KEYS.get(policy, ())}}


def describe_setting(setting: Mapping[str, Any], *, policy: bool = False) -> str:
    """A setting's thresholds in words: ``first 0.5, gate 0.5``, ``tau 0.9``, ``4 frames``, ``no threshold``
    (oracle); with ``policy``, the policy's name first (``confidence tau 0.9``)."""
    name = setting.get("policy", "frameexit")
    if name == "frameexit":
        text = f"first {setting['first_threshold']:g}, gate {setting['gate_threshold']:g}"
    elif name == "confidence":
        text = f"tau {setting['tau']:g}"
    elif name == "fixed":
        text = f"{setting['frames']} frames"
    else:
        text = "no threshold"
    return f"{name} {text}" if policy else text


def _setting_rank(row: Row) -> tuple:
    """Tie order of two rows of equal accuracy and cost: policy, then its thresholds, smaller first."""
    return (policy_of(row), *(row.get(k) or 0 for k in ("first_threshold", "gate_threshold", "tau", "frames")))


def by_policy(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows grouped by exit policy, in the order policies first appear."""
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(policy_of(r), []).append(r)
    return out


def pareto_frontier(rows: Sequence[Row], *, accuracy: str, cost: str) -> list[dict[str, Any]]:
    """Settings no other setting beats (strictly more accurate than every cheaper-or-equal one), copied, by cost
    ascending (ties: higher accuracy first); rows without a finite accuracy or cost are ignored."""
    usable = [dict(r) for r in rows if _finite(r.get(accuracy)) and _finite(r.get(cost))]

    def rank(r: Row) -> tuple:
        return r[cost], -r[accuracy], r.get("checkpoint", ""), *_setting_rank(r)

    usable.sort(key=rank)
    frontier, best = [], -math.inf
    for r in usable:
        if r[accuracy] > best:
            frontier.append(r)
            best = r[accuracy]
    return frontier


def best_within_budget(rows: Sequence[Row], budget: float, *, accuracy: str, cost: str) -> dict[str, Any] | None:
    """The most accurate row with ``cost <= budget`` (ties: cheaper, then smaller thresholds); ``None`` if none fits."""
    fits = [r for r in rows if _finite(r.get(cost)) and _finite(r.get(accuracy)) and r[cost] <= budget]
    if not fits:
        return None
    return dict(min(fits, key=lambda r: (-r[accuracy], r[cost], *_setting_rank(r))))


def why_none_fits(rows: Sequence[Row], *, accuracy: str, cost: str, calibrated: bool = False) -> str:
    """Why :func:`best_within_budget` found no setting in one checkpoint's ``rows``, in words."""
    run = "the calibration run" if calibrated else "this run"
    if not rows:
        return "checkpoint not in the calibration run"
    if not any(_finite(r.get(accuracy)) for r in rows):
        name = {"map": "mAP", "top1": "top-1"}.get(accuracy, accuracy)
        return f"no evaluated video of {run} has a label, so no setting has an accuracy ({name}) to choose by"
    costs = [r[cost] for r in rows if _finite(r.get(cost)) and _finite(r.get(accuracy))]
    if not costs:
        return f"no setting of {run} with an accuracy has a cost ({cost})"
    return f"no setting fits the budget (the cheapest costs {min(costs):.2f})"


def choose_budget(
    rows: Sequence[Row],
    budget: float,
    *,
    accuracy: str,
    cost: str,
    calibration_rows: Sequence[Row] | None = None,
) -> dict[str, Any]:
    """Per checkpoint, the setting chosen for a compute budget, evaluated on ``rows``: chosen on ``rows``, or on
    ``calibration_rows`` (another split's sweep, e.g. held-out training videos) and looked up in ``rows``, so that
    the reported accuracy is not tuned on the evaluated split."""
    by_ckpt: dict[str, list[Row]] = {}
    for r in rows:
        by_ckpt.setdefault(r["checkpoint"], []).append(r)
    chosen = []
    for name, own in by_ckpt.items():
        source = own if calibration_rows is None else [r for r in calibration_rows if r["checkpoint"] == name]
        pick = best_within_budget(source, budget, accuracy=accuracy, cost=cost)
        entry: dict[str, Any] = {
            "checkpoint": name,
            "chosen_on": "this run" if calibration_rows is None else "calibration run",
        }
        if pick is None:
            entry["setting"] = None
            entry["note"] = why_none_fits(source, accuracy=accuracy, cost=cost, calibrated=calibration_rows is not None)
        else:
            setting = setting_of(pick)
            entry["setting"] = setting
            match = [r for r in own if setting_of(r) == setting]
            entry["evaluated"] = dict(match[0]) if match else None
            if calibration_rows is not None:
                entry["calibration"] = pick
                if not match:
                    entry["note"] = "the chosen setting is not in this run's grid; replay with the calibration grid"
        chosen.append(entry)
    return {
        "budget": budget,
        "cost_metric": cost,
        "accuracy_metric": accuracy,
        "calibrated": calibration_rows is not None,
        "checkpoints": chosen,
    }


def full_t_accuracy(rows: Sequence[Row], *, accuracy: str) -> float | None:
    """One checkpoint's accuracy when every video reads every frame: its ``fixed`` row of the most frames (``None``
    without fixed rows or without a finite accuracy there)."""
    fixed = [r for r in rows if policy_of(r) == "fixed" and r.get("frames") is not None]
    if not fixed:
        return None
    value = max(fixed, key=lambda r: r["frames"]).get(accuracy)
    return value if _finite(value) else None


def policy_points(rows: Sequence[Row], default: Row, *, accuracy: str, cost: str) -> list[dict[str, Any]]:
    """One checkpoint's exit policies side by side at equal cost (summary.md's policy section), per policy of
    ``rows`` (frameexit first): ``at_job_cost``, its most accurate setting costing at most the job's setting
    ``default`` (frameexit: ``default`` itself; oracle: its one setting, whatever it costs); ``within_one_point``,
    its cheapest setting whose accuracy is at least the full-T accuracy less :data:`ONE_POINT` (``None`` where none
    is, or without a full-T accuracy); copies of the rows."""
    full = full_t_accuracy(rows, accuracy=accuracy)
    out = []
    for policy, own in by_policy(rows).items():
        if policy == "frameexit":
            at_cost: dict[str, Any] | None = dict(default)
        elif policy == "oracle":
            at_cost = dict(own[0])
        else:
            at_cost = (
                best_within_budget(own, default[cost], accuracy=accuracy, cost=cost)
                if _finite(default.get(cost))
                else None
            )
        close = None
        if full is not None:
            near = [
                r for r in own if _finite(r.get(accuracy)) and _finite(r.get(cost)) and r[accuracy] >= full - ONE_POINT
            ]
            close = dict(min(near, key=lambda r: (r[cost], -r[accuracy], *_setting_rank(r)))) if near else None
        out.append({"policy": policy, "at_job_cost": at_cost, "within_one_point": close})
    return out


def named_settings(
    rows: Sequence[Row], default: Row, *, cost: str, budget: float | None = None
) -> list[dict[str, Any]]:
    """The settings a report of one checkpoint's ``rows`` names, each once (:func:`setting_of`): the job's
    setting, every :func:`policy_points` point for either accuracy metric (a report may choose either), and each
    policy's setting chosen at ``budget``. Replay computes their bootstrap intervals and per-video rows."""
    picked = [setting_of(default)]
    # the budget's choice of each policy with a threshold to choose (the report's budget.policies; oracle has none)
    choosing = {p: own for p, own in by_policy(rows).items() if p != "oracle"}
    for accuracy in ("map", "top1"):
        for point in policy_points(rows, default, accuracy=accuracy, cost=cost):
            picked += [setting_of(r) for r in (point["at_job_cost"], point["within_one_point"]) if r is not None]
        for own in choosing.values() if budget is not None else ():
            pick = best_within_budget(own, budget, accuracy=accuracy, cost=cost)
            picked += [setting_of(pick)] if pick is not None else []
    out: list[dict[str, Any]] = []
    for setting in picked:
        if setting not in out:
            out.append(setting)
    return out


def setting_key(checkpoint: str, setting: Mapping[str, Any]) -> str:
    """A checkpoint's setting as one string (a dictionary key): the same for equal settings."""
    return json.dumps([checkpoint, setting], sort_keys=True)


def interval_lookup(bootstrap: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """replay.json's bootstrap intervals by :func:`setting_key` (empty without a bootstrap)."""
    if not bootstrap:
        return {}
    return {setting_key(i["checkpoint"], i["setting"]): i for i in bootstrap["intervals"]}


def with_intervals(row: Row | None, lookup: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """A copy of ``row`` with ``map_interval`` and ``top1_interval`` where the replay computed them."""
    if row is None:
        return None
    out = dict(row)
    found = lookup.get(setting_key(row["checkpoint"], setting_of(row)))
    if found is not None:
        out["map_interval"], out["top1_interval"] = found["map"], found["top1"]
    return out


def policy_summary(
    rows: Sequence[Row],
    default: Sequence[Row],
    *,
    accuracy: str,
    cost: str,
    lookup: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """``summary.json``'s ``policies``: per checkpoint of ``default`` (its job's-setting rows), the full-T accuracy,
    each policy's :func:`policy_points` (with their intervals) and each policy's Pareto frontier; empty when
    ``rows`` hold one policy's alone (the gates', or an infer run's)."""
    if len(by_policy(rows)) < 2:  # the gates alone, or one infer run: nothing to put side by side
        return []
    out = []
    for d in default:
        own = [r for r in rows if r["checkpoint"] == d["checkpoint"]]
        points = policy_points(own, d, accuracy=accuracy, cost=cost)
        for p in points:
            p["at_job_cost"] = with_intervals(p["at_job_cost"], lookup)
            p["within_one_point"] = with_intervals(p["within_one_point"], lookup)
        out.append(
            {
                "checkpoint": d["checkpoint"],
                "full_t": full_t_accuracy(own, accuracy=accuracy),
                "points": points,
                "frontiers": {
                    policy: pareto_frontier(prows, accuracy=accuracy, cost=cost)
                    for policy, prows in by_policy(own).items()
                },
            }
        )
    return out


def compare_baseline(
    current: Sequence[Row],
    baseline: Sequence[Row],
    *,
    max_drop: float | None,
    max_cost_rise: float | None,
    cost: str,
    not_compared: Mapping[str, str] | None = None,
    significant: Callable[[str, str], tuple[bool | None, str]] | None = None,
) -> dict[str, Any]:
    """Compare the default setting's mAP, top-1 and cost of each checkpoint (matched by name) with a baseline's.

    A regression is an accuracy drop above ``max_drop`` (fraction) or a cost rise above ``max_cost_rise``
    (GFLOPs); ``None`` disables that check. Whatever the limits, the comparison fails when it cannot vouch
    for the run: a baseline checkpoint missing from the run, a value the baseline has and the run lacks
    (NaN), or nothing compared at all; a checkpoint new in the run passes. ``not_compared`` (metric -> why)
    names metrics that cannot be compared: they count for nothing. ``significant(checkpoint, metric)``: whether a
    drop beyond ``max_drop`` is significant, and why; a drop that is not (``False``) is no regression, one that
    cannot be tested (``None``) stays one.
    """
    not_compared = dict(not_compared or {})
    base = {r["checkpoint"]: r for r in baseline}
    ours = {r["checkpoint"] for r in current}
    checks, regressions, n_compared = [], [], 0
    for r in current:
        b = base.get(r["checkpoint"])
        if b is None:
            checks.append({"checkpoint": r["checkpoint"], "note": "not in the baseline"})
            continue
        entry: dict[str, Any] = {"checkpoint": r["checkpoint"]}
        compared = False
        for key, limit, higher in (("map", max_drop, True), ("top1", max_drop, True), (cost, max_cost_rise, False)):
            if key in not_compared:
                entry[key] = {"not_compared": not_compared[key]}
            elif _finite(b.get(key)):  # else nothing to hold the run to
                entry[key], regression = _compare_value(r["checkpoint"], key, b[key], r.get(key), limit, higher)
                if regression and higher and "drop" in entry[key] and significant is not None:
                    verdict, entry[key]["significance"] = significant(r["checkpoint"], key)
                    regression = None if verdict is False else regression
                regressions += [regression] if regression else []
                compared = True
        n_compared += compared
        checks.append(entry)
    for name in base:
        if name not in ours:
            # a dropped or renamed checkpoint would otherwise leave the gate comparing less than it did
            checks.append({"checkpoint": name, "note": "in the baseline, not in this run"})
            regressions.append(f"{name}: in the baseline but not in this run (checkpoints are matched by file name)")
    if n_compared == 0:
        regressions.insert(
            0,
            "nothing was compared: no checkpoint of this run is in the baseline with a value to compare "
            f"(baseline: {', '.join(base) or 'no checkpoint'}; this run: {', '.join(sorted(ours)) or 'no checkpoint'})",
        )
    return {
        "max_drop": max_drop,
        "max_cost_rise": max_cost_rise,
        "checks": checks,
        "n_compared": n_compared,
        "regressions": regressions,
        "not_compared": not_compared,
        "passed": not regressions,
    }


def _compare_value(
    checkpoint: str, key: str, base: float, current: float | None, limit: float | None, higher: bool
) -> tuple[dict[str, Any], str | None]:
    """One metric of one checkpoint against the baseline's finite value: its check entry, and the regression
    (a drop, for ``higher`` is better, or a rise above ``limit``; or no value in this run), if any."""
    if not _finite(current):
        why = f"{checkpoint}: {key} is not defined in this run (baseline {base:.4f})"
        return {"baseline": base, "current": None}, why
    change = base - current if higher else current - base
    if higher:
        why = f"{checkpoint}: {key} fell by {change:.4f} ({base:.4f} -> {current:.4f}), more than {limit}"
    else:
        why = f"{checkpoint}: {key} rose by {change:.2f} ({base:.2f} -> {current:.2f}), more than {limit}"
    over = limit is not None and change > limit
    return {"baseline": base, "current": current, "drop" if higher else "rise": change}, why if over else None


def baseline_mismatches(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """Why two ``summary.json`` documents cannot be compared (empty when they can): other accuracy or cost
    metrics, or :data:`BASELINE_CHECKS` differ where both record them. Which videos each evaluated is the
    gate's concern (:func:`baseline_gate`), not a mismatch.
    """
    out = []
    for key, label in (("accuracy_metric", "accuracy metric"), ("cost_metric", "cost metric")):
        theirs, ours = baseline.get(key), current.get(key)
        if theirs != ours:
            out.append(f"{label} {theirs!r} in the baseline, {ours!r} in this run")
    return (
        identity_mismatches(summary_identity(current), summary_identity(baseline), BASELINE_CHECKS, "the baseline")
        + out
    )


# ---------------------------------------------------------------------------------------------- like with like


@dataclass(frozen=True)
class Identity:
    """What a run's numbers were computed from, as its documents (or, before any replay, its job: ``jobs.report``)
    record it; ``None`` where one does not say."""

    dataset: str | None = None  # data.name
    split: str | None = None  # SHA-256 of the split file (the feature cache's split_digest)
    labels: str | None = None  # SHA-256 of the label file (labels_digest)
    classes: str | None = None  # SHA-256 of the class list (classes_digest)
    checkpoints: Mapping[str, str] | None = None  # SHA-256 of each checkpoint, by name (the checkpoint column)
    order: str | None = None  # the policy order's name


def _identity(dataset: Any, cache: Any, checkpoints: Any, order: Any, digests: Any) -> Identity:
    # the file digests a replay's cache records, or those infer's replay.json records itself (it has no cache)
    inputs = cache.get("inputs") if isinstance(cache, Mapping) else digests
    inputs = inputs if isinstance(inputs, Mapping) else {}

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) else None

    return Identity(
        dataset=text(dataset),
        split=text(inputs.get("split_digest")),
        labels=text(inputs.get("labels_digest")),
        classes=text(inputs.get("classes_digest")),
        checkpoints={c["name"]: c["sha256"] for c in checkpoints} if isinstance(checkpoints, list) else None,
        order=text(order),
    )


def summary_identity(summary: Mapping[str, Any]) -> Identity:
    """The :class:`Identity` a ``summary.json`` records (its provenance is the replay's)."""
    p = summary.get("provenance", {})
    return _identity(
        summary.get("dataset"), p.get("cache"), p.get("checkpoints"), p.get("order"), p.get("dataset_digests")
    )


def replay_identity(replay: Mapping[str, Any]) -> Identity:
    """The :class:`Identity` a ``replay.json`` records."""
    return _identity(*(replay.get(k) for k in ("dataset", "cache", "checkpoints", "order_name", "dataset_digests")))


#: Identity fields compared by value: their name in words, and whether they are SHA-256 digests (shown by
#: their first 12 digits); ``checkpoints`` are compared by name, then digest.
_IDENTITY_FIELDS = {
    "dataset": ("dataset", False),
    "split": ("split file", True),
    "labels": ("label file", True),
    "classes": ("class list", True),
    "order": ("policy order", False),
}
#: A baseline: the same dataset, split file, label file, class list and checkpoints (those of one name).
BASELINE_CHECKS = ("dataset", "split", "labels", "classes", "checkpoints")
#: A calibration run: the same dataset, class list, checkpoints and policy order (thresholds mean something else
#: in another order), but another split: its label file may differ (a Kinetics training CSV).
CALIBRATION_CHECKS = ("dataset", "classes", "checkpoints", "order")


def identity_mismatches(ours: Identity, theirs: Identity, checks: Sequence[str], where: str) -> list[str]:
    """What differs between this run (``ours``) and another (``theirs``, called ``where``) under ``checks``, in
    words; a field one side does not record is not compared."""
    out = []
    for check in checks:
        if check == "checkpoints":
            if ours.checkpoints is not None and theirs.checkpoints is not None:
                out += [
                    f"checkpoint {name} SHA-256 {theirs.checkpoints[name][:12]}... in {where}, "
                    f"{sha[:12]}... in this run"
                    for name, sha in ours.checkpoints.items()
                    if name in theirs.checkpoints and theirs.checkpoints[name] != sha
                ]
            continue
        label, digest = _IDENTITY_FIELDS[check]
        a, b = getattr(theirs, check), getattr(ours, check)
        if a is None or b is None or a == b:
            continue
        if digest:
            out.append(f"{label} SHA-256 {a[:12]}... in {where}, {b[:12]}... in this run")
        else:
            out.append(f"{label} {a!r} in {where}, {b!r} in this run")
    return out


def first_keys(keys: Sequence[str], n: int = 3) -> str:
    """The first ``n`` video keys, joined (``, ...`` when there are more)."""
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def calibration_mismatches(
    ours: Identity, our_videos: Sequence[str], theirs: Identity, their_videos: Sequence[str]
) -> list[str]:
    """Why a calibration run cannot choose this run's setting: :data:`CALIBRATION_CHECKS` differ, or it
    evaluated the same split file or any of the same videos."""
    out = identity_mismatches(ours, theirs, CALIBRATION_CHECKS, "the calibration run")
    if ours.split is not None and ours.split == theirs.split:
        out.append(
            f"the calibration run evaluated the same split file as this run (SHA-256 {ours.split[:12]}...): the "
            "setting would be chosen on the videos it is evaluated on"
        )
    else:
        shared = sorted(set(our_videos) & set(their_videos))
        if shared:
            out.append(
                f"{len(shared)} of this run's {len(set(our_videos))} videos are also in the calibration run "
                f"({first_keys(shared)}): the setting would be chosen partly on the videos it is evaluated on"
            )
    return out


def video_difference(current: Sequence[str], baseline: Sequence[str]) -> dict[str, Any]:
    """Which videos one of two runs evaluated and the other did not: counts and the sorted keys."""
    ours, theirs = set(current), set(baseline)
    return {
        "n_run": len(ours),
        "n_baseline": len(theirs),
        "n_common": len(ours & theirs),
        "missing": sorted(theirs - ours),  # in the baseline, not evaluated by this run
        "added": sorted(ours - theirs),  # evaluated by this run, not in the baseline
    }


def describe_difference(diff: Mapping[str, Any]) -> str:
    """``diff`` (:func:`video_difference`) in words, naming the first keys on each side."""
    parts = [f"this run evaluated {diff['n_run']} videos, the baseline {diff['n_baseline']}"]
    if diff["missing"]:
        parts.append(
            f"{len(diff['missing'])} of the baseline's videos are missing from this run ({first_keys(diff['missing'])})"
        )
    if diff["added"]:
        parts.append(f"{len(diff['added'])} videos are not in the baseline ({first_keys(diff['added'])})")
    return ": ".join(parts[:1]) + (": " + "; ".join(parts[1:]) if parts[1:] else "")


def subset_row(
    checkpoint: str,
    results: Mapping[str, Sequence[Any]] | None,
    index: Sequence[int],
    parts: Mapping[str, float] | None,
    per_frame: float | None,
    *,
    n_steps: int,
    policy: str = "frameexit",
) -> dict[str, Any]:
    """The job's-setting metrics of one checkpoint over the videos at ``index`` (of ``Summary.videos``),
    recomputed from its per-video results (exit steps 0..n_steps-1 under exit ``policy``); mAP is ``None`` (it
    needs every class's score), every value ``None`` without per-video results, NaN without videos."""
    row: dict[str, Any] = {"checkpoint": checkpoint, "n_videos": len(index), "map": None}
    if results is None:
        return {**row, **dict.fromkeys(("top1", "mean_frames", "gflops", "gmacs_measured", "gflops_measured"))}
    steps = [results["exit_step"][i] for i in index]
    labelled = [bool(results["hit"][i]) for i in index if results["hit"][i] is not None]
    nan = float("nan")
    frames = sum(s + 1 for s in steps) / len(steps) if steps else nan
    counts = np.bincount(np.asarray(steps, dtype=np.int64), minlength=n_steps)[:n_steps]
    histogram = counts / max(len(steps), 1)
    gmacs = StepCosts(**parts).mean_video_gmacs(histogram, policy) if parts is not None else None
    return {
        **row,
        "top1": sum(labelled) / len(labelled) if labelled else nan,
        "mean_frames": frames,
        "gflops": frames * per_frame if per_frame is not None else None,
        "gmacs_measured": gmacs,
        "gflops_measured": 2.0 * gmacs if gmacs is not None else None,
    }


def common_rows(summary: Mapping[str, Any], videos: set[str]) -> list[dict[str, Any]]:
    """Per checkpoint of ``summary["default"]``, :func:`subset_row` over those of its videos in ``videos``."""
    index = [i for i, key in enumerate(summary["videos"]) if key in videos]
    parts = {c["name"]: c["gmacs_measured_parts"] for c in summary["provenance"]["checkpoints"]}
    results, per_frame = summary["video_results"], summary["gflops_per_frame"]
    return [
        subset_row(
            r["checkpoint"],
            results.get(r["checkpoint"]),
            index,
            parts.get(r["checkpoint"]),
            per_frame,
            n_steps=len(r["exit_histogram"]),
            policy=policy_of(r),
        )
        for r in summary["default"]
    ]


#: Why mAP is not compared over the videos two runs both evaluated.
MAP_NOT_COMPARED = (
    "not compared: mAP over the videos both runs evaluated needs every class's score of each video, which "
    "summary.json does not keep"
)


def baseline_gate(
    current: Mapping[str, Any],
    baseline: Mapping[str, Any],
    *,
    max_drop: float | None,
    max_cost_rise: float | None,
    accept_missing: int = 0,
    significant: Callable[[str, str], tuple[bool | None, str]] | None = None,
) -> dict[str, Any]:
    """The baseline gate of two comparable ``summary.json`` documents (:func:`baseline_mismatches` empty).

    When both evaluated the same videos, :func:`compare_baseline` of their job's-setting rows. Otherwise
    top-1 and cost are compared over the videos both evaluated (:func:`common_rows`; mAP cannot be), and the
    gate fails unless at most ``accept_missing`` videos differ (missing plus added). ``videos``: the difference.
    """
    cost = current["cost_metric"]
    diff = video_difference(current["videos"], baseline["videos"])
    n_diff = len(diff["missing"]) + len(diff["added"])
    limits = dict(max_drop=max_drop, max_cost_rise=max_cost_rise, cost=cost, significant=significant)
    if n_diff == 0:
        result = compare_baseline(current["default"], baseline["default"], **limits)
        result["videos"] = {**diff, "accept_missing": accept_missing, "compared_over": "all"}
        return result
    common = set(current["videos"]) & set(baseline["videos"])
    result = compare_baseline(
        common_rows(current, common), common_rows(baseline, common), **limits, not_compared={"map": MAP_NOT_COMPARED}
    )
    result["videos"] = {**diff, "accept_missing": accept_missing, "compared_over": "common"}
    ours = {r["checkpoint"] for r in current["default"]}
    for side, summary in (("this run", current), ("the baseline", baseline)):
        for name, results in summary["video_results"].items():
            if results is None and name in ours and name in {r["checkpoint"] for r in baseline["default"]}:
                result["regressions"].append(
                    f"{name}: {side} has no per-video results at the job's setting (replayed with --per-video all "
                    "on a grid without it): it cannot be compared over the videos both runs evaluated"
                )
    if n_diff > accept_missing:
        accepted = f" (--accept-missing {accept_missing} accepts {accept_missing})" if accept_missing else ""
        result["regressions"].insert(
            0,
            f"videos: {describe_difference(diff)}; metrics over other videos are not the baseline's: accept this "
            f"known difference with --accept-missing {n_diff}{accepted}, or make a new baseline (top-1 and cost "
            f"are then compared over the {diff['n_common']} videos both evaluated; mAP cannot be)",
        )
    result["passed"] = not result["regressions"]
    return result


# ---------------------------------------------------------------------------------------------- paired


def paired_comparison(current: Mapping[str, Any], baseline: Mapping[str, Any], *, level: float) -> dict[str, Any]:
    """A paired bootstrap of each checkpoint's change (this run less the baseline) at the job's setting: the same
    resamples of the videos both evaluated applied to both runs (``current``'s resamples and seed). Top-1 from
    each run's per-video hits (``video_results``); mAP from the resampled mAP both replays kept, only when both
    evaluated the same videos with the same resamples and seed (else not compared, with the reason). Each metric:
    ``change`` (point estimate over the videos compared) and ``interval`` ``[low, high]`` at ``level``."""
    ours, theirs = current.get("bootstrap") or {}, baseline.get("bootstrap") or {}
    resamples, seed = ours.get("resamples") or DEFAULT_RESAMPLES, ours.get("seed", 0)
    rows, base_rows = common_videos(current["videos"], baseline["videos"])
    weights = resample_weights(len(rows), resamples, seed)
    same = current["videos"] == baseline["videos"] and (theirs.get("resamples"), theirs.get("seed")) == (
        ours.get("resamples"),
        ours.get("seed"),
    )
    checks = []
    for name, results in current["video_results"].items():
        if name not in baseline["video_results"]:
            continue
        base = baseline["video_results"][name]
        entry: dict[str, Any] = {"checkpoint": name}
        if results is not None and base is not None:
            # a hit per video, None without a label: compared where both runs have a label
            hits = np.asarray(results["hit"], dtype=object)[rows]
            base_hits = np.asarray(base["hit"], dtype=object)[base_rows]
            labelled = (hits != None) & (base_hits != None)  # noqa: E711 (elementwise on an object array)
            a, b = hits.astype(bool), base_hits.astype(bool)
            change = (a[labelled].mean() - b[labelled].mean()) if labelled.any() else math.nan
            ia = paired_difference(resampled_top1(a, labelled, weights), resampled_top1(b, labelled, weights), level)
            entry["top1"] = {"change": change, "interval": [ia.low, ia.high], "n_videos": int(labelled.sum())}
        else:
            entry["top1"] = {"not_compared": "no per-video results at the job's setting in one of the runs"}
        maps, base_maps = (ours.get("map_resampled") or {}).get(name), (theirs.get("map_resampled") or {}).get(name)
        if not same or maps is None or base_maps is None:
            entry["map"] = {
                "not_compared": "a paired mAP needs both runs' resampled mAP over the same videos, resamples and seed"
            }
        else:
            cur_map = next((r["map"] for r in current["default"] if r["checkpoint"] == name), None)
            base_map = next((r["map"] for r in baseline["default"] if r["checkpoint"] == name), None)
            im = paired_difference(_floats(maps), _floats(base_maps), level)
            change = cur_map - base_map if _finite(cur_map) and _finite(base_map) else None
            entry["map"] = {"change": change, "interval": [im.low, im.high], "n_videos": len(rows)}
        checks.append(entry)
    return {"level": level, "resamples": resamples, "seed": seed, "n_videos": len(rows), "checkpoints": checks}


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def significance_test(paired: Mapping[str, Any], max_drop: float) -> Callable[[str, str], tuple[bool | None, str]]:
    """The ``significant`` test of :func:`compare_baseline` from a :func:`paired_comparison`: a drop beyond
    ``max_drop`` is significant when the interval of the drop (the change's, negated) lies wholly above it."""
    by_name = {c["checkpoint"]: c for c in paired["checkpoints"]}
    level = f"{100 * paired['level']:g} %"

    def significant(checkpoint: str, metric: str) -> tuple[bool | None, str]:
        found = by_name.get(checkpoint, {}).get(metric) or {}
        interval = found.get("interval")
        if not interval or None in interval or any(math.isnan(v) for v in interval):
            why = found.get("not_compared", "no paired interval")
            return None, f"not tested ({why}): the point estimate decides"
        low, high = -interval[1] + 0.0, -interval[0] + 0.0  # + 0.0: no -0.0 in the words
        verdict = low > max_drop
        words = "significant" if verdict else "not significant"
        return verdict, f"{words} at {level}: the drop's interval [{low:.4f}, {high:.4f}] vs max drop {max_drop}"

    return significant


def budget_matched(
    rows: Sequence[Row], baseline: Mapping[str, Any], *, accuracy: str, cost: str
) -> list[dict[str, Any]]:
    """Per checkpoint of the baseline's job's-setting rows: this run's most accurate frameexit setting costing no
    more than the baseline's setting did (``rows``: this run's sweep), and its accuracy's change."""
    out = []
    for b in baseline["default"]:
        own = [r for r in rows if r["checkpoint"] == b["checkpoint"] and policy_of(r) == "frameexit"]
        entry: dict[str, Any] = {"checkpoint": b["checkpoint"], "baseline_cost": b.get(cost)}
        entry["baseline_accuracy"] = b.get(accuracy)
        pick = best_within_budget(own, b[cost], accuracy=accuracy, cost=cost) if _finite(b.get(cost)) else None
        if pick is None:
            entry.update(setting=None, note="no setting of this run costs that little")
        else:
            entry.update(setting=setting_of(pick), accuracy=pick[accuracy], cost=pick[cost])
            entry["change"] = pick[accuracy] - b[accuracy] if _finite(b.get(accuracy)) else None
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------- exactness


def is_sequential_reference(summary: Mapping[str, Any]) -> bool:
    """Whether a ``summary.json`` reports ``frameexit infer``'s own outputs (the sequential reference: its
    ``replay.json`` names no feature cache), not a replay's."""
    provenance = summary.get("provenance") or {}
    return "cache" in provenance and provenance["cache"] is None


def exactness_summary(replay: Mapping[str, Any], budget: Mapping[str, Any] | None = None) -> SummaryExactness | None:
    """``summary.json``'s ``exactness`` (:class:`reports.records.SummaryExactness`) from ``replay.json``'s;
    ``None`` when the replay did not record it. ``n_at_risk_budget`` comes from the budget's sweep row."""
    record = replay.get("exactness")
    if not record:
        return None
    chosen = {b["checkpoint"]: b for b in (budget or {}).get("checkpoints", [])}
    checkpoints = []
    for c in record["checkpoints"]:
        keys = ("checkpoint", "status", "n_at_risk", "at_risk", "first_margin", "gate_margin")
        entry = CheckpointAtRisk(**{k: c[k] for k in keys})  # type: ignore[typeddict-item]
        evaluated = chosen.get(c["checkpoint"], {}).get("evaluated")
        if budget is not None:
            entry["n_at_risk_budget"] = evaluated.get("n_at_risk") if evaluated else None
        checkpoints.append(entry)
    return SummaryExactness(
        status=record["status"],
        batching=record["batching"],
        effective=record["effective"],
        safety_factor=record["safety_factor"],
        n_probe_videos=len(record["probe_videos"]),
        feature_max_abs_deviation=record["feature_max_abs_deviation"],
        feature_max_rel_deviation=record["feature_max_rel_deviation"],
        checkpoints=checkpoints,
    )
