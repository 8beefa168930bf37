"""``summary.md``: the report as a person (or a CI job summary) reads it. A pure function of the summary."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from reports.summary import ONE_POINT, describe_setting, first_keys, is_sequential_reference

NAMES = {"map": "mAP", "top1": "Top-1", "gflops": "GFLOPs", "gflops_measured": "GFLOPs (measured)"}
MAX_SKIPPED_SHOWN = 50
MAX_FRONTIER_SHOWN = 24
MAX_AT_RISK_SHOWN = 10


def thin(rows: list, limit: int) -> list:
    """At most ``limit`` rows evenly spread over the list, first and last included."""
    if len(rows) <= limit:
        return rows
    picks = sorted({round(i * (len(rows) - 1) / (limit - 1)) for i in range(limit)})
    return [rows[i] for i in picks]


def number(value: Any, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def count(n: int, noun: str) -> str:
    """``1 setting``, ``2 settings``: ``n`` and ``noun``, plural unless ``n`` is 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _arrow(key: str, higher: Mapping[str, bool]) -> str:
    return "" if key not in higher else (" ↑" if higher[key] else " ↓")


#: Line breaks of Markdown (and a CSV cell's): one ends a table row, or a list item, wherever it is.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def one_line(text: Any) -> str:
    """``text`` on one line: each line break a space (a name from a file may hold one; Markdown ends a row,
    a list item or a quote there)."""
    return _LINE_BREAK.sub(" ", str(text))


def code(text: Any) -> str:
    """``text`` as one inline code span, on one line: fenced with one more backtick than its longest run of
    backticks (and spaced when it starts or ends with one), so that a backtick in a name cannot end the span."""
    text = one_line(text)
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


#: A ``|`` and the backslashes just before it (doubled, or one of them would escape the escape).
_PIPE = re.compile(r"(\\*)\|")


def cell(text: Any) -> str:
    """``text`` as one table cell: on one line, ``|`` escaped (``\\|``), so that a checkpoint, category or video
    name holding either neither ends its row nor splits it into more columns than the header's."""
    return _PIPE.sub(lambda m: 2 * m.group(1) + "\\|", one_line(text))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; every cell, the header's too, through :func:`cell`."""
    out = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return out


def _category_table(default: list[Mapping[str, Any]]) -> list[str]:
    """mAP per category of classes at the job's setting (HVU's scene, object, ...); nothing without categories."""
    names = sorted({name for r in default for name in (r.get("map_per_category") or {})})
    if not names:
        return []
    rows = [[r["checkpoint"], *(number((r.get("map_per_category") or {}).get(n)) for n in names)] for r in default]
    note = "Mean AP of each category's classes that have a positive video (data.path_category); n/a: none has one."
    header = ["Checkpoint", *(f"{n} ↑" for n in names)]
    return ["## mAP per category at the job's setting", "", *_table(header, rows), "", note, ""]


def _videos(baseline: Mapping[str, Any]) -> str:
    """Which videos the baseline comparison is over, in words (summary.json's ``baseline.videos``)."""
    v = baseline["videos"]
    if v["compared_over"] == "all":
        return f"Both runs evaluated the same {v['n_run']} videos."
    missing, added = len(v["missing"]), len(v["added"])
    accepted = "accepted" if missing + added <= v["accept_missing"] else "not accepted"
    text = (
        f"Compared over the {v['n_common']} videos both runs evaluated: this run evaluated {v['n_run']}, the "
        f"baseline {v['n_baseline']}; {missing} of the baseline's videos are missing from this run"
        + (f" ({first_keys(v['missing'])})" if missing else "")
        + f", {added} are not in the baseline"
        + (f" ({first_keys(v['added'])})" if added else "")
        + f" ({accepted}: --accept-missing {v['accept_missing']}). Top-1 and cost are recomputed over the common "
        "videos from each run's per-video results;"
    )
    why = (baseline.get("not_compared") or {}).get("map")
    return text + (f" mAP is {why}." if why else "")


