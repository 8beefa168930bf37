"""The head pass of a replay: every video's exit tables from its cached features, through a checkpoint's head.

The one part of a replay that runs the network, and so the one that needs torch: everything after it
(:mod:`frameexit.sweep`, :mod:`frameexit.exactness`, :mod:`frameexit.policies`) works on the tables in numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .exactness import MEASURED, HeadDeviation
from .head import FrameExit
from .sweep import ExitTables


@torch.inference_mode()
def exit_tables(
    model: FrameExit,
    features: np.ndarray,
    order: Sequence[int],
    *,
    videos: Sequence[str],
    labels: np.ndarray,
    chunk: int = 256,
) -> ExitTables:
    """Exit tables of cached ``features`` (n_videos, n_frames, feat_dim; temporal order) through ``model``'s head.

    ``order``: step t reads sampled frame ``order[t]``; ``videos``, ``labels``: keys (sorted) and multi-hot labels
    of the rows; ``chunk``: videos per head evaluation (bounds memory; results do not depend on it). The head runs
    where ``model`` is (a GPU: the features travel as float32, the tables come back).
    """
    order = list(order)
    n, steps, n_class = len(features), len(order), model.num_class
    probs = np.empty((n, steps, n_class), dtype=np.float32)
    gates = np.empty((n, steps - 1), dtype=np.float32)
    device = next(model.parameters()).device
    for start in range(0, n, chunk):
        rows = features[start : start + chunk]
        out = (torch.from_numpy(probs[start : start + chunk]), torch.from_numpy(gates[start : start + chunk]))
        if device.type == "cpu":
            # the policy order and the head's precision in one pass over the features (exact: float32 in float64)
            x = torch.empty((len(rows), steps, rows.shape[2]), dtype=model.head_dtype)
            for t, frame in enumerate(order):
                x[:, t] = torch.from_numpy(rows[:, frame])
            model.exit_tables(x, out=out)
        else:
            device_tables(model, rows, order, out, device)
    return ExitTables(videos=list(videos), labels=np.asarray(labels, dtype=bool), probs=probs, gates=gates)


@torch.inference_mode()
def device_tables(
    model: FrameExit, rows: np.ndarray, order: Sequence[int], out: tuple[torch.Tensor, torch.Tensor], device
) -> None:
    """:meth:`FrameExit.exit_tables` of ``rows`` (float32 features in temporal order) on ``device`` (``model``'s, a
    GPU), written into ``out`` (host tensors). Half the bytes cross the bus: the features travel as float32, and the
    policy order and float64 are made on the device (exact either way)."""
    x = torch.from_numpy(np.ascontiguousarray(rows)).to(device)[:, list(order)].to(model.head_dtype)
    for table, computed in zip(out, model.exit_tables(x), strict=True):
        table.copy_(computed)


def head_deviation(
    model, reference: np.ndarray, order: Sequence[int], tables: ExitTables, videos: Sequence[str]
) -> HeadDeviation:
    """The head's deviation between the per-step ``reference`` features of ``videos`` and their cached ones.

    ``reference``: (n_videos, n_steps, feat_dim) in temporal order, run through the head as replay runs
    it (:func:`exit_tables`, float64 rounded to float32); the cached ones' outputs are
    the rows of ``videos`` in ``tables`` (those replay decides on).
    """
    if len(videos) == 0:
        return HeadDeviation(MEASURED)
    rows = [tables.videos.index(v) for v in videos]
    labels = np.zeros((len(videos), model.num_class), dtype=bool)
    theirs = exit_tables(model, np.asarray(reference), order, videos=videos, labels=labels)
    probs, gates = tables.probs[rows].astype(np.float64), tables.gates[rows].astype(np.float64)
    return HeadDeviation(
        MEASURED,
        tuple(videos),
        float(np.abs(probs - theirs.probs).max()),
        float(np.abs(gates - theirs.gates).max()) if gates.size else 0.0,
    )
