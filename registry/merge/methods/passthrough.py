"""`passthrough`: one model's tensors, optionally scaled (mergekit's passthrough, without slices).

The result is θ₁ (· `scale` when given). Without `slices:` it copies one model, which is what
mergekit does with a `models:` list of one. Bit-identical to mergekit (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from registry.merge.methods.base import TensorStats, check_inputs
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec, refuse_base


def merge_passthrough(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """The one input (fp32), times `scale` when given.

    Raises:
        ValueError: with other than one input.
    """
    check_inputs(tensors, None)
    if len(tensors) != 1:
        raise ValueError(f"passthrough copies ONE model, got {len(tensors)} inputs")
    if stats is not None:
        stats.elements += tensors[0].numel()
    value = tensors[0].float()
    return value if scale is None else value * scale


class PassthroughParams(MethodParams):
    """`passthrough` parameters: `scale` (optional), a factor applied to every tensor."""

    scale: float | None = None


def _bind(params: PassthroughParams, ctx: MethodContext) -> Merger:
    return FnMerger(merge_passthrough, scale=params.scale)


SPEC = MethodSpec(
    name="passthrough",
    summary="Copy one model's tensors, optionally scaled (mergekit's passthrough without slices).",
    params=PassthroughParams,
    bind=_bind,
    fn=merge_passthrough,
    needs_base=False,
    uses_weight=False,
    max_inputs=1,
    check=refuse_base("passthrough"),
    describe=lambda params, ctx: f"scale {params.scale}",
    diagnostics=("elements",),
    reference="https://github.com/arcee-ai/mergekit",
)
