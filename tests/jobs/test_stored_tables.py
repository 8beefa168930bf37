"""Exit tables kept in the cache (issue 23): a second replay of a checkpoint reads them, without torch, and writes
the same bytes as one that runs the head; a corrupt, truncated or missing table is refused and computed again."""

import glob
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, copy_cache

import jobs.replay_graph
import jobs.replay_head
from cache.exit_tables import (
    TABLES_DIR,
    TABLES_MANIFEST,
    TablesCorruptError,
    TablesInputs,
    find_tables,
    read_table,
    resampled_dir,
    storing_tables,
    write_table,
)
from frameexit.atomic import folder_lock
from frameexit.exactness import HeadDeviation
from frameexit.sweep import ExitTables
from jobs.config import load_job, with_options
from jobs.extract import ExtractOptions, extract
from jobs.replay import ReplayOptions, replay

GRID = dict(first_thresholds=(0.0, 0.5, 0.9, 1.0), gate_thresholds=(0.0, 0.4, 1.0), per_video="all")
OUTPUTS = ("sweep.parquet", "videos.parquet")


@pytest.fixture
def cache(extracted, tmp_path):
    """A private copy of the session's cache (no stored tables yet): its root and directory."""
    root = tmp_path / "cache"
    return str(root), copy_cache(extracted.cache_dir, root)


def _replay(job_file, root, out, **options):
    job = with_options(load_job(job_file), GRID)
    return replay(job, str(out), ReplayOptions(cache_root=root, **options))


def _bytes(out):
    return {name: (out / name).read_bytes() for name in OUTPUTS}


def _sets(cache_dir):
    return sorted(glob.glob(os.path.join(cache_dir, TABLES_DIR, "*", TABLES_MANIFEST)))


def _no_head(monkeypatch):
    """Make any head pass fail: a replay that still succeeds read every table."""

    def refuse(*args, **kwargs):
        raise AssertionError("a head ran")

    monkeypatch.setattr(jobs.replay_head, "shard_exit_tables", refuse)


def test_the_second_replay_reads_the_stored_tables_and_writes_the_same_bytes(job_file, cache, tmp_path, monkeypatch):
    root, cache_dir = cache
    _replay(job_file, root, tmp_path / "off", exit_tables="off")
    assert _sets(cache_dir) == []  # off: nothing stored
    _replay(job_file, root, tmp_path / "first")
    (manifest,) = _sets(cache_dir)
    doc = json.loads(open(manifest).read())
    n_shards = len(json.loads(open(os.path.join(cache_dir, "manifest.json")).read())["shards"])
    assert doc["complete"] and len(doc["files"]) == n_shards and all(doc["files"])
    assert doc["inputs"]["precision"] == "float64" and doc["inputs"]["order"] == list(
        load_job(job_file).model.input_order
    )
    assert doc["head"]["hidden_dim"] == 4096 and set(doc["head"]["costs"]) == {
        "backbone",
        "projection",
        "classifier",
        "gate",
    }
    _no_head(monkeypatch)
    _replay(job_file, root, tmp_path / "second")
    # read from the tables or computed, with or without storing: the same files, byte for byte
    assert _bytes(tmp_path / "second") == _bytes(tmp_path / "first") == _bytes(tmp_path / "off")
    first = json.loads((tmp_path / "first" / "replay.json").read_text())
    second = json.loads((tmp_path / "second" / "replay.json").read_text())
    for key in ("checkpoints", "exactness", "bootstrap", "default_metrics"):
        assert first[key] == second[key], key
    # another grid reads the same tables
    job = with_options(load_job(job_file), dict(first_thresholds=(0.3, 0.7), gate_thresholds=(0.2,)))
    replay(job, str(tmp_path / "other-grid"), ReplayOptions(cache_root=root))
    # --exit-tables off runs the head even where tables are stored
    with pytest.raises(AssertionError, match="a head ran"):
        _replay(job_file, root, tmp_path / "off-again", exit_tables="off")


def test_another_order_or_checkpoint_has_tables_of_its_own(job_file, cache, checkpoint, tmp_path):
    root, cache_dir = cache
    _replay(job_file, root, tmp_path / "a")
    job = with_options(load_job(job_file, ["--model.adaptive.input_order", "[0,1,2,3,4,5,6,7,8,9]"]), GRID)
    replay(job, str(tmp_path / "b"), ReplayOptions(cache_root=root))
    assert len(_sets(cache_dir)) == 2
    orders = {tuple(json.loads(open(p).read())["inputs"]["order"]) for p in _sets(cache_dir)}
    assert orders == {tuple(load_job(job_file).model.input_order), tuple(range(10))}


