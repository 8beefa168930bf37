"""The facts of a report, computed from replay outputs: headline, Pareto frontier, budgets, baseline gate.

Pure functions over plain rows (dicts as read from ``sweep.parquet``); the
JSON document they build is ``summary.json`` (:class:`reports.records.Summary`
documents every key) and the input of the Markdown and plot renderers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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

HIGHER_IS_BETTER = {
    "map": True,
    "top1": True,
    "gflops": False,
    "gflops_measured": False,
    "gmacs_measured": False,
    "mean_frames": False,
}

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


def pareto_frontier(rows: Sequence[Row], *, accuracy: str, cost: str) -> list[dict[str, Any]]:
    """Settings no other setting beats: strictly more accurate than every cheaper-or-equal one.

    Sorted by cost ascending (ties: higher accuracy first); rows without a
    finite accuracy or cost are ignored. Returns copies of the rows.
    """
    usable = [dict(r) for r in rows if _finite(r.get(accuracy)) and _finite(r.get(cost))]
    usable.sort(
        key=lambda r: (
            r[cost],
            -r[accuracy],
            r.get("checkpoint", ""),
            r.get("first_threshold", 0),
            r.get("gate_threshold", 0),
        )
    )
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
    return dict(min(fits, key=lambda r: (-r[accuracy], r[cost], r["first_threshold"], r["gate_threshold"])))


def choose_budget(
    rows: Sequence[Row],
    budget: float,
    *,
    accuracy: str,
    cost: str,
    calibration_rows: Sequence[Row] | None = None,
) -> dict[str, Any]:
    """Per checkpoint, the setting chosen for a compute budget, evaluated on ``rows``.

    Without calibration the choice is made on ``rows`` themselves. With
    ``calibration_rows`` (another split's sweep, e.g. held-out training videos)
    the thresholds are chosen there and looked up in ``rows``, so the reported
    accuracy is not tuned on the evaluated split.
    """
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
            entry["note"] = "no setting fits the budget" if source else "checkpoint not in the calibration run"
        else:
            entry["setting"] = {"first_threshold": pick["first_threshold"], "gate_threshold": pick["gate_threshold"]}
            match = [
                r
                for r in own
                if r["first_threshold"] == pick["first_threshold"] and r["gate_threshold"] == pick["gate_threshold"]
            ]
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


def compare_baseline(
    current: Sequence[Row],
    baseline: Sequence[Row],
    *,
    max_drop: float | None,
    max_cost_rise: float | None,
    cost: str,
) -> dict[str, Any]:
    """Compare the default setting's mAP, top-1 and cost of each checkpoint with a baseline's.

    A regression is an accuracy drop above ``max_drop`` (fraction) or a cost
    rise above ``max_cost_rise`` (GFLOPs); ``None`` disables that check.
    Checkpoints are matched by name. The comparison fails (``passed`` false,
    the reason among ``regressions``) whatever the limits when it cannot vouch
    for the run: a baseline checkpoint missing from the run, a value the
    baseline has that the run lacks (NaN), or nothing compared at all. A
    checkpoint new in the run is listed as not in the baseline and passes.
    ``n_compared`` counts the checkpoints with at least one value compared.
    """
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
            if not _finite(b.get(key)):
                continue  # nothing to hold the run to
            if not _finite(r.get(key)):
                entry[key] = {"baseline": b[key], "current": None}
                regressions.append(f"{r['checkpoint']}: {key} is not defined in this run (baseline {b[key]:.4f})")
                compared = True
                continue
            compared = True
            if higher:
                drop = b[key] - r[key]
                entry[key] = {"baseline": b[key], "current": r[key], "drop": drop}
                if limit is not None and drop > limit:
                    regressions.append(
                        f"{r['checkpoint']}: {key} fell by {drop:.4f} ({b[key]:.4f} -> {r[key]:.4f}), more than {limit}"
                    )
            else:
                rise = r[key] - b[key]
                entry[key] = {"baseline": b[key], "current": r[key], "rise": rise}
                if limit is not None and rise > limit:
                    regressions.append(
                        f"{r['checkpoint']}: {key} rose by {rise:.2f} ({b[key]:.2f} -> {r[key]:.2f}), more than {limit}"
                    )
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
        "passed": not regressions,
    }


def baseline_mismatches(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """Why two ``summary.json`` documents cannot be compared: dataset, metrics or split file differ.

    An empty list when they can. The split file is compared by the SHA-256 the
    feature cache records (``provenance.cache.inputs.split_digest``), where both
    documents have it.
    """
    out = []
    for key, label in (("dataset", "dataset"), ("accuracy_metric", "accuracy metric"), ("cost_metric", "cost metric")):
        theirs, ours = baseline.get(key), current.get(key)
        if theirs != ours:
            out.append(f"{label} {theirs!r} in the baseline, {ours!r} in this run")
    theirs, ours = _split_digest(baseline), _split_digest(current)
    if theirs and ours and theirs != ours:
        out.append(f"split file SHA-256 {theirs[:12]}... in the baseline, {ours[:12]}... in this run")
    return out


def _split_digest(summary: Mapping[str, Any]) -> str | None:
    inputs = summary.get("provenance", {}).get("cache", {}).get("inputs", {})
    digest = inputs.get("split_digest") if isinstance(inputs, Mapping) else None
    return digest if isinstance(digest, str) else None


# ---------------------------------------------------------------------------------------------- exactness


def exactness_summary(replay: Mapping[str, Any], budget: Mapping[str, Any] | None = None) -> SummaryExactness | None:
    """``summary.json``'s ``exactness``: how far replay may be from ``frameexit infer``, from ``replay.json``.

    The replay's status, batching and feature deviation, and per checkpoint the videos at risk at the
    job's setting (``n_at_risk``, ``at_risk``) and, with a budget, at the setting chosen for it
    (``n_at_risk_budget``, from that sweep row). ``None`` when the replay did not record it.
    """
    record = replay.get("exactness")
    if not record:
        return None
    chosen = {b["checkpoint"]: b for b in (budget or {}).get("checkpoints", [])}
    checkpoints = []
    for c in record["checkpoints"]:
        entry = CheckpointAtRisk(
            checkpoint=c["checkpoint"],
            status=c["status"],
            n_at_risk=c["n_at_risk"],
            at_risk=c["at_risk"],
            first_margin=c["first_margin"],
            gate_margin=c["gate_margin"],
        )
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
