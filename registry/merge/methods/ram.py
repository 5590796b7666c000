"""`ram` and `ramplus_tl`: Reinforced Agent Merging (https://arxiv.org/abs/2601.13572), as mergekit 0.1.5.

Task vectors τᵢ = θᵢ − θ₀; an entry contributes where |τᵢ| > `epsilon`. Entries only one input
changes are taken whole; entries several change are averaged over those. `ramplus_tl` scales the
unique entries of input i by 1 + r·clamp(ρᵢ, 0, α), ρᵢ = (its shared entries) / (its unique
entries) in this tensor. The same float operations as mergekit (tested bit-identical, fp32).
Per-model weights are not used (mergekit's ram has none).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from registry.merge.methods.base import TensorStats, check_inputs, chunk_elements, flat_chunks, fp32_chunk
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec


def merge_ram(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    epsilon: float = 1e-5,
    plus: bool = False,
    r: float = 0.1,
    alpha: float = 0.2,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """RAM (or RAM+ tensor-local with `plus`) of `tensors` onto `base` (fp32 out).

    Raises:
        ValueError: without a base.
    """
    if base is None:
        raise ValueError("ram needs a base tensor")
    check_inputs(tensors, base)
    n, numel, device = len(tensors), base.numel(), base.device
    flats, flat_base = [t.reshape(-1) for t in tensors], base.reshape(-1)
    size = max(1, min(chunk_elements(device), numel))
    tv_full = torch.empty((n, size), dtype=torch.float32, device=device)
    base_full = torch.empty(size, dtype=torch.float32, device=device)

    def chunk(part: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fp32 base, task vectors (n, c), changed, shared, unique) of one chunk (mergekit's ops)."""
        tv = tv_full[:, : part.stop - part.start]
        chunk_base = fp32_chunk(flat_base, part, base_full)
        for index, flat in enumerate(flats):
            torch.sub(fp32_chunk(flat, part, tv[index]), chunk_base, out=tv[index])
        nonzero = tv.abs() > epsilon
        counts = nonzero.sum(dim=0, keepdim=True)
        return chunk_base, tv, nonzero, counts, counts > 1

    scale = None
    if plus:  # ρᵢ needs the whole tensor's counts first (exact integers, summed by chunks)
        shared = torch.zeros(n, dtype=torch.int64, device=device)
        alone = torch.zeros(n, dtype=torch.int64, device=device)
        for part in flat_chunks(numel, size):
            _, _, nonzero, counts, overlap = chunk(part)
            shared += (nonzero & overlap).sum(dim=1)
            alone += (nonzero & (counts == 1)).sum(dim=1)
        rho = shared / alone.clamp(min=epsilon)
        scale = (1 + r * rho.clamp(min=0, max=alpha)).unsqueeze(-1)
    result = torch.empty(base.shape, dtype=torch.float32, device=device)
    flat_out = result.view(-1)
    for part in flat_chunks(numel, size):
        chunk_base, tv, nonzero, counts, overlap = chunk(part)
        unique = counts == 1
        tv_z = tv * nonzero
        unique_part = tv_z * unique if scale is None else tv_z * unique * scale
        merged = (unique_part + (tv_z * overlap / counts.clamp(min=1))).sum(dim=0, keepdim=True)
        torch.add(chunk_base, merged.reshape(-1), out=flat_out[part])
        if stats is not None:
            for index in range(n):
                stats.add_kept(index, int(nonzero[index].sum()))
    if stats is not None:
        stats.elements += numel
    return result


class RamParams(MethodParams):
    """`ram` parameters: `epsilon` (default 1e-5), below which an entry does not count as changed."""

    epsilon: float | None = None


class RamPlusParams(RamParams):
    """`ramplus_tl` parameters: `epsilon`, `r` (default 0.1) and `alpha` (default 0.2)."""

    r: float | None = None
    alpha: float | None = None


def _bind(params: RamParams, ctx: MethodContext) -> Merger:
    return FnMerger(merge_ram, epsilon=1e-5 if params.epsilon is None else params.epsilon)


def _bind_plus(params: RamPlusParams, ctx: MethodContext) -> Merger:
    return FnMerger(
        merge_ram,
        plus=True,
        epsilon=1e-5 if params.epsilon is None else params.epsilon,
        r=0.1 if params.r is None else params.r,
        alpha=0.2 if params.alpha is None else params.alpha,
    )


def _merge_ramplus(*args: object, **kwargs: object) -> torch.Tensor:
    return merge_ram(*args, plus=True, **kwargs)  # type: ignore[arg-type]


RAM = MethodSpec(
    name="ram",
    summary="Reinforced Agent Merging: unique changes kept whole, shared ones averaged.",
    params=RamParams,
    bind=_bind,
    fn=merge_ram,
    uses_weight=False,
    diagnostics=("elements", "kept"),
    reference="https://arxiv.org/abs/2601.13572",
)
RAMPLUS_TL = MethodSpec(
    name="ramplus_tl",
    summary="RAM+ (tensor-local): RAM with unique changes scaled by their share of overlap.",
    params=RamPlusParams,
    bind=_bind_plus,
    fn=_merge_ramplus,
    uses_weight=False,
    diagnostics=("elements", "kept"),
    reference="https://arxiv.org/abs/2601.13572",
)
