"""`frameexit replay` agrees with `frameexit infer` video by video; results do not depend on how it runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from helpers import ROOT, frameexit_rows, official_head_shapes, official_state
from oracles import concat_tables, video_gmacs

from cache.exit_tables import remove_all_tables
from cache.manifest import FeatureCache
from cli import main
from frameexit.checkpoint import build_model, read_state_dict
from frameexit.cost import measure_step_costs
from frameexit.head_pass import exit_tables
from frameexit.sampling import COARSE_TO_FINE
from jobs.config import load_job, with_options
from jobs.extract import ExtractOptions, extract
from jobs.infer import infer
from jobs.replay import ReplayOptions, replay
from reports.summary import setting_of

SEQUENTIAL = "[0,1,2,3,4,5,6,7,8,9]"


@pytest.fixture(scope="module")
def setup(job_file, extracted):
    """The session's job file, cache root and cache directory (read only)."""
    return job_file, os.path.dirname(extracted.cache_dir), extracted.cache_dir


def _tables(cache_dir, checkpoint, order):
    model = build_model(read_state_dict(checkpoint), backbone_name=None)
    cache = FeatureCache.open(cache_dir)
    return concat_tables(
        [exit_tables(model, s.features, order, videos=s.videos, labels=s.labels) for s in cache.iter_shards()]
    )


def _rows(path):
    rows = frameexit_rows(pq.read_table(path).to_pylist())
    return {(r["first_threshold"], r["gate_threshold"], r["video"]): r for r in rows}


