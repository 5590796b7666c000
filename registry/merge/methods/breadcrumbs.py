"""`breadcrumbs` and `breadcrumbs_ties`: Model Breadcrumbs (Davari & Belilovsky 2023, https://arxiv.org/abs/2312.06795).

mergekit 0.1.5's `magnitude_outliers` sparsification: of each task vector τᵢ = θᵢ − θ₀ (numel N),
the `gamma` share of largest |τ| (n_top = int(γN)) is dropped as outliers, then the smallest, so
that target = int(dᵢN) entries remain: in ascending order of |τ| the kept ranks are
[n_bot, n_bot + target) with n_bot = max(0, N − target − n_top). density ≥ 1 keeps τ unchanged;
`rescale` (default off) multiplies the kept entries by ‖τ‖₁/‖τ̂‖₁. Then `breadcrumbs` sums the
weighted deltas (divided by Σ wᵢ when `normalize`, default off), `breadcrumbs_ties` elects the
sign as TIES does (and takes the election's conventions and TIES-SV's slack step, as `dare_ties`).

Exact against mergekit (fp32, tested; with `rescale` within 1e-6: the L1 norms are fp64 sums by
chunks here, one fp32 reduction there), except where equal magnitudes straddle a cut: we keep the
lowest flat indices, mergekit whatever its sort puts first (as for `ties`). Streamed: two exact
cuts per input (`kernels.topk`), then chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import field_validator

from registry.merge.kernels.topk import Cut
from registry.merge.methods.base import TensorStats, check_inputs, chunk_elements, flat_chunks, fp32_chunk, sum_inputs
from registry.merge.methods.drop import l1_scales
from registry.merge.methods.plugin import FnMerger, Merger, MethodContext, MethodSpec, ScaledParams, protected_by_role
from registry.merge.methods.ties import DeltaFill, Sparsifier, Workspace, cut_keep, top_cut, top_cuts
from registry.merge.methods.ties_sv import TiesSVMerger, TiesSVParams, check_slack, describe_slack, merge_ties_sv


def outlier_targets(numel: int, density: float, gamma: float) -> tuple[int, int] | None:
    """(keep k, outliers k): keep = the top N − n_bot by |τ|, outliers = its top N − n_bot − target.

    None when density >= 1 (τ unchanged).
    """
    if density >= 1:
        return None
    target = int(density * numel)
    n_top = int(gamma * numel)
    n_bot = max(0, numel - target - n_top)
    return numel - n_bot, numel - n_bot - target


def outlier_cuts(tensor: torch.Tensor, base: torch.Tensor, density: float, gamma: float) -> tuple[Cut, Cut] | None:
    """The two cuts of `outlier_targets` (None when density >= 1)."""
    ks = outlier_targets(tensor.numel(), density, gamma)
    return None if ks is None else (top_cut(tensor, base, ks[0]), top_cut(tensor, base, ks[1]))


def outlier_sparsifier(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    densities: Sequence[float],
    gamma: float,
    *,
    rescale: bool,
) -> Sparsifier:
    """Breadcrumbs' sparsification for `ties.elected_chunks` (and `merge_sparse_linear`).

    The two cuts of every input are found together (`ties.top_cuts`: the fused kernels, in parallel);
    each chunk keeps what the first keeps and the second (the outliers) does not (`ties.cut_keep`).
    """
    targets = [outlier_targets(base.numel(), d, gamma) for d in densities]
    wanted = [(t, k) for t, ks in zip(tensors, targets, strict=True) if ks is not None for k in ks]
    found = iter(top_cuts([t for t, _ in wanted], base, [k for _, k in wanted]))
    cuts = [(next(found), next(found)) if ks is not None else None for ks in targets]
    flats = [t.reshape(-1) for t in tensors]

    def start(stats: TensorStats | None, scale: torch.Tensor | None = None) -> DeltaFill:
        left = [(c[0].ties, c[1].ties) if c is not None else (0, 0) for c in cuts]

        def fill(part: slice, ws: Workspace) -> None:
            for index, (flat, cut) in enumerate(zip(flats, cuts, strict=True)):
                delta = ws.deltas[index]
                torch.sub(fp32_chunk(flat, part, delta), ws.base, out=delta)
                if cut is not None:
                    torch.abs(delta, out=ws.magnitude)
                    kept = cut_keep(ws.magnitude, cut[0], left[index][0], out=ws.keep, equal=ws.equal)
                    outliers = cut_keep(ws.magnitude, cut[1], left[index][1], out=ws.mixed, equal=ws.equal)
                    left[index] = (kept, outliers)
                    # The outliers are a prefix of the same order as the kept: keep − outliers is 0/1.
                    delta.mul_(ws.keep.sub_(ws.mixed))  # mergekit: tensor * mask
                if stats is not None:
                    stats.add_kept(index, int(torch.count_nonzero(delta)))
            if scale is not None:
                ws.deltas.mul_(scale)

        return fill

    if not rescale:
        return start
    scales = l1_scales(tensors, base, start, [c is not None for c in cuts])
    factor = torch.tensor(scales, dtype=torch.float32, device=base.device).unsqueeze(-1)
    return lambda stats: start(stats, factor)


def merge_sparse_linear(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weights: Sequence[float],
    normalize: bool,
    lambda_: float,
    sparsify: Sparsifier,
    stats: TensorStats | None = None,
) -> torch.Tensor:
    """mergekit's generalized task arithmetic without consensus over sparsified deltas:
    θ₀ + λ Σ wᵢτ̂ᵢ (/ Σ wᵢ when `normalize`; |Σ wᵢ| < 1e-8 counts as 1)."""
    n, numel, device = len(tensors), base.numel(), base.device
    size = max(1, min(chunk_elements(device), numel))
    full = Workspace(n, size, device)
    weight = torch.tensor(list(weights), dtype=torch.float32, device=device).unsqueeze(-1)
    divisor = weight.sum(dim=0)
    divisor[divisor.abs() < 1e-8] = 1
    fill = sparsify(stats)
    result = torch.empty(base.shape, dtype=torch.float32, device=device)
    flat_out, flat_base = result.view(-1), base.reshape(-1)
    for part in flat_chunks(numel, size):
        ws = full.view(part.stop - part.start)
        ws.base = fp32_chunk(flat_base, part, ws.base)
        fill(part, ws)
        ws.deltas.mul_(weight)
        sum_inputs(ws.deltas, out=ws.mixed)
        if normalize:
            ws.mixed.div_(divisor)
        if lambda_ != 1:
            ws.mixed.mul_(lambda_)
        torch.add(ws.base, ws.mixed, out=flat_out[part])
    if stats is not None:
        stats.elements += numel
    return result


def merge_sparsified(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    sparsify: Sparsifier,
    *,
    consensus: bool,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool,
    lambda_: float,
    stats: TensorStats | None,
    slack: float,
    protect: Sequence[int],
    cuts: Sequence[Cut] | None,
    election_weights: str,
    majority_sign_method: str,
) -> torch.Tensor:
    """The merge step shared by DARE, DELLA and Breadcrumbs once `sparsify` has chosen the kept deltas:
    TIES' sign election with TIES-SV's slack when `consensus` (the `*_ties` methods), else the plain
    weighted sum (`merge_sparse_linear`)."""
    if not consensus:
        return merge_sparse_linear(
            tensors, base, weights=weights, normalize=normalize, lambda_=lambda_, sparsify=sparsify, stats=stats
        )
    return merge_ties_sv(
        tensors,
        base,
        weights=weights,
        densities=densities,
        normalize=normalize,
        lambda_=lambda_,
        stats=stats,
        slack=slack,
        protect=protect,
        cuts=cuts,
        sparsify=sparsify,
        election_weights=election_weights,
        majority_sign_method=majority_sign_method,
    )


def merge_breadcrumbs(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool = False,
    lambda_: float = 1.0,
    stats: TensorStats | None = None,
    gamma: float = 0.01,
    rescale: bool = False,
    consensus: bool = False,
    slack: float = 0.0,
    protect: Sequence[int] = (),
    cuts: Sequence[Cut] | None = None,
    election_weights: str = "before",
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """Breadcrumbs-merge `tensors` onto `base` (fp32 out); `consensus` elects the sign (breadcrumbs_ties).

    Raises:
        ValueError: without a base, on mismatched shapes or list lengths.
    """
    if base is None:
        raise ValueError("breadcrumbs needs a base tensor")
    check_inputs(tensors, base, weights=weights, densities=densities)
    sparsify = outlier_sparsifier(tensors, base, densities, gamma, rescale=rescale)
    return merge_sparsified(
        tensors, base, sparsify, consensus=consensus, weights=weights, densities=densities, normalize=normalize,
        lambda_=lambda_, stats=stats, slack=slack, protect=protect, cuts=cuts, election_weights=election_weights,
        majority_sign_method=majority_sign_method,
    )  # fmt: skip


def _gamma_range(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value < 1.0:
        raise ValueError("gamma is the share of largest entries dropped: write a number in [0, 1), e.g. 0.01")
    return value


class BreadcrumbsParams(ScaledParams):
    """`breadcrumbs` parameters: `gamma` (default 0.01), `rescale` (default off), `normalize`, `lambda`."""

    gamma: float | None = None
    rescale: bool | None = None

    @field_validator("gamma")
    @classmethod
    def _gamma(cls, value: float | None) -> float | None:
        return _gamma_range(value)


class BreadcrumbsTiesParams(TiesSVParams):
    """`breadcrumbs_ties` parameters: those of `breadcrumbs`, the election's conventions and the slack step."""

    gamma: float | None = None
    rescale: bool | None = None

    @field_validator("gamma")
    @classmethod
    def _gamma(cls, value: float | None) -> float | None:
        return _gamma_range(value)


