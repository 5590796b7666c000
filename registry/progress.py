"""One helper builds every progress bar: on stderr, and off when `enabled` is False (`--quiet`).

When stderr is no terminal (a log file, a pipe, CI) a bar would write a carriage-return line per
update (the first demo's log was 110 KB of them): the stage logs one INFO line instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
logger = logging.getLogger(__name__)


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
    bar = enabled and sys.stderr.isatty()
    if enabled and not bar and desc:
        amount = "" if total is None else f" ({_amount(total, unit, unit_scale)})"
        logger.info("%s%s", desc, amount)
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        disable=not bar,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


def _amount(total: float, unit: str, unit_scale: bool) -> str:
    if unit_scale:
        return f"{tqdm.format_sizeof(total, divisor=1000)} {unit}"
    return f"{total:g} {unit}"
