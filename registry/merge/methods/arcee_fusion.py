"""`arcee_fusion`: take the other model's entries whose importance is an outlier (mergekit's arcee_fusion).

Importance = |θ₁ − θ₀| · KL(softmax θ₁ ‖ softmax θ₀) per row (the last dimension; +1e-8 inside).
An entry is taken from θ₁ where its importance is at least median + 1.5·(q3 − q1), else the base
is kept: θ₀ + (θ₁ − θ₀)·mask. Quantiles are the sorted values at index ⌊q·(N−1)⌋ of the whole
tensor, found exactly by a radix select (`kernels.topk`, no sort). mergekit takes them from a
random sample of 1 M entries (drawn with replacement) when the tensor is larger: equal on tensors
up to 1 M entries (tested bit-identical), exact (and reproducible) where mergekit samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from registry.merge.kernels.topk import find_cut, magnitude_keys
from registry.merge.methods.base import TensorStats, check_inputs
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec


def quantiles(values: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """Sorted `values` (non-negative fp32) at index ⌊q·(N−1)⌋ (computed as mergekit does, in fp32)."""
    flat = values.reshape(-1)
    n = flat.numel()
    keys = magnitude_keys(flat)
    positions = (torch.tensor(list(qs), dtype=torch.float32) * (n - 1)).long().tolist()
    # The value at ascending index p is the (n − p)-th largest.
    return [find_cut(lambda: (keys,), n - p, numel=n).value for p in positions]


def merge_arcee_fusion(
    tensors: Sequence[torch.Tensor], base: torch.Tensor | None, *, stats: TensorStats | None = None
) -> torch.Tensor:
    """Arcee Fusion of the one input onto `base` (fp32 out).

    Raises:
        ValueError: without a base or with other than one input.
    """
    if base is None:
        raise ValueError("arcee_fusion needs a base tensor")
    check_inputs(tensors, base)
    if len(tensors) != 1:
        raise ValueError(f"arcee_fusion takes the base and ONE other model, got {len(tensors)} inputs")
    b, x = base.float(), tensors[0].float()
    diff = (x - b).abs()
    p = torch.softmax(x, dim=-1) + 1e-8
    q = torch.softmax(b, dim=-1) + 1e-8
    importance = diff * torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    q1, median, q3 = quantiles(importance, (0.25, 0.5, 0.75))
    threshold = torch.tensor(median, dtype=torch.float32) + 1.5 * (
        torch.tensor(q3, dtype=torch.float32) - torch.tensor(q1, dtype=torch.float32)
    )
    mask = (importance >= threshold).float()
    if stats is not None:
        stats.elements += base.numel()
        stats.add_kept(0, int(mask.sum()))
    return b + (x - b) * mask


def _bind(params: MethodParams, ctx: MethodContext) -> Merger:
    return FnMerger(merge_arcee_fusion)


SPEC = MethodSpec(
    name="arcee_fusion",
    summary="Take the other model's entries of outlying importance (|Δ| times the rows' KL), keep the base elsewhere.",
    params=MethodParams,
    bind=_bind,
    fn=merge_arcee_fusion,
    uses_weight=False,
    max_inputs=1,
    diagnostics=("elements", "kept"),
    reference="https://arcee.ai",
)