def _bind(params: BreadcrumbsParams, ctx: MethodContext) -> Merger:
    return FnMerger(
        merge_breadcrumbs,
        weights=ctx.weights,
        densities=ctx.densities,
        normalize=BREADCRUMBS.normalize(params),
        lambda_=BREADCRUMBS.lambda_(params),
        gamma=0.01 if params.gamma is None else params.gamma,
        rescale=bool(params.rescale),
    )


class BreadcrumbsTiesMerger(TiesSVMerger):
    """`breadcrumbs_ties` bound to a recipe: TIES-SV's passes over breadcrumbs' sparsification."""

    def __init__(self, params: BreadcrumbsTiesParams, ctx: MethodContext) -> None:
        self.spec = BREADCRUMBS_TIES
        super().__init__(params, ctx)
        self.gamma = 0.01 if params.gamma is None else params.gamma
        self.rescale = bool(params.rescale)

    def sparsify(self, name: str, tensors: Sequence[torch.Tensor], base: torch.Tensor | None) -> Sparsifier | None:
        if base is None:
            raise ValueError("breadcrumbs needs a base tensor")
        check_inputs(tensors, base, densities=self.keywords["densities"])
        return outlier_sparsifier(tensors, base, self.keywords["densities"], self.gamma, rescale=self.rescale)


