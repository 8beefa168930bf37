"""Memory planning's budget per sweep row (jobs.memory.SWEEP_ROW_BYTES) bounds what turning a grid's metric arrays
into sweep.parquet really allocates: numpy (tracemalloc) and Arrow (its memory pool), beyond a fixed cost."""

import json
import os
import subprocess
import sys

import pytest

from jobs.memory import SWEEP_ROW_BYTES

#: Allocates a grid's metrics (every checkpoint, 6 categories), builds the sweep columns as replay does and writes
#: them; prints the peak bytes (numpy and Arrow) and the rows.
SCRIPT = """
import os, sys, tempfile, tracemalloc, json
import numpy as np, pyarrow as pa
from frameexit.step_costs import StepCosts
from frameexit.sweep import SweepMetrics
from jobs.outputs import frameexit_settings, metric_columns, sweep_columns
from reports.schema import SWEEP
from reports.write import write_table

n_gate, n_first, n_class, n_checkpoints = (int(x) for x in sys.argv[1:])
categories = {f"category {i}": tuple(range(i, n_class, 6)) for i in range(6)}
costs = StepCosts(backbone=1.8, projection=0.001, classifier=0.0002, gate=0.0001)
pool = pa.default_memory_pool()
arrow_before = pool.bytes_allocated()
rng = np.random.default_rng(0)
tracemalloc.start()
shape = (n_gate, n_first)
metrics = [
    SweepMetrics(map=rng.random(shape), top1=rng.random(shape), mean_frames=1 + 9 * rng.random(shape),
                 exit_histogram=rng.random((*shape, 10)), ap=rng.random((*shape, n_class)))
    for _ in range(n_checkpoints)
]
gate, first = np.divmod(np.arange(n_gate * n_first), n_first)
settings = frameexit_settings(np.linspace(0, 1, n_first)[first], np.linspace(0, 1, n_gate)[gate])
counts = rng.integers(0, 5, shape)
parts = [
    metric_columns(m, (gate, first), settings, checkpoint=f"checkpoint_{i}.pth", costs=costs, per_frame=4.12,
                   categories=categories, at_risk=counts)
    for i, m in enumerate(metrics)
]
with tempfile.TemporaryDirectory() as folder:
    write_table(os.path.join(folder, "sweep.parquet"), sweep_columns(parts, "coarse_to_fine", 4926), SWEEP)
    numpy_peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"rows": n_gate * n_first * n_checkpoints, "peak": numpy_peak + pool.max_memory() - arrow_before}))
"""


#: What a table of any size costs besides its rows: Arrow's allocator and the Parquet writer's buffers.
FIXED_BYTES = 32 * 10**6


@pytest.mark.slow
def test_the_budget_per_sweep_row_bounds_the_measured_peak():
    # 40,000 rows (15 s; 360,000 took 100 s and gave the same per-row figure): Arrow's buffers grow by doubling,
    # so the measured peak is checked against the budget, not a slope between two sizes
    n_class = 20
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    grid = (200, 200, n_class, 1)
    out = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, grid)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    # the estimate's per-setting term: SWEEP_ROW_BYTES and the per-class AP (jobs.memory.memory_estimate)
    assert measured["peak"] <= measured["rows"] * (SWEEP_ROW_BYTES + 8 * n_class) + FIXED_BYTES, measured
