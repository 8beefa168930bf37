"""frameexit.sweep: the grid computation equals the per-setting definitions, ties included."""

import tracemalloc

import numpy as np
import pytest

from frameexit import sweep
from frameexit.errors import ConfigError
from frameexit.exit_rule import exit_steps
from frameexit.metrics import average_precision, mean_average_precision, top1_accuracy
from frameexit.sweep import (
    ExitTables,
    average_precision_grid,
    concat_tables,
    exit_steps_grid,
    first_exit_mask,
    gate_exit_steps,
    sweep_metrics,
)
from jobs.grid import parse_grid


def _tables(seed, n=240, steps=10, n_class=12, quantise=None):
    rng = np.random.default_rng(seed)
    p = np.exp(rng.normal(size=(n, steps, n_class)) * 2)
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    if quantise:  # many exact ties between videos
        p = (np.round(p * quantise) / quantise).astype(np.float32)
    labels = rng.random((n, n_class)) < 0.12
    labels[:4] = False  # videos without labels
    labels[:, 2] = False  # a class without positives
    gates = rng.random((n, steps - 1)).astype(np.float32)
    gates[:3] = 0.5  # exactly on the default gate threshold
    return ExitTables([f"v{i:04d}" for i in range(n)], labels, p, gates)


@pytest.mark.parametrize("quantise", [None, 6])
def test_grid_equals_per_setting_definitions(quantise):
    t = _tables(0, quantise=quantise)
    conf0 = t.confidence0
    first = [0.0, float(conf0[7]), float(np.nextafter(conf0[7], np.float32(0))), 0.3, 0.3, 0.9, 1.0]
    gate = [0.0, 0.25, 0.5, float(t.gates[5, 2]), 1.0]
    m = sweep_metrics(t, first, gate)
    grid = exit_steps_grid(t, first, gate)
    n = len(t.videos)
    for g, gt in enumerate(gate):
        for f, ft in enumerate(first):
            e = exit_steps(conf0, t.gates, ft, gt)
            assert np.array_equal(grid[g, f], e)
            scores = t.probs[np.arange(n), e]
            assert m.map[g, f] == pytest.approx(mean_average_precision(average_precision(scores, t.labels)), abs=1e-12)
            assert m.top1[g, f] == pytest.approx(top1_accuracy(scores.argmax(1), t.labels), abs=1e-12)
            assert m.mean_frames[g, f] == pytest.approx((e + 1).mean())
            assert m.exit_histogram[g, f].tolist() == pytest.approx(np.bincount(e, minlength=10) / n)


def test_concat_sorts_by_key_and_is_independent_of_sharding():
    t = _tables(1, n=50)
    parts = [
        ExitTables(t.videos[i:j], t.labels[i:j], t.probs[i:j], t.gates[i:j]) for i, j in ((30, 50), (0, 7), (7, 30))
    ]
    merged = concat_tables(parts)
    assert merged.videos == t.videos
    assert np.array_equal(merged.probs, t.probs) and np.array_equal(merged.gates, t.gates)
    a = sweep_metrics(t, [0.1, 0.5], [0.5])
    b = sweep_metrics(merged, [0.1, 0.5], [0.5])
    assert np.array_equal(a.map, b.map)


def test_parse_grid():
    assert parse_grid("0.9,0.95, 0.99", name="x") == [0.9, 0.95, 0.99]
    assert parse_grid("0.1:0.9:5", name="x") == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert parse_grid("0:1:1", name="x") == [0.0]
    assert parse_grid([0.5, 1], name="x") == [0.5, 1.0]
    with pytest.raises(ConfigError, match=r"--first-thresholds: thresholds are probabilities in \[0, 1\]; got 1.5"):
        parse_grid("0.5,1.5", name="--first-thresholds")
    with pytest.raises(ConfigError, match="start:stop:count"):
        parse_grid("0.1:0.9", name="x")
    with pytest.raises(ConfigError, match="a range needs a count of at least 1"):
        parse_grid("0.1:0.9:0", name="x")


@pytest.mark.parametrize("quantise", [None, 6])
def test_average_precision_in_slices_of_first_thresholds_is_identical(quantise):
    t = _tables(2, quantise=quantise)
    first = [0.0, 0.2, 0.3, 0.45, 0.5, 0.7, 0.9]  # 7: slices of 2, 2 and 3 (never 1)
    gate = [0.0, 0.3, 1.0]
    gate_steps, mask = gate_exit_steps(t.gates, gate), first_exit_mask(t.confidence0, first)
    whole = average_precision_grid(t, gate_steps, mask)
    sliced = average_precision_grid(t, gate_steps, mask, max_bytes=1)
    np.testing.assert_array_equal(sliced, whole)  # bit for bit, NaN where a class has no positive


@pytest.mark.parametrize(
    ("n", "n_first", "n_gate", "rate"), [(300, 40, 3, 0.12), (400, 600, 2, 0.12), (1500, 200, 4, 0.01)]
)
def test_memory_estimate_bounds_the_measured_peak(monkeypatch, n, n_first, n_gate, rate):
    """sweep_block_bytes is what replay plans with: it must not be below what sweep_metrics really allocates,
    also when the first thresholds need slicing (a small AP budget here, to make it happen on a small table)."""
    monkeypatch.setattr(sweep, "AP_MAX_BYTES", 4 * 2**20)
    rng = np.random.default_rng(3)
    t = _tables(3, n=n, n_class=50)
    t = ExitTables(t.videos, rng.random(t.labels.shape) < rate, t.probs, t.gates)
    ranks = sweep.candidate_ranks(t.probs)
    first, gate = np.linspace(0, 1, n_first), np.linspace(0, 1, n_gate)
    tracemalloc.start()
    try:
        sweep_metrics(t, first, gate, ranks=ranks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= sweep.sweep_block_bytes(n, n_first, n_gate, 50)
