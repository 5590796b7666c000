"""Checks of every value a visitor or an API caller sends, each failing with one line that names it.

Gradio's API passes JSON values through unchecked (`max_new_tokens="lots"` arrives as a string),
so every endpoint runs its arguments through these before any work: no tokenisation, download or
merge starts on a value that is out of range.
"""

from __future__ import annotations

import math
from typing import Any

from space.errors import PromptError


def whole_number(value: Any, *, name: str, low: int, high: int) -> int:
    """`value` as an int in [low, high] (a whole float such as 12.0 counts).

    Raises:
        PromptError: missing, not a number, not whole, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PromptError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    if int(value) != value:
        raise PromptError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    if not low <= int(value) <= high:
        raise PromptError(f"{name} must be from {low} to {high} in this Space, not {int(value)}")
    return int(value)


def number(value: Any, *, name: str, low: float, high: float, low_open: bool = False) -> float:
    """`value` as a float in [low, high] (`(low, high]` with `low_open`).

    Raises:
        PromptError: missing, not a number, or out of range.
    """
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PromptError(f"{name} must be a number in {interval}, not {value!r}")
    if value > high or value < low or (low_open and value == low):
        raise PromptError(f"{name} must be in {interval}, not {value:g}")
    return float(value)


def text(value: Any, *, name: str, max_chars: int, required: bool = True) -> str:
    """`value` as a string of at most `max_chars` characters (checked before any tokenisation).

    Raises:
        PromptError: not a string, empty when required, or too long.
    """
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise PromptError(f"{name} must be text, not {type(value).__name__}")
    if len(value) > max_chars:
        raise PromptError(f"{name} is {len(value):,} characters; this Space takes at most {max_chars:,}: shorten it")
    if required and not value.strip():
        raise PromptError(f"{name} is empty: type some text, or pick an example")
    return value
