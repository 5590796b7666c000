"""The sign election's conventions and the slack step on every sign-electing method.

`majority_sign_method: frequency` is checked against mergekit 0.1.5's own `count` consensus (its
`GeneralizedTaskArithmeticMerge` has it, though no recipe key reaches it); `election_weights: after`
against a direct reading of mergekit #474 on mergekit's own trimming; `slack: 0` on dare_ties
against plain dare_ties, and slack > 0 against its definition (rescues ⌈slack·|C|⌉ conflicts).
"""

from __future__ import annotations

import math

import pytest
import torch

from registry.errors import RecipeError
from registry.merge.methods import get_method
from registry.merge.methods.base import TensorStats
from registry.merge.methods.dare import keep_masks, mask_seed
from registry.recipe import parse_recipe

mergekit = pytest.importorskip("mergekit", reason="mergekit 0.1.5 is the test extra")

WEIGHTS = [1.0, 0.6, 1.3]
DENSITIES = [0.3, 0.55, 0.2]


def _inputs(shape: tuple[int, ...] = (257, 129), seed: int = 7) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + 0.01 * torch.randn(shape, generator=g) for _ in range(3)]


def _mergekit(consensus: str, sparsification: str | None, inputs: list[torch.Tensor], base: torch.Tensor, **params):
    from mergekit.merge_methods.base import TensorGroup
    from mergekit.merge_methods.generalized_task_arithmetic import ConsensusMethod, GeneralizedTaskArithmeticMerge
    from mergekit.sparsify import SparsificationMethod

    method = GeneralizedTaskArithmeticMerge(
        consensus_method=ConsensusMethod(consensus),
        sparsification_method=SparsificationMethod(sparsification) if sparsification else None,
        default_normalize=True,
        default_rescale=False,
        method_name="probe",
        method_pretty_name=None,
        method_reference_url=None,
    )
    group = TensorGroup.from_tensors([base, *inputs], base_index=0)
    return method([group], parameters={"weight": WEIGHTS, **params}, dtype=torch.float32)[0]


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", [(257, 129), (1000,), (3,)])
def test_ties_frequency_equals_mergekit_count(normalize: bool, shape: tuple[int, ...]) -> None:
    base, inputs = _inputs(shape, seed=sum(shape))
    theirs = _mergekit(
        "count", "magnitude", inputs, base, normalize=normalize, density=DENSITIES, rescale=False, **{"lambda": 0.8}
    )
    ours = get_method("ties").fn(
        inputs,
        base,
        weights=WEIGHTS,
        densities=DENSITIES,
        normalize=normalize,
        lambda_=0.8,
        majority_sign_method="frequency",
    )
    assert torch.equal(theirs.view(torch.int32), ours.view(torch.int32))
    total = get_method("ties").fn(inputs, base, weights=WEIGHTS, densities=DENSITIES, normalize=normalize, lambda_=0.8)
    if base.numel() > 100:
        assert not torch.equal(total, ours)  # the option changes the result (the test can fail)


def test_dare_ties_frequency_without_drop_equals_mergekit_count() -> None:
    base, inputs = _inputs()
    theirs = _mergekit("count", None, inputs, base, normalize=False, density=[1.0] * 3, rescale=True, **{"lambda": 1.0})
    ours = get_method("dare_ties").fn(
        inputs, base, weights=WEIGHTS, densities=[1.0] * 3, majority_sign_method="frequency"
    )
    assert torch.equal(theirs.view(torch.int32), ours.view(torch.int32))


def test_election_weights_after_is_the_unweighted_vote() -> None:
    # mergekit #474: trim (mergekit's own magnitude sparsify), elect on the unweighted deltas, then
    # the weighted disjoint mean of the entries that agree.
    from mergekit.sparsify import SparsificationMethod, sparsify

    base, inputs = _inputs((400, 300), seed=11)
    trimmed = torch.stack(
        [
            sparsify(t - base, density=d, method=SparsificationMethod.magnitude)
            for t, d in zip(inputs, DENSITIES, strict=True)
        ]
    )
    weights = torch.tensor(WEIGHTS).unsqueeze(-1).unsqueeze(-1)
    elected = (trimmed.sum(dim=0) >= 0).float() * 2 - 1
    agree = trimmed.sign() == elected
    mixed = (trimmed * weights * agree).sum(dim=0)
    divisor = (weights * agree).sum(dim=0)
    divisor[divisor == 0] = 1
    expected = base + mixed / divisor
    ours = get_method("ties").fn(
        inputs, base, weights=WEIGHTS, densities=DENSITIES, normalize=True, election_weights="after"
    )
    assert torch.allclose(ours, expected, atol=0, rtol=1e-6)
    before = get_method("ties").fn(inputs, base, weights=WEIGHTS, densities=DENSITIES, normalize=True)
    assert not torch.equal(before, ours)


