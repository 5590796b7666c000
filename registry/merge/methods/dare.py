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

import hashlib
from collections.abc import Iterator, Sequence

import torch
from pydantic import field_validator

from registry.merge.kernels.topk import Cut
from registry.merge.methods.base import TensorStats, check_inputs, chunk_elements, flat_chunks, fp32_chunk, sum_inputs
from registry.merge.methods.plugin import Merger, MethodContext, MethodSpec, ScaledParams, protected_by_role
from registry.merge.methods.ties import DeltaFill, Sparsifier, Workspace
from registry.merge.methods.ties_sv import TiesSVMerger, TiesSVParams, check_slack, describe_slack, merge_ties_sv

MASK_BLOCK = 1 << 20  # entries per random draw; fixed, so masks do not depend on the compute chunks
_RESCALE_EPS = 1e-7  # mergekit: below this either norm, no rescale


def mask_seed(seed: int, name: str, index: int) -> int:
    """The generator seed of input `index`'s keep mask in tensor `name` (63 bits of a sha256)."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def keep_masks(numel: int, density: float, seed: int) -> Iterator[torch.Tensor]:
    """fp32 0/1 keep masks of consecutive `MASK_BLOCK`-entry blocks covering range(numel), on CPU."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    for start in range(0, numel, MASK_BLOCK):
        size = min(MASK_BLOCK, numel - start)
        yield torch.lt(torch.rand(size, generator=generator), density).float()


class _Masks:
    """Keep masks of one input, handed out for arbitrary consecutive slices (the compute chunks)."""

    def __init__(self, numel: int, density: float, seed: int, device: torch.device) -> None:
        self.blocks = keep_masks(numel, density, seed)
        self.device = device
        self.pending = torch.empty(0)

    def take(self, count: int) -> torch.Tensor:
        parts, have = [self.pending], self.pending.numel()
        while have < count:
            block = next(self.blocks)
            parts.append(block)
            have += block.numel()
        joined = torch.cat(parts) if len(parts) > 1 else parts[0]
        self.pending = joined[count:]
        return joined[:count].to(self.device)


def _dropped_deltas(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    densities: Sequence[float],
    seeds: Sequence[int],
    size: int,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """(slice, fp32 base chunk, (n, c) deltas with the drop applied) chunk by chunk."""
    n, numel, device = len(tensors), base.numel(), base.device
    masks = [_Masks(numel, d, s, device) if d < 1 else None for d, s in zip(densities, seeds, strict=True)]
    flats, flat_base = [t.reshape(-1) for t in tensors], base.reshape(-1)
    base_buffer = torch.empty(size, dtype=torch.float32, device=device)
    deltas = torch.empty((n, size), dtype=torch.float32, device=device)
    for part in flat_chunks(numel, size):
        c = part.stop - part.start
        chunk_base = fp32_chunk(flat_base, part, base_buffer[:c])
        view = deltas[:, :c]
        for index, (flat, mask) in enumerate(zip(flats, masks, strict=True)):
            torch.sub(fp32_chunk(flat, part, view[index]), chunk_base, out=view[index])
            if mask is not None:
                view[index].mul_(mask.take(c))
        yield part, chunk_base, view


def _rescales(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    densities: Sequence[float],
    seeds: Sequence[int],
    size: int,
) -> list[float]:
    """Per input ‖τ‖₁ / ‖τ̂‖₁ (1.0 when either is below mergekit's 1e-7, or nothing is dropped); fp64 sums."""
    n = len(tensors)
    before = [0.0] * n
    after = [0.0] * n
    flats = [t.reshape(-1) for t in tensors]
    buffer = torch.empty(size, dtype=torch.float32, device=base.device)
    for part, chunk_base, dropped in _dropped_deltas(tensors, base, densities, seeds, size):
        for index in range(n):
            full = torch.sub(fp32_chunk(flats[index], part, buffer), chunk_base)
            before[index] += float(full.abs().sum(dtype=torch.float64))
            after[index] += float(dropped[index].abs().sum(dtype=torch.float64))
    return [
        b / a if d < 1 and b >= _RESCALE_EPS and a >= _RESCALE_EPS else 1.0
        for b, a, d in zip(before, after, densities, strict=True)
    ]


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
    bad = [d for d in densities if not 0 < d <= 1]
    if bad:
        raise ValueError(f"density={bad[0]} must be in (0, 1]: it is the probability of keeping an entry")
    n, device = len(tensors), base.device
    seeds = [mask_seed(random_seed, name, i) for i in range(n)]
    size = min(chunk_elements(device), max(base.numel(), 1))
    scales = _rescales(tensors, base, densities, seeds, size) if rescale else [1.0] * n
    if consensus:
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
            sparsify=drop_sparsifier(tensors, densities, seeds, scales if rescale else None),
            election_weights=election_weights,
            majority_sign_method=majority_sign_method,
        )
    weight = torch.tensor(list(weights), dtype=torch.float32, device=device).unsqueeze(-1)
    # One factor per input: the rescale, then the weight (mergekit: masked * scale, then * weight).
    scale = torch.tensor(scales, dtype=torch.float32, device=device).unsqueeze(-1)
    linear_divisor = weight.sum(dim=0)
    linear_divisor[linear_divisor.abs() < 1e-8] = 1
    result = torch.empty(base.shape, dtype=torch.float32, device=device)
    flat_out = result.view(-1)
    mixed = torch.empty(size, dtype=torch.float32, device=device)
    for part, chunk_base, deltas in _dropped_deltas(tensors, base, densities, seeds, size):
        c = part.stop - part.start
        out = mixed[:c]
        if stats is not None:
            for index in range(n):
                stats.add_kept(index, int(torch.count_nonzero(deltas[index])))
        if rescale:
            deltas.mul_(scale)
        deltas.mul_(weight)
        if consensus:
            votes = sum_inputs(deltas, out=torch.empty(c, dtype=torch.float32, device=device))
            majority = torch.copysign(torch.ones((), device=device), votes.add_(0.0))
            agree = torch.gt(deltas * majority, 0).float()
            sum_inputs(deltas * agree, out=out)
            divisor = sum_inputs(weight * agree, out=torch.empty(c, dtype=torch.float32, device=device))
            divisor[divisor == 0] = 1
            if stats is not None:
                lost = torch.lt(deltas * majority, 0)
                stats.sign_conflicts += int(torch.count_nonzero(lost.sum(dim=0)))
        else:
            sum_inputs(deltas, out=out)
            divisor = linear_divisor
        if normalize:
            out.div_(divisor)
        if lambda_ != 1:
            out.mul_(lambda_)
        torch.add(chunk_base, out, out=flat_out[part])
    if stats is not None:
        stats.elements += base.numel()
    return result


