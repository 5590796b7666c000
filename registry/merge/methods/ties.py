"""`ties`: TrIm, Elect Sign & Merge (Yadav et al. 2023, https://arxiv.org/abs/2306.01708).

Per input i, τᵢ = θᵢ − θ₀ is trimmed to its k = max(1, int(dᵢ · numel)) entries of largest |τᵢ|
(dᵢ ≥ 1 keeps all, dᵢ ≤ 0 keeps none), scaled by wᵢ, the sign γ = sign(Σ wᵢτ̂ᵢ) is elected (an
exact-zero sum elects +), entries agreeing with γ are kept (zeros never count), their sum is
divided by the sum of their weights (`normalize`, default on; a zero divisor counts as 1), scaled
by λ when λ ≠ 1 and added to θ₀.

This matches mergekit 0.1.5 `ties` bit for bit on fp32 inputs: the same float operations in the
same order (delta, mask multiply, weight multiply, sum over the inputs axis, compare, divide). The
one allowed difference: where equal magnitudes straddle the trimming cut, we keep the lowest
flat indices; mergekit keeps whichever its sort puts first (`registry.merge.kernels.topk`).

`merge_elected` is the shared core; `ties_sv` adds its slack step through `protect`/`cuts`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from registry.merge.kernels import fused
from registry.merge.kernels.topk import Cut, ascending_keys, cut_mask, find_cut_sampled, magnitude_keys
from registry.merge.kernels.trim import kept_count, trim_target
from registry.merge.methods.base import (
    TensorStats,
    check_inputs,
    chunk_elements,
    flat_chunks,
    fp32_chunk,
    sum_inputs,
)
from registry.merge.methods.plugin import (
    ElectionParams,
    FnMerger,
    Merger,
    MethodContext,
    MethodSpec,
    check_election,
    check_protect,
    election_of,
    protected_by_role,
)

_SAMPLE = 1 << 18  # entries sampled (strided) to guess where the trimming cut falls


def trim_cut(tensor: torch.Tensor, base: torch.Tensor, density: float) -> Cut:
    """The trimming cut of τ = tensor − base at `density` (mergekit's `magnitude` k).

    Args:
        tensor: an input (any float dtype).
        base: the base, same shape.
        density: the kept fraction.

    Returns:
        The cut over `magnitude_keys(τ)` in flat order.
    """
    k = trim_target(density, tensor.numel())
    return k if isinstance(k, Cut) else top_cut(tensor, base, k)


def top_cut(tensor: torch.Tensor, base: torch.Tensor, k: int) -> Cut:
    """The cut keeping the k entries of largest |tensor − base| (ties: lowest flat index first).

    k <= 0 keeps none, k >= numel keeps all.
    """
    numel = tensor.numel()
    if k <= 0:
        return Cut.keep_none()
    if k >= numel:
        return Cut.keep_all()
    flat, flat_base = tensor.reshape(-1), base.reshape(-1)
    size = min(chunk_elements(base.device), numel)
    delta = torch.empty(size, dtype=torch.float32, device=base.device)
    base_fp32 = torch.empty(size, dtype=torch.float32, device=base.device)

    def keys_of(part: slice) -> torch.Tensor:
        view = delta[: part.stop - part.start]
        torch.sub(fp32_chunk(flat, part, view), fp32_chunk(flat_base, part, base_fp32), out=view)
        return view.abs_().view(torch.int32)  # magnitude keys, computed in place

    stride = max(1, numel // _SAMPLE)
    sample = magnitude_keys(flat[::stride].float() - flat_base[::stride].float())
    return find_cut_sampled(keys_of, k, numel=numel, sample=sample, parts=lambda: flat_chunks(numel, size))


def top_cuts(tensors: Sequence[torch.Tensor], base: torch.Tensor, ks: Sequence[int]) -> list[Cut]:
    """`top_cut` of each (tensor, k) pair; the fused kernels find them in parallel where they can."""
    if _fused_ok(*tensors, base):
        found = fused.top_cuts(tensors, base, ks)
        return [f if f is not None else top_cut(t, base, k) for f, t, k in zip(found, tensors, ks, strict=True)]
    return [top_cut(t, base, k) for t, k in zip(tensors, ks, strict=True)]


def trim_cuts(tensors: Sequence[torch.Tensor], base: torch.Tensor, densities: Sequence[float]) -> list[Cut]:
    """`trim_cut` of every input (the costly part of TIES; share it between passes over a tensor).

    On CPU with bf16/fp32 tensors the fused kernels find them (same cuts), inputs in parallel.
    """
    if _fused_ok(*tensors, base):
        found = fused.find_cuts(tensors, base, densities)
        return [
            f[0] if f is not None else trim_cut(t, base, d) for f, t, d in zip(found, tensors, densities, strict=False)
        ]
    return [trim_cut(t, base, d) for t, d in zip(tensors, densities, strict=False)]


class Workspace:
    """Buffers for one chunk of n inputs, reused for every chunk so the work stays in cache.

    Masks are fp32 0/1, not bool: on CPU, float compares into float outputs and float products
    are several times faster than bool ones, and x · 1.0 / x · 0.0 give the same bits as
    mergekit's multiplications by its masks.
    """

    def __init__(self, n: int, size: int, device: torch.device) -> None:
        f32: dict[str, Any] = {"dtype": torch.float32, "device": device}
        self.deltas = torch.empty((n, size), **f32)  # (n, c) trimmed, weighted deltas
        self.signed = torch.empty((n, size), **f32)  # (n, c) deltas · elected sign
        self.agree = torch.empty((n, size), **f32)  # (n, c) 1.0 where an entry agrees with γ
        self.scratch = torch.empty((n, size), **f32)  # (n, c) products before their sums
        self.base = torch.empty(size, **f32)  # this chunk of the base, in fp32
        self.magnitude = torch.empty(size, **f32)
        self.keep = torch.empty(size, **f32)  # 1.0 where an entry survives trimming
        self.equal = torch.empty(size, **f32)  # 1.0 where |delta| equals the trimming threshold
        self.votes = torch.empty(size, **f32)  # Σ wᵢτ̂ᵢ
        self.majority = torch.empty(size, **f32)  # elected sign, ±1
        self.mixed = torch.empty(size, **f32)
        self.divisor = torch.empty(size, **f32)
        self.one = torch.ones((), **f32)

    def view(self, c: int) -> Workspace:
        """The first c columns of every buffer (the last chunk is shorter)."""
        out = object.__new__(Workspace)
        for name, value in vars(self).items():
            out.__dict__[name] = value if value.dim() == 0 else value[..., :c]
        return out


def cut_keep(magnitude: torch.Tensor, cut: Cut, ties_left: int, *, out: torch.Tensor, equal: torch.Tensor) -> int:
    """fp32 1.0/0.0 into `out` where one chunk's entries survive a magnitude cut; returns the ties left.

    The one rule of every magnitude cut (TIES' trimming, Breadcrumbs' two cuts): keep |τ| above the
    cut's threshold, plus its ties lowest flat index first while the quota lasts. Float compares
    into float buffers (several times faster on CPU than bool ones).

    Args:
        magnitude: |τ| of the chunk (fp32).
        cut: a cut over `magnitude_keys` of the whole tensor in flat order (keep-all and keep-none too).
        ties_left: ties still to keep (start with `cut.ties`; pass on what this returns).
        out: fp32 buffer like `magnitude`, written.
        equal: fp32 scratch like `magnitude`.
    """
    if cut == Cut.keep_all():
        out.fill_(1.0)
        return ties_left
    if cut == Cut.keep_none():
        out.zero_()
        return ties_left
    threshold = cut.value
    torch.gt(magnitude, threshold, out=out)
    if ties_left > 0:
        torch.eq(magnitude, threshold, out=equal)
        count = int(equal.sum())
        if count <= ties_left:  # keep every tie of this chunk: no positions needed
            out.add_(equal)
            ties_left -= count
        elif count:  # the quota runs out here: the first ties_left, lowest index first
            positions = torch.nonzero(equal).squeeze(1)[:ties_left]
            out[positions] = 1.0
            ties_left = 0
    return ties_left


def _trim(delta: torch.Tensor, cut: Cut, ties_left: int, ws: Workspace) -> int:
    """Zero the entries of one chunk's delta (in place) that `cut` drops; returns the ties left."""
    torch.abs(delta, out=ws.magnitude)
    ties_left = cut_keep(ws.magnitude, cut, ties_left, out=ws.keep, equal=ws.equal)
    delta.mul_(ws.keep)  # as mergekit's delta * mask: dropped negatives become -0.0
    return ties_left


DeltaFill = Callable[[slice, "Workspace"], None]
Sparsifier = Callable[[TensorStats | None], DeltaFill]


def _trim_fill(
    flats: Sequence[torch.Tensor],
    cuts: Sequence[Cut],
    densities: Sequence[float],
    numel: int,
    stats: TensorStats | None,
) -> DeltaFill:
    """TIES' trimming as a chunk fill: deltas against the chunk's base, cut by magnitude."""
    ties_left = [cut.ties for cut in cuts]
    if stats is not None:
        for index, (cut, density) in enumerate(zip(cuts, densities, strict=False)):
            known = kept_count(cut, max(1, int(density * numel)))
            stats.add_kept(index, known or 0)

    def fill(part: slice, ws: Workspace) -> None:
        for index, (flat, cut) in enumerate(zip(flats, cuts, strict=False)):
            delta = ws.deltas[index]
            if cut == Cut.keep_none():
                delta.zero_()  # mergekit: zeros_like, not delta * 0 (no -0.0)
                continue
            torch.sub(fp32_chunk(flat, part, delta), ws.base, out=delta)
            if cut == Cut.keep_all():
                if stats is not None:
                    stats.add_kept(index, int(torch.count_nonzero(delta)))
            else:
                ties_left[index] = _trim(delta, cut, ties_left[index], ws)

    return fill


def _vote(ws: Workspace, majority_sign_method: str) -> None:
    """`ws.votes` from `ws.deltas` as they stand: their sum (`total`) or the sum of their signs (`frequency`)."""
    if majority_sign_method == "frequency":
        torch.sign(ws.deltas, out=ws.scratch)  # mergekit's get_mask(method="count"): sign(delta).sum(0)
        sum_inputs(ws.scratch, out=ws.votes)
    else:
        sum_inputs(ws.deltas, out=ws.votes)


def elected_chunks(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    protect: Sequence[int] = (),
    slack_cuts: Sequence[Cut] = (),
    stats: TensorStats | None = None,
    trims: Sequence[Cut] | None = None,
    sparsify: Sparsifier | None = None,
    election_weights: str = "before",
    majority_sign_method: str = "total",
) -> Iterator[tuple[slice, Workspace]]:
    """Trim, weight and elect chunk by chunk, applying the slack step of the first protected inputs.

    Args:
        tensors, base, weights, densities: as `merge_ties`.
        protect: protected input indices; the first `len(slack_cuts)` of them get their slack step.
        slack_cuts: per protected input, a cut over `ascending_keys` of its conflict margins in
            flat order; the conflicts it keeps get their elected sign flipped to that input's.
        stats: when given, `kept`, `conflicts` and `rescued` are added.
        trims: the inputs' trimming cuts when already known (`trim_cuts`), else computed here.
        sparsify: another method's sparsification instead of TIES' trimming (DARE's drop, ...):
            called once per pass with `stats`, it gives the function that fills a chunk's
            `deltas` (unweighted) from `base` (already in the workspace) and counts `kept`.
        election_weights: `before` (mergekit): vote on the weighted deltas; `after`: on the unweighted.
        majority_sign_method: `total` (mergekit's `sum`): the sign of the sum; `frequency`: of the count.

    Yields:
        (flat slice, workspace): `deltas` (n, c) weighted trimmed deltas, `votes` Σ wᵢτ̂ᵢ,
        `majority` the elected sign (±1, after the slack), `signed` = deltas · majority. The
        buffers are reused by the next chunk.
    """
    check_inputs(tensors, base, weights=weights, densities=densities)
    if len(slack_cuts) > len(protect):
        raise ValueError(f"{len(slack_cuts)} slack cuts for {len(protect)} protected inputs")
    if election_weights not in ("before", "after") or majority_sign_method not in ("total", "frequency"):
        raise ValueError(f"unknown election {election_weights!r}/{majority_sign_method!r}")
    n, numel = len(tensors), base.numel()
    slack_left = [cut.ties for cut in slack_cuts]
    flats, flat_base = [t.reshape(-1) for t in tensors], base.reshape(-1)
    if sparsify is None:
        cuts = list(trims) if trims is not None else trim_cuts(tensors, base, densities)
        fill = _trim_fill(flats, cuts, densities, numel, stats)
    else:
        fill = sparsify(stats)
    # (n, 1): broadcast over the (n, c) deltas, as mergekit's (n, 1, ..., 1) weights.
    weight = torch.tensor(list(weights), dtype=torch.float32, device=base.device).unsqueeze(-1)
    size = min(chunk_elements(base.device), numel)
    full = Workspace(n, size, base.device)
    for part in flat_chunks(numel, size):
        ws = full.view(part.stop - part.start)
        ws.base = fp32_chunk(flat_base, part, ws.base)
        fill(part, ws)
        if election_weights == "after":
            _vote(ws, majority_sign_method)
            ws.deltas.mul_(weight)
        else:
            ws.deltas.mul_(weight)
            _vote(ws, majority_sign_method)
        # γ = +1 where votes >= 0 (an exact-zero vote elects +; -0.0 + 0.0 is +0.0), else -1.
        torch.add(ws.votes, 0.0, out=ws.majority)
        torch.copysign(ws.one, ws.majority, out=ws.majority)
        # deltaᵢ · γ > 0 exactly when deltaᵢ is non-zero and agrees with γ (· ±1 is exact).
        torch.mul(ws.deltas, ws.majority, out=ws.signed)
        flipped_any = False
        for step, (index, cut) in enumerate(zip(protect, slack_cuts, strict=False)):
            if flipped_any:
                torch.mul(ws.deltas[index], ws.majority, out=ws.signed[index])
            conflict = ws.signed[index] < 0
            if stats is not None:
                stats.conflicts[index] = stats.conflicts.get(index, 0) + int(torch.count_nonzero(conflict))
            if cut == Cut.keep_none():
                continue
            positions = torch.nonzero(conflict).squeeze(1)
            keys = ascending_keys(ws.votes[positions].abs())
            rescue, slack_left[step] = cut_mask(keys, cut, slack_left[step])
            flipped = positions[rescue]
            ws.majority[flipped] = -ws.majority[flipped]
            if stats is not None:
                stats.rescued[index] = stats.rescued.get(index, 0) + int(flipped.numel())
            flipped_any = True
        if flipped_any:
            torch.mul(ws.deltas, ws.majority, out=ws.signed)
        yield part, ws


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
    trims: Sequence[Cut] | None = None,
    out: torch.Tensor | None = None,
    sparsify: Sparsifier | None = None,
    election_weights: str = "before",
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """TIES with an optional slack step (see `ties_sv`); with no `slack_cuts` it is plain TIES.

    Args:
        tensors, base, weights, densities, normalize, lambda_, stats: as `merge_ties`.
        protect: protected input indices (counted in `stats`), in the order their slack step applies.
        slack_cuts: as `elected_chunks` (empty: plain TIES).
        trims: as `elected_chunks`.
        out: a buffer of the output dtype and `base`'s shape: the fused kernel writes its bf16
            or fp32 result there (the same bits as casting the fp32 result) and returns it.
        sparsify, election_weights, majority_sign_method: as `elected_chunks`.

    Returns:
        The merged tensor (fp32, or `out`).
    """
    plain = sparsify is None and election_weights == "before" and majority_sign_method == "total"
    if plain and _fusable(tensors, base, slack_cuts):
        check_inputs(tensors, base, weights=weights, densities=densities)
        merged = fused.merge_two(
            tensors,
            base,
            weights=weights,
            densities=densities,
            normalize=normalize,
            lambda_=lambda_,
            stats=stats,
            protect=protect,
            count_conflicts=bool(slack_cuts),
            trims=trims,
            out=out,
        )
        if merged is not None:
            return merged
    plain_election = election_weights == "before" and majority_sign_method == "total"
    no_flips = all(c == Cut.keep_none() for c in slack_cuts)
    if sparsify is not None and plain_election and no_flips and len(tensors) == 2 and _fused_ok(*tensors, base):
        return _elect_two_fused(
            tensors, base, weights, densities, normalize, lambda_, stats, protect, slack_cuts, sparsify
        )
    weight = torch.tensor(list(weights), dtype=torch.float32, device=base.device).unsqueeze(-1)
    result = torch.empty(base.shape, dtype=torch.float32, device=base.device)
    flat_out = result.view(-1)
    chunks = elected_chunks(
        tensors,
        base,
        weights=weights,
        densities=densities,
        protect=protect,
        slack_cuts=slack_cuts,
        stats=stats,
        trims=trims,
        sparsify=sparsify,
        election_weights=election_weights,
        majority_sign_method=majority_sign_method,
    )
    for part, ws in chunks:
        torch.gt(ws.signed, 0, out=ws.agree)
        # mergekit: (deltas * mask).sum(0) and (weights * mask).sum(0), mask = sign == γ.
        torch.mul(ws.deltas, ws.agree, out=ws.scratch)
        sum_inputs(ws.scratch, out=ws.mixed)
        torch.mul(weight, ws.agree, out=ws.scratch)
        sum_inputs(ws.scratch, out=ws.divisor)
        torch.eq(ws.divisor, 0, out=ws.keep)
        ws.divisor.add_(ws.keep)  # a zero divisor counts as 1 (0 + 1; others + 0 are unchanged)
        if normalize:
            ws.mixed.div_(ws.divisor)
        if lambda_ != 1:
            ws.mixed.mul_(lambda_)
        torch.add(ws.base, ws.mixed, out=flat_out[part])
        if stats is not None:
            _count(stats, ws, protect)
    return result


def _elect_two_fused(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool,
    lambda_: float,
    stats: TensorStats | None,
    protect: Sequence[int],
    slack_cuts: Sequence[Cut],
    sparsify: Sparsifier,
) -> torch.Tensor:
    """`merge_elected` of two inputs under another method's sparsification, without slack flips: the
    sparsifier fills each chunk's deltas (torch), one C loop elects and merges them (the same bits)."""
    check_inputs(tensors, base, weights=weights, densities=densities)
    numel = base.numel()
    fill = sparsify(stats)
    result = torch.empty(base.shape, dtype=torch.float32)
    flat_out, flat_base = result.view(-1), base.reshape(-1)
    size = min(chunk_elements(base.device), numel)
    full = Workspace(2, size, base.device)
    lost = torch.zeros(2, dtype=torch.int64)
    for part in flat_chunks(numel, size):
        ws = full.view(part.stop - part.start)
        ws.base = fp32_chunk(flat_base, part, ws.base)
        fill(part, ws)
        fused.elect_two(
            ws.deltas[0], ws.deltas[1], flat_base[part], weights=weights, normalize=normalize, lambda_=lambda_,
            out=flat_out[part], counts=lost,
        )  # fmt: skip
    if stats is not None:
        stats.elements += numel
        stats.sign_conflicts += int(lost[0] + lost[1])  # two inputs: at most one disagrees with γ
        for index in protect:
            stats.protected_discarded[index] = stats.protected_discarded.get(index, 0) + int(lost[index])
        for index in protect[: len(slack_cuts)]:
            stats.conflicts[index] = stats.conflicts.get(index, 0) + int(lost[index])
    return result


def _fused_ok(*tensors: torch.Tensor) -> bool:
    """The fused CPU kernels (C) can take these tensors (CPU, all bf16 or all fp32) and are built and on."""
    return fused.supports(*tensors) and fused.enabled()


def _fusable(tensors: Sequence[torch.Tensor], base: torch.Tensor, slack_cuts: Sequence[Cut]) -> bool:
    """Plain TIES on CPU with two inputs (CT + SFT): the fused kernels give the same bits, faster."""
    if len(tensors) != 2 or any(c != Cut.keep_none() for c in slack_cuts):
        return False
    return _fused_ok(*tensors, base)


def _count(stats: TensorStats, ws: Workspace, protect: Sequence[int]) -> None:
    # 1.0 where a surviving entry's sign differs from the final γ (reuses the scratch buffer).
    lost = torch.lt(ws.signed, 0, out=ws.scratch)
    stats.elements += lost.shape[1]
    if lost.shape[0] <= 2:
        # With two inputs at most one entry per position can disagree with γ = sign of their sum.
        stats.sign_conflicts += int(lost.sum())
    else:
        stats.sign_conflicts += int(torch.count_nonzero(lost.sum(dim=0)))
    for index in protect:
        stats.protected_discarded[index] = stats.protected_discarded.get(index, 0) + int(lost[index].sum())


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
    out: torch.Tensor | None = None,
    election_weights: str = "before",
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """TIES-merge `tensors` onto `base` (any float dtype in, fp32 out, or into `out`).

    Args:
        tensors: the fine-tuned inputs, same shape as `base`, any float dtype (math in fp32).
        base: the base tensor.
        weights: one weight per input, applied before the sign election.
        densities: one kept fraction per input.
        normalize: divide by the summed weights of the agreeing entries.
        lambda_: scale of the merged task vector.
        stats: when given, counts are added (kept, sign conflicts; for `protect`, the conflicts
            and discarded entries of those inputs).
        protect: inputs whose discarded entries `stats` reports (no effect on the result).
        out: a buffer the result may be written into (see `merge_elected`).

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
        out=out,
        election_weights=election_weights,
        majority_sign_method=majority_sign_method,
    )


class TiesParams(ElectionParams):
    """`ties` parameters: `normalize` (default on), `lambda`, the election's conventions and
    `protect` (diagnostics only)."""

    protect: tuple[str, ...] | None = None


def _bind(params: TiesParams, ctx: MethodContext) -> Merger:
    return FnMerger(
        merge_ties,
        weights=ctx.weights,
        densities=ctx.densities,
        normalize=SPEC.normalize(params),
        lambda_=SPEC.lambda_(params),
        protect=protected_by_role(params, ctx),
        **election_of(params),
    )


def check_ties(params: TiesParams, ctx: MethodContext) -> None:
    """`protect` names inputs; the election's conventions fit the weights."""
    check_protect(params, ctx)
    check_election(params, ctx)


SPEC = MethodSpec(
    name="ties",
    summary="Trim, elect sign, disjoint merge (Yadav et al. 2023).",
    params=TiesParams,
    bind=_bind,
    fn=merge_ties,
    uses_density=True,
    default_normalize=True,
    check=check_ties,
    protected=protected_by_role,
    diagnostics=("elements", "kept", "sign_conflicts", "protected_discarded", "conflicts"),
    reference="https://arxiv.org/abs/2306.01708",
)
