"""`task_arithmetic`: θ₀ + λ Σ wᵢτᵢ with τᵢ = θᵢ − θ₀ (Ilharco et al. 2023, https://arxiv.org/abs/2212.04089).

Matches mergekit 0.1.5 `task_arithmetic` bit for bit on fp32 inputs (same operation order:
stacked deltas scaled by the weights, summed over the inputs axis, divided by Σ wᵢ when
`normalize` (default off; a |Σ wᵢ| below 1e-8 counts as 1), times λ when λ ≠ 1, plus the base).
Limits: no trimming (densities are ignored, as in mergekit).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from registry.merge.methods.base import TensorStats, check_inputs, chunk_elements, flat_chunks, fp32_chunk
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodSpec, ScaledParams


def merge_task_arithmetic(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weights: Sequence[float],
    densities: Sequence[float] = (),
    normalize: bool = False,
    lambda_: float = 1.0,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """Add the weighted task vectors of `tensors` to `base` (any float dtype in, fp32 out).

    Args:
        tensors: the fine-tuned inputs, same shape as `base`, any float dtype (math in fp32).
        base: the base tensor.
        weights: one weight per input.
        densities: ignored.
        normalize: divide the summed task vector by Σ wᵢ.
        lambda_: scale of the summed task vector.
        stats: when given, `elements` and `kept` (non-zero deltas per input) are added.

    Returns:
        The merged tensor.

    Raises:
        ValueError: without a base, or on mismatched shapes or weight counts.
    """
    if base is None:
        raise ValueError("task_arithmetic needs a base tensor")
    check_inputs(tensors, base, weights=weights)
    n = len(tensors)
    flat_base = base.reshape(-1)
    # (n, 1) fp32 weights broadcast over a (n, chunk) stack of deltas, as mergekit's (n, 1, ..., 1).
    weight = torch.tensor(list(weights), dtype=torch.float32, device=base.device).unsqueeze(-1)
    divisor = weight.sum(dim=0)
    divisor[divisor.abs() < 1e-8] = 1
    result = torch.empty(base.shape, dtype=torch.float32, device=base.device)
    flat_out = result.view(-1)
    size = min(chunk_elements(base.device), base.numel())
    base_buffer = torch.empty(size, dtype=torch.float32, device=base.device)
    for part in flat_chunks(base.numel(), size):
        chunk_base = fp32_chunk(flat_base, part, base_buffer)
        deltas = torch.empty((n, chunk_base.numel()), dtype=torch.float32, device=base.device)
        for index, tensor in enumerate(tensors):
            torch.sub(fp32_chunk(tensor.reshape(-1), part, deltas[index]), chunk_base, out=deltas[index])
        if stats is not None:
            for index in range(n):
                stats.add_kept(index, int(torch.count_nonzero(deltas[index])))
        deltas.mul_(weight)
        mixed = deltas.sum(dim=0)
        if normalize:
            mixed /= divisor
        if lambda_ != 1:
            mixed *= lambda_
        torch.add(chunk_base, mixed, out=flat_out[part])
    if stats is not None:
        stats.elements += base.numel()
    return result


def _bind(params: ScaledParams, ctx: MethodContext) -> Merger:
    return FnMerger(
        merge_task_arithmetic, weights=ctx.weights, normalize=SPEC.normalize(params), lambda_=SPEC.lambda_(params)
    )


SPEC = MethodSpec(
    name="task_arithmetic",
    summary="Base plus the weighted sum of task vectors (Ilharco et al. 2023).",
    params=ScaledParams,
    bind=_bind,
    fn=merge_task_arithmetic,
    default_normalize=False,
    reference="https://arxiv.org/abs/2212.04089",
)
