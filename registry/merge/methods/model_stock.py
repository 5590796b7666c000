"""`model_stock`: Model Stock (Jang et al. 2024, https://arxiv.org/abs/2403.19522), as mergekit 0.1.5.

With task vectors τᵢ = θᵢ − θ₀ (the whole tensor flat, or per row with `filter_wise`), cos θ is the
mean pairwise cosine of the τᵢ (each clamped to [-1, 1], norms' product at least 1e-6), and
t = N cos θ / (1 + (N − 1) cos θ) (t = 0, the base, where the denominator is below 1e-6 in size).
The result is t · mean(θᵢ) + (1 − t) · θ₀. Same float operations in the same order: bit-identical to
mergekit (tested). Needs at least two inputs besides the base; weights are not used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from registry.merge.methods.base import TensorStats, check_inputs
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec


def merge_model_stock(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    filter_wise: bool = False,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """Model Stock of `tensors` around `base` (fp32 out).

    Raises:
        ValueError: without a base or with fewer than two inputs.
    """
    if base is None:
        raise ValueError("model_stock needs a base tensor")
    check_inputs(tensors, base)
    if len(tensors) < 2:
        raise ValueError(f"model_stock needs at least two inputs besides the base, got {len(tensors)}")
    shape = base.shape
    w0, ws = base.float(), [t.float() for t in tensors]
    if filter_wise:
        if w0.dim() == 1:
            w0, ws = w0.unsqueeze(0), [w.unsqueeze(0) for w in ws]
    else:
        w0, ws = w0.reshape(-1), [w.reshape(-1) for w in ws]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1 :]:
            norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
            cosines.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    count = len(ws)
    denominator = 1 + (count - 1) * cos
    singular = denominator.abs() < 1e-6
    safe = torch.where(singular, torch.ones_like(denominator), denominator)
    t = torch.where(singular, torch.zeros_like(cos), (count * cos) / safe)
    average = sum(ws) / count
    if stats is not None:
        stats.elements += base.numel()
    return (t * average + (1 - t) * w0).reshape(shape)


class ModelStockParams(MethodParams):
    """`model_stock` parameters: `filter_wise` (default false: one t per tensor; true: one per row)."""

    filter_wise: bool | None = None


def _bind(params: ModelStockParams, ctx: MethodContext) -> Merger:
    return FnMerger(merge_model_stock, filter_wise=bool(params.filter_wise))


SPEC = MethodSpec(
    name="model_stock",
    summary="Model Stock: interpolate the inputs' mean toward the base by their task vectors' angle.",
    params=ModelStockParams,
    bind=_bind,
    fn=merge_model_stock,
    uses_weight=False,
    min_inputs=2,
    describe=lambda params, ctx: f"filter_wise {bool(params.filter_wise)}",
    diagnostics=("elements",),
    reference="https://arxiv.org/abs/2403.19522",
)
