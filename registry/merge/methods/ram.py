"""`ram` and `ramplus_tl`: Reinforced Agent Merging (https://arxiv.org/abs/2601.13572), as mergekit 0.1.5.

Task vectors τᵢ = θᵢ − θ₀; an entry contributes where |τᵢ| > `epsilon`. Entries only one input
changes are taken whole; entries several change are averaged over those. `ramplus_tl` scales the
unique entries of input i by 1 + r·clamp(ρᵢ, 0, α), ρᵢ = (its shared entries) / (its unique
entries) in this tensor. The same float operations as mergekit (tested bit-identical, fp32).
Per-model weights are not used (mergekit's ram has none).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from registry.merge.methods.base import TensorStats, check_inputs
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec


def merge_ram(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    epsilon: float = 1e-5,
    plus: bool = False,
    r: float = 0.1,
    alpha: float = 0.2,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """RAM (or RAM+ tensor-local with `plus`) of `tensors` onto `base` (fp32 out).

    Raises:
        ValueError: without a base.
    """
    if base is None:
        raise ValueError("ram needs a base tensor")
    check_inputs(tensors, base)
    b = base.float()
    tv = torch.stack([t.float() - b for t in tensors], dim=0).view(len(tensors), -1)
    nonzero = tv.abs() > epsilon
    counts = nonzero.sum(dim=0, keepdim=True)
    overlap, unique = counts > 1, counts == 1
    tv_z = tv * nonzero
    if plus:
        shared = (nonzero & overlap).sum(dim=1)
        alone = (nonzero & unique).sum(dim=1)
        rho = shared / alone.clamp(min=epsilon)
        scale = 1 + r * rho.clamp(min=0, max=alpha)
        merged = ((tv_z * unique * scale.unsqueeze(-1)) + (tv_z * overlap / counts.clamp(min=1))).sum(
            dim=0, keepdim=True
        )
    else:
        merged = ((tv_z * unique) + (tv_z * overlap / counts.clamp(min=1))).sum(dim=0, keepdim=True)
    if stats is not None:
        stats.elements += base.numel()
        for index in range(len(tensors)):
            stats.add_kept(index, int(nonzero[index].sum()))
    return b + merged.reshape_as(b)


class RamParams(MethodParams):
    """`ram` parameters: `epsilon` (default 1e-5), below which an entry does not count as changed."""

    epsilon: float | None = None


class RamPlusParams(RamParams):
    """`ramplus_tl` parameters: `epsilon`, `r` (default 0.1) and `alpha` (default 0.2)."""

    r: float | None = None
    alpha: float | None = None


def _bind(params: RamParams, ctx: MethodContext) -> Merger:
    return FnMerger(merge_ram, epsilon=1e-5 if params.epsilon is None else params.epsilon)


def _bind_plus(params: RamPlusParams, ctx: MethodContext) -> Merger:
    return FnMerger(
        merge_ram,
        plus=True,
        epsilon=1e-5 if params.epsilon is None else params.epsilon,
        r=0.1 if params.r is None else params.r,
        alpha=0.2 if params.alpha is None else params.alpha,
    )


def _merge_ramplus(*args: object, **kwargs: object) -> torch.Tensor:
    return merge_ram(*args, plus=True, **kwargs)  # type: ignore[arg-type]


RAM = MethodSpec(
    name="ram",
    summary="Reinforced Agent Merging: unique changes kept whole, shared ones averaged.",
    params=RamParams,
    bind=_bind,
    fn=merge_ram,
    uses_weight=False,
    diagnostics=("elements", "kept"),
    reference="https://arxiv.org/abs/2601.13572",
)
RAMPLUS_TL = MethodSpec(
    name="ramplus_tl",
    summary="RAM+ (tensor-local): RAM with unique changes scaled by their share of overlap.",
    params=RamPlusParams,
    bind=_bind_plus,
    fn=_merge_ramplus,
    uses_weight=False,
    diagnostics=("elements", "kept"),
    reference="https://arxiv.org/abs/2601.13572",
)
