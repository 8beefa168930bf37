"""Writers for Parquet tables and JSON documents; every file is written atomically."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from frameexit.atomic import atomic_write


def write_table(path: str | os.PathLike, columns: Mapping[str, Any], schema: pa.Schema) -> None:
    """Write ``columns`` (name -> values, or Arrow arrays of the schema's types) as a Parquet file with exactly
    ``schema``."""
    arrays = {f.name: _array(columns[f.name], f.type) for f in schema}
    table = pa.table(arrays, schema=schema)
    with atomic_write(path) as handle:
        pq.write_table(table, handle)


def _array(values: Any, kind: pa.DataType) -> pa.Array:
    return values if isinstance(values, pa.Array) else pa.array(values, type=kind)


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays unwrapped, NaN and infinities as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, document: Mapping[str, Any]) -> None:
    """Write ``document`` as sorted, indented JSON (NaN written as ``null``)."""
    text = json.dumps(jsonable(document), sort_keys=True, indent=2, allow_nan=False)
    with atomic_write(path, "w") as handle:
        handle.write(text + "\n")


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Write ``lines`` as a text file, one per line (a split file, a class list)."""
    with atomic_write(path, "w") as handle:
        handle.write("".join(line + "\n" for line in lines))
