"""frameexit.sweep: the grid computation equals the per-setting definitions, ties included, however it is split."""

import tracemalloc

import numpy as np
import pytest
from oracles import average_precision_grid, concat_tables, exit_steps, sweep_metrics

from frameexit import sweep
from frameexit.errors import ConfigError
from frameexit.exit_rule import exit_steps_grid, first_exit_mask, gate_exit_steps
from frameexit.metrics import average_precision, mean_average_precision, top1_accuracy
from frameexit.sweep import (
    ExitTables,
    average_precision_block,
    class_block,
    class_block_ap,
    combine_sweep,
    concat_video_exits,
    video_exits,
)
from jobs.grid import parse_grid


def _tables(seed, n=240, steps=10, n_class=12, quantise=None, dominant=False):
    rng = np.random.default_rng(seed)
    p = np.exp(rng.normal(size=(n, steps, n_class)) * 2)
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    if quantise:  # many exact ties between videos, and between the steps of one video
        p = (np.round(p * quantise) / quantise).astype(np.float32)
    labels = rng.random((n, n_class)) < 0.12
    if dominant:  # one class on most videos: the case whose cost grew with the square of its positives
        labels[:, 5] = rng.random(n) < 0.9
    labels[:4] = False  # videos without labels
    labels[:, 2] = False  # a class without positives
    gates = rng.random((n, steps - 1)).astype(np.float32)
    gates[:3] = 0.5  # exactly on the default gate threshold
    return ExitTables([f"v{i:04d}" for i in range(n)], labels, p, gates)


@pytest.mark.parametrize(("quantise", "dominant"), [(None, False), (6, False), (None, True), (2, True)])
def test_grid_equals_per_setting_definitions(quantise, dominant):
    t = _tables(0, quantise=quantise, dominant=dominant)
    conf0 = t.confidence0
    first = [0.0, float(conf0[7]), float(np.nextafter(conf0[7], np.float32(0))), 0.3, 0.3, 0.9, 1.0]
    gate = [0.0, 0.25, 0.5, float(t.gates[5, 2]), 1.0]
    m = sweep_metrics(t, first, gate)
    grid = exit_steps_grid(t.confidence0, t.gates, first, gate)
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
            ap = average_precision(scores, t.labels)
            np.testing.assert_allclose(m.ap[g, f], ap, rtol=0, atol=1e-12)  # NaN exactly where ap is NaN


def test_ap_ranks_ties_by_video_key_with_zeros_signed_zeros_and_nan():
    """Scores with few distinct values (0, -0.0, 1/3, ...; NaN ranks last, as numpy sorts it): the per-class AP at
    every setting is that of frameexit.metrics.average_precision on the setting's scores, ties by row order."""
    t = _tables(4, n=150, n_class=5, quantise=3, dominant=False)
    probs = t.probs.copy()
    rng = np.random.default_rng(4)
    probs[rng.random(probs.shape) < 0.05] = -0.0
    probs[rng.random(probs.shape) < 0.01] = np.nan
    labels = t.labels.copy()
    labels[:, 0] = rng.random(150) < 0.8
    t = ExitTables(t.videos, labels, probs, t.gates)
    first, gate = [0.0, 0.34, 0.67, 1.0], [0.0, 0.3, 0.6, 1.0]
    gate_steps, mask = gate_exit_steps(t.gates, gate), first_exit_mask(t.confidence0, first)
    ap = average_precision_grid(t, gate_steps, mask)
    for g, gt in enumerate(gate):
        for f, ft in enumerate(first):
            e = exit_steps(t.confidence0, t.gates, ft, gt)
            expected = average_precision(t.probs[np.arange(150), e], t.labels)
            np.testing.assert_allclose(ap[g, f], expected, rtol=0, atol=1e-12)


def test_hand_computed_average_precision():
    """Four videos, one class, step 0 or step 1: ties go to the earlier video key."""
    probs = np.zeros((4, 2, 2), np.float32)
    probs[:, 0, 0] = [0.5, 0.9, 0.5, 0.2]  # step 0
    probs[:, 1, 0] = [0.1, 0.4, 0.4, 0.7]  # step 1
    probs[:, :, 1] = 1 - probs[:, :, 0]
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)
    t = ExitTables(["a", "b", "c", "d"], labels, probs, np.zeros((4, 1), np.float32))
    conf0 = t.confidence0  # 0.5, 0.9, 0.5, 0.8: order b, d, a, c
    gate_steps = gate_exit_steps(t.gates, [0.5])  # every video exits at step 1 if not at step 0
    ap = average_precision_grid(t, gate_steps, first_exit_mask(conf0, [0.85, 0.6, 0.0]))
    # first 0.85: only b exits at step 0: class 0 scores a .1, b .9, c .4, d .7 -> b d c a: hits at 3 and 4
    # first 0.6: b, d at step 0: a .1, b .9, c .4, d .2 -> b c d a: hits at 2 and 4
    # first 0.0: all at step 0: a .5, b .9, c .5, d .2 -> b a c d (a before c: tie, earlier key): hits at 2 and 3
    assert ap[0, :, 0].tolist() == pytest.approx([(1 / 3 + 2 / 4) / 2, (1 / 2 + 2 / 4) / 2, (1 / 2 + 2 / 3) / 2])


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
    assert parse_grid("0.5:0.5:1", name="x") == [0.5]
    # issue 20: range values as written, not numpy's 0.6000000000000001; no stop left out; no setting twice
    assert parse_grid("0.3:0.9:7", name="x") == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert parse_grid("0:1:41", name="x")[::10] == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ConfigError, match=r"x: the range '0.2:0.8:1' of one value would leave out its stop 0.8"):
        parse_grid("0.2:0.8:1", name="x")
    with pytest.raises(ConfigError, match=r"x: 0.5 is given twice in '0.5,0.9,0.5'"):
        parse_grid("0.5,0.9,0.5", name="x")
    assert parse_grid([0.5, 1], name="x") == [0.5, 1.0]
    with pytest.raises(ConfigError, match=r"--first-thresholds: thresholds are probabilities in \[0, 1\]; got 1.5"):
        parse_grid("0.5,1.5", name="--first-thresholds")
    with pytest.raises(ConfigError, match="start:stop:count"):
        parse_grid("0.1:0.9", name="x")
    with pytest.raises(ConfigError, match="a range needs a count of at least 1"):
        parse_grid("0.1:0.9:0", name="x")


