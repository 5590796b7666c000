"""`dare_ties` and `dare_linear`: DARE's random drop and rescale (Yu et al. 2023, https://arxiv.org/abs/2311.03099).

mergekit 0.1.5's semantics: each task vector τᵢ = θᵢ − θ₀ keeps every entry independently with
probability dᵢ (its `density`; mergekit's `bernoulli`), and with `rescale` (default on) the kept
entries are multiplied by ‖τᵢ‖₁ / ‖τ̂ᵢ‖₁, so the L1 norm of the task vector is preserved (mergekit's
`RescaleNorm.l1`; not the paper's 1/d, which it equals in expectation). Then the inputs combine
as mergekit's generalized task arithmetic: weighted (wᵢτ̂ᵢ); `dare_ties` elects the sign
(γ = sign Σ wᵢτ̂ᵢ, zero elects +) and sums the agreeing entries, divided by their summed weights
when `normalize` (a zero divisor counts as 1); `dare_linear` sums all, divided by Σ wᵢ when
`normalize` (|Σ wᵢ| < 1e-8 counts as 1). `normalize` defaults to off for both, `lambda` scales the
merged task vector, and the result is added to θ₀.

Randomness: reproducible from `random_seed` (default 0). The keep mask of input i in tensor `name`
is drawn from its own CPU `torch.Generator`, seeded with sha256(seed, name, i), in blocks of 1 M
entries (`torch.rand(block) < dᵢ`), so it depends only on (seed, tensor name, input index): not on
the tensor order, the chunking, the device or other tensors. The same seed gives identical bytes.
mergekit seeds the process-wide RNG once (`--random-seed`) and draws masks with `torch.bernoulli`
in its task execution order, so its masks, and so its exact values, cannot be reproduced outside
mergekit; the distributions (kept fraction dᵢ, L1-preserving rescale) are the same.

`dare_ties` also takes TIES-SV's slack step (`slack`, `slack_scope`, `protect`; `slack: 0`, the
default, is plain `dare_ties`, bit for bit) and the election's conventions (`election_weights`,
`majority_sign_method`): the drop replaces TIES' trimming in the shared election
(`ties.elected_chunks`), and everything after it is TIES-SV's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from pydantic import field_validator

from registry.merge.kernels.topk import Cut
from registry.merge.methods.base import TensorStats, check_inputs, fp32_chunk
from registry.merge.methods.breadcrumbs import merge_sparsified
from registry.merge.methods.drop import (
    Blocks,
    check_drop_density,
    check_random_seed,
    l1_scales,
    mask_seed,
    uniform_blocks,
)
from registry.merge.methods.plugin import Merger, MethodContext, MethodSpec, ScaledParams, protected_by_role
from registry.merge.methods.ties import DeltaFill, Sparsifier, Workspace
from registry.merge.methods.ties_sv import TiesSVMerger, TiesSVParams, check_slack, describe_slack


def keep_masks(numel: int, density: float, seed: int) -> Iterator[torch.Tensor]:
    """fp32 0/1 keep masks of consecutive `MASK_BLOCK`-entry blocks covering range(numel), on CPU."""
    for block in uniform_blocks(numel, seed):
        yield torch.lt(block, density).float()


def merge_dare(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool = False,
    lambda_: float = 1.0,
    stats: TensorStats | None = None,
    consensus: bool = True,
    rescale: bool = True,
    random_seed: int = 0,
    name: str = "",
    slack: float = 0.0,
    protect: Sequence[int] = (),
    cuts: Sequence[Cut] | None = None,
    election_weights: str = "before",
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """DARE-merge `tensors` onto `base` (any float dtype in, fp32 out); see the module docstring.

    Args:
        tensors: the fine-tuned inputs, same shape as `base`.
        base: the base tensor.
        weights: one weight per input.
        densities: one keep probability per input, in (0, 1].
        normalize: divide by the summed weights (of the agreeing entries with `consensus`).
        lambda_: scale of the merged task vector.
        stats: when given, `elements`, `kept` and (with `consensus`) `sign_conflicts` are added.
        consensus: elect the sign as TIES (`dare_ties`); False sums every entry (`dare_linear`).
        rescale: keep each task vector's L1 norm.
        random_seed: the seed of the drop.
        name: the tensor name (part of each mask's seed).
        slack, protect, cuts: TIES-SV's slack step (`consensus` only; see `ties_sv.merge_ties_sv`).
        election_weights, majority_sign_method: the election's conventions (`consensus` only).

    Returns:
        The merged tensor.

    Raises:
        ValueError: without a base, on mismatched shapes or list lengths, or a density outside (0, 1].
    """
    if base is None:
        raise ValueError("DARE needs a base tensor")
    check_inputs(tensors, base, weights=weights, densities=densities)
    check_drop_density(densities)
    seeds = [mask_seed(random_seed, name, i) for i in range(len(tensors))]
    sparsify = drop_sparsifier(tensors, base, densities, seeds, rescale=rescale)
    return merge_sparsified(
        tensors, base, sparsify, consensus=consensus, weights=weights, densities=densities, normalize=normalize,
        lambda_=lambda_, stats=stats, slack=slack, protect=protect, cuts=cuts, election_weights=election_weights,
        majority_sign_method=majority_sign_method,
    )  # fmt: skip


def drop_sparsifier(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    densities: Sequence[float],
    seeds: Sequence[int],
    *,
    rescale: bool,
) -> Sparsifier:
    """DARE's drop (and L1 rescale) as the sparsification of `ties.elected_chunks` (and of
    `breadcrumbs.merge_sparse_linear` for `dare_linear`).

    The masks depend on `seeds` only (the seed, the tensor name and the input); with the rescale they
    are drawn once, in its pass, and replayed by the slack step's and the merge's, else drawn again
    in each pass: every pass sees the same drop.
    """
    flats = [t.reshape(-1) for t in tensors]
    numel = base.numel()
    # With the rescale, the first pass keeps the masks it draws (one byte per entry and input), so
    # the later passes replay them instead of drawing again.
    kept: list[torch.Tensor | None] = [
        torch.empty(numel, dtype=torch.bool, device=base.device) if rescale and d < 1 else None for d in densities
    ]
    recorded = [False]

    def start(stats: TensorStats | None, scale: torch.Tensor | None = None) -> DeltaFill:
        replay = recorded[0]
        masks = [
            Blocks(keep_masks(numel, d, s), base.device) if d < 1 and not replay else None
            for d, s in zip(densities, seeds, strict=True)
        ]

        def fill(part: slice, ws: Workspace) -> None:
            c = part.stop - part.start
            for index, (flat, mask, record) in enumerate(zip(flats, masks, kept, strict=True)):
                delta = ws.deltas[index]
                torch.sub(fp32_chunk(flat, part, delta), ws.base, out=delta)
                if replay and record is not None:
                    delta.mul_(ws.keep.copy_(record[part]))  # the same 1.0/0.0 as drawn
                elif mask is not None:
                    drawn = mask.take(c)
                    delta.mul_(drawn)
                    if record is not None:
                        record[part] = drawn.bool()
                if stats is not None:
                    stats.add_kept(index, int(torch.count_nonzero(delta)))
            if scale is not None:
                ws.deltas.mul_(scale)  # mergekit: masked * (‖τ‖₁ / ‖τ̂‖₁), then * weight

        return fill

    if not rescale:
        return start
    scales = l1_scales(tensors, base, start, [d < 1 for d in densities])
    recorded[0] = True
    factor = torch.tensor(scales, dtype=torch.float32, device=base.device).unsqueeze(-1)
    return lambda stats: start(stats, factor)


class DareParams(ScaledParams):
    """DARE parameters: `rescale` (default on), `random_seed` (default 0), `normalize`, `lambda`."""

    rescale: bool | None = None
    random_seed: int | None = None

    @field_validator("random_seed")
    @classmethod
    def _seed_range(cls, value: int | None) -> int | None:
        return check_random_seed(value)


class DareTiesParams(TiesSVParams):
    """`dare_ties` parameters: DARE's (`rescale`, `random_seed`), the election's conventions and
    TIES-SV's slack step (`slack`, default 0: plain dare_ties; `slack_scope`; `protect`)."""

    rescale: bool | None = None
    random_seed: int | None = None

    @field_validator("random_seed")
    @classmethod
    def _seed_range(cls, value: int | None) -> int | None:
        return check_random_seed(value)