def drop_sparsifier(
    tensors: Sequence[torch.Tensor],
    densities: Sequence[float],
    seeds: Sequence[int],
    scales: Sequence[float] | None,
) -> Sparsifier:
    """DARE's drop (and L1 rescale) as the sparsification of `ties.elected_chunks`.

    Each pass draws the same masks again from `seeds` (they depend on the seed, the tensor name and
    the input only), so the slack step's passes see the same drop.
    """
    flats = [t.reshape(-1) for t in tensors]
    numel = flats[0].numel()

    def start(stats: TensorStats | None) -> DeltaFill:
        masks: list[_Masks | None] = [
            _Masks(numel, d, s, tensors[0].device) if d < 1 else None for d, s in zip(densities, seeds, strict=True)
        ]
        scale = (
            None
            if scales is None
            else torch.tensor(list(scales), dtype=torch.float32, device=tensors[0].device).unsqueeze(-1)
        )

        def fill(part: slice, ws: Workspace) -> None:
            c = part.stop - part.start
            for index, (flat, mask) in enumerate(zip(flats, masks, strict=True)):
                delta = ws.deltas[index]
                torch.sub(fp32_chunk(flat, part, delta), ws.base, out=delta)
                if mask is not None:
                    delta.mul_(mask.take(c))
                if stats is not None:
                    stats.add_kept(index, int(torch.count_nonzero(delta)))
            if scale is not None:
                ws.deltas.mul_(scale)  # mergekit: masked * (‖τ‖₁ / ‖τ̂‖₁), then * weight

        return fill

    return start


def check_random_seed(value: int | None) -> int | None:
    """The one rule for `random_seed` (dare_ties, dare_linear, della, della_linear): a 63-bit whole number."""
    if value is not None and not 0 <= value < 2**63:
        raise ValueError("random_seed is a non-negative whole number, e.g. 0")
    return value


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
        self._scales: dict[str, list[float]] = {}

    def sparsify(self, name: str, tensors: Sequence[torch.Tensor], base: torch.Tensor | None) -> Sparsifier | None:
        if base is None:
            raise ValueError("DARE needs a base tensor")
        densities = self.keywords["densities"]
        check_inputs(tensors, base, densities=densities)
        bad = [d for d in densities if not 0 < d <= 1]
        if bad:
            raise ValueError(f"density={bad[0]} must be in (0, 1]: it is the probability of keeping an entry")
        seeds = [mask_seed(self.random_seed, name, i) for i in range(len(tensors))]
        if self.rescale and name not in self._scales:
            size = min(chunk_elements(base.device), max(base.numel(), 1))
            self._scales[name] = _rescales(tensors, base, densities, seeds, size)
        scales = self._scales.pop(name, None) if not self.scans else self._scales.get(name)
        return drop_sparsifier(tensors, densities, seeds, scales if self.rescale else None)

    def merge(
        self,
        name: str,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        stats: TensorStats | None,
        *,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        merged = super().merge(name, tensors, base, stats, out=out)
        self._scales.pop(name, None)  # the model scope kept them for its passes
        return merged


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
