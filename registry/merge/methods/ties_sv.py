"""`ties_sv`: TIES with sign slack for protected (SFT) parameters (Tao et al. 2024, https://arxiv.org/abs/2407.03994).

TIES, plus a slack step between the election and the merge. For a protected input p, let C be the
positions where p has a surviving (trimmed, non-zero) entry whose sign disagrees with the elected
sign γ: TIES would discard it. Rank C by the election margin |Σᵢ wᵢτ̂ᵢ|, smallest first (equal
margins: lower flat index first), and flip γ to p's sign on the first ⌈slack·|C|⌉ of them, so those
entries of p survive; then merge disjointly as TIES. `slack = 0` is exactly `ties` (bit for bit).
Several protected inputs: the step runs for each in the order listed, each on the γ left by the
previous ones. ⌈slack·|C|⌉ is computed exactly from the decimal value of `slack` (0.05 · 100 = 5).

Scope of the ranking (the paper leaves it open):

- `slack_scope: tensor` (default): C and its ranking are per tensor. Call `merge_ties_sv` with
  `cuts=None`; it makes one extra pass over the tensor per protected input to find the cut.
- `slack_scope: model`: C is ranked across the whole model, ties across tensors going to the
  tensor that comes first in the engine's tensor order. Two passes; the engine does, with
  `protect` the same list for every tensor and `names` the tensor order:

      cuts = {name: [] for name in names}
      for step in range(len(protect)):              # usually one protected input (the SFT)
          margins = [(name, conflict_margins(inputs(name), base(name), weights=..., densities=...,
                                             protect=protect, cuts=cuts[name]))
                     for name in names]             # pass 1: fp32 margins of C, |C| entries each
          plan = plan_model_slack(margins, slack=slack)
          for name in names:
              cuts[name].append(plan.cuts[name])
      # (optional: keep trims[name] = trim_cuts(...) from pass 1 and pass trims= to both calls,
      #  so each tensor's trimming cuts, the costly part, are found once)
      # pass 2, tensor by tensor:
      merged = merge_ties_sv(inputs(name), base(name), ..., slack=slack, protect=protect, cuts=cuts[name])

  Pass 1 holds only the conflict margins (4 bytes per conflicting position), never the tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import torch
from pydantic import field_validator

from registry.merge.kernels.topk import Cut, ascending_keys, find_cut
from registry.merge.methods.base import TensorStats, check_inputs
from registry.merge.methods.plugin import Merger, MethodContext, MethodSpec, election_of, protected_by_role
from registry.merge.methods.ties import Sparsifier, TiesParams, check_ties, elected_chunks, merge_elected, trim_cuts


def slack_count(slack: float, conflicts: int) -> int:
    """⌈slack · conflicts⌉, exact for the decimal value of `slack` (no float round-up).

    Raises:
        ValueError: if slack is outside [0, 1].
    """
    if not 0 <= slack <= 1:
        raise ValueError(f"slack={slack} must be within [0, 1]")
    return math.ceil(Fraction(repr(float(slack))) * conflicts)


def conflict_margins(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    protect: Sequence[int],
    cuts: Sequence[Cut] = (),
    trims: Sequence[Cut] | None = None,
    sparsify: Sparsifier | None = None,
    election_weights: str = "before",
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """Pass 1: the election margins |Σ wᵢτ̂ᵢ| on C of the protected input `protect[len(cuts)]`.

    Args:
        tensors, base, weights, densities: as `merge_ties_sv`.
        protect: the protected input indices.
        cuts: the cuts already decided for `protect[:len(cuts)]` (their flips apply first).
        trims: the inputs' trimming cuts when already known (`ties.trim_cuts`).
        sparsify, election_weights, majority_sign_method: as `ties.elected_chunks`.

    Returns:
        1-D fp32 margins, one per position of C, in flat order.

    Raises:
        ValueError: when every protected input already has a cut.
    """
    if len(cuts) >= len(protect):
        raise ValueError(f"all {len(protect)} protected inputs already have a cut")
    index = protect[len(cuts)]
    found = []
    chunks = elected_chunks(
        tensors,
        base,
        weights=weights,
        densities=densities,
        protect=protect,
        slack_cuts=cuts,
        trims=trims,
        sparsify=sparsify,
        election_weights=election_weights,
        majority_sign_method=majority_sign_method,
    )
    for _, ws in chunks:
        # signed < 0: a surviving entry of `index` whose sign differs from the elected one.
        found.append(ws.votes[ws.signed[index] < 0].abs())
    return torch.cat(found) if found else torch.empty(0, dtype=torch.float32, device=base.device)


def tensor_slack_cut(margins: torch.Tensor, *, slack: float) -> Cut:
    """The cut that rescues the first ⌈slack·|C|⌉ conflicts of one tensor (smallest margin first).

    Args:
        margins: from `conflict_margins`.
        slack: in [0, 1].

    Returns:
        A cut over `ascending_keys(margins)`.
    """
    keys = ascending_keys(margins)
    return find_cut(lambda: (keys,), slack_count(slack, keys.numel()), numel=keys.numel())


@dataclass(frozen=True)
class ModelSlack:
    """The model-wide slack step of one protected input: a cut per tensor name."""

    cuts: dict[str, Cut]
    conflicts: int
    rescued: int


def plan_model_slack(margins: Sequence[tuple[str, torch.Tensor]], *, slack: float) -> ModelSlack:
    """Rank the conflicts of all tensors together and cut the first ⌈slack·|C|⌉.

    Args:
        margins: (tensor name, `conflict_margins` of it) in the engine's tensor order.
        slack: in [0, 1].

    Returns:
        Per tensor, its share of the cut: margins below the global threshold, plus the ties at the
        threshold that remain, given to tensors in order (lower flat index first within one).
    """
    keys = [(name, ascending_keys(m)) for name, m in margins]
    total = sum(k.numel() for _, k in keys)
    wanted = slack_count(slack, total)
    cut = find_cut(lambda: (k for _, k in keys), wanted, numel=total)
    ties_left = cut.ties
    cuts = {}
    for name, k in keys:
        share = min(ties_left, int((k == cut.key).sum())) if ties_left else 0
        ties_left -= share
        cuts[name] = Cut(key=cut.key, ties=share)
    return ModelSlack(cuts=cuts, conflicts=total, rescued=min(wanted, total))


def merge_ties_sv(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool = True,
    lambda_: float = 1.0,
    stats: TensorStats | None = None,
    slack: float = 0.0,
    protect: Sequence[int] = (),
    cuts: Sequence[Cut] | None = None,
    trims: Sequence[Cut] | None = None,
    out: torch.Tensor | None = None,
    sparsify: Sparsifier | None = None,
    election_weights: str = "before",
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """TIES-SV-merge `tensors` onto `base` (any float dtype in, fp32 out, or into `out`).

    Args:
        tensors: the fine-tuned inputs, same shape as `base`, any float dtype (math in fp32).
        base: the base tensor.
        weights: one weight per input, applied before the sign election.
        densities: one kept fraction per input.
        normalize: divide by the summed weights of the agreeing entries.
        lambda_: scale of the merged task vector.
        stats: when given, counts are added, with conflicts and rescues per protected input.
        slack: the share of each protected input's conflicts to rescue, in [0, 1].
        protect: indices into `tensors` of the protected inputs (usually the SFT model), in order.
        cuts: None: rank per tensor (`slack_scope: tensor`). Otherwise one cut per protected input
            from `plan_model_slack(...).cuts[name]` (`slack_scope: model`).
        trims: the inputs' trimming cuts if already found for this tensor (`ties.trim_cuts`, e.g.
            kept from pass 1 of the model scope: two ints per input), else found here.
        out: a buffer the result may be written into (see `ties.merge_elected`).
        sparsify: another method's sparsification instead of TIES' trimming (`ties.elected_chunks`):
            `dare_ties` with slack is DARE's drop with this election and slack step.
        election_weights, majority_sign_method: the election's conventions (`ties.elected_chunks`).

    Returns:
        The merged tensor.

    Raises:
        ValueError: without a base, on a bad `protect` index, slack outside [0, 1], or list lengths.
    """
    if base is None:
        raise ValueError("ties_sv needs a base tensor")
    check_inputs(tensors, base, weights=weights, densities=densities)
    if not 0 <= slack <= 1:
        raise ValueError(f"slack={slack} must be within [0, 1]")
    bad = [i for i in protect if not 0 <= i < len(tensors)]
    if bad or len(set(protect)) != len(protect):
        raise ValueError(f"protect={list(protect)} must be distinct indices into the {len(tensors)} inputs")
    if cuts is None:
        cuts = []
        for _ in protect:
            if slack == 0:
                cuts.append(Cut.keep_none())
                continue
            # Trimming is the costly part: find the cuts once for every pass over this tensor.
            if sparsify is None and trims is None:
                trims = trim_cuts(tensors, base, densities)
            margins = conflict_margins(
                tensors,
                base,
                weights=weights,
                densities=densities,
                protect=protect,
                cuts=cuts,
                trims=trims,
                sparsify=sparsify,
                election_weights=election_weights,
                majority_sign_method=majority_sign_method,
            )
            cuts.append(tensor_slack_cut(margins, slack=slack))
    elif len(cuts) != len(protect):
        raise ValueError(f"{len(cuts)} cuts for {len(protect)} protected inputs")
    return merge_elected(
        tensors,
        base,
        weights=weights,
        densities=densities,
        normalize=normalize,
        lambda_=lambda_,
        stats=stats,
        protect=protect,
        slack_cuts=cuts,
        trims=trims,
        out=out,
        sparsify=sparsify,
        election_weights=election_weights,
        majority_sign_method=majority_sign_method,
    )


class TiesSVParams(TiesParams):
    """`ties_sv` parameters: those of `ties`, plus `slack` in [0, 1] and `slack_scope`."""

    slack: float | None = None
    slack_scope: Literal["tensor", "model"] | None = None

    @field_validator("slack")
    @classmethod
    def _slack_range(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError("slack is a fraction of the conflicts: write a number in [0, 1], e.g. 0.05")
        return value


class TiesSVMerger(Merger):
    """`ties_sv` bound to a recipe; with `slack_scope: model` it scans the model once per protected input.

    Pass 1 keeps, per tensor, the conflict margins of the scan and the trimming cuts (found once:
    two ints per input); `end_scan` ranks the margins model-wide; `merge` then uses the cuts.
    """

    spec: MethodSpec

    def __init__(self, params: TiesSVParams, ctx: MethodContext) -> None:
        spec = getattr(self, "spec", SPEC)
        self.keywords: dict[str, Any] = {
            "weights": ctx.weights,
            "densities": ctx.densities,
            "normalize": spec.normalize(params),
            "lambda_": spec.lambda_(params),
            **election_of(params),
        }
        self.slack = getattr(params, "slack", None) or 0.0  # methods without a slack step have none
        self.protect = protected_by_role(params, ctx)
        model_scope = getattr(params, "slack_scope", None) == "model" and bool(self.slack)
        self.scans = len(self.protect) if model_scope else 0
        self.cuts: dict[str, list[Cut]] = {}
        self.trims: dict[str, list[Cut]] = {}
        self.margins: list[tuple[str, torch.Tensor]] = []

    def scan(self, step: int, name: str, tensors: Sequence[torch.Tensor], base: torch.Tensor | None) -> None:
        if base is None:
            raise ValueError("ties_sv needs a base tensor")
        sparsify = self.sparsify(name, tensors, base)
        if sparsify is None and name not in self.trims:
            self.trims[name] = trim_cuts(tensors, base, self.keywords["densities"])
        found = conflict_margins(
            tensors,
            base,
            weights=self.keywords["weights"],
            densities=self.keywords["densities"],
            protect=self.protect,
            cuts=self.cuts.setdefault(name, []),
            trims=self.trims.get(name),
            sparsify=sparsify,
            election_weights=self.keywords["election_weights"],
            majority_sign_method=self.keywords["majority_sign_method"],
        )
        self.margins.append((name, found.cpu()))

    def end_scan(self, step: int) -> None:
        slack = plan_model_slack(self.margins, slack=self.slack)
        for name, cut in slack.cuts.items():
            self.cuts[name].append(cut)
        self.margins = []

    def merge(
        self,
        name: str,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        stats: TensorStats | None,
        *,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cuts = self.cuts.get(name) if self.scans else None
        return merge_ties_sv(
            tensors,
            base,
            stats=stats,
            slack=self.slack,
            protect=self.protect,
            cuts=cuts,
            trims=self.trims.get(name),
            out=out,
            sparsify=self.sparsify(name, tensors, base),
            **self.keywords,
        )

    def sparsify(self, name: str, tensors: Sequence[torch.Tensor], base: torch.Tensor | None) -> Sparsifier | None:
        """The sparsification of tensor `name` (None: TIES' trimming); DARE's and others' override this."""
        return None


def _check(params: TiesSVParams, ctx: MethodContext) -> None:
    check_ties(params, ctx)
    if not protected_by_role(params, ctx):
        raise ValueError("ties_sv protects the SFT model: give it `role: sft` or list it in parameters.protect")


def check_slack(params: TiesSVParams, ctx: MethodContext) -> None:
    """Checks of a method with an optional slack step (`dare_ties`, ...): a slack needs a protected input."""
    check_ties(params, ctx)
    if params.slack and not protected_by_role(params, ctx):
        raise ValueError("slack rescues a protected model's entries: give one `role: sft` or list it in protect")


def describe_slack(params: TiesSVParams, ctx: MethodContext) -> str:
    """One line of the slack step and the election's conventions."""
    election = election_of(params)
    return (
        f"{_describe(params, ctx)}  election_weights {election['election_weights']}"
        f"  majority_sign_method {election['majority_sign_method']}"
    )


def _describe(params: TiesSVParams, ctx: MethodContext) -> str:
    protect = [ctx.refs[i] for i in protected_by_role(params, ctx)]
    slack = params.slack if params.slack is not None else 0.0
    return f"slack {slack}  scope {params.slack_scope or 'tensor'}  protect {protect}"


SPEC = MethodSpec(
    name="ties_sv",
    summary="TIES with sign slack that rescues protected (SFT) parameters (Tao et al. 2024).",
    params=TiesSVParams,
    bind=TiesSVMerger,
    fn=merge_ties_sv,
    uses_density=True,
    default_normalize=True,
    check=_check,
    protected=protected_by_role,
    describe=_describe,
    diagnostics=("elements", "kept", "sign_conflicts", "protected_discarded", "conflicts", "rescued"),
    reference="https://arxiv.org/abs/2407.03994",
)
