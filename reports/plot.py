"""``curve.png``: accuracy against cost, every frameexit setting a point, its frontier a line, the job's setting
marked; each baseline policy's frontier a curve of its own, the oracle a point."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from .summary import PUBLISHED_ACTIVITYNET_RESNET50, describe_setting, policy_of

ACCURACY_LABELS = {"map": "mAP (fraction of 1)", "top1": "top-1 accuracy (fraction of 1)"}
#: Line style and marker of each baseline policy's frontier.
POLICY_STYLES = {"confidence": ("--", "s"), "fixed": (":", "^")}


def plot_curve(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, published: bool = False) -> Figure:
    """The accuracy-versus-cost figure of a :class:`reports.records.Summary` and every setting of its sweep
    (``rows``, with ``gflops_measured``); not saved: the caller writes and closes it. ``published``: also
    the published FrameExit ResNet-50 ActivityNet curve (that job's only, in paper-convention GFLOPs)."""
    acc, cost = summary["accuracy_metric"], summary["cost_metric"]
    fig = Figure(figsize=(7.5, 5.0), dpi=120)
    ax = fig.add_subplot()
    names = sorted({r["checkpoint"] for r in rows})
    colours = [f"C{i % 10}" for i in range(len(names))]
    gated = [r for r in rows if policy_of(r) == "frameexit"]
    for name, colour in zip(names, colours, strict=True):
        pts = [(r[cost], r[acc]) for r in gated if r["checkpoint"] == name and None not in (r.get(cost), r.get(acc))]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=14, alpha=0.45, color=colour, label=f"{name}: every setting")
    frontier = summary["frontier"]
    if frontier:
        xs, ys = [r[cost] for r in frontier], [r[acc] for r in frontier]
        ax.plot(xs, ys, "-", color="black", lw=1.6, drawstyle="steps-post", label="Pareto frontier (frameexit)")
    for entry in summary.get("policies") or []:
        colour = colours[names.index(entry["checkpoint"])] if entry["checkpoint"] in names else "black"
        _policy_curves(ax, entry, colour, acc, cost)
    for r in summary["default"]:
        if r.get(cost) is not None and r.get(acc) is not None:
            colour = colours[names.index(r["checkpoint"])] if r["checkpoint"] in names else "black"
            label = f"{r['checkpoint']}: job setting ({describe_setting(r, policy=policy_of(r) != 'frameexit')})"
            star = dict(marker="*", ms=16, color=colour, markeredgecolor="black", linestyle="none")
            ax.plot([r[cost]], [r[acc]], **star, label=label)
    if published:
        gx, gy = zip(*PUBLISHED_ACTIVITYNET_RESNET50, strict=True)
        ax.plot(gx, [y / 100 for y in gy], "o--", color="grey", lw=1.2, ms=5, label="FrameExit ResNet-50, published")
    ax.set_xlabel(summary["cost_label"])
    ax.set_ylabel(ACCURACY_LABELS[acc])
    ax.set_title(f"FrameExit on {summary['dataset']}: {'mAP' if acc == 'map' else 'top-1'} against cost")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _policy_curves(ax: Any, entry: Mapping[str, Any], colour: str, acc: str, cost: str) -> None:
    """One checkpoint's baseline policies: each one's frontier a curve, the oracle a point."""
    for policy, frontier in entry["frontiers"].items():
        pts = [(r[cost], r[acc]) for r in frontier if None not in (r.get(cost), r.get(acc))]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        if policy == "oracle":
            ax.plot(xs, ys, "P", ms=11, color=colour, markeredgecolor="black", label=f"{entry['checkpoint']}: oracle")
        elif policy in POLICY_STYLES:
            line, marker = POLICY_STYLES[policy]
            ax.plot(xs, ys, line, marker=marker, ms=4, lw=1.2, color=colour, label=f"{entry['checkpoint']}: {policy}")
