"""`frameexit infer --policy`: the sequential reference of each exit policy equals replay's rows of its setting."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import invoke, official_state
from oracles import concat_tables

from cache.manifest import FeatureCache
from frameexit.checkpoint import build_model, read_state_dict
from frameexit.head_pass import exit_tables
from jobs.config import load_job, with_options
from jobs.infer import infer
from jobs.replay import ReplayOptions, replay
from reports.records import InferMetrics, ReplayRecord, read_record
from reports.summary import setting_of

METRICS = ("map", "top1", "gflops", "gmacs_measured", "mean_frames", "exit_histogram")
SETTING = ("policy", "first_threshold", "gate_threshold", "tau", "frames")
STEERED = {3: 3, 6: 7}  # classifier (step) -> class it is steered to


@pytest.fixture(scope="module")
def steered(tmp_path_factory):
    """The session checkpoint's backbone (so its cache) with classifiers 3 and 6 steered to classes 3 and 7: the
    random head is never right about the fixture's labels, this one is at those steps (the oracle moves)."""
    state = official_state("resnet18", seed=1)  # the session checkpoint's weights
    for step, label in STEERED.items():
        state[f"module.classifiers.{step}.bias"][label] += 50.0
    path = os.path.join(str(tmp_path_factory.mktemp("steered")), "steered.pth")
    torch.save(state, path)
    return path


def _top_probs(cache_dir, checkpoint, order):
    """Every video's top probability at every step, (n_videos, n_steps) in key order, from the cached features."""
    model = build_model(read_state_dict(checkpoint), backbone_name=None)
    cache = FeatureCache.open(cache_dir)
    tables = concat_tables(
        [exit_tables(model, s.features, order, videos=s.videos, labels=s.labels) for s in cache.iter_shards()]
    )
    return tables.videos, tables.probs.max(axis=2)


def _tie(top):
    """``(video row, tau)``: a video's own top probability at the latest of steps 0..2 where it is above every
    earlier step's, so that at tau it does not exit there (strict) and at the float32 below it does."""
    for step in (2, 1, 0):
        for v in range(len(top)):
            if (top[v, :step] < top[v, step]).all():
                return v, float(top[v, step])
    raise AssertionError("step 0 always qualifies")


def _setting_rows(table, policy, **value):
    """The rows of ``table`` (pylist) of one setting of a baseline policy."""
    name, wanted = next(iter(value.items()), (None, None))
    return [r for r in table if r["policy"] == policy and (name is None or r[name] == wanted)]