def _exactness_lines(exactness: Mapping[str, Any] | None, *, reference: bool = False) -> list[str]:
    """Whether ``frameexit infer`` would decide as this replay did: exact, or how many videos may differ
    (``reference``: the report is of infer's own outputs)."""
    head = ["## Agreement with `frameexit infer` (sequential inference)", ""]
    if reference:
        text = (
            "This report is of `frameexit infer`'s own outputs: the sequential reference itself, which read each "
            "video's frames one step at a time (no feature cache), so there is nothing to differ from."
        )
    elif not exactness:
        text = "The replay recorded no exactness (a replay of an older frameexit)."
    elif exactness["status"] == "exact":
        text = (
            "Exact: the features were computed as `frameexit infer` computes them (one step per backbone forward "
            f"pass, effective batching {exactness['effective']}), so every decision equals infer's bit for bit."
        )
    elif exactness["status"] == "unknown":
        text = (
            "Unknown: the feature cache records no measurement of how far its batched features are from infer's "
            "per-step ones (extracted before probes, or with `--probe-videos 0`). Videos near a threshold may "
            "exit or predict otherwise in `frameexit infer`; extract with `--batching per-step` for equal decisions."
        )
    else:  # measured: the deviation, and per checkpoint the videos at risk
        return [*head, *_at_risk_lines(exactness)]
    return [*head, text, ""]


def _at_risk_lines(exactness: Mapping[str, Any]) -> list[str]:
    checkpoints = exactness["checkpoints"]
    total = sum(c["n_at_risk"] or 0 for c in checkpoints)
    budget = any("n_at_risk_budget" in c for c in checkpoints)
    text = (
        f"Batched features: on {exactness['n_probe_videos']} probed videos they differ from infer's per-step "
        f"features by at most {_g(exactness['feature_max_abs_deviation'])} (relative "
        f"{_g(exactness['feature_max_rel_deviation'])}). **{total} video(s)** at the job's setting lie within "
        f"{exactness['safety_factor']:g} x the resulting deviation of a threshold or of a tie between the top two "
        "classes, where `frameexit infer` could decide otherwise. Extract with `--batching per-step` for decisions "
        "equal to infer's bit for bit."
    )
    header = ["Checkpoint", "At risk, job's setting", *(["At risk, budget setting"] if budget else []), "Videos"]
    rows = []
    for c in checkpoints:
        names = c["at_risk"] or []
        shown = ", ".join(names[:MAX_AT_RISK_SHOWN]) + (" ..." if len(names) > MAX_AT_RISK_SHOWN else "")
        at_budget = c.get("n_at_risk_budget")
        at_budget_cell = ["n/a" if at_budget is None else str(at_budget)] if budget else []
        rows.append([c["checkpoint"], str(c["n_at_risk"]), *at_budget_cell, shown])
    note = (
        "Those at the job's setting are named in summary.json and replay.json; sweep.parquet counts them at every "
        "setting (`n_at_risk`)."
    )
    return [text, "", *_table(header, rows), "", note, ""]


def _labelled(summary: Mapping[str, Any], *, why: bool = True) -> str:
    """How many evaluated videos have a label, after their count (``why``: top-1 is over those only, and mAP
    counts the others as negatives); nothing for a summary that does not say."""
    n = summary.get("n_videos_labelled")
    if n is None:
        return ""
    return f" ({n} with a label" + (": Top-1 is over these, mAP counts the others as negatives)" if why else ")")


def with_interval(row: Mapping[str, Any], key: str, digits: int = 4) -> str:
    """``row[key]`` and, where the replay computed its bootstrap interval, ``± half its width``."""
    interval = row.get(f"{key}_interval")
    text = number(row.get(key), digits)
    if not interval or None in interval:
        return text
    return f"{text} ± {(interval[1] - interval[0]) / 2:.{digits}f}"


def _interval_note(summary: Mapping[str, Any]) -> list[str]:
    """What ``±`` means, when the summary has a bootstrap."""
    boot = summary.get("bootstrap")
    if not boot:
        return []
    return [
        f"± is half the width of the {100 * boot['level']:g} % percentile bootstrap interval over videos "
        f"({boot['resamples']} resamples, seed {boot['seed']}; [low, high] in summary.json).",
        "",
    ]


