"""Replay's exit policies and bootstrap intervals, checked against the exit tables by hand (issue 22)."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from oracles import concat_tables

from cache.manifest import FeatureCache
from frameexit.bootstrap import percentile_interval, resample_weights, resampled_map, resampled_top1
from frameexit.checkpoint import build_model, read_state_dict
from frameexit.head_pass import exit_tables
from frameexit.metrics import average_precision, mean_ap
from frameexit.sampling import COARSE_TO_FINE
from jobs.config import load_job, with_options
from jobs.replay import ReplayOptions, replay


@pytest.fixture(scope="module")
def tables(extracted, checkpoint):
    model = build_model(read_state_dict(checkpoint), backbone_name=None)
    cache = FeatureCache.open(extracted.cache_dir)
    parts = [
        exit_tables(model, s.features, COARSE_TO_FINE, videos=s.videos, labels=s.labels) for s in cache.iter_shards()
    ]
    return concat_tables(parts)


@pytest.fixture(scope="module")
def replayed(job_file, extracted, tables, tmp_path_factory):
    """A replay whose confidence grid holds a video's own top probability at step 2 and the float32 above it."""
    top = tables.probs.max(axis=2)
    tau = float(np.sort(top[:, 2])[len(top) // 2])
    taus = [0.0, tau, float(np.nextafter(np.float32(tau), np.float32(1))), 0.5, 1.0]
    out = tmp_path_factory.mktemp("policies")
    keys = dict(confidence_thresholds=taus, per_video="all", resamples=200, seed=7)
    replay(
        with_options(load_job(job_file), keys), str(out), ReplayOptions(cache_root=os.path.dirname(extracted.cache_dir))
    )
    return out, taus


def _by_hand(tables, policy, value):
    """Exit steps of a baseline policy setting, written out from issue 22's definitions."""
    top = tables.probs.max(axis=2)
    n, steps = top.shape
    if policy == "fixed":
        return np.full(n, value - 1)
    if policy == "confidence":
        out = np.full(n, steps - 1)
        for v in range(n):
            for t in range(steps - 1):
                if np.float32(top[v, t]) > np.float32(value):
                    out[v] = t
                    break
        return out
    hits = tables.labels[np.arange(n)[:, None], tables.probs.argmax(axis=2)]
    return np.array([int(np.argmax(h)) if h.any() else 0 for h in hits])


def _metrics(tables, steps):
    scores = tables.probs[np.arange(len(steps)), steps]
    ap = average_precision(scores, tables.labels)
    labelled = tables.labels.any(axis=1)
    hits = tables.labels[np.arange(len(steps)), scores.argmax(axis=1)]
    return mean_ap(ap), hits[labelled].mean(), (steps + 1).mean(), scores, hits


def test_each_baseline_policy_row_equals_its_definition(replayed, tables):
    out, taus = replayed
    rows = [r for r in pq.read_table(out / "sweep.parquet").to_pylist() if r["policy"] != "frameexit"]
    expected = [("confidence", t) for t in taus] + [("fixed", k) for k in range(1, 11)] + [("oracle", None)]
    assert [(r["policy"], r["tau"] if r["policy"] == "confidence" else r["frames"]) for r in rows] == expected
    videos = pq.read_table(out / "videos.parquet").to_pylist()
    for r in rows:
        value = r["tau"] if r["policy"] == "confidence" else r["frames"]
        steps = _by_hand(tables, r["policy"], value)
        m, top1, frames, scores, _ = _metrics(tables, steps)
        assert r["map"] == pytest.approx(m, abs=1e-12)
        assert r["top1"] == top1 and r["mean_frames"] == frames
        assert r["first_threshold"] is None and r["gate_threshold"] is None
        own = [v for v in videos if v["policy"] == r["policy"] and v["tau"] == r["tau"] and v["frames"] == r["frames"]]
        assert [v["video"] for v in own] == tables.videos
        assert [v["exit_step"] for v in own] == steps.tolist()
        assert [v["prediction"] for v in own] == scores.argmax(axis=1).tolist()
    # the strict comparison at tau equal to a video's own top probability: that video does not exit there
    at, above = (next(r for r in rows if r["tau"] == t) for t in taus[1:3])
    assert at["mean_frames"] >= above["mean_frames"]
    # every frame read: fixed 10 equals the ten-frame classifiers; the oracle is the highest top-1 at its cost
    oracle = rows[-1]
    assert oracle["top1"] >= max(r["top1"] for r in rows[:-1])


def test_intervals_at_the_named_settings_are_the_bootstrap_of_their_scores(replayed, tables):
    out, _ = replayed
    record = json.loads((out / "replay.json").read_text())
    boot = record["bootstrap"]
    assert (boot["resamples"], boot["seed"], boot["level"]) == (200, 7, 0.95)
    first = boot["intervals"][0]
    default = record["default_setting"]
    assert first["setting"] == {"policy": "frameexit", **default}
    weights = resample_weights(len(tables.videos), 200, 7)
    labelled = tables.labels.any(axis=1)
    for entry in boot["intervals"]:
        setting = entry["setting"]
        if setting["policy"] == "frameexit":
            continue
        steps = _by_hand(tables, setting["policy"], setting.get("tau", setting.get("frames")))
        _, _, _, scores, hits = _metrics(tables, steps)
        maps = percentile_interval(resampled_map(scores, tables.labels, weights), 0.95)
        top1 = percentile_interval(resampled_top1(hits, labelled, weights), 0.95)
        assert entry["map"] == pytest.approx([maps.low, maps.high], abs=1e-12)
        assert entry["top1"] == pytest.approx([top1.low, top1.high], abs=1e-12)
    assert len(boot["map_resampled"][record["checkpoints"][0]["name"]]) == 200


def test_a_seeded_replay_gives_the_same_intervals(job_file, extracted, replayed, tmp_path):
    out, taus = replayed
    keys = dict(confidence_thresholds=taus, per_video="all", resamples=200, seed=7)
    again = tmp_path / "again"
    replay(
        with_options(load_job(job_file), keys),
        str(again),
        ReplayOptions(cache_root=os.path.dirname(extracted.cache_dir)),
    )
    first, second = (json.loads((d / "replay.json").read_text())["bootstrap"] for d in (out, again))
    assert first == second


def test_policies_frameexit_alone_and_no_resamples(job_file, extracted, tmp_path):
    out = tmp_path / "alone"
    keys = dict(policies=("frameexit",), resamples=0)
    replay(
        with_options(load_job(job_file), keys), str(out), ReplayOptions(cache_root=os.path.dirname(extracted.cache_dir))
    )
    assert set(pq.read_table(out / "sweep.parquet").column("policy").to_pylist()) == {"frameexit"}
    boot = json.loads((out / "replay.json").read_text())["bootstrap"]
    assert boot["resamples"] == 0 and all(i["map"] is None for i in boot["intervals"])