def _corrupt(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\0corrupt\0")


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage", [_corrupt, _truncate, os.unlink])
def test_a_damaged_stored_table_is_refused_and_computed_again(job_file, cache, tmp_path, caplog, damage):
    root, cache_dir = cache
    _replay(job_file, root, tmp_path / "first")
    (manifest,) = _sets(cache_dir)
    tables = sorted(glob.glob(os.path.join(os.path.dirname(manifest), "table-*.h5")))
    damage(tables[1])
    with caplog.at_level(logging.WARNING):
        _replay(job_file, root, tmp_path / "again")
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and tables[1] in refused[0], caplog.text
    assert _bytes(tmp_path / "again") == _bytes(tmp_path / "first")
    # stored anew, whole, and read by the next replay without a word
    (manifest,) = _sets(cache_dir)
    doc = json.loads(open(manifest).read())
    assert doc["complete"] and os.path.exists(tables[1])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _replay(job_file, root, tmp_path / "third")
    assert not [r for r in caplog.records if "refused" in r.getMessage()]


def test_a_garbled_manifest_is_not_trusted(job_file, cache, tmp_path, monkeypatch):
    root, cache_dir = cache
    _replay(job_file, root, tmp_path / "first")
    (manifest,) = _sets(cache_dir)
    with open(manifest, "w") as f:
        f.write('{"key": "not json')
    _replay(job_file, root, tmp_path / "again")  # the head runs again and stores a manifest that can be read
    assert json.loads(open(manifest).read())["complete"]
    assert _bytes(tmp_path / "again") == _bytes(tmp_path / "first")


def test_tables_not_stored_where_the_cache_cannot_take_them(job_file, cache, tmp_path, monkeypatch, caplog):
    root, cache_dir = cache
    # another replay storing the same tables holds their folder: this one computes and stores nothing
    _replay(job_file, root, tmp_path / "first")
    (manifest,) = _sets(cache_dir)
    directory = os.path.dirname(manifest)
    os.unlink(manifest)
    with folder_lock(directory, lock_name=".lock"), caplog.at_level(logging.WARNING):
        _replay(job_file, root, tmp_path / "busy")
    assert "not stored" in caplog.text and "another frameexit replay" in caplog.text
    assert _sets(cache_dir) == [] and _bytes(tmp_path / "busy") == _bytes(tmp_path / "first")
    # a full disk while writing a table: the replay is whole, the set not recorded
    caplog.clear()

    def full(path, tables, key):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jobs.replay_head, "write_table", full)
    with caplog.at_level(logging.WARNING):
        _replay(job_file, root, tmp_path / "full")
    assert "not stored" in caplog.text and "No space left on device" in caplog.text
    assert _sets(cache_dir) == [] and _bytes(tmp_path / "full") == _bytes(tmp_path / "first")


def test_extracting_the_features_again_removes_their_tables(job_file, cache, tmp_path):
    root, cache_dir = cache
    _replay(job_file, root, tmp_path / "first")
    assert _sets(cache_dir)
    os.unlink(os.path.join(cache_dir, "shard-00000.h5"))  # the next extraction writes it again
    extract(load_job(job_file), ExtractOptions(cache_root=root, shard_size=4, batch_videos=3))
    assert not os.path.exists(os.path.join(cache_dir, TABLES_DIR))


