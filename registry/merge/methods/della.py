"""`della` and `della_linear`: DELLA's MAGPRUNE drop (Deep et al. 2024, https://arxiv.org/abs/2406.11617).

mergekit 0.1.5's `della_magprune`: per input, each row of τᵢ = θᵢ − θ₀ (a 1-D tensor is one row)
ranks its entries by |τ| (1 = smallest); an entry is kept with probability
pᵣ = (dᵢ − ε) + 2ε·(r − 1)/(cols − 1), so larger entries are kept more often, the mean being dᵢ
(`epsilon` ε, default 0.15; dᵢ ± ε must lie in (0, 1)). With `rescale` (default on) the kept
entries are multiplied by ‖τ‖₁/‖τ̂‖₁. Then `della` elects the sign as TIES does (`normalize`
default on; it also takes the election's conventions and TIES-SV's slack step) and `della_linear`
sums (`normalize` default off).

Randomness, as for DARE: input i's uniform draws in tensor `name` come from its own CPU generator
seeded with sha256(`random_seed`, name, i), in flat order, so the same seed gives the same bytes
whatever the chunking or device; an entry is kept when its draw is below pᵣ. Equal magnitudes in
a row get ranks in flat order (a stable sort). mergekit draws `torch.bernoulli(p)` from the
process-wide RNG in its execution order: same distribution, different draws. A one-column row has
rank 0 here (p = d − ε); mergekit divides 0 by 0 there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import field_validator

from registry.merge.kernels import fused
from registry.merge.kernels.topk import Cut
from registry.merge.methods.base import TensorStats, check_inputs, fp32_chunk
from registry.merge.methods.breadcrumbs import merge_sparse_linear, merge_sparsified
from registry.merge.methods.drop import check_random_seed, l1_scales, mask_seed, uniform_blocks
from registry.merge.methods.plugin import MethodContext, MethodSpec, ScaledParams, protected_by_role
from registry.merge.methods.ties import DeltaFill, Sparsifier, Workspace
from registry.merge.methods.ties_sv import TiesSVMerger, TiesSVParams, check_slack, describe_slack


def keep_probabilities(
    tensor: torch.Tensor, base: torch.Tensor, part: slice, density: float, epsilon: float
) -> torch.Tensor:
    """pᵣ of the entries in `part` (flat), from the ranks of their whole rows (fp32, on the tensor's device)."""
    cols = tensor.shape[-1] if tensor.dim() >= 2 else tensor.numel()
    first, last = part.start // cols, -(-part.stop // cols)
    rows_t = tensor.reshape(-1, cols)[first:last].float()
    rows_b = base.reshape(-1, cols)[first:last].float()
    magnitude = (rows_t - rows_b).abs()
    order = torch.argsort(magnitude, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(cols, device=order.device).expand_as(order))
    norm = ranks.float() / (cols - 1) if cols > 1 else torch.zeros_like(magnitude)
    probs = (density - epsilon) + norm * (2 * epsilon)
    offset = part.start - first * cols
    return probs.reshape(-1)[offset : offset + part.stop - part.start]


def keep_table(cols: int, density: float, epsilon: float) -> torch.Tensor:
    """pᵣ for every rank r of a row of `cols` (fp32, CPU): the same float operations as `keep_probabilities`."""
    ranks = torch.arange(cols)
    norm = ranks.float() / (cols - 1) if cols > 1 else torch.zeros(cols)
    return (density - epsilon) + norm * (2 * epsilon)


def magprune_masks(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    densities: Sequence[float],
    epsilon: float,
    seeds: Sequence[int],
) -> list[torch.Tensor | None]:
    """Per input its keep mask (bool, flat; None where nothing is dropped: density ≤ 0 or ≥ 1).

    On CPU with bf16/fp32 tensors the fused kernel ranks each row once (a radix sort) and compares
    the draws there, inputs in parallel; elsewhere the torch ops of `keep_probabilities`. Same masks.
    """
    numel = base.numel()
    drawn = [0 < d < 1 for d in densities]
    if fused.supports(*tensors, base) and fused.enabled():
        cols = base.shape[-1] if base.dim() >= 2 else max(numel, 1)
        return fused.magprune_masks(
            tensors,
            base,
            [keep_table(cols, d, epsilon) if on else None for d, on in zip(densities, drawn, strict=True)],
            [uniform_blocks(numel, s) if on else None for s, on in zip(seeds, drawn, strict=True)],
        )
    masks: list[torch.Tensor | None] = []
    for tensor, density, seed, on in zip(tensors, densities, seeds, drawn, strict=True):
        if not on:
            masks.append(None)
            continue
        mask = torch.empty(numel, dtype=torch.bool, device=base.device)
        lo = 0
        for block in uniform_blocks(numel, seed):
            part = slice(lo, lo + block.numel())
            torch.lt(block.to(base.device), keep_probabilities(tensor, base, part, density, epsilon), out=mask[part])
            lo = part.stop
        masks.append(mask)
    return masks


def magprune_sparsifier(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    densities: Sequence[float],
    epsilon: float,
    seeds: Sequence[int],
    *,
    rescale: bool,
) -> Sparsifier:
    """DELLA's drop for `ties.elected_chunks` (and `breadcrumbs.merge_sparse_linear`).

    The masks are drawn once per tensor (one byte per entry and input) and shared by every pass
    over it (the rescale's, the slack step's, the merge).
    """
    flats = [t.reshape(-1) for t in tensors]
    masks = magprune_masks(tensors, base, densities, epsilon, seeds)

    def start(stats: TensorStats | None, scale: torch.Tensor | None = None) -> DeltaFill:
        def fill(part: slice, ws: Workspace) -> None:
            for index, (flat, mask, density) in enumerate(zip(flats, masks, densities, strict=True)):
                delta = ws.deltas[index]
                if density <= 0:
                    delta.zero_()
                    continue
                torch.sub(fp32_chunk(flat, part, delta), ws.base, out=delta)
                if mask is not None:
                    delta.mul_(ws.keep.copy_(mask[part]))  # as `delta * keep.float()`
                if stats is not None:
                    stats.add_kept(index, int(torch.count_nonzero(delta)))
            if scale is not None:
                ws.deltas.mul_(scale)

        return fill

    if not rescale:
        return start
    scales = l1_scales(tensors, base, start, [m is not None for m in masks])
    factor = torch.tensor(scales, dtype=torch.float32, device=base.device).unsqueeze(-1)
    return lambda stats: start(stats, factor)


def _check_epsilon(densities: Sequence[float], epsilon: float) -> None:
    for density in densities:
        if 0 < density < 1 and not (0 < density - epsilon and density + epsilon < 1):
            raise ValueError(
                f"epsilon={epsilon} with density={density}: density ± epsilon must lie in (0, 1); "
                "lower epsilon or move the density"
            )


def merge_della(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool = True,
    lambda_: float = 1.0,
    stats: TensorStats | None = None,
    epsilon: float = 0.15,
    rescale: bool = True,
    random_seed: int = 0,
    name: str = "",
    consensus: bool = True,
    slack: float = 0.0,
    protect: Sequence[int] = (),
    cuts: Sequence[Cut] | None = None,
    election_weights: str = "before",
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """DELLA-merge `tensors` onto `base` (fp32 out); `consensus=False` is `della_linear`.

    Raises:
        ValueError: without a base, on mismatched shapes or list lengths, or density ± epsilon outside (0, 1).
    """
    if base is None:
        raise ValueError("della needs a base tensor")
    check_inputs(tensors, base, weights=weights, densities=densities)
    _check_epsilon(densities, epsilon)
    seeds = [mask_seed(random_seed, name, i) for i in range(len(tensors))]
    sparsify = magprune_sparsifier(tensors, base, densities, epsilon, seeds, rescale=rescale)
    return merge_sparsified(
        tensors, base, sparsify, consensus=consensus, weights=weights, densities=densities, normalize=normalize,
        lambda_=lambda_, stats=stats, slack=slack, protect=protect, cuts=cuts, election_weights=election_weights,
        majority_sign_method=majority_sign_method,
    )  # fmt: skip


class _DellaFields(ScaledParams):
    epsilon: float | None = None
    rescale: bool | None = None
    random_seed: int | None = None

    @field_validator("epsilon")
    @classmethod
    def _epsilon(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value < 0.5:
            raise ValueError("epsilon is DELLA's spread of keep probabilities: write a number in [0, 0.5), e.g. 0.15")
        return value

    @field_validator("random_seed")
    @classmethod
    def _seed(cls, value: int | None) -> int | None:
        return check_random_seed(value)


class DellaLinearParams(_DellaFields):
    """`della_linear` parameters: `epsilon` (0.15), `rescale` (on), `random_seed` (0), `normalize`, `lambda`."""


class DellaParams(TiesSVParams, _DellaFields):
    """`della` parameters: those of `della_linear`, the election's conventions and TIES-SV's slack step."""


class DellaMerger(TiesSVMerger):
    """A DELLA method bound to a recipe (`della` elects through TIES-SV's passes; `della_linear` sums)."""

    def __init__(self, params: DellaParams | DellaLinearParams, ctx: MethodContext, *, consensus: bool) -> None:
        self.spec = DELLA if consensus else DELLA_LINEAR
        super().__init__(params, ctx)  # type: ignore[arg-type]
        self.consensus = consensus
        self.epsilon = 0.15 if params.epsilon is None else params.epsilon
        self.rescale = True if params.rescale is None else params.rescale
        self.random_seed = params.random_seed or 0
        _check_epsilon(ctx.densities, self.epsilon)

    def sparsify(self, name: str, tensors: Sequence[torch.Tensor], base: torch.Tensor | None) -> Sparsifier | None:
        if base is None:
            raise ValueError("della needs a base tensor")
        densities = self.keywords["densities"]
        check_inputs(tensors, base, densities=densities)
        seeds = [mask_seed(self.random_seed, name, i) for i in range(len(tensors))]
        return magprune_sparsifier(tensors, base, densities, self.epsilon, seeds, rescale=self.rescale)

    def merge(
        self,
        name: str,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        stats: TensorStats | None,
        *,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.consensus:
            return super().merge(name, tensors, base, stats, out=out)
        if base is None:
            raise ValueError("della needs a base tensor")
        sparsify = self.sparsify(name, tensors, base)
        assert sparsify is not None
        return merge_sparse_linear(
            tensors,
            base,
            weights=self.keywords["weights"],
            normalize=self.keywords["normalize"],
            lambda_=self.keywords["lambda_"],
            sparsify=sparsify,
            stats=stats,
        )


def _describe(params: DellaParams | DellaLinearParams, ctx: MethodContext) -> str:
    text = (
        f"epsilon {0.15 if params.epsilon is None else params.epsilon}  "
        f"rescale {True if params.rescale is None else params.rescale}  random_seed {params.random_seed or 0}"
    )
    if isinstance(params, DellaParams):
        text += f"  {describe_slack(params, ctx)}"
    return text


def _check_della(params: DellaParams, ctx: MethodContext) -> None:
    check_slack(params, ctx)
    _check_epsilon(ctx.densities, 0.15 if params.epsilon is None else params.epsilon)


def _check_della_linear(params: DellaLinearParams, ctx: MethodContext) -> None:
    _check_epsilon(ctx.densities, 0.15 if params.epsilon is None else params.epsilon)


def _merge_della_linear(*args: object, **kwargs: object) -> torch.Tensor:
    return merge_della(*args, consensus=False, **kwargs)  # type: ignore[arg-type]


DELLA = MethodSpec(
    name="della",
    summary="DELLA: drop with probabilities by magnitude rank (MAGPRUNE), L1 rescale, TIES election.",
    params=DellaParams,
    bind=lambda params, ctx: DellaMerger(params, ctx, consensus=True),
    fn=merge_della,
    uses_density=True,
    default_normalize=True,
    check=_check_della,
    protected=protected_by_role,
    describe=_describe,
    diagnostics=("elements", "kept", "sign_conflicts", "protected_discarded", "conflicts", "rescued"),
    reference="https://arxiv.org/abs/2406.11617",
)
DELLA_LINEAR = MethodSpec(
    name="della_linear",
    summary="DELLA's MAGPRUNE drop and L1 rescale, then a weighted sum.",
    params=DellaLinearParams,
    bind=lambda params, ctx: DellaMerger(params, ctx, consensus=False),
    fn=_merge_della_linear,
    uses_density=True,
    check=_check_della_linear,
    describe=_describe,
    reference="https://arxiv.org/abs/2406.11617",
)
