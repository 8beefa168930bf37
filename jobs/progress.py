"""The one progress-bar factory of the project (bars go to stderr; off on non-TTY by default)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    total: int | None = None,
    unit: str = "video",
    enabled: bool | None = None,
    leave: bool = True,
    initial: int = 0,
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar; ``enabled=None`` shows it only on a terminal (so CI logs stay clean),
    ``True``/``False`` force it on or off (``--progress/--no-progress``)."""
    disable = None if enabled is None else not enabled
    return tqdm(
        iterable, desc=desc, total=total, unit=unit, disable=disable, leave=leave, initial=initial, dynamic_ncols=True
    )
