"""`slerp`: spherical linear interpolation between the base and one other model, tensor by tensor.

mergekit 0.1.5's semantics (`mergekit.merge_methods.slerp`), followed operation for operation in
fp32: each tensor is one flat vector. With a = the base's tensor and b = the other model's, both
divided by their L2 norms (a norm ≤ 1e-8 counts as 1), dot = clamp(a·b, −1, 1); when |dot| > 0.9995
the tensors are (anti)collinear and the result is the linear interpolation (1 − t)·a + t·b;
otherwise θ = acos(dot) and the result is sin((1 − t)θ)/sin θ · a + sin(tθ)/sin θ · b, applied to
the unnormalized tensors. `t = 0` gives the base, `t = 1` the other model. Norms and the dot
product are accumulated over chunks of 1 M entries as mergekit does (norms of chunk norms), so
the fp32 results agree to rounding.

Parameters: `t` in [0, 1] (required). Exactly two models: the base and one other. No weights,
densities, `normalize` or `lambda`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import field_validator

from registry.merge.methods.base import TensorStats, check_inputs
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec

_CHUNK_ELEMENTS = 1024 * 1024  # mergekit's column-chunk budget (the chunks change the float sums)
_DOT_THRESHOLD = 0.9995
_EPS = 1e-8


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Slerp from `v0` (t = 0) to `v1` (t = 1) as flat vectors; fp32 math (fp64 stays fp64).

    Args:
        t: the interpolation factor.
        v0: the base tensor.
        v1: the other tensor, same shape.

    Returns:
        The interpolated tensor, fp32 (fp64 for fp64 inputs).
    """
    dtype = torch.float64 if v0.dtype == torch.float64 else torch.float32
    a = v0.reshape(1, -1)  # mergekit's batch of one output: the whole tensor is one row
    b = v1.reshape(a.shape)
    tt = torch.tensor([[t]], dtype=dtype, device=v0.device)
    if not a.shape[1]:
        return ((1 - tt) * a.to(dtype) + tt * b.to(dtype)).reshape(v0.shape)
    chunk = max(1, _CHUNK_ELEMENTS // a.shape[0])
    starts = range(0, a.shape[1], chunk)
    norm_a = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(a[:, s : s + chunk].to(dtype), dim=1, keepdim=True) for s in starts]),
        dim=0,
    )
    norm_b = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(b[:, s : s + chunk].to(dtype), dim=1, keepdim=True) for s in starts]),
        dim=0,
    )
    norm_a = torch.where(norm_a > _EPS, norm_a, 1)
    norm_b = torch.where(norm_b > _EPS, norm_b, 1)
    parts = []
    for s in starts:
        x = a[:, s : s + chunk].to(dtype) / norm_a
        y = b[:, s : s + chunk].to(dtype) / norm_b
        parts.append((x * y).sum(dim=1, keepdim=True))
    dot = torch.stack(parts).sum(dim=0).clamp(-1, 1)
    linear = dot.abs() > _DOT_THRESHOLD
    theta = torch.acos(torch.where(linear, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    coef_b = torch.where(linear, tt, torch.sin(tt * theta) / sin_theta)
    result = torch.empty(a.shape, dtype=dtype, device=a.device)
    for s in starts:
        result[:, s : s + chunk] = coef_a * a[:, s : s + chunk].to(dtype) + coef_b * b[:, s : s + chunk].to(dtype)
    return result.reshape(v0.shape)


def merge_slerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    t: float,
    weights: Sequence[float] = (),
    densities: Sequence[float] = (),
    normalize: bool = False,
    lambda_: float = 1.0,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """Slerp from `base` to the one tensor in `tensors` (any float dtype in, fp32 out).

    Args:
        tensors: exactly one input, same shape as `base`.
        base: the base tensor (t = 0).
        t: in [0, 1].
        weights, densities, normalize, lambda_: ignored (common signature).
        stats: when given, `elements` is added.

    Returns:
        The merged tensor.

    Raises:
        ValueError: without a base, with other than one input, or t outside [0, 1].
    """
    if base is None:
        raise ValueError("slerp needs a base tensor")
    check_inputs(tensors, base)
    if len(tensors) != 1:
        raise ValueError(f"slerp interpolates between the base and ONE other model, got {len(tensors)} inputs")
    if not 0 <= t <= 1:
        raise ValueError(f"t={t} must be within [0, 1]")
    result = slerp(t, base, tensors[0])
    if stats is not None:
        stats.elements += base.numel()
    return result if result.dtype == torch.float32 else result.float()


class SlerpParams(MethodParams):
    """`slerp` parameters: `t` in [0, 1], the position between the base (0) and the other model (1)."""

    t: float

    @field_validator("t")
    @classmethod
    def _t_range(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("t is the position between the base (0) and the other model (1): write a number in [0, 1]")
        return value


def _bind(params: SlerpParams, ctx: MethodContext) -> Merger:
    return FnMerger(merge_slerp, t=params.t)


def _describe(params: SlerpParams, ctx: MethodContext) -> str:
    return f"t {params.t}"


SPEC = MethodSpec(
    name="slerp",
    summary="Spherical interpolation of each tensor between the base and one other model (mergekit's slerp).",
    params=SlerpParams,
    bind=_bind,
    fn=merge_slerp,
    uses_weight=False,
    max_inputs=1,
    describe=_describe,
    diagnostics=("elements",),
    reference="https://en.wikipedia.org/wiki/Slerp",
)