def test_replay_equals_infer_over_the_whole_threshold_range(setup, checkpoint, tmp_path):
    job_file, cache_root, cache_dir = setup
    t = _tables(cache_dir, checkpoint, COARSE_TO_FINE)
    conf0, gates = t.confidence0, t.gates
    # exact boundary values: a video's own step-0 confidence and gate output, and the float32 just beside them
    c = float(np.sort(conf0)[len(conf0) // 2])
    s = float(gates[2, 2])
    first = [0.0, float(np.nextafter(np.float32(c), np.float32(0))), c, 1.0]
    gate = [0.0, s, float(np.nextafter(np.float32(s), np.float32(1))), 0.5, 1.0]
    out = tmp_path / "replay"
    grid = dict(first_thresholds=first, gate_thresholds=gate, per_video="all")
    replay(with_options(load_job(job_file), grid), str(out), ReplayOptions(cache_root=cache_root))
    rows = _rows(out / "videos.parquet")
    rows_of_sweep = frameexit_rows(pq.read_table(out / "sweep.parquet").to_pylist())
    sweep = {(r["first_threshold"], r["gate_threshold"]): r for r in rows_of_sweep}
    assert len(sweep) == 20 and len(rows) == 21 * 6  # the grid's, and the job's setting (named: its intervals)
    # infer at settings covering every threshold of both lists, the boundary values against each other; each
    # setting's sequential decisions equal the full per-step tables' (frameexit/test_inference.py), so the
    # remaining six add no case (first threshold 0: every video exits at step 0 whatever the gate)
    at_infer = [(0.0, 0.5), (1.0, 0.0), (1.0, 1.0), (c, 0.0), (first[1], 1.0)]
    at_infer += [(ft, gt) for ft in first[1:] for gt in (s, gate[2], 0.5)]
    assert {ft for ft, _ in at_infer} == set(first) and {gt for _, gt in at_infer} == set(gate)
    exits_seen = set()
    for ft, gt in at_infer:
        res = infer(
            load_job(job_file, ["--model.first_threshold", repr(ft), "--model.gate_threshold", repr(gt)]),
            str(tmp_path / "infer"),
            device="cpu",
        )
        for r in pq.read_table(res.videos_path).to_pylist():
            mine = rows[(ft, gt, r["video"])]
            assert (mine["exit_step"], mine["prediction"]) == (r["exit_step"], r["prediction"]), (
                ft,
                gt,
                r["video"],
            )
            assert mine["confidence"] == r["confidence"]  # bit for bit
            exits_seen.add(r["exit_step"])
        m, row = res.metrics, sweep[(ft, gt)]
        for key in ("map", "top1", "gmacs_measured", "mean_frames"):
            assert row[key] == pytest.approx(m[key], abs=1e-9), key
        assert row["exit_histogram"] == pytest.approx(m["exit_histogram"], abs=1e-12)
    assert len(exits_seen) >= 4  # the grid really moves the exits around
    # the boundary values decide: equal confidence does not exit (strict), the float32 below does
    at_c = [rows[(c, 1.0, v)]["exit_step"] for v in t.videos]
    below_c = [rows[(first[1], 1.0, v)]["exit_step"] for v in t.videos]
    assert at_c != below_c


@pytest.mark.slow
def test_same_sweep_whatever_the_scheduler_and_shard_size(setup, cluster, tmp_path):
    job_file, cache_root, _ = setup
    grid = dict(first_thresholds=(0.0, 0.3, 0.57, 0.6, 1.0), gate_thresholds=(0.0, 0.02, 0.1, 0.5, 1.0))
    job = with_options(load_job(job_file), dict(grid, per_video="all"))
    tables, videos, boots = {}, {}, {}
    # every head run on each scheduler (--exit-tables off); then a replay keeping the exit tables and resamples, one
    # reading them, and one reading them on the cluster
    for name, options in {
        "sync": ReplayOptions(cache_root=cache_root, scheduler="sync", exit_tables="off"),
        "threads": ReplayOptions(cache_root=cache_root, scheduler="threads", class_block=1, exit_tables="off"),
        "blocks of 7": ReplayOptions(cache_root=cache_root, class_block=7, exit_tables="off"),
        "cluster": ReplayOptions(cache_root=cache_root, scheduler=cluster, exit_tables="off"),
        "kept": ReplayOptions(cache_root=cache_root),
        "read": ReplayOptions(cache_root=cache_root, scheduler="sync"),
        "read on the cluster": ReplayOptions(cache_root=cache_root, scheduler=cluster),
    }.items():
        replay(job, str(tmp_path / name), options)
        tables[name] = pq.read_table(tmp_path / name / "sweep.parquet")
        videos[name] = pq.read_table(tmp_path / name / "videos.parquet")
        boots[name] = json.loads((tmp_path / name / "replay.json").read_text())["bootstrap"]
    for size in (1, 64):  # and 4, the shared cache's: one video a shard, one shard, shards of unequal sizes
        root = str(tmp_path / f"cache-{size}")
        extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=size))
        out = tmp_path / f"shards-{size}"
        replay(job, str(out), ReplayOptions(cache_root=root, exit_tables="off"))
        tables[out.name], videos[out.name] = pq.read_table(out / "sweep.parquet"), pq.read_table(out / "videos.parquet")
        boots[out.name] = json.loads((out / "replay.json").read_text())["bootstrap"]
    reference, reference_videos, reference_boot = tables.pop("sync"), videos.pop("sync"), boots.pop("sync")
    # the grid's 25, and the baselines': confidence at the 5 first thresholds, fixed 1..10, the oracle
    assert len(frameexit_rows(reference.to_pylist())) == 25 and reference.num_rows == 25 + 5 + 10 + 1
    assert len(frameexit_rows(reference_videos.to_pylist())) == 26 * 6  # and the job's setting, named
    for name, table in tables.items():
        assert table.equals(reference), name
        assert videos[name].equals(reference_videos), name
        assert boots[name] == reference_boot, name  # the same intervals, bit for bit