def test_equal_weights_make_before_and_after_the_same() -> None:
    base, inputs = _inputs()
    runs = [
        get_method("ties").fn(inputs, base, weights=[0.7] * 3, densities=DENSITIES, election_weights=when)
        for when in ("before", "after")
    ]
    assert torch.equal(runs[0], runs[1])


def _dare_reference(inputs: list[torch.Tensor], base: torch.Tensor, densities: list[float], seed: int, name: str):
    """Our seeded masks, then mergekit's own DARE combination (L1 rescale, weights, sum consensus)."""
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask

    deltas = []
    for i, (t, d) in enumerate(zip(inputs, densities, strict=True)):
        delta = (t - base).reshape(-1)
        mask = torch.cat(list(keep_masks(delta.numel(), d, mask_seed(seed, name, i))))
        dropped = delta * mask
        before, after = float(delta.abs().sum(dtype=torch.float64)), float(dropped.abs().sum(dtype=torch.float64))
        deltas.append(dropped * (before / after))
    stack = torch.stack(deltas) * torch.tensor(WEIGHTS).unsqueeze(-1)
    mask = get_mask(stack, method="sum", mask_dtype=torch.float32)
    mixed = (stack * mask).sum(dim=0)
    return (base.reshape(-1) + mixed).reshape(base.shape)


def test_dare_ties_slack_zero_is_plain_dare_ties() -> None:
    base, inputs = _inputs((300, 200), seed=3)
    plain = get_method("dare_ties").fn(inputs, base, weights=WEIGHTS, densities=DENSITIES, random_seed=4, name="w")
    zero_stats = TensorStats()
    zero = get_method("dare_ties").fn(
        inputs, base, weights=WEIGHTS, densities=DENSITIES, random_seed=4, name="w", slack=0.0, protect=[1],
        stats=zero_stats,
    )  # fmt: skip
    assert torch.equal(plain.view(torch.int32), zero.view(torch.int32))
    assert zero_stats.conflicts[1] > 0 and zero_stats.rescued.get(1, 0) == 0
    reference = _dare_reference(inputs, base, DENSITIES, 4, "w")
    assert torch.allclose(plain, reference, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("slack", [0.1, 0.5, 1.0])
def test_dare_ties_slack_rescues_the_share_of_conflicts(slack: float) -> None:
    base, inputs = _inputs((300, 200), seed=3)
    stats = TensorStats()
    merged = get_method("dare_ties").fn(
        inputs, base, weights=WEIGHTS, densities=DENSITIES, random_seed=4, name="w", slack=slack, protect=[1],
        stats=stats,
    )  # fmt: skip
    conflicts = stats.conflicts[1]
    assert stats.rescued[1] == math.ceil(slack * conflicts)
    assert stats.protected_discarded[1] == conflicts - stats.rescued[1]
    plain = get_method("dare_ties").fn(inputs, base, weights=WEIGHTS, densities=DENSITIES, random_seed=4, name="w")
    assert int((merged != plain).sum()) > 0


def _recipe(method: str, **parameters: object) -> dict[str, object]:
    return {
        "merge_method": method,
        "base_model": "org/base",
        "models": [
            {"model": "org/ct", "role": "ct", "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": "org/sft", "role": "sft", "parameters": {"weight": 1.0, "density": 0.5}},
        ],
        "parameters": parameters,
    }


@pytest.mark.parametrize("method", ["ties", "ties_sv", "dare_ties"])
def test_every_sign_electing_method_takes_the_election_keys(method: str) -> None:
    recipe = parse_recipe(_recipe(method, election_weights="after", majority_sign_method="frequency"))
    assert recipe.parameters.election_weights == "after"  # type: ignore[attr-defined]
    with pytest.raises(RecipeError, match="majority_sign_method"):
        parse_recipe(_recipe(method, majority_sign_method="count"))


def test_dare_ties_takes_slack_and_dare_linear_refuses_it() -> None:
    recipe = parse_recipe(_recipe("dare_ties", slack=0.1, slack_scope="model", random_seed=2))
    assert recipe.protected_indices() == (1,)
    with pytest.raises(RecipeError, match="slack is a .*dare_ties"):
        parse_recipe(_recipe("dare_linear", slack=0.1))
    with pytest.raises(RecipeError, match="election_weights"):
        parse_recipe(_recipe("dare_linear", election_weights="after"))


def test_after_refuses_negative_weights() -> None:
    data = _recipe("ties", election_weights="after")
    data["models"][0]["parameters"]["weight"] = -0.5  # type: ignore[index]
    with pytest.raises(RecipeError, match="election_weights: after needs weights >= 0"):
        parse_recipe(data)
