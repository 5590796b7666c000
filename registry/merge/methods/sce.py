"""`sce`: Select, Calculate, Erase (FuseLLM / FuseChat 2.0, https://arxiv.org/abs/2408.07990), as mergekit 0.1.5.

Task vectors τᵢ = θᵢ − θ₀. Select: with `select_topk` < 1, keep the positions whose variance
across the inputs is in the top `select_topk` share of the positions with non-zero variance.
Calculate: input i's weight is mean(τᵢ²) over the tensor, normalised to sum 1 (equal weights when
the sum is near 0). Erase: TIES' sign election (sum) drops the disagreeing entries. The result is
θ₀ + Σ wᵢτᵢ·mᵢ / max(Σ wᵢmᵢ, 1e-6). The same float operations as mergekit (tested bit-identical,
fp32), except where equal variances straddle the selection cut (we keep the lowest flat indices).
The recipe's per-model weights are not used (mergekit's sce has none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import field_validator

from registry.merge.kernels.topk import cut_mask, find_cut, magnitude_keys
from registry.merge.methods.base import TensorStats, check_inputs, chunk_elements, flat_chunks, fp32_chunk
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodParams, MethodSpec


def merge_sce(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    select_topk: float = 1.0,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """SCE-merge `tensors` onto `base` (fp32 out), streamed in chunks after one whole-tensor reduction.

    Memory: one (n, numel) fp32 buffer for the weights' reduction (the very reduction mergekit runs,
    so the same bits; reused for the variances when selecting), then chunks.

    Raises:
        ValueError: without a base.
    """
    if base is None:
        raise ValueError("sce needs a base tensor")
    check_inputs(tensors, base)
    n, numel, device = len(tensors), base.numel(), base.device
    flats, flat_base = [t.reshape(-1) for t in tensors], base.reshape(-1)
    size = max(1, min(chunk_elements(device), numel))
    tvs_full = torch.empty((n, size), dtype=torch.float32, device=device)
    base_full = torch.empty(size, dtype=torch.float32, device=device)

    keep: torch.Tensor | None = None

    def deltas(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(fp32 base chunk, (n, c) task vectors of the chunk, selected), in reused buffers."""
        tvs = tvs_full[:, : part.stop - part.start]
        chunk_base = fp32_chunk(flat_base, part, base_full)
        for index, flat in enumerate(flats):
            torch.sub(fp32_chunk(flat, part, tvs[index]), chunk_base, out=tvs[index])
        if keep is not None:
            tvs.mul_(keep[part].float())  # mergekit: tvs * mask
        return chunk_base, tvs

    squares = torch.empty((n, numel), dtype=torch.float32, device=device)
    if select_topk < 1:  # Select (its variances in the squares' first row until they are needed)
        keep = _select(deltas, squares[0], numel, size, select_topk)
    # Calculate: mean(τᵢ²) over the tensor, reduced as mergekit reduces its (n, numel) stack.
    for part in flat_chunks(numel, size):
        _, tvs = deltas(part)
        torch.square(tvs, out=squares[:, part])
    weights = squares.mean(dim=1)
    del squares
    total = torch.sum(weights).item()
    weights = (torch.ones_like(weights) / n if abs(total) < 1e-6 else weights / total).unsqueeze(-1)
    # Erase, chunk by chunk, in reused buffers (the same operations as mergekit's whole-tensor ones).
    result = torch.empty(base.shape, dtype=torch.float32, device=device)
    flat_out = result.view(-1)
    f32: dict[str, Any] = {"dtype": torch.float32, "device": device}
    majority_full, merged_full, divisor_full = (torch.empty(size, **f32) for _ in range(3))
    erase_full, erased_full, product_full = (torch.empty((n, size), **f32) for _ in range(3))
    for part in flat_chunks(numel, size):
        c = part.stop - part.start
        chunk_base, tvs = deltas(part)
        majority, merged, divisor = majority_full[:c], merged_full[:c], divisor_full[:c]
        erase, erased, product = erase_full[:, :c], erased_full[:, :c], product_full[:, :c]
        torch.sum(tvs, dim=0, out=merged)  # the votes
        torch.ge(merged, 0, out=majority).mul_(2).sub_(1)  # (votes >= 0).float() * 2 - 1
        torch.eq(torch.sign(tvs, out=product), majority, out=erase)
        torch.mul(weights, erase, out=erased)
        torch.sum(torch.mul(tvs, erased, out=product), dim=0, out=merged)
        torch.sum(erased, dim=0, out=divisor).clamp_(min=1e-6)
        torch.add(chunk_base, merged.div_(divisor), out=flat_out[part])
        if stats is not None:
            torch.mul(tvs, erase, out=product)
            for index in range(n):
                stats.add_kept(index, int(torch.count_nonzero(product[index])))
    if stats is not None:
        stats.elements += numel
    return result


def _select(
    deltas: Callable[[slice], tuple[torch.Tensor, torch.Tensor]],
    var: torch.Tensor,
    numel: int,
    size: int,
    density: float,
) -> torch.Tensor:
    """True at the top `density` share (by variance across inputs) of the positions with non-zero variance.

    Args:
        deltas: the task vectors of a chunk (`merge_sce`'s).
        var: an fp32 buffer of numel entries (overwritten with the variances).
    """
    keep = torch.zeros(numel, dtype=torch.bool, device=var.device)
    if density <= 0:
        return keep
    for part in flat_chunks(numel, size):
        _, tvs = deltas(part)
        torch.var(tvs, dim=0, unbiased=False, out=var[part])
    k = int(torch.count_nonzero(var) * density)
    if k == 0:
        return keep
    keys = magnitude_keys(var)
    cut = find_cut(lambda: (keys,), k, numel=numel)
    left = cut.ties
    for part in flat_chunks(numel, size):
        _, left = cut_mask(keys[part], cut, left, out=keep[part])
    return keep


class SceParams(MethodParams):
    """`sce` parameters: `select_topk` in [0, 1] (default 1: keep every position)."""

    select_topk: float | None = None

    @field_validator("select_topk")
    @classmethod
    def _share(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError("select_topk is a share of the positions: write a number in [0, 1], e.g. 0.1")
        return value


def _bind(params: SceParams, ctx: MethodContext) -> Merger:
    return FnMerger(merge_sce, select_topk=1.0 if params.select_topk is None else params.select_topk)


SPEC = MethodSpec(
    name="sce",
    summary="Select by variance, calculate weights from the task vectors, erase sign conflicts (FuseChat 2.0).",
    params=SceParams,
    bind=_bind,
    fn=merge_sce,
    uses_weight=False,
    describe=lambda params, ctx: f"select_topk {1.0 if params.select_topk is None else params.select_topk}",
    diagnostics=("elements", "kept"),
    reference="https://arxiv.org/abs/2408.07990",
)
