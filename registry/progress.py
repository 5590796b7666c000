"""One helper builds every progress bar: on stderr, and off when `enabled` is False (`--quiet`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | float | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    unit_scale: bool = False,
) -> tqdm:
    """Return a tqdm bar writing to stderr; a disabled bar still iterates.

    Args:
        iterable: what to iterate, or None for a manually updated bar.
        total: expected count (or bytes with `unit="B"`, `unit_scale=True`).
        desc: a short label shown before the bar.
        unit: the unit name.
        enabled: False turns the bar off (CLI `--quiet`).
        unit_scale: scale large counts (k, M, G).
    """
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )
