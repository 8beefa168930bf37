"""Cost of the bootstrap intervals of mAP and top-1 (frameexit.bootstrap) at ActivityNet and HVU scale.

Times in one run, on the same synthetic inputs:

- new: :func:`frameexit.bootstrap.resampled_metrics`, every setting in one call (the settings share the labels
  and the resample weights);
- old: the single-setting path as it was before it (commit ee52f2b, kept below as ``previous_ap``: a dense
  float32 product of the weights with a 0/1 "ranked before" matrix per 2,048 positives, then a loop over
  copies), setting by setting, with :func:`frameexit.bootstrap.resampled_top1` for top-1;

and prints seconds for all settings and per setting, the ratio, peak resident memory and, with ``--check``,
the largest difference of the new per-class AP to the AP of the expanded sets (each video repeated as many
times as drawn) and to the old path.

``--preset activitynet`` (default): 4,926 videos, 200 classes, one label per video drawn uniformly,
softmax-like float32 scores drawn anew for each setting, 1,000 resamples, 10 settings. Target (issue 22):
at most 0.15 s per setting on the project's 2-core VM.

``--preset hvu``: 31,000 videos, 3,142 tags with HVU's skew (``bench/replay.py``'s ``hvu_labels``: about 20
per video), 2 settings. The old path holds several ``resamples x positives`` float64 arrays (5 GB each at
1,000 resamples and 620,000 positives), so it runs on ``--old-resamples`` resamples (default 25 at HVU
scale, one setting), and the new path is timed again on those for the ratio (no scaling: at few resamples
the old path's cost is its resample-independent "ranked before" matrices).

    .venv/bin/python bench/bootstrap.py [--preset activitynet|hvu] [--settings N] [--check]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from replay import hvu_labels  # noqa: E402

from frameexit import bootstrap  # noqa: E402
from frameexit.bootstrap import (  # noqa: E402
    resample_weights,
    resampled_average_precision,
    resampled_metrics,
    resampled_top1,
)
from frameexit.metrics import average_precision, mean_ap  # noqa: E402

PRESETS = {
    "activitynet": {"videos": 4926, "num_class": 200, "settings": 10, "old_resamples": None, "old_settings": None},
    "hvu": {"videos": 31000, "num_class": 3142, "settings": 2, "old_resamples": 25, "old_settings": 1},
}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def one_label(rng: np.random.Generator, n: int, n_class: int) -> np.ndarray:
    """One label per video, drawn uniformly (the issue's ActivityNet-scale case)."""
    labels = np.zeros((n, n_class), dtype=bool)
    labels[np.arange(n), rng.integers(0, n_class, n)] = True
    return labels


def softmax_scores(rng: np.random.Generator, settings: int, n: int, n_class: int) -> np.ndarray:
    """(settings, n, n_class) float32 probabilities: softmax of normal logits (spread 3), drawn per setting."""
    scores = np.empty((settings, n, n_class), dtype=np.float32)
    for s in range(settings):
        for lo in range(0, n, 4096):
            logits = rng.standard_normal((min(n, lo + 4096) - lo, n_class), dtype=np.float32) * 3
            np.exp(logits - logits.max(axis=1, keepdims=True), out=logits)
            scores[s, lo : lo + len(logits)] = logits / logits.sum(axis=1, keepdims=True)
    return scores


def previous_ap(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``resampled_average_precision`` as of commit ee52f2b (the old path, for timing and comparison)."""
    n, n_classes = scores.shape
    resamples = len(weights)
    ap = np.full((resamples, n_classes), np.nan)
    order = np.argsort(-scores, axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[:, None], axis=0)
    pos_class, pos_video = np.nonzero(labels.T)
    by_rank = np.lexsort((rank[pos_video, pos_class], pos_class))
    pos_class, pos_video = pos_class[by_rank], pos_video[by_rank]
    starts = np.flatnonzero(np.r_[True, pos_class[1:] != pos_class[:-1]])
    wp = weights[:, pos_video].astype(np.float64)
    running = np.cumsum(wp, axis=1)
    positives_before = (
        running - wp - np.repeat((running - wp)[:, starts], np.diff(np.r_[starts, len(pos_class)]), axis=1)
    )
    w32 = weights.astype(np.float32)
    contribution = np.empty((resamples, len(pos_class)))
    for start in range(0, len(pos_class), 2048):
        part = slice(start, start + 2048)
        c, v = pos_class[part], pos_video[part]
        before = (rank[:, c] < rank[v, c][None, :]).astype(np.float32)
        copies_before = (w32 @ before).astype(np.float64)
        out = np.zeros_like(copies_before)
        for i in range(1, int(wp[:, part].max(initial=0)) + 1):
            out += np.where(wp[:, part] >= i, (positives_before[:, part] + i) / (copies_before + i), 0.0)
        contribution[:, part] = out
    classes = pos_class[starts]
    n_pos = np.add.reduceat(wp, starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap[:, classes] = np.where(n_pos > 0, np.add.reduceat(contribution, starts, axis=1) / n_pos, np.nan)
    return ap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="activitynet")
    parser.add_argument("--settings", type=int, default=None, help="settings timed (default: the preset's)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--old-resamples", type=int, default=None, help="resamples of the old path (default: all)")
    parser.add_argument("--old-settings", type=int, default=None, help="settings of the old path (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="time the new path this many times, keep the best")
    parser.add_argument("--no-old", action="store_true", help="time the new path only")
    parser.add_argument(
        "--numpy-product", action="store_true", help="also time the new path with numpy's float32 product"
    )
    parser.add_argument("--check", action="store_true", help="compare with the expanded sets and the old path")
    a = parser.parse_args()
    preset = PRESETS[a.preset]
    settings = a.settings or preset["settings"]
    old_settings = min(a.old_settings or preset["old_settings"] or settings, settings)
    old_resamples = min(a.old_resamples or preset["old_resamples"] or a.resamples, a.resamples)
    rng = np.random.default_rng(0)
    n, n_class = preset["videos"], preset["num_class"]
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, numpy {np.__version__}, torch {torch.__version__} ")
    print(f"  ({torch.get_num_threads()} threads), load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    labels = one_label(rng, n, n_class) if a.preset == "activitynet" else hvu_labels(rng, n, n_class).astype(bool)
    scores = softmax_scores(rng, settings, n, n_class)
    labelled = labels.any(axis=1)
    hits = labels[np.arange(n)[None, :], scores.argmax(axis=2)]
    weights = resample_weights(n, a.resamples, seed=0)
    positives = labels.sum(axis=0)
    print(
        f"{a.preset}: {n} videos, {n_class} classes, {labels.sum() / n:.1f} labels per video ({labels.sum()} "
        f"positives; per class max {positives.max()}, median {int(np.median(positives))}, "
        f"{int((positives == 0).sum())} without), {a.resamples} resamples, {settings} settings"
    )

    # warm-up on a few resamples (imports torch's product, first-touch of the code paths)
    resampled_metrics(scores[:1], labels, hits[:1], labelled, weights[:4])
    rss_before = rss_mib()
    new_s = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        maps, top1 = resampled_metrics(scores, labels, hits, labelled, weights)
        new_s.append(time.perf_counter() - t0)
    new = min(new_s)
    new_peak = peak_mib()
    print(
        f"new  resampled_metrics: {new:.3f} s for {settings} settings, {new / settings:.3f} s per setting "
        f"(runs: {', '.join(f'{s:.3f}' for s in new_s)}); RSS {rss_before:.0f} MiB before, peak {new_peak:.0f} MiB"
    )

    if a.numpy_product:
        # the fallback where torch's int8 product is missing
        int8_product = bootstrap._torch_int8_product
        bootstrap._torch_int8_product = lambda: None
        t0 = time.perf_counter()
        resampled_metrics(scores, labels, hits, labelled, weights)
        fallback = time.perf_counter() - t0
        bootstrap._torch_int8_product = int8_product
        print(f"new  with numpy's float32 product: {fallback:.3f} s, {fallback / settings:.3f} s per setting")
    if a.no_old:
        return
    old_weights = weights[:old_resamples]
    t0 = time.perf_counter()
    old_maps, old_top1 = [], []
    for s in range(old_settings):
        old_maps.append(mean_ap(previous_ap(scores[s], labels, old_weights)))
        old_top1.append(resampled_top1(hits[s], labelled, old_weights))
    old = (time.perf_counter() - t0) / old_settings
    print(
        f"old  single-setting path, {old_resamples} resamples: {old * settings:.3f} s for {settings} settings, "
        f"{old:.3f} s per setting ({old_settings} timed); peak {peak_mib():.0f} MiB"
    )
    if old_resamples < a.resamples:
        # the old path's arrays of (resamples x positives) float64 do not fit at this scale: the ratio is
        # taken at the old path's resamples, the new path timed again there (its ranking and operands cost
        # the same at any number of resamples, so no scaling)
        t0 = time.perf_counter()
        resampled_metrics(scores[:old_settings], labels, hits[:old_settings], labelled, old_weights)
        same = (time.perf_counter() - t0) / old_settings
        print(f"new  resampled_metrics, {old_resamples} resamples: {same:.3f} s per setting")
        print(f"ratio old / new per setting at {old_resamples} resamples: {old / same:.1f}")
    else:
        print(f"ratio old / new per setting: {old / (new / settings):.1f}")

    if a.check:
        old_diff = max(np.nanmax(np.abs(m - maps[s, :old_resamples])) for s, m in enumerate(old_maps))
        top1_same = all(np.array_equal(t, top1[s, :old_resamples], equal_nan=True) for s, t in enumerate(old_top1))
        worst_abs = worst_rel = 0.0
        ap = resampled_average_precision(scores[0], labels, weights[:3])
        for b in range(3):
            expanded = average_precision(np.repeat(scores[0], weights[b], 0), np.repeat(labels, weights[b], 0))
            diff = np.abs(ap[b] - expanded)
            worst_abs = max(worst_abs, float(np.nanmax(diff)))
            worst_rel = max(worst_rel, float(np.nanmax(diff / expanded)))
        print(
            f"check: per-class AP of 3 resamples against the expanded sets: max abs {worst_abs:.2e}, max rel "
            f"{worst_rel:.2e}; mAP against the old path: max abs {old_diff:.2e}; top-1 the same: {top1_same}"
        )


if __name__ == "__main__":
    main()
