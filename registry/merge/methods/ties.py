"""`ties`: TrIm, Elect Sign & Merge (Yadav et al. 2023, https://arxiv.org/abs/2306.01708).

Per input i, τᵢ = θᵢ − θ₀ is trimmed to its k = max(1, int(dᵢ · numel)) entries of largest |τᵢ|
(dᵢ ≥ 1 keeps all, dᵢ ≤ 0 keeps none), scaled by wᵢ, the sign γ = sign(Σ wᵢτ̂ᵢ) is elected (an
exact-zero sum elects +), entries agreeing with γ are kept (zeros never count), their sum is
divided by the sum of their weights (`normalize`, default on; a zero divisor counts as 1), scaled
by λ when λ ≠ 1 and added to θ₀.

This matches mergekit 0.1.5 `ties` bit for bit on fp32 inputs: the same float operations in the
same order (delta, mask multiply, weight multiply, sum over the inputs axis, compare, divide). The
one allowed difference: where equal magnitudes straddle the trimming cut, we keep the lowest
flat indices; mergekit keeps whichever its sort puts first (`registry.merge.topk`).

`merge_elected` is the shared core; `ties_sv` adds its slack step through `protect`/`cuts`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from registry.merge.methods.base import TensorStats, check_inputs, flat_chunks
from registry.merge.topk import Cut, ascending_keys, cut_mask, find_cut, magnitude_keys


def trim_cut(tensor: torch.Tensor, base: torch.Tensor, density: float) -> Cut:
    """The trimming cut of τ = tensor − base at `density` (mergekit's `magnitude` k).

    Args:
        tensor: an input, fp32.
        base: the base, fp32, same shape.
        density: the kept fraction.

    Returns:
        The cut over `magnitude_keys(τ)` in flat order.
    """
    numel = tensor.numel()
    if density >= 1:
        return Cut.keep_all()
    if density <= 0 or numel == 0:
        return Cut.keep_none()
    k = max(1, int(density * numel))
    flat, flat_base = tensor.reshape(-1), base.reshape(-1)

    def keys():
        for part in flat_chunks(numel):
            yield magnitude_keys(flat[part] - flat_base[part])

    return find_cut(keys, k, numel=numel)


class _Trimmer:
    """Walks the chunks of all inputs in flat order, producing trimmed, weighted deltas."""

    def __init__(self, tensors: Sequence[torch.Tensor], base: torch.Tensor, cuts: Sequence[Cut], weights: Sequence[float]) -> None:
        self.flats = [t.reshape(-1) for t in tensors]
        self.flat_base = base.reshape(-1)
        self.cuts = list(cuts)
        self.ties_left = [cut.ties for cut in cuts]
        # (n, 1): broadcast over a (n, chunk) stack, as mergekit's (n, 1, ..., 1) weights.
        self.weight = torch.tensor(list(weights), dtype=torch.float32, device=base.device).unsqueeze(-1)

    def deltas(self, part: slice) -> torch.Tensor:
        """(n, chunk) fp32: trimmed deltas of this chunk times the weights."""
        chunk_base = self.flat_base[part]
        out = torch.empty((len(self.flats), chunk_base.numel()), dtype=torch.float32, device=chunk_base.device)
        for index, (flat, cut) in enumerate(zip(self.flats, self.cuts)):
            delta = flat[part] - chunk_base
            if cut == Cut.keep_none():
                out[index].zero_()  # mergekit: zeros_like, not delta * 0 (no -0.0)
            elif cut == Cut.keep_all():
                out[index] = delta
            else:
                mask, self.ties_left[index] = cut_mask(magnitude_keys(delta), cut, self.ties_left[index])
                torch.mul(delta, mask.to(torch.float32), out=out[index])
        out.mul_(self.weight)
        return out


def elect(deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign votes Σ wᵢτ̂ᵢ, elected sign as fp32 ±1) over the inputs axis of (n, chunk) deltas."""
    sign_weight = deltas.sum(dim=0)
    majority = (sign_weight >= 0).to(torch.float32) * 2 - 1
    return sign_weight, majority


def elected_chunks(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    protect: Sequence[int] = (),
    slack_cuts: Sequence[Cut] = (),
    stats: TensorStats | None = None,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Trim, weight and elect chunk by chunk, applying the slack step of the first protected inputs.

    Args:
        tensors, base, weights, densities: as `merge_ties`.
        protect: protected input indices; the first `len(slack_cuts)` of them get their slack step.
        slack_cuts: per protected input, a cut over `ascending_keys` of its conflict margins in
            flat order; the conflicts it keeps get their elected sign flipped to that input's.
        stats: when given, `conflicts` and `rescued` are added for the stepped inputs.

    Yields:
        (flat slice, weighted trimmed deltas (n, c), their signs (n, c), votes Σ wᵢτ̂ᵢ (c,),
        elected sign ±1 (c,)), in flat order.
    """
    check_inputs(tensors, base, weights=weights, densities=densities)
    if len(slack_cuts) > len(protect):
        raise ValueError(f"{len(slack_cuts)} slack cuts for {len(protect)} protected inputs")
    trimmer = _Trimmer(tensors, base, [trim_cut(t, base, d) for t, d in zip(tensors, densities)], weights)
    slack_left = [cut.ties for cut in slack_cuts]
    for part in flat_chunks(base.numel()):
        deltas = trimmer.deltas(part)
        sign = deltas.sign()
        sign_weight, majority = elect(deltas)
        for step, (index, cut) in enumerate(zip(protect, slack_cuts)):
            conflict = (sign[index] != 0) & (sign[index] != majority)
            if stats is not None:
                stats.conflicts[index] = stats.conflicts.get(index, 0) + int(conflict.sum())
            if cut == Cut.keep_none():
                continue
            positions = torch.nonzero(conflict).squeeze(1)
            keys = ascending_keys(sign_weight[positions].abs())
            rescue, slack_left[step] = cut_mask(keys, cut, slack_left[step])
            flipped = positions[rescue]
            majority[flipped] = sign[index][flipped]
            if stats is not None:
                stats.rescued[index] = stats.rescued.get(index, 0) + int(flipped.numel())
        yield part, deltas, sign, sign_weight, majority


def merge_elected(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool,
    lambda_: float,
    stats: TensorStats | None,
    protect: Sequence[int] = (),
    slack_cuts: Sequence[Cut] = (),
) -> torch.Tensor:
    """TIES with an optional slack step (see `ties_sv`); with no `slack_cuts` it is plain TIES.

    Args:
        tensors, base, weights, densities, normalize, lambda_, stats: as `merge_ties`.
        protect: protected input indices (counted in `stats`), in the order their slack step applies.
        slack_cuts: as `elected_chunks` (empty: plain TIES).

    Returns:
        The merged tensor (fp32).
    """
    weight = torch.tensor(list(weights), dtype=torch.float32, device=base.device).unsqueeze(-1)
    result = torch.empty(base.shape, dtype=torch.float32, device=base.device)
    flat_out, flat_base = result.view(-1), base.reshape(-1)
    chunks = elected_chunks(
        tensors, base, weights=weights, densities=densities, protect=protect, slack_cuts=slack_cuts, stats=stats
    )
    for part, deltas, sign, _, majority in chunks:
        mask = sign == majority
        mixed = (deltas * mask).sum(dim=0)
        divisor = (weight * mask).sum(dim=0)
        divisor[divisor == 0] = 1
        if normalize:
            mixed /= divisor
        if lambda_ != 1:
            mixed *= lambda_
        torch.add(flat_base[part], mixed, out=flat_out[part])
        if stats is not None:
            _count(stats, deltas, sign, majority, protect)
    return result


def _count(stats: TensorStats, deltas: torch.Tensor, sign: torch.Tensor, majority: torch.Tensor, protect: Sequence[int]) -> None:
    stats.elements += deltas.shape[1]
    for index in range(deltas.shape[0]):
        stats.add_kept(index, int(torch.count_nonzero(deltas[index])))
    stats.sign_conflicts += int(((sign > 0).any(dim=0) & (sign < 0).any(dim=0)).sum())
    for index in protect:
        lost = int(((sign[index] != 0) & (sign[index] != majority)).sum())
        stats.protected_discarded[index] = stats.protected_discarded.get(index, 0) + lost


def merge_ties(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool = True,
    lambda_: float = 1.0,
    stats: TensorStats | None = None,
    protect: Sequence[int] = (),
) -> torch.Tensor:
    """TIES-merge `tensors` onto `base` (fp32 in, fp32 out).

    Args:
        tensors: the fine-tuned inputs, fp32, same shape as `base`.
        base: the base tensor.
        weights: one weight per input, applied before the sign election.
        densities: one kept fraction per input.
        normalize: divide by the summed weights of the agreeing entries.
        lambda_: scale of the merged task vector.
        stats: when given, counts are added (kept, sign conflicts; for `protect`, the conflicts
            and discarded entries of those inputs).
        protect: inputs whose discarded entries `stats` reports (no effect on the result).

    Returns:
        The merged tensor.

    Raises:
        ValueError: without a base, or on mismatched shapes or list lengths.
    """
    if base is None:
        raise ValueError("ties needs a base tensor")
    # Plain TIES never flips: keep-none slack cuts only count each protected input's conflicts.
    return merge_elected(
        tensors,
        base,
        weights=weights,
        densities=densities,
        normalize=normalize,
        lambda_=lambda_,
        stats=stats,
        protect=protect,
        slack_cuts=[Cut.keep_none()] * len(protect) if stats is not None else (),
    )