class DareTiesMerger(TiesSVMerger):
    """`dare_ties` bound to a recipe: TIES-SV's passes with DARE's drop as the sparsification."""

    def __init__(self, params: DareTiesParams, ctx: MethodContext) -> None:
        self.spec = DARE_TIES
        super().__init__(params, ctx)
        self.rescale = True if params.rescale is None else params.rescale
        self.random_seed = params.random_seed or 0

    def sparsify(self, name: str, tensors: Sequence[torch.Tensor], base: torch.Tensor | None) -> Sparsifier | None:
        if base is None:
            raise ValueError("DARE needs a base tensor")
        densities = self.keywords["densities"]
        check_inputs(tensors, base, densities=densities)
        check_drop_density(densities)
        seeds = [mask_seed(self.random_seed, name, i) for i in range(len(tensors))]
        return drop_sparsifier(tensors, base, densities, seeds, rescale=self.rescale)


class DareMerger(Merger):
    """A DARE method bound to a recipe: the tensor name seeds each input's mask."""

    def __init__(self, params: DareParams, ctx: MethodContext, *, consensus: bool) -> None:
        spec = DARE_TIES if consensus else DARE_LINEAR
        self.keywords = {
            "weights": ctx.weights,
            "densities": ctx.densities,
            "normalize": spec.normalize(params),
            "lambda_": spec.lambda_(params),
            "consensus": consensus,
            "rescale": True if params.rescale is None else params.rescale,
            "random_seed": params.random_seed or 0,
        }

    def merge(
        self,
        name: str,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        stats: TensorStats | None,
        *,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return merge_dare(tensors, base, stats=stats, name=name, **self.keywords)  # type: ignore[arg-type]


def _describe(params: DareParams | DareTiesParams, ctx: MethodContext) -> str:
    rescale = True if params.rescale is None else params.rescale
    return f"rescale {rescale}  random_seed {params.random_seed or 0}"


def _merge_dare_linear(*args: object, **kwargs: object) -> torch.Tensor:
    return merge_dare(*args, consensus=False, **kwargs)  # type: ignore[arg-type]


def _describe_ties(params: DareTiesParams, ctx: MethodContext) -> str:
    return f"{_describe(params, ctx)}  {describe_slack(params, ctx)}"


DARE_TIES = MethodSpec(
    name="dare_ties",
    summary="DARE random drop and L1 rescale, then TIES sign election (Yu et al. 2023; mergekit's dare_ties).",
    params=DareTiesParams,
    bind=DareTiesMerger,
    fn=merge_dare,
    uses_density=True,
    check=check_slack,
    protected=protected_by_role,
    describe=_describe_ties,
    diagnostics=("elements", "kept", "sign_conflicts", "protected_discarded", "conflicts", "rescued"),
    reference="https://arxiv.org/abs/2311.03099",
)
DARE_LINEAR = MethodSpec(
    name="dare_linear",
    summary="DARE random drop and L1 rescale, then a weighted sum (Yu et al. 2023; mergekit's dare_linear).",
    params=DareParams,
    bind=lambda params, ctx: DareMerger(params, ctx, consensus=False),
    fn=_merge_dare_linear,
    uses_density=True,
    describe=_describe,
    diagnostics=("elements", "kept"),
    reference="https://arxiv.org/abs/2311.03099",
)