def _g(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def _thresholds(setting: Mapping[str, Any]) -> list[str]:
    """The first_threshold and gate_threshold cells of a setting; another policy's (an infer run's) in words."""
    if setting.get("policy", "frameexit") != "frameexit":
        return [describe_setting(setting, policy=True), "-"]
    return [f"{setting['first_threshold']:.4g}", f"{setting['gate_threshold']:.4g}"]


def _alert(summary: Mapping[str, Any]) -> list[str]:
    """The caution or note above the title when a baseline was compared."""
    acc, baseline = summary["accuracy_metric"], summary["baseline"]
    if baseline and not baseline["passed"]:
        regressions = [f"> - {one_line(r)}" for r in baseline["regressions"]]
        return ["> [!CAUTION]", "> **Regression against the baseline**", ">", *regressions, ""]
    if not baseline or (baseline.get("videos") or {}).get("compared_over") != "common":
        return []
    lines = ["> [!NOTE]", f"> **Baseline gate passed over the videos both runs evaluated only**: {_videos(baseline)}"]
    if acc in (baseline.get("not_compared") or {}):
        lines += [">", f"> {NAMES[acc]}, this report's accuracy metric, was not compared."]
    return [*lines, ""]


def _headline(summary: Mapping[str, Any]) -> list[str]:
    """The title and the counts of videos and settings."""
    return [
        f"# FrameExit report: {summary['dataset']}",
        "",
        f"{summary['n_videos_evaluated']} videos evaluated{_labelled(summary)}, {summary['n_videos_skipped']} "
        f"skipped (of {summary['n_videos_listed']} listed); {count(summary['n_settings'], 'setting')} swept. "
        f"Accuracy metric: {NAMES[summary['accuracy_metric']]}; cost: {summary['cost_label']}.",
        "",
    ]


def _results(summary: Mapping[str, Any]) -> list[str]:
    """The job's setting: results, categories, agreement with infer."""
    higher, default = summary["higher_is_better"], summary["default"]
    if not default:
        return []
    columns = (("mAP", "map"), ("Top-1", "top1"), ("GFLOPs", "gflops"), ("GMACs measured", "gmacs_measured"))
    header = ["Name", *(name + _arrow(key, higher) for name, key in columns), "Frames"]
    costs = ("gflops", "gmacs_measured", "mean_frames")
    rows = [
        [r["checkpoint"], with_interval(r, "map"), with_interval(r, "top1"), *(number(r.get(k), 2) for k in costs)]
        for r in default
    ]
    setting = (
        f"first_threshold={default[0]['first_threshold']:g}, gate_threshold={default[0]['gate_threshold']:g}"
        if default[0].get("policy", "frameexit") == "frameexit"
        else describe_setting(default[0], policy=True)
    )
    return [
        f"## Results at the job's setting ({setting})",
        "",
        *_table(header, rows),
        "",
        *_interval_note(summary),
        "GFLOPs follow the paper's convention (per-frame GMACs of the backbone x frames read: 4.12 for ResNet-50, "
        "1.8 for EfficientNet-B3, 1.96 per 13x160x160 clip for X3D-S; n/a for other backbones and X3D-S clips of "
        "another size); GMACs measured counts the actual backbone and head with torch's FLOP counter (GFLOPs = 2 x "
        "GMACs). For a 3D backbone a frame in these columns is a clip.",
        "",
        *_category_table(default),
        *_exactness_lines(summary.get("exactness"), reference=is_sequential_reference(summary)),
    ]


def _frontier(summary: Mapping[str, Any]) -> list[str]:
    """The Pareto frontier, thinned to at most MAX_FRONTIER_SHOWN rows."""
    acc, cost = summary["accuracy_metric"], summary["cost_metric"]
    frontier = summary["frontier"]
    lines = [f"## Pareto frontier (best {NAMES[acc]} for each cost)", ""]
    if not frontier:
        return [*lines, "No setting has both an accuracy and a cost.", ""]
    shown = thin(frontier, MAX_FRONTIER_SHOWN)
    lines += _table(
        ["Checkpoint", "first_threshold", "gate_threshold", NAMES[acc] + " ↑", NAMES[cost] + " ↓", "Frames"],
        [
            [r["checkpoint"], *_thresholds(r), number(r[acc]), number(r[cost], 2), number(r.get("mean_frames"), 2)]
            for r in shown
        ],
    )
    if len(shown) < len(frontier):
        lines.append(f"\n{len(shown)} of the {len(frontier)} frontier settings, evenly spread; all in summary.json.")
    return [*lines, ""]


def _budget(summary: Mapping[str, Any]) -> list[str]:
    """The best setting within the budget, per checkpoint."""
    acc, cost = summary["accuracy_metric"], summary["cost_metric"]
    budget = summary["budget"]
    if not budget:
        return []
    rows = []
    for b in budget["checkpoints"]:
        s, e, cal = b.get("setting"), b.get("evaluated"), b.get("calibration")
        if s is None or e is None:
            rows.append([b["checkpoint"], "-", "-", "-", "-", b.get("note", "")])
        else:
            note = f"calibration: {NAMES[acc]} {number(cal[acc])} at {number(cal[cost], 2)}" if cal else ""
            rows.append([b["checkpoint"], *_thresholds(s), with_interval(e, acc), number(e[cost], 2), note])
    how = "chosen on the calibration run, evaluated here" if budget["calibrated"] else "chosen on this run"
    header = ["Checkpoint", "first_threshold", "gate_threshold", NAMES[acc], NAMES[cost], "Note"]
    lines = [f"## Best setting within {budget['budget']:g} {NAMES[cost]} ({how})", "", *_table(header, rows), ""]
    others = []
    for policy, chosen in (budget.get("policies") or {}).items():
        for b in chosen:
            e = b.get("evaluated")
            if b.get("setting") is None or e is None:
                others.append([b["checkpoint"], policy, "-", "-", "-", b.get("note", "")])
            else:
                others.append(
                    [
                        b["checkpoint"],
                        policy,
                        describe_setting(b["setting"]),
                        with_interval(e, acc),
                        number(e[cost], 2),
                        "",
                    ]
                )
    if others:
        header = ["Checkpoint", "Policy", "Setting", NAMES[acc], NAMES[cost], "Note"]
        lines += ["The other exit policies within the same budget:", "", *_table(header, others), ""]
    return lines


def _policies(summary: Mapping[str, Any]) -> list[str]:
    """The exit policies side by side at equal cost, per checkpoint."""
    entries = summary.get("policies")
    if not entries:
        return []
    acc, cost = summary["accuracy_metric"], summary["cost_metric"]
    a, c = NAMES[acc], NAMES[cost]
    lines = [
        "## Exit policies at equal cost",
        "",
        f"Each policy over the same head: its best {a} at no more than the job setting's cost, and the cheapest "
        f"setting within {100 * ONE_POINT:g} point of the {a} of reading every frame (full T). confidence exits at "
        "the first step whose top probability exceeds tau; fixed reads k frames; oracle exits at the first step "
        "whose top class is right (the best any exit rule over this head can do).",
        "",
    ]
    header = ["Checkpoint", "Policy", "At the job's cost", a, c, f"Within {100 * ONE_POINT:g} point of full T", a, c]
    rows = []
    for entry in entries:
        for p in entry["points"]:
            cells = [entry["checkpoint"], p["policy"]]
            for row in (p["at_job_cost"], p["within_one_point"]):
                if row is None:
                    cells += ["none", "-", "-"]
                else:
                    cells += [describe_setting(row), with_interval(row, acc), number(row.get(cost), 2)]
            rows.append(cells)
    lines += _table(header, rows)
    full = [f"{e['checkpoint']} {number(e['full_t'])}" for e in entries]
    return [*lines, "", f"{a} reading every frame: {', '.join(full)}.", ""]


def _change(value: Mapping[str, Any] | None, digits: int) -> str:
    """One metric of a baseline check, as a cell."""
    if value is None:
        return "n/a"
    if "not_compared" in value:
        return "not compared"
    if value.get("current") is None:  # the baseline has it, this run does not: a failure, shown as such
        return f"{number(value['baseline'], digits)} → n/a"
    delta = value["current"] - value["baseline"]  # not -drop: an unchanged value would print as -0.0000
    return f"{number(value['baseline'], digits)} → {number(value['current'], digits)} ({delta:+.{digits}f})"


def _baseline(summary: Mapping[str, Any]) -> list[str]:
    """The baseline comparison, per checkpoint and metric."""
    cost, baseline = summary["cost_metric"], summary["baseline"]
    if not baseline:
        return []
    lines = [
        "## Baseline comparison",
        "",
        f"Passed: **{'yes' if baseline['passed'] else 'no'}** ({baseline.get('n_compared', 0)} checkpoint(s) "
        f"compared; max drop {baseline['max_drop']}, max cost rise {baseline['max_cost_rise']})",
        "",
        *([_videos(baseline), ""] if baseline.get("videos") else []),
    ]
    rows = [
        [c["checkpoint"], c["note"], "", ""]
        if "note" in c
        else [c["checkpoint"], *(_change(c.get(key), 2 if key == cost else 4) for key in ("map", "top1", cost))]
        for c in baseline["checks"]
    ]
    lines += [*_table(["Checkpoint", "mAP", "Top-1", NAMES[cost]], rows), ""]
    return [*lines, *_paired(baseline), *_budget_matched(summary)]


def _paired(baseline: Mapping[str, Any]) -> list[str]:
    """The paired bootstrap of each checkpoint's change against the baseline, and the significance test."""
    paired = baseline.get("paired")
    if not paired:
        return []
    level = f"{100 * paired['level']:g} %"
    rows = []
    for c in paired["checkpoints"]:
        cells = [c["checkpoint"]]
        for key in ("map", "top1"):
            value = c.get(key) or {}
            if "interval" in value:
                low, high = value["interval"]
                cells.append(f"{number(value.get('change'))} [{number(low)}, {number(high)}]")
            else:
                cells.append("not compared")
        rows.append(cells)
    lines = [
        f"Paired bootstrap over the {paired['n_videos']} videos both runs evaluated (the same {paired['resamples']} "
        f"resamples, seed {paired['seed']}, applied to both): change of this run against the baseline, with its "
        f"{level} interval. An interval that excludes 0 is a difference the resampling of videos does not explain.",
        "",
        *_table(["Checkpoint", "mAP change", "Top-1 change"], rows),
        "",
    ]
    if baseline.get("significance") is not None:
        notes = [
            f"- {c['checkpoint']} {NAMES.get(key, key)}: {one_line(c[key]['significance'])}"
            for c in baseline["checks"]
            for key in ("map", "top1")
            if isinstance(c.get(key), Mapping) and "significance" in c[key]
        ]
        lines += [
            f"--significance {baseline['significance']:g}: a drop beyond max drop fails the gate only when its "
            f"{level} interval lies wholly above max drop.",
            "",
            *(notes or ["- no drop beyond max drop to test"]),
            "",
        ]
    return lines


def _budget_matched(summary: Mapping[str, Any]) -> list[str]:
    """This run's most accurate setting at the baseline's cost, per checkpoint."""
    matched = (summary["baseline"] or {}).get("budget_matched")
    if not matched:
        return []
    acc, cost = summary["accuracy_metric"], summary["cost_metric"]
    rows = [
        [
            m["checkpoint"],
            number(m["baseline_cost"], 2),
            number(m["baseline_accuracy"]),
            describe_setting(m["setting"]) if m["setting"] else m.get("note", "none"),
            number(m.get("accuracy")),
            number(m.get("change")),
        ]
        for m in matched
    ]
    header = [
        "Checkpoint",
        f"Baseline {NAMES[cost]}",
        f"Baseline {NAMES[acc]}",
        "This run's setting",
        NAMES[acc],
        "Change",
    ]
    return [
        f"At equal cost: this run's best {NAMES[acc]} (its frameexit frontier) at no more than the baseline's cost.",
        "",
        *_table(header, rows),
        "",
    ]


def _histogram(summary: Mapping[str, Any]) -> list[str]:
    """The exit histogram at the job's setting."""
    default = summary["default"]
    if not default:
        return []
    header = ["Checkpoint", *[str(t) for t in range(len(default[0]["exit_histogram"]))]]
    rows = [[r["checkpoint"], *[f"{100 * v:.1f}" for v in r["exit_histogram"]]] for r in default]
    return ["## Exit histogram at the job's setting (% of videos per exit step)", "", *_table(header, rows), ""]


def _video_counts(summary: Mapping[str, Any]) -> list[str]:
    """Videos listed, evaluated and skipped (the first MAX_SKIPPED_SHOWN named)."""
    skipped = summary["skipped"]
    lines = [
        "## Videos",
        "",
        f"{summary['n_videos_listed']} listed in the split, {summary['n_videos_evaluated']} "
        f"evaluated{_labelled(summary, why=False)}, {summary['n_videos_skipped']} skipped.",
        "",
    ]
    if skipped:
        lines += _table(["Skipped video", "Reason"], [[s["video"], s["reason"]] for s in skipped[:MAX_SKIPPED_SHOWN]])
        if len(skipped) > MAX_SKIPPED_SHOWN:
            lines.append(f"\n... and {len(skipped) - MAX_SKIPPED_SHOWN} more in summary.json.")
        lines.append("")
    return lines


def _provenance(summary: Mapping[str, Any]) -> list[str]:
    """Cache, checkpoints, dataset files, versions and date."""
    p = summary["provenance"]
    lines = ["## Provenance", ""]
    if p["cache"]:
        inputs = p["cache"]["inputs"]
        lines.append(
            f"- feature cache: {code(p['cache']['key'])} (backbone {one_line(inputs.get('backbone'))}, "
            f"backbone weights SHA-256 `{str(inputs.get('backbone_digest'))[:16]}...`)"
        )
    lines += [f"- checkpoint {code(c['name'])}: SHA-256 {code(c['sha256'])}" for c in p["checkpoints"]]
    lines += [f"- {name}: {code(path)}" for name, path in p["dataset_files"].items()]
    if p["versions"]:
        lines.append("- software: " + ", ".join(f"{k} {v}" for k, v in p["versions"].items()))
    lines.append(
        f"- created {summary['created']}" + (f", git {summary['git_hash'][:12]}" if summary["git_hash"] else "")
    )
    return lines


def render_markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md`` from a :class:`reports.records.Summary`."""
    sections = (
        _alert,
        _headline,
        _results,
        _policies,
        _frontier,
        _budget,
        _baseline,
        _histogram,
        _video_counts,
        _provenance,
    )
    return "\n".join(line for section in sections for line in section(summary)) + "\n"