def test_sequential_order_differs_and_equals_infer_with_that_order(setup, checkpoint, tmp_path):
    job_file, cache_root, _ = setup
    # step 0 reads sampled frame 5 in one order and frame 0 in the other: different confidences
    grid = dict(first_thresholds=(0.57,), gate_thresholds=(0.025,))
    job = with_options(load_job(job_file, ["--model.first_threshold", "0.57", "--model.gate_threshold", "0.025"]), grid)
    replay(job, str(tmp_path / "c2f"), ReplayOptions(cache_root=cache_root))
    replay(with_options(job, dict(order="sequential")), str(tmp_path / "seq"), ReplayOptions(cache_root=cache_root))
    c2f, seq = _rows(tmp_path / "c2f" / "videos.parquet"), _rows(tmp_path / "seq" / "videos.parquet")
    assert [r["exit_step"] for r in c2f.values()] != [r["exit_step"] for r in seq.values()]
    assert set(pq.read_table(tmp_path / "seq" / "sweep.parquet").column("order").to_pylist()) == {"sequential"}
    res = infer(
        load_job(
            job_file,
            [
                "--model.first_threshold",
                "0.57",
                "--model.gate_threshold",
                "0.025",
                "--model.adaptive.input_order",
                SEQUENTIAL,
            ],
        ),
        str(tmp_path / "infer"),
        device="cpu",
    )
    for r in pq.read_table(res.videos_path).to_pylist():
        mine = seq[(0.57, 0.025, r["video"])]
        assert (mine["exit_step"], mine["prediction"], mine["confidence"]) == (
            r["exit_step"],
            r["prediction"],
            r["confidence"],
        )


def test_several_checkpoints_share_one_cache(setup, checkpoint, tmp_path):
    job_file, cache_root, _ = setup
    state = torch.load(checkpoint, weights_only=True)
    other = {k: (v * 1.5 if k.startswith("module.classifiers") else v) for k, v in state.items()}
    torch.save(other, tmp_path / "beta_b.pth")
    job = load_job(job_file, ["--checkpoint.init", f"[{checkpoint}, {tmp_path / 'beta_b.pth'}]"])
    job = with_options(job, dict(gate_thresholds=(0.1, 0.5)))
    result = replay(job, str(tmp_path / "out"), ReplayOptions(cache_root=cache_root))
    sweep = frameexit_rows(pq.read_table(result.sweep_path).to_pylist())
    assert sorted({r["checkpoint"] for r in sweep}) == sorted([os.path.basename(checkpoint), "beta_b.pth"])
    assert len(sweep) == 4 and len(result.summary["default_metrics"]) == 2
    default = result.summary["default_setting"]
    videos = frameexit_rows(pq.read_table(result.videos_path).to_pylist(), **default)
    assert len(videos) == 12 and {r["checkpoint"] for r in videos} == {os.path.basename(checkpoint), "beta_b.pth"}


def test_checkpoint_with_another_backbone_is_named(setup, tmp_path):
    job_file, cache_root, _ = setup
    torch.save(official_state("resnet18", seed=9), tmp_path / "other_backbone.pth")
    both = f"[{load_job(job_file).checkpoints[0]}, {tmp_path / 'other_backbone.pth'}]"
    r = CliRunner().invoke(
        main, ["replay", job_file, "--cache", cache_root, "--out", str(tmp_path / "o"), "--checkpoint.init", both]
    )
    assert r.exit_code == 1
    assert "other_backbone.pth has other backbone weights than the feature cache" in r.output
    assert "run frameexit extract with --checkpoint.init" in r.output and "Traceback" not in r.output


