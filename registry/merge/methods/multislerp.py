"""`multislerp`: barycentric interpolation of several models on the hypersphere (mergekit's multislerp).

Each flattened input is projected to the unit sphere, the weighted mean direction is found, the
inputs are mapped to its tangent space, averaged there with the weights (summing to 1 with
`normalize_weights`, the default) and mapped back; the result's norm is the weighted mean norm.
Two inputs whose weighted mean direction vanishes (antipodal) fall back to the weighted sum. The
same float operations as mergekit 0.1.5 (tested equal). Without a base only: mergekit's form
relative to a base (task vectors) is refused, not ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from registry.merge.methods.base import TensorStats, check_inputs
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec, refuse_base


def merge_multislerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    *,
    weights: Sequence[float],
    normalize_weights: bool = True,
    eps: float = 1e-8,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """Multi-SLERP of `tensors` (fp32 out).

    Raises:
        ValueError: on mismatched shapes, or when the weighted mean direction of 3+ inputs is zero.
    """
    check_inputs(tensors, base, weights=weights)
    if stats is not None:
        stats.elements += tensors[0].numel()
    if len(tensors) == 1:
        return tensors[0].float()
    stack = torch.stack([t.float() for t in tensors], dim=0)
    if base is not None:
        stack -= base.float()
    flat = stack.view(stack.shape[0], -1)
    w = torch.tensor(list(weights), dtype=stack.dtype)
    if normalize_weights:
        w = w / w.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * w.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if stack.shape[0] == 2:
            result = (stack[0] * w[0] + stack[1] * w[1]).view(stack.shape[1:])
            return result + base.float() if base is not None else result
        raise ValueError(
            "multislerp: the weighted mean direction of the inputs is zero (antipodal inputs with balancing "
            "weights); change the weights"
        )
    mean = mean / mean_norm
    dots = (units * mean).sum(-1, keepdim=True)
    tangents = units - dots * mean
    tangent = (tangents * w.view(-1, 1)).sum(0)
    tangent_norm = torch.norm(tangent) + eps
    result = mean * torch.cos(tangent_norm) + tangent * (torch.sin(tangent_norm) / tangent_norm)
    result = (result * (norms.squeeze(-1) * w).sum()).view(stack.shape[1:])
    out: torch.Tensor = result + base.float() if base is not None else result
    return out


class MultislerpParams(MethodParams):
    """`multislerp` parameters: `normalize_weights` (default true), `eps` (default 1e-8)."""

    normalize_weights: bool | None = None
    eps: float | None = None


def _bind(params: MultislerpParams, ctx: MethodContext) -> Merger:
    return FnMerger(
        merge_multislerp,
        weights=ctx.weights,
        normalize_weights=True if params.normalize_weights is None else params.normalize_weights,
        eps=1e-8 if params.eps is None else params.eps,
    )


SPEC = MethodSpec(
    name="multislerp",
    summary="Barycentric spherical interpolation of several models (mergekit's multislerp).",
    params=MultislerpParams,
    bind=_bind,
    fn=merge_multislerp,
    needs_base=False,
    check=refuse_base("multislerp"),
    diagnostics=("elements",),
    reference="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
)
