"""Threshold grids: lists (``0.9,0.95,0.99``) or ranges ``start:stop:count`` with both ends included."""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import numpy as np

from frameexit.errors import ConfigError

#: Decimals a range's values are rounded to: ``0.3:0.9:7`` gives 0.6, not numpy's 0.6000000000000001.
RANGE_DECIMALS = 12


def parse_grid(value: str | float | Sequence[float], *, name: str) -> list[float]:
    """Threshold values in [0, 1] from a list, a comma-separated string or a ``start:stop:count`` range (both ends
    included, rounded to :data:`RANGE_DECIMALS` decimals; one value must start where it stops); else, or for a
    value given twice (the same setting twice), :class:`ConfigError` naming ``name`` and the value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [float(value)]
    elif isinstance(value, str):
        text = value.strip()
        try:
            if ":" in text:
                first, last, number = text.split(":")  # another number of parts: ValueError, as a bad number
                start, stop, count = float(first), float(last), int(number)
                values = [round(v, RANGE_DECIMALS) for v in np.linspace(start, stop, max(count, 0)).tolist()]
            else:
                values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(
                f"{name} must be numbers separated by commas (0.9,0.95) or a range start:stop:count "
                f"(0.1:0.9:33), got {value!r}"
            ) from None
        if ":" in text and count == 1 and start != stop:
            raise ConfigError(
                f"{name}: the range {value!r} of one value would leave out its stop {stop!r}; give a count "
                f"of at least 2, or the one value ({start!r})"
            )
    elif isinstance(value, Sequence) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        values = [float(v) for v in value]
    else:
        raise ConfigError(f"{name} must be a list of numbers or a string, got {value!r}")
    if not values:
        raise ConfigError(f"{name} is empty (a range needs a count of at least 1), got {value!r}")
    bad = [v for v in values if math.isnan(v) or not 0.0 <= v <= 1.0]
    if bad:
        raise ConfigError(f"{name}: thresholds are probabilities in [0, 1]; got {bad[0]!r} in {value!r}")
    twice = sorted(v for v, n in collections.Counter(values).items() if n > 1)
    if twice:
        raise ConfigError(f"{name}: {twice[0]!r} is given twice in {value!r}; each threshold once")
    return values
