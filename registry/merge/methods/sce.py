"""`sce`: Select, Calculate, Erase (FuseLLM / FuseChat 2.0, https://arxiv.org/abs/2408.07990), as mergekit 0.1.5.

Task vectors τᵢ = θᵢ − θ₀. Select: with `select_topk` < 1, keep the positions whose variance
across the inputs is in the top `select_topk` share of the positions with non-zero variance.
Calculate: input i's weight is mean(τᵢ²) over the tensor, normalised to sum 1 (equal weights when
the sum is near 0). Erase: TIES' sign election (sum) drops the disagreeing entries. The result is
θ₀ + Σ wᵢτᵢ·mᵢ / max(Σ wᵢmᵢ, 1e-6). The same float operations as mergekit (tested bit-identical,
fp32), except where equal variances straddle the selection cut (we keep the lowest flat indices).
The recipe's per-model weights are not used (mergekit's sce has none).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import field_validator

from registry.merge.kernels.topk import magnitude_keys, topk_mask
from registry.merge.methods.base import TensorStats, check_inputs
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec


def merge_sce(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    select_topk: float = 1.0,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """SCE-merge `tensors` onto `base` (fp32 out).

    Raises:
        ValueError: without a base.
    """
    if base is None:
        raise ValueError("sce needs a base tensor")
    check_inputs(tensors, base)
    b = base.float()
    tvs = torch.stack([t.float() - b for t in tensors], dim=0)
    if select_topk < 1:
        tvs = tvs * _select(tvs, select_topk).unsqueeze(0)
    votes = tvs.sum(dim=0)
    majority = (votes >= 0).float() * 2 - 1
    erase = (tvs.sign() == majority).float()
    weights = tvs.square().reshape(tvs.shape[0], -1).mean(dim=1)
    total = torch.sum(weights).item()
    weights = torch.ones_like(weights) / weights.shape[0] if abs(total) < 1e-6 else weights / total
    while weights.dim() < tvs.dim():
        weights = weights.unsqueeze(-1)
    erased = weights * erase
    merged = (tvs * erased).sum(dim=0)
    if stats is not None:
        stats.elements += base.numel()
        for index in range(len(tensors)):
            stats.add_kept(index, int(torch.count_nonzero(tvs[index] * erase[index])))
    return b + merged / torch.sum(erased, dim=0).clamp(min=1e-6)


def _select(tvs: torch.Tensor, density: float) -> torch.Tensor:
    """1.0 at the top `density` share (by variance across inputs) of the positions with non-zero variance."""
    if density <= 0:
        return torch.zeros_like(tvs[0])
    var = torch.var(tvs, dim=0, unbiased=False)
    k = int(torch.count_nonzero(var) * density)
    if k == 0:
        return torch.zeros_like(var)
    return topk_mask(magnitude_keys(var.reshape(-1)), k).view(var.shape).float()


class SceParams(MethodParams):
    """`sce` parameters: `select_topk` in [0, 1] (default 1: keep every position)."""

    select_topk: float | None = None

    @field_validator("select_topk")
    @classmethod
    def _share(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError("select_topk is a share of the positions: write a number in [0, 1], e.g. 0.1")
        return value


def _bind(params: SceParams, ctx: MethodContext) -> Merger:
    return FnMerger(merge_sce, select_topk=1.0 if params.select_topk is None else params.select_topk)


SPEC = MethodSpec(
    name="sce",
    summary="Select by variance, calculate weights from the task vectors, erase sign conflicts (FuseChat 2.0).",
    params=SceParams,
    bind=_bind,
    fn=merge_sce,
    uses_weight=False,
    describe=lambda params, ctx: f"select_topk {1.0 if params.select_topk is None else params.select_topk}",
    diagnostics=("elements", "kept"),
    reference="https://arxiv.org/abs/2408.07990",
)
