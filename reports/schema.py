"""The columns of every table frameexit writes, in one place.

Units and conventions: ``map`` and ``top1`` are fractions in [0, 1]; ``confidence`` is a softmax probability in [0,
1]; ``exit_step`` is 0-based (0..9), so a video read ``exit_step + 1`` frames; ``gflops`` is the paper's convention
(per-frame multiply-accumulates x frames read, called GFLOPs in the paper, really GMACs); ``gmacs_measured`` is
counted by torch's FLOP counter.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

#: The setting of a row: its exit policy (frameexit.policies) and that policy's threshold, null for the others'.
POLICY_FIELDS = [
    pa.field("policy", pa.string(), nullable=False),  # frameexit, confidence, fixed or oracle
    pa.field("first_threshold", pa.float64()),  # frameexit: step-0 exit threshold (probability)
    pa.field("gate_threshold", pa.float64()),  # frameexit: gate exit threshold (probability)
    pa.field("tau", pa.float64()),  # confidence: exit at the first step whose top probability > tau
    pa.field("frames", pa.int64()),  # fixed: every video reads this many frames (k, 1..T)
]
#: The columns that name a setting, in the order above.
SETTING_COLUMNS = tuple(f.name for f in POLICY_FIELDS)

#: ``videos.parquet``: one row per evaluated video.
VIDEOS = pa.schema(
    [
        pa.field("video", pa.string(), nullable=False),  # split-file key, e.g. v_<id>.mp4
        pa.field("exit_step", pa.int32(), nullable=False),  # 0-based step at which the video exited
        pa.field("prediction", pa.int32(), nullable=False),  # class index (line of the class list)
        pa.field("confidence", pa.float64(), nullable=False),  # softmax probability of the prediction
        pa.field("labels", pa.list_(pa.int32()), nullable=False),  # ground-truth class indices
        *POLICY_FIELDS,
        pa.field("checkpoint", pa.string(), nullable=False),  # checkpoint file name
    ]
)

#: ``sweep.parquet``: one row per checkpoint, exit policy and setting of a replay (frameexit's grid, then the
#: baselines' settings).
SWEEP = pa.schema(
    [
        pa.field("checkpoint", pa.string(), nullable=False),  # checkpoint file name
        pa.field("order", pa.string(), nullable=False),  # policy order: coarse_to_fine, sequential or the list
        *POLICY_FIELDS,
        pa.field("map", pa.float64()),  # fraction in [0, 1]; NaN without any positive label
        pa.field("top1", pa.float64()),  # fraction in [0, 1] of labelled videos
        pa.field("gflops", pa.float64()),  # paper convention (GMACs really); null for backbones without a figure
        pa.field("gmacs_measured", pa.float64()),  # mean per video, backbone + head, FlopCounterMode
        pa.field("mean_frames", pa.float64()),  # mean frames read per video (exit_step + 1)
        pa.field("exit_histogram", pa.list_(pa.float64()), nullable=False),  # share of videos per exit step
        pa.field("n_videos", pa.int64(), nullable=False),  # videos replayed
        # mAP of each category of classes (data.path_category, e.g. HVU's scene, object, ...): the mean AP of the
        # category's classes with a positive video, NaN if none has one; null without data.path_category
        pa.field("map_per_category", pa.map_(pa.string(), pa.float64())),
        # videos whose exit or prediction at this setting the deviation of the cached features from sequential
        # inference's could change (replay.json's exactness); 0 for exact features, null when unknown
        pa.field("n_at_risk", pa.int64()),
    ]
)


def column_problem(table: pa.Table, schema: pa.Schema, columns: list[str] | None = None) -> str | None:
    """The first way ``table`` does not hold the columns of ``schema`` (those named in ``columns``), in words:
    missing, of another type, or with nulls the schema has none of. ``None`` when every column fits."""
    for name in columns or schema.names:
        expected = schema.field(name)
        if name not in table.column_names:
            return f"column {name!r} is missing"
        column = table.column(name)
        if not column.type.equals(expected.type):
            return f"column {name!r} is {column.type}, not {expected.type}"
        if not expected.nullable and column.null_count:
            return f"column {name!r} holds nulls"
        if pa.types.is_list(expected.type) and pc.list_flatten(column).null_count:  # ours hold numbers only
            return f"column {name!r} holds lists with nulls"
    return None
