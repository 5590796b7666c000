"""`linear`: the weighted average Σ wᵢθᵢ / Σ wᵢ (Wortsman et al. 2022, https://arxiv.org/abs/2203.05482).

Matches mergekit 0.1.5 `linear` bit for bit on fp32 inputs: an fp32 accumulator, one
`addcmul_` per input in recipe order, then a division by the fp32 sum of the weights when
`normalize` (the default). No base: when a recipe names a base model for `linear`, the engine
decides whether it is one of the inputs (mergekit treats it as one). Limits: weights summing to
zero with `normalize` give inf/NaN, as in mergekit; the recipe validator should refuse them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from registry.merge.methods.base import TensorStats, check_inputs, chunk_elements, flat_chunks, fp32_chunk
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec


def merge_linear(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    *,
    weights: Sequence[float],
    densities: Sequence[float] = (),
    normalize: bool = True,
    lambda_: float = 1.0,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """Weighted average of `tensors` (any float dtype in, fp32 out). `base`, `densities`, `lambda_` are unused.

    Args:
        tensors: the inputs, same shape, any float dtype (math in fp32).
        base: ignored (accepted for the common signature).
        weights: one weight per input.
        densities: ignored.
        normalize: divide by the sum of the weights.
        lambda_: ignored (mergekit's `linear` has no lambda).
        stats: when given, `elements` and `kept` (every non-zero entry) are added.

    Returns:
        The merged tensor.

    Raises:
        ValueError: on no inputs, mismatched shapes, or a weight count that differs from the inputs.
    """
    check_inputs(tensors, None, weights=weights)
    first = tensors[0]
    # (n,) fp32 weights, as mergekit's batch parameter; coefficients stay tensors like its addcmul_.
    weight = torch.tensor(list(weights), dtype=torch.float32, device=first.device)
    result = torch.zeros(first.shape, dtype=torch.float32, device=first.device)
    flat_out = result.view(-1)
    coefficients = weight.unbind(0)
    size = min(chunk_elements(first.device), first.numel())
    buffer = torch.empty(size, dtype=torch.float32, device=first.device)
    for part in flat_chunks(first.numel(), size):
        out = flat_out[part]
        for tensor, coefficient in zip(tensors, coefficients, strict=False):
            out.addcmul_(fp32_chunk(tensor.reshape(-1), part, buffer), coefficient.reshape(1))
        if normalize:
            out.div_(weight.sum(dim=0).reshape(1))
    if stats is not None:
        stats.elements += first.numel()
        for index, tensor in enumerate(tensors):
            stats.add_kept(index, int(torch.count_nonzero(tensor)))
    return result


class LinearParams(MethodParams):
    """`linear` parameters: `normalize` (default on)."""

    normalize: bool | None = None


def _bind(params: LinearParams, ctx: MethodContext) -> Merger:
    return FnMerger(merge_linear, weights=ctx.weights, normalize=SPEC.normalize(params))


SPEC = MethodSpec(
    name="linear",
    summary="Weighted average of the inputs (Wortsman et al. 2022).",
    params=LinearParams,
    bind=_bind,
    fn=merge_linear,
    needs_base=False,
    min_inputs=2,
    default_normalize=True,
    reference="https://arxiv.org/abs/2203.05482",
)
