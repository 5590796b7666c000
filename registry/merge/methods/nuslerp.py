"""`nuslerp`: SLERP between two models with t from their weights (mergekit's nuslerp).

t = w₂ / (w₁ + w₂) (0.5 when the sum is near 0). By default (`nuslerp_flatten: true`) each tensor
is one vector; with `nuslerp_flatten: false` the rows (or, with `nuslerp_row_wise`, the columns)
are interpolated separately. Nearly collinear vectors are interpolated linearly. The same float
operations as mergekit 0.1.5 (tested equal). Without a base only: mergekit's form relative to a
base (task vectors) is refused, not ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from registry.merge.methods.base import TensorStats, check_inputs
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec, refuse_base


def nuslerp(
    t: float, v0: torch.Tensor, v1: torch.Tensor, *, dim: int = -1, eps: float = 1e-8, flatten: bool = False
) -> torch.Tensor:
    """SLERP of v0 toward v1 by t, along `dim` (or over everything with `flatten`)."""
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = torch.sum(u0 * u1, dim=-1, keepdim=True).clamp(-1, 1)
    collinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(collinear, 0, cos))
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    result = torch.where(collinear, (1 - t) * v0 + t * v1, result)
    if dim != -1 and not flatten:
        result = result.transpose(dim, -1)
    return result.reshape(shape)


def merge_nuslerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    *,
    weights: Sequence[float],
    row_wise: bool = False,
    flatten: bool = True,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """NuSLERP of two inputs (fp32 out).

    Raises:
        ValueError: with other than two inputs.
    """
    check_inputs(tensors, base, weights=weights)
    if len(tensors) != 2:
        raise ValueError(f"nuslerp interpolates between TWO models, got {len(tensors)} inputs")
    total = sum(weights)
    t = 0.5 if abs(total) < 1e-6 else weights[1] / total
    if stats is not None:
        stats.elements += tensors[0].numel()
    a, b = tensors[0].float(), tensors[1].float()
    return nuslerp(t, a, b, dim=0 if row_wise else -1, flatten=flatten)


class NuslerpParams(MethodParams):
    """`nuslerp` parameters: `nuslerp_flatten` (default true), `nuslerp_row_wise` (default false)."""

    nuslerp_row_wise: bool | None = None
    nuslerp_flatten: bool | None = None


def _bind(params: NuslerpParams, ctx: MethodContext) -> Merger:
    return FnMerger(
        merge_nuslerp,
        weights=ctx.weights,
        row_wise=bool(params.nuslerp_row_wise),
        flatten=True if params.nuslerp_flatten is None else params.nuslerp_flatten,
    )


SPEC = MethodSpec(
    name="nuslerp",
    summary="SLERP between two models with t from their weights (mergekit's nuslerp).",
    params=NuslerpParams,
    bind=_bind,
    fn=merge_nuslerp,
    needs_base=False,
    min_inputs=2,
    max_inputs=2,
    check=refuse_base("nuslerp"),
    diagnostics=("elements",),
    reference="https://github.com/arcee-ai/mergekit",
)
