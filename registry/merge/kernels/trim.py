"""How many entries TIES-style trimming keeps (shared by the torch path and the fused kernels)."""

from __future__ import annotations

from registry.merge.kernels.topk import Cut


def trim_target(density: float, numel: int) -> int | Cut:
    """How many entries trimming keeps, k = max(1, int(density · numel)), or the cut itself where it
    is trivial (density >= 1 or k >= numel keeps all; density <= 0 or no entries keeps none)."""
    if density >= 1:
        return Cut.keep_all()
    if density <= 0 or numel == 0:
        return Cut.keep_none()
    k = max(1, int(density * numel))
    return Cut.keep_all() if k >= numel else k


def kept_count(cut: Cut, k: int) -> int | None:
    """Non-zero entries a trimming cut keeps, when known without counting (None: count)."""
    if cut == Cut.keep_none():
        return 0
    if cut == Cut.keep_all():
        return None
    return k if cut.key > 0 else k - cut.ties  # a zero threshold: the ties it keeps are zeros