def test_replay_equals_infer_for_every_policy(job_file, extracted, steered, tmp_path):
    cache_root = os.path.dirname(extracted.cache_dir)
    job = load_job(job_file, ["--checkpoint.init", steered])
    keys, top = _top_probs(extracted.cache_dir, steered, job.model.input_order)
    v, tau = _tie(top)
    below = float(np.nextafter(np.float32(tau), np.float32(0)))
    grid = dict(per_video="all", confidence_thresholds=[below, tau, 0.5])
    replay(with_options(job, grid), str(tmp_path / "replay"), ReplayOptions(cache_root=cache_root))
    sweep = pq.read_table(tmp_path / "replay" / "sweep.parquet").to_pylist()
    videos = pq.read_table(tmp_path / "replay" / "videos.parquet").to_pylist()
    assert len(_setting_rows(sweep, "confidence")) == 3 and len(_setting_rows(sweep, "fixed")) == 10

    runs = {
        ("confidence", tau): dict(policy="confidence", tau=tau),
        ("confidence", below): dict(policy="confidence", tau=below),
        ("fixed", 4): dict(policy="fixed", frames=4),
    }
    done = {}
    for (policy, value), options in runs.items():
        res = infer(job, str(tmp_path / f"{policy}-{value!r}"), device="cpu", **options)
        done[policy, value] = res.out_dir, options
    # the oracle through the command line, which prints its setting
    r = invoke("infer", job_file, "--checkpoint.init", steered, "--device", "cpu", "--policy", "oracle",
               "--out", tmp_path / "oracle")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "policy oracle" in r.output and "first_threshold=" not in r.output
    done["oracle", None] = str(tmp_path / "oracle"), dict(policy="oracle")

    exits = {}
    for (policy, value), (out, options) in done.items():
        own = {k: options.get(k) for k in ("tau", "frames")}
        which = {k: x for k, x in own.items() if x is not None}
        mine = {r["video"]: r for r in _setting_rows(videos, policy, **which)}
        theirs = pq.read_table(os.path.join(out, "videos.parquet")).to_pylist()
        assert sorted(mine) == [r["video"] for r in theirs] == keys, (policy, value)
        for r in theirs:
            m = mine[r["video"]]
            assert (r["exit_step"], r["prediction"], r["labels"]) == (m["exit_step"], m["prediction"], m["labels"])
            assert r["confidence"] == m["confidence"]  # bit for bit
            assert {k: r[k] for k in SETTING} == {k: m[k] for k in SETTING} == {
                "policy": policy, "first_threshold": None, "gate_threshold": None, **own
            }  # fmt: skip
        exits[policy, value] = [r["exit_step"] for r in theirs]
        # the sweep row: the same figures, computed by the same code from the same decisions
        (row,) = pq.read_table(os.path.join(out, "sweep.parquet")).to_pylist()
        (expected,) = _setting_rows(sweep, policy, **which)
        assert {k: row[k] for k in (*SETTING, *METRICS)} == {k: expected[k] for k in (*SETTING, *METRICS)}
        metrics = read_record(os.path.join(out, "metrics.json"), InferMetrics)  # every key of its type
        assert {k: metrics[k] for k in ("policy", "tau", "frames")} == {"policy": policy, **own}
        assert (metrics["first_threshold"], metrics["gate_threshold"]) == (0.99, 0.5)  # the job's, kept
        assert metrics["map"] == row["map"] and metrics["mean_frames"] == row["mean_frames"]
        n_read = 10 * len(keys) if policy == "oracle" else sum(exits[policy, value]) + len(keys)
        assert metrics["runtime"]["frames_read"] == n_read  # the oracle runs every step of every video
        setting = read_record(os.path.join(out, "replay.json"), ReplayRecord)["default_setting"]
        assert setting == {"first_threshold": 0.99, "gate_threshold": 0.5, "policy": policy, **own}

    # the tie decides: equal to the video's top probability does not exit there, the float32 below does
    assert exits["confidence", below][v] < exits["confidence", tau][v]
    assert exits["fixed", 4] == [3] * len(keys)
    # the steered head is right at step 3 (class 3) or 6 (class 7), never (v_echo.mp4, label 11) or without a label
    labels = {r["video"]: r["labels"] for r in videos}
    oracle = dict(zip(keys, exits["oracle", None], strict=True))
    assert oracle == {k: 3 if 3 in labels[k] else 6 if 7 in labels[k] else 0 for k in keys}

    # each infer folder reports as a replay's: the job's setting is its policy's, with its per-video results; the
    # oracle, which replay names in every report, has the same bootstrap interval in both, bit for bit
    named = read_record(os.path.join(tmp_path, "replay", "replay.json"), ReplayRecord)["bootstrap"]["intervals"]
    for (policy, value), (out, _) in done.items():
        r = invoke("report", "--out", out, "--budget", "100")  # its frontier and budget: its own policy's
        assert r.exit_code == 0, r.output
        summary = json.loads(open(os.path.join(out, "summary.json")).read())
        assert summary["default"][0]["policy"] == policy
        (results,) = summary["video_results"].values()
        assert results["exit_step"] == exits[policy, value]
    ours = read_record(os.path.join(done["oracle", None][0], "replay.json"), ReplayRecord)["bootstrap"]["intervals"]
    (theirs,) = [i for i in named if i["setting"] == {"policy": "oracle"}]
    assert ours[0]["setting"] == {"policy": "oracle"} and (ours[0]["map"], ours[0]["top1"]) == (
        theirs["map"],
        theirs["top1"],
    )
    # the folder's frontier and budget choice are its one setting, written in words in summary.md's tables
    summary = json.loads(open(os.path.join(done["fixed", 4][0], "summary.json")).read())
    assert [setting_of(r) for r in summary["frontier"]] == [{"policy": "fixed", "frames": 4}]
    assert summary["budget"]["checkpoints"][0]["setting"] == {"policy": "fixed", "frames": 4}
    assert "| fixed 4 frames | - |" in open(os.path.join(done["fixed", 4][0], "summary.md")).read()
