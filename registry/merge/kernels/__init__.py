"""The kernels room: the numeric building blocks under the merge methods.

- `topk`: exact k-th magnitude by bit-pattern histograms (trimming without sorts), and `Cut`.
- `trim`: how many entries a trimming density keeps (`trim_target`, `kept_count`).
- `fused`: the fused CPU path of TIES (cuts, TIES of two inputs, NaN count) over the C kernels.
- `fused_kernels` (+ `fused_kernels.c`): builds the C kernels with the system cc once and loads them.

Kernels import torch, numpy, ctypes and each other; never a method, the engine or the rest of the
registry (tests/unit/test_layering.py). Methods import torch and these.
"""

from __future__ import annotations

import os


def fused_allowed() -> bool:
    """False when MERGELING_FUSED=0 (or off/false/no) turns the fused CPU kernels off."""
    return os.environ.get("MERGELING_FUSED", "1").strip().lower() not in {"0", "off", "false", "no"}
