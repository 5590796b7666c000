"""`karcher`: the Karcher (Fréchet) mean of the models on the hypersphere (mergekit's karcher).

Each flattened tensor is split into norm and direction; the equal-weight Riemannian mean of the
directions is found by at most `max_iter` gradient steps (stop when the tangent is below `tol`);
the result is that direction times the mean norm. The same float operations as mergekit 0.1.5
(tested equal). All listed models take part, without a base.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from registry.merge.methods.base import TensorStats, check_inputs
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec, refuse_base


def karcher_mean(
    tensors: Sequence[torch.Tensor], alphas: Sequence[float], *, max_iter: int, tol: float
) -> torch.Tensor:
    """The weighted Karcher mean of fp32 `tensors` (see the module docstring)."""
    if len(tensors) == 1:
        return tensors[0]
    norms, units = [], []
    for tensor in tensors:
        norm = torch.linalg.vector_norm(tensor)
        norms.append(norm)
        units.append(torch.zeros_like(tensor) if norm.item() == 0.0 else tensor / norm)
    valid = [i for i, norm in enumerate(norms) if norm.item() > tol]
    if not valid:
        return sum(tensor * 0 for tensor in tensors)  # type: ignore[return-value]
    total = sum(alphas[i] for i in valid)
    weights = [alphas[i] / total for i in valid]
    chosen = [units[i] for i in valid]
    mean = torch.zeros_like(chosen[0])
    for alpha, unit in zip(weights, chosen, strict=True):
        mean += alpha * unit
    mean_norm = torch.linalg.vector_norm(mean)
    mean = chosen[0].clone() if mean_norm.item() < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for alpha, unit in zip(weights, chosen, strict=True):
            dot = torch.clamp(torch.dot(mean.flatten(), unit.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            tangent += alpha * (theta / torch.sin(theta)) * (unit - dot * mean)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if tangent_norm.item() < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if unit_norm.item() > tol:
            mean = mean / unit_norm
    scale = sum(alpha * norm for alpha, norm in zip(alphas, norms, strict=True))
    out: torch.Tensor = scale * mean
    return out


def merge_karcher(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    *,
    max_iter: int = 10,
    tol: float = 1e-5,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """The equal-weight Karcher mean of `tensors` (fp32 out)."""
    check_inputs(tensors, base)
    if stats is not None:
        stats.elements += tensors[0].numel()
    inputs = [t.float() for t in tensors]
    return karcher_mean(inputs, [1.0 / len(inputs)] * len(inputs), max_iter=max_iter, tol=tol)


class KarcherParams(MethodParams):
    """`karcher` parameters: `max_iter` (default 10), `tol` (default 1e-5)."""

    max_iter: int | None = None
    tol: float | None = None


def _bind(params: KarcherParams, ctx: MethodContext) -> Merger:
    return FnMerger(
        merge_karcher,
        max_iter=10 if params.max_iter is None else params.max_iter,
        tol=1e-5 if params.tol is None else params.tol,
    )


SPEC = MethodSpec(
    name="karcher",
    summary="The Karcher mean of the models on the hypersphere (mergekit's karcher).",
    params=KarcherParams,
    bind=_bind,
    fn=merge_karcher,
    needs_base=False,
    uses_weight=False,
    min_inputs=2,
    check=refuse_base("karcher"),
    diagnostics=("elements",),
    reference="https://arxiv.org/abs/2603.04972",
)
