"""The records that mirror a table are checked against its Arrow schema (reports.schema), the one definition of
its columns: the same names, and types (float, int, str, list, map; ``| None`` exactly where a column is nullable)."""

import types
import typing

import pyarrow as pa
import pytest

from reports.records import MetricRow, SummaryRow
from reports.schema import SWEEP

#: Columns of sweep.parquet that are not a metric row's: the same for every row of a replay (replay.json says them).
NOT_IN_ROW = {"order", "n_videos"}


def _python_type(kind: pa.DataType):
    """The Python type of a JSON value that a column of ``kind`` holds."""
    if pa.types.is_floating(kind):
        return float
    if pa.types.is_integer(kind):
        return int
    if pa.types.is_string(kind):
        return str
    if pa.types.is_map(kind):  # items are nullable in Arrow: NaN is written as null in JSON
        return dict[_python_type(kind.key_type), _python_type(kind.item_type) | None]
    if pa.types.is_list(kind):  # lists hold numbers only (reports.schema.column_problem)
        return list[_python_type(kind.value_type)]
    raise AssertionError(f"no Python type for {kind}")


def _optional(hint) -> bool:
    return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)


@pytest.mark.parametrize("record", [MetricRow, SummaryRow])
def test_a_metric_row_has_the_sweep_columns_and_their_types(record):
    hints = typing.get_type_hints(record)
    # the summary's additions: 2 x gmacs_measured, and the bootstrap intervals where the replay computed them
    own = {"gflops_measured", "map_interval", "top1_interval"} if record is SummaryRow else set()
    assert set(hints) - own == set(SWEEP.names) - NOT_IN_ROW
    for name in set(SWEEP.names) - NOT_IN_ROW:
        field, hint = SWEEP.field(name), hints[name]
        expected = _python_type(field.type)
        assert hint == (expected | None if field.nullable else expected), (name, hint, field)


def test_the_keys_a_row_may_lack_are_columns_added_later():
    """Optional keys (absent in files of older versions) are the nullable columns added since, not others."""
    assert MetricRow.__optional_keys__ == {"map_per_category", "n_at_risk"}
    assert all(SWEEP.field(name).nullable for name in MetricRow.__optional_keys__)