def test_replay_cli(setup, tmp_path):
    job_file, cache_root, _ = setup
    runner = CliRunner()
    r = runner.invoke(main, ["replay", "--help"])
    assert r.exit_code == 0 and "--first-thresholds" in r.output and "START:STOP:COUNT" in r.output
    r = runner.invoke(
        main, ["replay", job_file, "--cache", cache_root, "--out", str(tmp_path / "o"), "--first-thresholds", "0.5,1.5"]
    )
    assert r.exit_code == 2 and "thresholds are probabilities in [0, 1]; got 1.5" in r.output
    r = runner.invoke(main, ["replay", job_file, "--cache", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "no feature cache for this job" in r.output and "run frameexit extract" in r.output
    r = runner.invoke(
        main,
        [
            "replay",
            job_file,
            "--cache",
            cache_root,
            "--out",
            str(tmp_path / "o"),
            "--first-thresholds",
            "0.5:1:3",
            "--gate-thresholds",
            "0.5",
            "--scheduler",
            "sync",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "1 checkpoint(s) x 3 settings over 6 videos (5 with a label, 2 skipped)" in r.output
    sweep = pq.read_table(tmp_path / "o" / "sweep.parquet")
    assert [r["first_threshold"] for r in frameexit_rows(sweep.to_pylist())] == [0.5, 0.75, 1.0]
    assert {
        "checkpoint",
        "first_threshold",
        "gate_threshold",
        "map",
        "top1",
        "gflops",
        "gmacs_measured",
        "mean_frames",
        "exit_histogram",
    } <= set(sweep.column_names)
    # the job's default setting, and the settings the report names (their intervals in replay.json)
    videos = pq.read_table(tmp_path / "o" / "videos.parquet").to_pylist()
    record = json.loads((tmp_path / "o" / "replay.json").read_text())
    named = record["bootstrap"]["intervals"]
    assert named[0]["setting"] == {"policy": "frameexit", **record["default_setting"]}
    assert record["default_setting"]["first_threshold"] == 0.99

    def keys(settings):
        return {json.dumps(setting_of(s), sort_keys=True) for s in settings}

    assert keys(videos) == keys(i["setting"] for i in named)


def _with_head(state, *, hidden, seed):
    """``state`` (official format) with its head replaced by random weights of width ``hidden``; same backbone."""
    rng = np.random.default_rng(seed)
    out = {k: v for k, v in state.items() if k.startswith("module.backbone.")}
    for name, shape in official_head_shapes(512, hidden=hidden).items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out["module." + name] = torch.tensor(0, dtype=torch.int64)
            continue
        if leaf == "running_var" or (leaf == "weight" and (".bn" in name or "layers.1" in name)):
            arr = rng.uniform(0.5, 1.5, size=shape)
        elif leaf in ("bias", "running_mean"):
            arr = rng.normal(0, 0.1, size=shape)
        else:
            scale = 4.0 if name.startswith("classifiers") else 1.0
            arr = rng.normal(0, scale * np.sqrt(2.0 / int(np.prod(shape[1:]))), size=shape)
        out["module." + name] = torch.from_numpy(arr.astype(np.float32))
    return out


@pytest.mark.slow
def test_cluster_replays_each_checkpoint_with_its_own_head(setup, checkpoint, cluster, tmp_path):
    """Two worker processes, three heads over one backbone: the second head has the first one's parameter names
    and shapes, the third a narrower projection; each checkpoint's rows equal a threads replay of it alone,
    measured GMACs (which depend on the head's width) included."""
    job_file, cache_root, _ = setup
    state = torch.load(checkpoint, weights_only=True)
    torch.save(_with_head(state, hidden=4096, seed=21), tmp_path / "same_width.pth")
    torch.save(_with_head(state, hidden=64, seed=22), tmp_path / "narrow.pth")
    checkpoints = [checkpoint, str(tmp_path / "same_width.pth"), str(tmp_path / "narrow.pth")]
    grid = dict(first_thresholds=(0.0, 0.5, 0.9, 1.0), gate_thresholds=(0.0, 0.3, 0.6, 1.0), per_video="all")
    job = with_options(load_job(job_file, ["--checkpoint.init", f"[{', '.join(checkpoints)}]"]), grid)
    together = replay(job, str(tmp_path / "cluster"), ReplayOptions(cache_root=cache_root, scheduler=cluster))
    sweep = pq.read_table(together.sweep_path).to_pylist()
    videos = pq.read_table(together.videos_path).to_pylist()
    by_name = {}
    for path in checkpoints:
        name = os.path.basename(path)
        alone = replay(
            with_options(load_job(job_file, ["--checkpoint.init", path]), grid),
            str(tmp_path / f"alone-{name}"),
            ReplayOptions(cache_root=cache_root, scheduler="threads"),
        )
        expected = pq.read_table(alone.sweep_path).to_pylist()
        assert [r for r in sweep if r["checkpoint"] == name] == expected, name
        assert [r for r in videos if r["checkpoint"] == name] == pq.read_table(alone.videos_path).to_pylist(), name
        by_name[name] = expected
    # the heads really differ
    assert len({tuple(r["map"] for r in rows) for rows in by_name.values()}) == 3
    # measured GMACs of each checkpoint count its own head: the mean over exit steps of the sequential cost
    for name, hidden in ((os.path.basename(checkpoint), 4096), ("narrow.pth", 64)):
        costs = measure_step_costs("torchvision.resnet18", input_size=224, num_class=200, hidden_dim=hidden)
        frames = (np.arange(10) + 1.0) * (costs.backbone + costs.projection)
        per_step = {
            "frameexit": video_gmacs(costs, np.arange(10)),
            "confidence": frames + (np.arange(10) + 1.0) * costs.classifier,  # every step's classifier, no gate
            "fixed": frames + costs.classifier,
            "oracle": frames + costs.classifier,
        }
        for r in by_name[name]:
            expected = float(np.dot(r["exit_histogram"], per_step[r["policy"]]))
            assert r["gmacs_measured"] == pytest.approx(expected, rel=1e-9), r["policy"]


def test_progress_bar_of_a_local_replay(setup, tmp_path, capsys):
    """--progress: tqdm's dask callback draws one bar of the graph's tasks on stderr; --no-progress and, off a
    terminal, the default draw none. The first replay of the checkpoint runs its head and stores the exit tables;
    the next ones read them."""
    job_file, cache_root, cache_dir = setup
    remove_all_tables(cache_dir)
    options = ReplayOptions(cache_root=cache_root, class_block=100)
    job = with_options(load_job(job_file), dict(first_thresholds=(0.5,), gate_thresholds=(0.5,)))
    # per shard (2): its tables, their video exits, their 2 class blocks (3 tasks), the per-video rows, their
    # deviation, what the risk rule reads of them and the videos at risk; then the merged exits, an AP task per class
    # block (2) and its two results (grid and baseline policies: 4), the sweep, the merged rows, the merged deviation
    # and the merged videos at risk; the baselines' exit steps and metrics, the named settings and their intervals.
    # Running the head adds per shard the read (which runs it) and the checksum of the table stored, and the list of
    # those checksums.
    for progress, shown, tasks in ((True, True, 38), (False, False, 0), (None, False, 0), (True, True, 33)):
        replay(job, str(tmp_path / f"{progress}-{tasks}"), options, progress=progress)
        err = capsys.readouterr().err
        assert ("replay tasks" in err) is shown, (progress, err)
        if shown:
            assert "100%" in err and f"{tasks}/{tasks}" in err, err


def test_replay_sizes_its_exit_tables_for_the_allocator(setup, checkpoint, tmp_path, monkeypatch):
    """replay hands the bytes of every checkpoint's exit tables (videos x steps x (4 x classes + 4)) to
    limit_fragmentation, before computing."""
    import jobs.replay

    job_file, cache_root, _ = setup
    seen = []
    monkeypatch.setattr(jobs.replay, "limit_fragmentation", lambda tables: seen.append(tables) or False)
    job = load_job(
        job_file, ["--checkpoint.init", f"[{checkpoint}, {checkpoint}]", "--replay.gate_thresholds", "[0.5]"]
    )
    result = replay(job, str(tmp_path / "out"), ReplayOptions(cache_root=cache_root))
    n_videos = (
        len(frameexit_rows(pq.read_table(result.videos_path).to_pylist(), **result.summary["default_setting"])) // 2
    )
    assert n_videos > 0 and seen == [2 * n_videos * 10 * (4 * job.model.num_class + 4)]


def test_large_exit_tables_are_kept_with_large_allocations_mapped_on_their_own():
    # a replay at HVU scale fragments glibc's heaps without it (bench/README.md); small tables are left alone, and
    # the setting reaches the worker processes a replay starts through the environment
    code = (
        "import os\n"
        "from jobs.memory import FRAGMENTING_TABLES, limit_fragmentation\n"
        "print(limit_fragmentation(FRAGMENTING_TABLES - 1), os.environ.get('MALLOC_MMAP_THRESHOLD_'))\n"
        "print(limit_fragmentation(FRAGMENTING_TABLES), os.environ.get('MALLOC_MMAP_THRESHOLD_'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "None", "True", str(1 << 20)], out.stdout + out.stderr