def _describe(params: BreadcrumbsParams | BreadcrumbsTiesParams, ctx: MethodContext) -> str:
    gamma = 0.01 if params.gamma is None else params.gamma
    text = f"gamma {gamma}  rescale {bool(params.rescale)}"
    if isinstance(params, BreadcrumbsTiesParams):
        text += f"  {describe_slack(params, ctx)}"
    return text


BREADCRUMBS = MethodSpec(
    name="breadcrumbs",
    summary="Model Breadcrumbs: drop the largest (outliers) and smallest task-vector entries, then sum.",
    params=BreadcrumbsParams,
    bind=_bind,
    fn=merge_breadcrumbs,
    uses_density=True,
    describe=_describe,
    reference="https://arxiv.org/abs/2312.06795",
)


def _merge_breadcrumbs_ties(*args: object, **kwargs: object) -> torch.Tensor:
    return merge_breadcrumbs(*args, consensus=True, **kwargs)  # type: ignore[arg-type]


BREADCRUMBS_TIES = MethodSpec(
    name="breadcrumbs_ties",
    summary="Model Breadcrumbs' sparsification, then TIES sign election (mergekit's breadcrumbs_ties).",
    params=BreadcrumbsTiesParams,
    bind=BreadcrumbsTiesMerger,
    fn=_merge_breadcrumbs_ties,
    uses_density=True,
    check=check_slack,
    protected=protected_by_role,
    describe=_describe,
    diagnostics=("elements", "kept", "sign_conflicts", "protected_discarded", "conflicts", "rescued"),
    reference="https://arxiv.org/abs/2312.06795",
)
