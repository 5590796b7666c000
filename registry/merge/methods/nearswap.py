"""`nearswap`: take the other model's value where it is near the base's (mergekit's nearswap).

Per entry, w = clamp(t / max(|θ₀ − θ₁|, 1e-6), 0, 1) and the result is w·θ₁ + (1 − w)·θ₀: entries
closer than t are swapped in whole, farther ones blended less. Elementwise, fp32; bit-identical
to mergekit 0.1.5 (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import field_validator

from registry.merge.methods.base import TensorStats, check_inputs, chunk_elements, flat_chunks
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec


def merge_nearswap(
    tensors: Sequence[torch.Tensor], base: torch.Tensor | None, *, t: float, stats: TensorStats | None = None
) -> torch.Tensor:
    """Nearswap of the one input onto `base` (fp32 out).

    Raises:
        ValueError: without a base or with other than one input.
    """
    if base is None:
        raise ValueError("nearswap needs a base tensor")
    check_inputs(tensors, base)
    if len(tensors) != 1:
        raise ValueError(f"nearswap takes the base and ONE other model, got {len(tensors)} inputs")
    numel = base.numel()
    size = max(1, min(chunk_elements(base.device), numel))
    flat_a, flat_b = base.reshape(-1), tensors[0].reshape(-1)
    result = torch.empty(base.shape, dtype=torch.float32, device=base.device)
    flat_out = result.view(-1)
    for part in flat_chunks(numel, size):  # elementwise: mergekit's whole-tensor operations, chunk by chunk
        a, b = flat_a[part].float(), flat_b[part].float()
        weight = (t / torch.abs(a - b).clamp(min=1e-6)).clamp(min=0, max=1)
        torch.add(weight * b, (1 - weight) * a, out=flat_out[part])
    if stats is not None:
        stats.elements += numel
    return result


class NearswapParams(MethodParams):
    """`nearswap` parameters: `t` (required), the distance below which the other model's value is taken."""

    t: float

    @field_validator("t")
    @classmethod
    def _t_finite(cls, value: float) -> float:
        if not value == value or abs(value) == float("inf"):
            raise ValueError("t is a distance: write a finite number, e.g. 0.001")
        return value


def _bind(params: NearswapParams, ctx: MethodContext) -> Merger:
    return FnMerger(merge_nearswap, t=params.t)


SPEC = MethodSpec(
    name="nearswap",
    summary="Take the other model's entries where they are within t of the base's (mergekit's nearswap).",
    params=NearswapParams,
    bind=_bind,
    fn=merge_nearswap,
    uses_weight=False,
    max_inputs=1,
    describe=lambda params, ctx: f"t {params.t}",
    diagnostics=("elements",),
    reference="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
)