def _cli_replay(args):
    """``frameexit replay ARGS`` in a fresh interpreter: its exit status, and whether it imported torch."""
    script = (
        "import sys\n"
        "from cli import main\n"
        "try:\n"
        f"    main({args!r}, standalone_mode=False)\n"
        "finally:\n"
        "    print('TORCH', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return "TORCH True" in done.stdout


@pytest.mark.slow
def test_a_replay_reading_stored_tables_does_not_import_torch(job_file, cache, tmp_path):
    root, cache_dir = cache
    base = ["replay", job_file, "--cache", root, "--no-progress", "--first-thresholds", "0.5,0.9"]
    # the cache found through its root, then given with --features; the first replay runs the head
    assert _cli_replay([*base, "--out", str(tmp_path / "first")]) is True
    assert _cli_replay([*base, "--out", str(tmp_path / "second")]) is False
    assert _cli_replay([*base, "--features", cache_dir, "--out", str(tmp_path / "features")]) is False
    assert _bytes(tmp_path / "second") == _bytes(tmp_path / "first") == _bytes(tmp_path / "features")


def _tables(n=3, steps=4, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.random((n, steps, classes), dtype=np.float32)
    return ExitTables(
        videos=[f"v{i}" for i in range(n)],
        labels=rng.random((n, classes)) < 0.3,
        probs=probs / probs.sum(axis=2, keepdims=True),
        gates=rng.random((n, steps - 1), dtype=np.float32),
        deviation=HeadDeviation("measured", ("v1",), 1.5e-8, 2.25e-9),
    )


def test_a_table_round_trips_bit_for_bit(tmp_path):
    tables = _tables()
    path = str(tmp_path / "table-00000.h5")
    sha = write_table(path, tables, "k")
    back = read_table(path, sha)
    assert back.videos == tables.videos and back.deviation == tables.deviation
    for name in ("labels", "probs", "gates"):
        a, b = getattr(back, name), getattr(tables, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert write_table(str(tmp_path / "again.h5"), tables, "k") == sha  # the same tables, the same bytes
    with pytest.raises(TablesCorruptError, match="is corrupt"):
        read_table(path, "0" * 64)


def test_the_key_changes_with_every_input_and_an_incomplete_set_is_not_found(tmp_path):
    inputs = TablesInputs("cachekey", ("a", "b"), "ckpt", (0, 1), "float64", "2.14.1", "cpu", "code")
    keys = {inputs.key}
    for change in (
        dict(cache_key="other"),
        dict(shards=("a", "c")),
        dict(checkpoint="other"),
        dict(order=(1, 0)),
        dict(precision="float32"),
        dict(torch="2.15.0"),
        dict(device="cuda (NVIDIA H100 80GB HBM3)"),
        dict(code="other code"),
    ):
        keys.add(TablesInputs(**{**inputs.__dict__, **change}).key)
    assert len(keys) == 9
    cache_dir = str(tmp_path)
    with storing_tables(cache_dir, inputs, {"hidden_dim": 8}) as writer:
        digests = [write_table(p, _tables(seed=i), inputs.key) for i, p in enumerate(writer.paths)]
        assert find_tables(cache_dir, inputs) is None  # not before it is finished
        writer.finish([digests[0], None], {})
    assert find_tables(cache_dir, inputs) is None  # a table missing: incomplete
    with storing_tables(cache_dir, inputs, {"hidden_dim": 8}) as writer:
        writer.finish(digests, {})
    found = find_tables(cache_dir, inputs)
    assert found is not None and [sha for _, sha in found.files] == digests and found.head == {"hidden_dim": 8}
    other = TablesInputs(**{**inputs.__dict__, "torch": "2.15.0"})
    assert find_tables(cache_dir, other) is None


def test_the_resamples_of_a_setting_are_kept_and_a_damaged_file_is_not_read(job_file, cache, tmp_path, monkeypatch):
    """A setting named again (the job's own, by a replay of another grid) reads its bootstrap resamples; a file of
    them whose values do not match its checksum is computed again, with the same intervals."""
    root, cache_dir = cache
    calls = []
    real = jobs.replay_graph.SettingResampler.__call__

    def counting(self, scores):
        calls.append(len(scores))
        return real(self, scores)

    monkeypatch.setattr(jobs.replay_graph.SettingResampler, "__call__", counting)
    _replay(job_file, root, tmp_path / "first")
    first = json.loads((tmp_path / "first" / "replay.json").read_text())["bootstrap"]
    # settings whose videos exit with the same probabilities share their resamples, within a replay too
    kept = sorted(glob.glob(os.path.join(resampled_dir(cache_dir), "*.json")))
    assert 1 <= len(kept) == len(calls) <= len(first["intervals"])
    calls.clear()
    _replay(job_file, root, tmp_path / "second")
    assert calls == []  # every named setting's resamples read
    assert json.loads((tmp_path / "second" / "replay.json").read_text())["bootstrap"] == first
    for path in kept:  # values changed, checksum left: never read
        doc = json.loads(open(path).read())
        doc["map"][0] = 0.123
        with open(path, "w") as f:
            json.dump(doc, f)
    _replay(job_file, root, tmp_path / "third")
    assert len(calls) == len(kept)
    assert json.loads((tmp_path / "third" / "replay.json").read_text())["bootstrap"] == first


def test_a_head_pass_sets_and_restores_its_own_threads_torch_threads():
    """head_threads: torch's threads at the share in the thread that runs a head pass, restored there after it,
    while another thread's count stays as it was; None leaves them."""
    import threading

    import torch

    from jobs.process import head_threads

    before = torch.get_num_threads()
    share = 1 if before > 1 else 2
    seen = []

    def head_pass():
        torch.get_num_threads()  # a thread that already ran torch, as dask's are
        with head_threads(share):
            seen.append(torch.get_num_threads())
            seen.append(main_count.wait(10) and counts[0])
        seen.append(torch.get_num_threads())

    counts, main_count = [], threading.Event()
    worker = threading.Thread(target=head_pass)
    worker.start()
    counts.append(torch.get_num_threads())  # this thread's count while the pass runs
    main_count.set()
    worker.join(10)
    assert seen == [share, before, before] and torch.get_num_threads() == before
    with head_threads(None):
        assert torch.get_num_threads() == before


def test_costs_are_measured_once_per_head_width(job_file, cache, checkpoint, tmp_path, monkeypatch):
    """Two checkpoints whose heads run, of one width: the FLOP count (which builds the backbone) runs once."""
    import torch

    import jobs.model

    root, _ = cache
    state = torch.load(checkpoint, weights_only=True)
    other = str(tmp_path / "other.pth")
    torch.save({k: (v * 1.5 if k.startswith("module.classifiers") else v) for k, v in state.items()}, other)
    calls = []
    real = jobs.model.step_costs
    monkeypatch.setattr(jobs.model, "step_costs", lambda job, width: calls.append(width) or real(job, width))
    job = with_options(load_job(job_file, ["--checkpoint.init", f"[{checkpoint}, {other}]"]), GRID)
    replay(job, str(tmp_path / "both"), ReplayOptions(cache_root=root, exit_tables="off"))
    assert calls == [4096]
