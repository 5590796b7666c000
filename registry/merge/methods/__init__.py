"""Merge methods: one module per method, pure torch functions, and ONE explicit registry dict.

`METHODS` maps each recipe id to its `MethodSpec`; `get_method(name)` looks one up. The calling
contract (arguments, fp32 in and out, `TensorStats`) is in `registry.merge.methods.base`;
`ties_sv`'s extra keywords and its model-wide two-pass API are in `registry.merge.methods.ties_sv`.
"""

from __future__ import annotations

from registry.errors import UnknownMethodError
from registry.merge.methods.base import MethodSpec, TensorStats
from registry.merge.methods.linear import merge_linear
from registry.merge.methods.task_arithmetic import merge_task_arithmetic
from registry.merge.methods.ties import merge_ties
from registry.merge.methods.ties_sv import merge_ties_sv

__all__ = ["METHODS", "MethodSpec", "TensorStats", "get_method"]

METHODS: dict[str, MethodSpec] = {
    "linear": MethodSpec(
        name="linear",
        needs_base=False,
        uses_density=False,
        default_normalize=True,
        default_lambda=1.0,
        fn=merge_linear,
        summary="Weighted average of the inputs (Wortsman et al. 2022).",
    ),
    "task_arithmetic": MethodSpec(
        name="task_arithmetic",
        needs_base=True,
        uses_density=False,
        default_normalize=False,
        default_lambda=1.0,
        fn=merge_task_arithmetic,
        summary="Base plus the weighted sum of task vectors (Ilharco et al. 2023).",
    ),
    "ties": MethodSpec(
        name="ties",
        needs_base=True,
        uses_density=True,
        default_normalize=True,
        default_lambda=1.0,
        fn=merge_ties,
        summary="Trim, elect sign, disjoint merge (Yadav et al. 2023).",
        extra_parameters=("protect",),
    ),
    "ties_sv": MethodSpec(
        name="ties_sv",
        needs_base=True,
        uses_density=True,
        default_normalize=True,
        default_lambda=1.0,
        fn=merge_ties_sv,
        summary="TIES with sign slack that rescues protected (SFT) parameters (Tao et al. 2024).",
        extra_parameters=("slack", "protect", "cuts", "trims"),
    ),
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
