"""Plain-text summaries printed at the end of a command (stdout): one pure function per command.

Each takes the command's result object (only the attributes its docstring names are read, so this
module imports nothing of ``jobs``) and returns the lines to print, joined by newlines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from reports.markdown import count, number
from reports.summary import describe_setting, is_sequential_reference


def _skipped(skipped: list[Mapping[str, str]], head: str, where: str) -> list[str]:
    """At most 20 skipped videos with their reasons, under ``head``."""
    if not skipped:
        return []
    lines = [head, *(f"    {s['video']}: {s['reason']}" for s in skipped[:20])]
    if len(skipped) > 20:
        lines.append(f"    ... and {len(skipped) - 20} more (see {where})")
    return lines


def render_infer_summary(result: Any) -> str:
    """``frameexit infer``: headline metrics, exit histogram, skipped videos, outputs. ``result``: ``metrics``
    (metrics.json's content), ``videos_path``, ``metrics_path``, ``sweep_path``, ``replay_path``."""
    metrics = result.metrics
    per_frame = metrics.get("gflops_per_frame")
    gflops = number(metrics.get("gflops"), 2)
    step = "clip" if str(metrics.get("backbone", "")).startswith("pytorchvideo.") else "frame"
    gflops_note = (
        f"(paper convention: {per_frame} per {step} x {step}s read)"
        if per_frame is not None
        else "(paper convention defined for resnet50, efficientnet_b3, and x3d_s at 13x160x160 clips only)"
    )
    hist = metrics.get("exit_histogram", [])
    labelled = metrics.get("n_videos_labelled")
    with_label = "" if labelled is None else f" ({labelled} with a label)"  # top-1 is over those only
    lines = [
        f"FrameExit infer: {metrics['n_videos']} videos evaluated{with_label}, "
        f"{len(metrics['skipped'])} skipped (of {metrics['n_videos_listed']} listed); {_infer_setting(metrics)}",
        f"  mAP            {number(metrics.get('map'))}",
        f"  top-1          {number(metrics.get('top1'))}"
        + (f" (of the {labelled} videos with a label)" if labelled is not None else ""),
        f"  GFLOPs         {gflops} {gflops_note}",
        f"  GMACs measured {number(metrics.get('gmacs_measured'), 2)} per video (backbone + head; GFLOPs = 2 x GMACs)",
        f"  {'mean ' + step + 's':<15}{number(metrics.get('mean_frames'), 2)}",
        "  exits per step " + " ".join(f"{i}:{100 * f:.1f}%" for i, f in enumerate(hist)),
    ]
    categories = metrics.get("map_per_category") or {}
    if categories:
        lines.append("  mAP per category " + " ".join(f"{k}:{number(v)}" for k, v in categories.items()))
    lines += _skipped(metrics.get("skipped", []), "  skipped:", "metrics.json")
    lines.append(f"  wrote {result.videos_path}, {result.metrics_path}, {result.sweep_path}, {result.replay_path}")
    return "\n".join(lines)


def _infer_setting(metrics: Any) -> str:
    """The setting ``frameexit infer`` ran, in words: frameexit's thresholds, or the baseline policy's own."""
    policy = metrics.get("policy", "frameexit")
    if policy == "confidence":
        return f"policy confidence tau={metrics['tau']:g}"
    if policy == "fixed":
        return f"policy fixed frames={metrics['frames']}"
    if policy == "oracle":
        return "policy oracle (exits at the earliest step whose top class is a label; every frame read)"
    return f"first_threshold={metrics['first_threshold']:g} gate_threshold={metrics['gate_threshold']:g}"


def render_extract_summary(result: Any) -> str:
    """``frameexit extract`` (and run's first stage): what was computed or reused, skipped videos, the cache.
    ``result``: ``cache_dir``, ``key``, ``n_videos``, ``n_shards``, ``shards_written``, ``frames``,
    ``unit`` (``frames`` or ``clips``), ``seconds``, ``skipped`` (``{'video', 'reason'}`` each),
    ``frames_changed`` and ``retried`` (video keys), ``replanned``, ``exactness``
    (:func:`cache.exactness.summarize`'s dict, optional)."""
    n_shards, written = result.n_shards, result.shards_written
    if written == 0:
        head = (
            "FrameExit extract: cache complete, nothing to do (no backbone work): "
            f"{result.n_videos} videos in {n_shards} shards, their frames as recorded"
        )
    else:
        rate = result.frames / result.seconds if result.seconds > 0 else float("nan")
        head = (
            f"FrameExit extract: wrote {written} of {n_shards} shards ({n_shards - written} reused); "
            f"{result.frames} {result.unit} in {result.seconds:.1f} s ({rate:.1f} {result.unit}/s); "
            f"{result.n_videos} videos cached"
        )
    lines = [head, f"  cache  {result.cache_dir}", f"  key    {result.key}"]
    if result.replanned:
        lines.append("  the split's frame folders changed since the cache was planned (videos gained or lost frames)")
    for videos, what in (
        (result.frames_changed, "frames not those their features came from, extracted again"),
        (result.retried, "could not be read before, tried again"),
    ):
        if videos:
            shown = ", ".join(videos[:5]) + (f" and {len(videos) - 5} more" if len(videos) > 5 else "")
            lines.append(f"  {len(videos)} video(s) {what}: {shown}")
    still = [s for s in result.skipped if s["video"] in set(result.retried)]
    if still:
        lines.append(f"  still skipped after the retry: {', '.join(s['video'] for s in still[:5])}")
    exactness = getattr(result, "exactness", None)
    if exactness:
        if exactness["status"] == "measured":
            lines.append(
                f"  exact  no: {exactness['effective']} backbone, features differ from infer's per-step ones by at "
                f"most {exactness['max_abs_deviation']:.2g} (relative {exactness['max_rel_deviation']:.2g}) on "
                f"{len(exactness['probe_videos'])} probed videos"
            )
        else:
            lines.append(
                f"  exact  {'yes' if exactness['status'] == 'exact' else 'unknown'} ({exactness['effective']} backbone)"
            )
    lines += _skipped(result.skipped, f"  skipped {len(result.skipped)}:", "manifest.json")
    return "\n".join(lines)


def render_replay_summary(result: Any) -> str:
    """``frameexit replay`` (and run's second stage): grid size, each checkpoint at the default setting, outputs.
    ``result``: ``summary`` (replay.json's content), ``sweep_path``, ``videos_path``, ``replay_path``."""
    summary = result.summary
    d, labelled = summary["default_setting"], summary.get("n_videos_labelled")
    lines = [
        f"FrameExit replay: {len(summary['checkpoints'])} checkpoint(s) x {count(summary['n_settings'], 'setting')} "
        f"over {summary['n_videos']} videos ({'' if labelled is None else f'{labelled} with a label, '}"
        f"{len(summary['skipped'])} skipped), order {summary['order_name']}",
        f"  cache {summary['cache']['directory']}",
        f"  default setting first_threshold={d['first_threshold']:g} gate_threshold={d['gate_threshold']:g}:",
        "    checkpoint                          mAP     top-1   GFLOPs  GMACs   frames"
        + ("" if labelled is None else "   (top-1 of the videos with a label)"),
    ]
    for row in summary["default_metrics"]:
        lines.append(
            f"    {row['checkpoint'][:34]:<34} {number(row['map']):>7} {number(row['top1']):>7} "
            f"{number(row['gflops'], 2):>7} {number(row['gmacs_measured'], 2):>7} {number(row['mean_frames'], 2):>6}"
        )
    boot = summary.get("bootstrap")
    if boot and boot["resamples"]:
        own: dict[str, Any] = {}
        for i in boot["intervals"]:  # each checkpoint's first: the job's setting
            own.setdefault(i["checkpoint"], i)
        lines.append(
            f"  {100 * boot['level']:g} % bootstrap intervals at the default setting ({boot['resamples']} resamples):"
        )
        for row in summary["default_metrics"]:
            i = own.get(row["checkpoint"])
            if i is not None:
                lines.append(f"    {row['checkpoint'][:34]:<34} mAP {bounds(i['map'])}  top-1 {bounds(i['top1'])}")
    lines += _exactness(summary.get("exactness"))
    lines.append(f"  wrote {result.sweep_path}, {result.videos_path}, {result.replay_path}")
    return "\n".join(lines)


def bounds(interval: Any, digits: int = 3) -> str:
    """An interval ``[low, high]`` as text; ``n/a`` without one."""
    if not interval or None in interval:
        return "n/a"
    return f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _point(row: Mapping[str, Any] | None, acc: str, cost: str) -> str:
    if row is None:
        return "none"
    interval = f" {bounds(row.get(f'{acc}_interval'))}" if row.get(f"{acc}_interval") else ""
    return f"{describe_setting(row)}: {number(row.get(acc), 3)}{interval} at {number(row.get(cost), 2)}"


#: The cost metrics in the terminal's words.
COSTS = {"gflops": "GFLOPs per video", "gflops_measured": "measured GFLOPs per video"}


def policy_lines(summary: Mapping[str, Any]) -> list[str]:
    """The exit policies side by side (summary.json's ``policies``): per checkpoint and policy, its accuracy at the
    job's cost and the cheapest setting within one point of reading every frame, with intervals."""
    entries = summary.get("policies") or []
    if not entries:
        return []
    acc, cost = summary["accuracy_metric"], summary["cost_metric"]
    name = {"map": "mAP", "top1": "top-1"}[acc]
    lines = []
    for entry in entries:
        lines.append(
            f"  {entry['checkpoint']}: {name} by exit policy (at the job's cost | cheapest within 1 point of "
            f"{number(entry['full_t'], 3)}, every frame; {COSTS.get(cost, cost)}):"
        )
        lines += [
            f"    {p['policy']:<10} {_point(p['at_job_cost'], acc, cost)} | {_point(p['within_one_point'], acc, cost)}"
            for p in entry["points"]
        ]
    return lines


def _exactness(record: Mapping[str, Any] | None) -> list[str]:
    """One line (or one per checkpoint) saying whether ``frameexit infer`` would decide as replay did."""
    if not record:
        return []
    if record["status"] == "exact":
        return ["  agreement with infer: exact (per-step features: every decision equals infer's bit for bit)"]
    if record["status"] == "unknown":
        return ["  agreement with infer: unknown (the cache has no probe: videos near a threshold may differ)"]
    lines = [
        f"  agreement with infer: batched features, {number(record['feature_max_abs_deviation'], 9)} max deviation "
        f"on {len(record['probe_videos'])} probed videos; videos at risk at the default setting:"
    ]
    for c in record["checkpoints"]:
        names = c["at_risk"] or []
        more = f" ... (+{len(names) - 5}, see replay.json)" if len(names) > 5 else ""
        lines.append(
            f"    {c['checkpoint'][:34]:<34} {c['n_at_risk']}" + (f": {', '.join(names[:5])}{more}" if names else "")
        )
    return lines


def _report_paths(paths: Mapping[str, str]) -> str:
    return f"  report: {paths['summary.md']}\n          {paths['summary.json']}\n          {paths['curve.png']}"


def render_report_summary(result: Any) -> str:
    """``frameexit report``: settings, frontier, where the report is. ``result``: ``summary`` (summary.json's
    content), ``paths`` (by file name)."""
    n_frontier = len(result.summary["frontier"])
    head = f"FrameExit report: {count(result.summary['n_settings'], 'setting')}, {n_frontier} on the frontier"
    videos = (result.summary.get("baseline") or {}).get("videos") or {}
    if videos.get("compared_over") == "common":
        head += (
            f"\n  baseline: compared over the {videos['n_common']} videos both runs evaluated (this run "
            f"{videos['n_run']}, the baseline {videos['n_baseline']}; --accept-missing {videos['accept_missing']}); "
            "mAP not compared"
        )
    exactness = result.summary.get("exactness")
    if is_sequential_reference(result.summary):
        head += "; this is frameexit infer's own run (the sequential reference)"
    elif exactness and exactness["status"] == "measured":
        n = sum(c["n_at_risk"] or 0 for c in exactness["checkpoints"])
        head += f"; {n} video(s) at the job's setting may be decided otherwise by infer (batched features)"
    elif exactness:
        head += f"; agreement with infer: {exactness['status']}"
    lines = [head, *_default_intervals(result.summary), *policy_lines(result.summary)]
    return "\n".join(lines) + "\n" + _report_paths(result.paths)


def _default_intervals(summary: Mapping[str, Any]) -> list[str]:
    """The job's setting of each checkpoint with its bootstrap intervals, when the replay computed them."""
    boot = summary.get("bootstrap")
    if not boot:
        return []
    return [
        f"  {r['checkpoint']} at the job's setting: mAP {number(r.get('map'), 3)} {bounds(r.get('map_interval'))}, "
        f"top-1 {number(r.get('top1'), 3)} {bounds(r.get('top1_interval'))} ({100 * boot['level']:g} % bootstrap "
        f"intervals, {boot['resamples']} resamples)"
        for r in summary["default"]
    ]


def render_run_summary(out_dir: str, report: Any) -> str:
    """``frameexit run``, after the stages' own summaries: the job's setting with its intervals, the exit policies
    side by side, and where the artefacts are (``report`` as for :func:`render_report_summary`)."""
    lines = [
        f"FrameExit run: artefacts in {out_dir}",
        *_default_intervals(report.summary),
        *policy_lines(report.summary),
    ]
    return "\n".join(lines) + "\n" + _report_paths(report.paths)


def render_regressions(summary: Mapping[str, Any]) -> str:
    """The baseline gate's regressions (stderr of report and run), one ``REGRESSION:`` line each."""
    return "\n".join(f"REGRESSION: {line}" for line in summary["baseline"]["regressions"])


def render_train_summary(result: Any) -> str:
    """``frameexit train``: final losses, validation accuracy per step, the checkpoint.
    ``result``: ``n_videos``, ``history`` (``{'stage', 'epoch', 'loss'}`` per epoch), ``validation``
    (``{'top1': [10 values]}`` or None), ``checkpoint``, ``loss`` (its kind)."""
    last = {e["stage"]: e for e in result.history}
    lines = [
        f"FrameExit train: {result.n_videos} videos; final loss ({result.loss}) classifiers "
        f"{last['classifier']['loss']:.4f}, gates {last['gates']['loss']:.4f}"
    ]
    if result.validation:
        top1 = " ".join(f"{v:.3f}" for v in result.validation["top1"])
        lines.append(f"  validation top-1 after 1..10 frames: {top1}")
    lines.append(f"  wrote {result.checkpoint}")
    return "\n".join(lines)


def render_demo_summary(result: Any) -> str:
    """``frameexit demo``: where the report is, each head's accuracy, the job's setting, the frontier.
    ``result``: ``run_dir``, ``ten_frame_top1`` (by checkpoint name), ``summary`` (of the report)."""
    summary = result.summary
    report = os.path.join(result.run_dir, "summary.md")
    lines = [f"FrameExit demo: report in {report} and {os.path.join(result.run_dir, 'curve.png')}"]
    lines += [
        f"  {name}: validation top-1 of the 10-frame classifier {top1:.3f}"
        for name, top1 in result.ten_frame_top1.items()
    ]
    lines += [
        f"  {row['checkpoint']} at first_threshold={row['first_threshold']:g}, "
        f"gate_threshold={row['gate_threshold']:g}: top-1 {row['top1']:.3f}, {row['mean_frames']:.2f} frames, "
        f"{row['gflops_measured']:.2f} measured GFLOPs per video"
        for row in summary["default"]
    ]
    lines.append(
        f"  {count(len(summary['frontier']), 'setting')} on the Pareto frontier of {summary['n_settings']} (see summary.md)"
    )
    lines += _default_intervals(summary) + policy_lines(summary)
    return "\n".join(lines)


def render_frames_summary(result: Any, *, ffmpeg_filter: str, frames_dir: str) -> str:
    """``frameexit prepare frames``: videos written, skipped, too short and failed (with the reason), the
    ffmpeg that ran, where the frames are.

    ``result``: ``written`` (frames by split key), ``already_done``, ``too_short`` and ``failed``
    (``{'video', 'reason'}``), ``ffmpeg`` (``version``, ``source``, ``path``; None when none ran),
    ``manifest`` (path or None), ``predating`` (folders made before the manifest).
    """
    lines = [
        f"FrameExit prepare frames ({ffmpeg_filter}, -q:v 2): "
        f"{len(result.written)} videos written ({sum(result.written.values())} frames), "
        f"{len(result.already_done)} already done, {len(result.too_short)} too short, {len(result.failed)} failed",
        *(f"  no frames from {f['video']}: {f['reason']}" for f in result.too_short),
        *(f"  failed {f['video']}: {f['reason']}" for f in result.failed),
    ]
    if result.ffmpeg is not None:
        lines.append(f"  ffmpeg {result.ffmpeg.version} ({result.ffmpeg.source}): {result.ffmpeg.path}")
    if result.predating:
        lines.append(
            f"  note: {result.predating} frame folder(s) were made before prepare frames recorded its command "
            "(folders_before_manifest): another tool or an older frameexit made them; delete them to redo them"
        )
    where = f" (command and FFmpeg version in {result.manifest})" if result.manifest else ""
    lines.append(f"  frames in {frames_dir}{where}")
    return "\n".join(lines)


def render_splits_summary(split: Any, *, out_path: str, classes: str | None, classes_out: str | None) -> str:
    """``frameexit prepare splits``: videos in the split file, labels missing from ``classes``, the class list.
    ``split``: ``keys``, ``missing`` (labels not in ``classes``), ``classes`` (written to ``classes_out``)."""
    lines = [f"FrameExit prepare splits: {len(split.keys)} videos written to {out_path}"]
    lines += [f"  left out: {what}" for what in getattr(split, "left_out", [])]
    if split.missing:
        lines.append(f"  {len(split.missing)} label(s) missing from {classes}: " + "; ".join(split.missing[:20]))
    if classes_out:
        lines.append(f"  {len(split.classes)} classes written to {classes_out} (sorted)")
        if len(split.classes) != split.num_class:
            lines.append(f"  note: the bundled job file's model.num_class is {split.num_class}")
    return "\n".join(lines)


def render_check_summary(result: Any) -> str:
    """``frameexit prepare check``: videos with frames, frame counts, the first missing, empty and unknown.
    ``result``: ``n_listed``, ``with_frames``, ``missing``, ``empty``, ``unknown_labels`` (keys by label),
    ``frame_counts`` (min, p10, median, p90, max, under_10; empty without videos), ``hints`` (by key),
    ``unlabelled`` (keys without an entry in the label file)."""
    r = result
    unlabelled = f"; {len(r.unlabelled)} without a label entry" if r.unlabelled else ""
    lines = [
        f"FrameExit prepare check: {r.with_frames} of {r.n_listed} split videos have frames; "
        f"{len(r.missing)} missing, {len(r.empty)} empty; {len(r.unknown_labels)} label(s) not in the class list"
        + unlabelled
    ]
    if r.frame_counts:
        c = r.frame_counts
        lines.append(
            f"  frames per video: min {c['min']:g}, p10 {c['p10']:g}, median {c['median']:g}, p90 {c['p90']:g}, "
            f"max {c['max']:g}; {c['under_10']:g} videos with fewer than 10 (frames repeat)"
        )
    lines += [f"  missing: {key}" + (f" {r.hints[key]}" if key in r.hints else "") for key in r.missing[:10]]
    lines += [f"  empty: {key}" for key in r.empty[:10]]
    lines += [f"  no label entry: {key}" for key in r.unlabelled[:10]]
    lines += [
        f"  unknown label {label!r} ({len(keys)} videos, e.g. {keys[0]})"
        for label, keys in list(r.unknown_labels.items())[:10]
    ]
    return "\n".join(lines)
