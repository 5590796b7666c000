"""Merge methods: one module per method, and ONE explicit registry dict.

`METHODS` maps each recipe id to its `MethodSpec` (`registry.merge.methods.plugin`: parameters
model, passes, input contract, diagnostics); `get_method(name)` looks one up. Adding a method
means writing its module and adding its spec here (docs/merge.md, "Write a merge method").
"""

from __future__ import annotations

from registry.errors import UnknownMethodError
from registry.merge.methods import (
    arcee_fusion,
    breadcrumbs,
    dare,
    della,
    karcher,
    linear,
    model_stock,
    multislerp,
    nearswap,
    nuslerp,
    passthrough,
    ram,
    sce,
    slerp,
    task_arithmetic,
    ties,
    ties_sv,
)
from registry.merge.methods.base import TensorStats
from registry.merge.methods.plugin import Merger, MethodContext, MethodParams, MethodSpec

__all__ = ["METHODS", "MethodContext", "MethodParams", "MethodSpec", "Merger", "TensorStats", "get_method"]

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        linear.SPEC,
        task_arithmetic.SPEC,
        ties.SPEC,
        ties_sv.SPEC,
        slerp.SPEC,
        dare.DARE_TIES,
        dare.DARE_LINEAR,
        breadcrumbs.BREADCRUMBS,
        breadcrumbs.BREADCRUMBS_TIES,
        della.DELLA,
        della.DELLA_LINEAR,
        sce.SPEC,
        model_stock.SPEC,
        nearswap.SPEC,
        arcee_fusion.SPEC,
        ram.RAM,
        ram.RAMPLUS_TL,
        nuslerp.SPEC,
        multislerp.SPEC,
        karcher.SPEC,
        passthrough.SPEC,
    )
}


def get_method(name: str) -> MethodSpec:
    """The method registered under `name`.

    Args:
        name: a recipe `merge_method` id.

    Returns:
        Its `MethodSpec`.

    Raises:
        UnknownMethodError: for an id not in `METHODS`; the message lists the valid ids.
    """
    try:
        return METHODS[name]
    except KeyError:
        valid = sorted(METHODS)
        raise UnknownMethodError(
            f"unknown merge method {name!r}: use one of {', '.join(valid)}", method=name, valid=valid
        ) from None
