"""Plain-text summaries printed at the end of a command (stdout)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def render_infer_summary(metrics: Mapping[str, Any], paths: Mapping[str, str]) -> str:
    """The closing lines of ``frameexit infer``: headline metrics, exit histogram, skipped videos, outputs."""
    per_frame = metrics.get("gflops_per_frame")
    gflops = _num(metrics.get("gflops"), 2)
    gflops_note = (
        f"(paper convention: {per_frame} per frame x frames read)"
        if per_frame is not None
        else "(paper convention defined for resnet50 and efficientnet_b3 only)"
    )
    hist = metrics.get("exit_histogram", [])
    lines = [
        f"FrameExit infer: {metrics['n_videos']} videos evaluated, {len(metrics['skipped'])} skipped "
        f"(of {metrics['n_videos_listed']} listed); "
        f"first_threshold={metrics['first_threshold']:g} gate_threshold={metrics['gate_threshold']:g}",
        f"  mAP            {_num(metrics.get('map'))}",
        f"  top-1          {_num(metrics.get('top1'))}",
        f"  GFLOPs         {gflops} {gflops_note}",
        f"  GMACs measured {_num(metrics.get('gmacs_measured'), 2)} per video (backbone + head; GFLOPs = 2 x GMACs)",
        f"  mean frames    {_num(metrics.get('mean_frames'), 2)}",
        "  exits per step " + " ".join(f"{i}:{100 * f:.1f}%" for i, f in enumerate(hist)),
    ]
    skipped = metrics.get("skipped", [])
    if skipped:
        lines.append("  skipped:")
        lines.extend(f"    {s['video']}: {s['reason']}" for s in skipped[:20])
        if len(skipped) > 20:
            lines.append(f"    ... and {len(skipped) - 20} more (see metrics.json)")
    lines.append("  wrote " + ", ".join(paths.values()))
    return "\n".join(lines)


def render_extract_summary(
    *,
    cache_dir: str,
    key: str,
    n_videos: int,
    n_shards: int,
    shards_written: int,
    frames: int,
    seconds: float,
    skipped: list[Mapping[str, str]],
) -> str:
    """The closing lines of ``frameexit extract``: what was computed or reused, skipped videos, where the cache is."""
    if shards_written == 0:
        head = f"FrameExit extract: cache complete, nothing to do (no backbone work): {n_videos} videos in {n_shards} shards"
    else:
        rate = frames / seconds if seconds > 0 else float("nan")
        head = (
            f"FrameExit extract: wrote {shards_written} of {n_shards} shards ({n_shards - shards_written} reused); "
            f"{frames} frames in {seconds:.1f} s ({rate:.1f} frames/s); {n_videos} videos cached"
        )
    lines = [head, f"  cache  {cache_dir}", f"  key    {key}"]
    if skipped:
        lines.append(f"  skipped {len(skipped)}:")
        lines.extend(f"    {s['video']}: {s['reason']}" for s in skipped[:20])
        if len(skipped) > 20:
            lines.append(f"    ... and {len(skipped) - 20} more (see manifest.json)")
    return "\n".join(lines)


def render_replay_summary(
    summary: Mapping[str, Any], default_rows: list[Mapping[str, Any]], paths: Mapping[str, str]
) -> str:
    """The closing lines of ``frameexit replay``: grid size, each checkpoint at the default setting, outputs."""
    d = summary["default_setting"]
    lines = [
        f"FrameExit replay: {len(summary['checkpoints'])} checkpoint(s) x {summary['n_settings']} settings "
        f"over {summary['n_videos']} videos ({len(summary['skipped'])} skipped), order {summary['order_name']}",
        f"  cache {summary['cache']['directory']}",
        f"  default setting first_threshold={d['first_threshold']:g} gate_threshold={d['gate_threshold']:g}:",
        "    checkpoint                          mAP     top-1   GFLOPs  GMACs   frames",
    ]
    for row in default_rows:
        lines.append(
            f"    {row['checkpoint'][:34]:<34} {_num(row['map']):>7} {_num(row['top1']):>7} "
            f"{_num(row['gflops'], 2):>7} {_num(row['gmacs_measured'], 2):>7} {_num(row['mean_frames'], 2):>6}"
        )
    lines.append("  wrote " + ", ".join(paths.values()))
    return "\n".join(lines)