@pytest.mark.parametrize(("quantise", "dominant"), [(None, False), (6, True)])
def test_average_precision_in_chunks_and_slices_is_identical(quantise, dominant):
    """One class per chunk and one first threshold per slice (max_bytes=1), a budget between, or all at once:
    the same numbers bit for bit; so are the gate thresholds computed alone or in another order."""
    t = _tables(2, quantise=quantise, dominant=dominant)
    first = [0.0, 0.2, 0.3, 0.45, 0.5, 0.7, 0.9]
    gate = [0.0, 0.3, 1.0, 0.6]
    gate_steps, mask = gate_exit_steps(t.gates, gate), first_exit_mask(t.confidence0, first)
    whole = average_precision_grid(t, gate_steps, mask)
    for budget in (1, 200_000):
        np.testing.assert_array_equal(average_precision_grid(t, gate_steps, mask, max_bytes=budget), whole)
    for g in range(len(gate)):
        alone = average_precision_grid(t, gate_steps[g : g + 1], mask[::-1])
        np.testing.assert_array_equal(alone[0, ::-1], whole[g])


def test_class_block_split_equals_the_whole_sweep():
    """Shards in any order, classes in uneven blocks (one of a single class, one without positives): per-class
    AP, mAP, top-1, frames and histogram identical to the unsplit sweep, bit for bit."""
    t = _tables(5, n=180, dominant=True)
    first, gate = [0.0, 0.25, 0.5, 0.8, 1.0], [0.1, 0.5, 0.9]
    whole = sweep_metrics(t, first, gate)
    parts = [
        ExitTables(t.videos[i:j], t.labels[i:j], t.probs[i:j], t.gates[i:j])
        for i, j in ((100, 180), (0, 33), (33, 100))
    ]
    exits = concat_video_exits([video_exits(p) for p in parts])
    blocks = [slice(0, 2), slice(2, 3), slice(3, 4), slice(4, 11), slice(11, 12)]
    aps = [class_block_ap(class_block(parts, b), exits, first, gate, max_bytes=50_000) for b in blocks]
    split = combine_sweep(exits, aps, first, gate)
    for name in ("ap", "map", "top1", "mean_frames", "exit_histogram"):
        np.testing.assert_array_equal(getattr(split, name), getattr(whole, name), err_msg=name)
    assert np.isnan(split.ap[..., 2]).all() and not np.isnan(split.map).any()
    # a category's mAP is the mean of its classes' AP over those with positives
    category = [1, 2, 5]
    assert split.ap[..., category][..., [0, 2]].mean(axis=-1) == pytest.approx(
        np.nanmean(whole.ap[..., category], axis=-1), abs=0
    )
    with pytest.raises(ValueError, match="does not cover the grid and classes"):
        combine_sweep(exits, aps[:-1], first, gate)
    with pytest.raises(ValueError, match="hold other videos"):
        class_block_ap(class_block(parts[1:], slice(0, 2)), exits, first, gate)


def test_average_precision_rejects_what_it_cannot_rank_exactly():
    t = _tables(6, n=20)
    gate_steps, mask = gate_exit_steps(t.gates, [0.5]), first_exit_mask(t.confidence0, [0.5])
    with pytest.raises(ValueError, match="probs must be float32"):
        average_precision_block(t.probs.astype(np.float64), t.labels, t.confidence0, gate_steps, mask)
    with pytest.raises(ValueError, match="not a prefix of the confidence order"):
        average_precision_block(t.probs, t.labels, t.confidence0, gate_steps, mask[:, ::-1])


@pytest.mark.parametrize(
    ("n", "n_first", "n_gate", "rate"),
    [(300, 40, 3, 0.12), (400, 600, 2, 0.12), (1500, 200, 4, 0.01), (300, 50, 4, 0.9)],
)
def test_memory_estimate_bounds_the_measured_peak(monkeypatch, n, n_first, n_gate, rate):
    """sweep_block_bytes is what replay plans with: it must not be below what sweep_metrics really allocates,
    also when the classes are chunked and the first thresholds sliced (a small AP budget here, to make it
    happen on a small table), and when most videos are positive."""
    monkeypatch.setattr(sweep, "AP_MAX_BYTES", 4 * 2**20)
    rng = np.random.default_rng(3)
    t = _tables(3, n=n, n_class=50)
    t = ExitTables(t.videos, rng.random(t.labels.shape) < rate, t.probs, t.gates)
    first, gate = np.linspace(0, 1, n_first), np.linspace(0, 1, n_gate)
    tracemalloc.start()
    try:
        sweep_metrics(t, first, gate)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= sweep.sweep_block_bytes(n, n_first, n_gate, 50)
