"""`della` / `della_linear`: exact against mergekit where nothing is random, statistically where it is."""

from __future__ import annotations

import math

import pytest
import torch

from registry.errors import RecipeError
from registry.merge.methods import base as method_base
from registry.merge.methods import get_method
from registry.merge.methods.base import TensorStats
from registry.merge.methods.della import keep_probabilities
from registry.recipe import parse_recipe

mergekit = pytest.importorskip("mergekit", reason="mergekit 0.1.5 is the test extra")

WEIGHTS = [1.0, 0.6, 1.3]


def _data(shape: tuple[int, ...] = (200, 150), seed: int = 3) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + 0.01 * torch.randn(shape, generator=g) for _ in range(3)]


@pytest.mark.parametrize("method", ["della", "della_linear"])
@pytest.mark.parametrize("normalize", [True, False])
def test_without_drop_bit_identical_to_mergekit(method: str, normalize: bool) -> None:
    from mergekit.merge_methods import registry as mk_registry
    from mergekit.merge_methods.base import TensorGroup

    base, inputs = _data()
    group = TensorGroup.from_tensors([base, *inputs], base_index=0)
    params = {"weight": WEIGHTS, "density": [1.0] * 3, "normalize": normalize, "lambda": 0.8, "epsilon": [0.1] * 3}
    theirs = mk_registry.get(method)([group], parameters=params, dtype=torch.float32)[0]
    ours = get_method(method).fn(inputs, base, weights=WEIGHTS, densities=[1.0] * 3, normalize=normalize, lambda_=0.8)
    assert torch.equal(theirs.view(torch.int32), ours.view(torch.int32))


def test_keep_probabilities_are_mergekits() -> None:
    # mergekit's formula on whole rows, against ours taken from arbitrary flat slices.
    base, inputs = _data((40, 37))
    delta = (inputs[0] - base).abs()
    ranks = torch.argsort(delta, dim=1).argsort(dim=1).float() + 1
    expected = (0.4 - 0.1) + ((ranks - 1) / (37 - 1)).clamp(0, 1) * 2 * 0.1
    pieces = [keep_probabilities(inputs[0], base, slice(a, b), 0.4, 0.1) for a, b in ((0, 50), (50, 51), (51, 1480))]
    assert torch.allclose(torch.cat(pieces), expected.reshape(-1), atol=1e-7)


def test_kept_share_and_preference_for_large_entries_match_mergekit() -> None:
    from mergekit.sparsify import della_magprune

    base, inputs = _data((400, 300))
    delta = inputs[0] - base
    stats = TensorStats()
    get_method("della_linear").fn(
        inputs[:1], base, weights=[1.0], densities=[0.4], epsilon=0.15, random_seed=1, name="w", stats=stats
    )
    ours_share = stats.kept[0] / delta.numel()
    torch.manual_seed(0)
    theirs = della_magprune(delta, density=0.4, epsilon=0.15)
    theirs_share = int(torch.count_nonzero(theirs)) / delta.numel()
    # 120,000 draws: the shares agree within a few standard errors (σ ≈ 0.0014).
    assert abs(ours_share - 0.4) < 0.006 and abs(ours_share - theirs_share) < 0.008
    # Larger magnitudes are kept more often: the top decile by |τ| near d + 0.9ε, the bottom near d − 0.9ε.
    merged = get_method("della_linear").fn(
        inputs[:1], base, weights=[1.0], densities=[0.4], epsilon=0.15, random_seed=1, name="w", rescale=False
    )
    kept = (merged - base) != 0
    order = delta.abs().argsort(dim=1)
    top = torch.gather(kept, 1, order[:, -30:]).float().mean()
    bottom = torch.gather(kept, 1, order[:, :30]).float().mean()
    assert 0.5 < float(top) < 0.58 and 0.22 < float(bottom) < 0.3


def test_reproducible_and_chunking_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    base, inputs = _data()
    fn = get_method("della").fn
    first = fn(inputs, base, weights=WEIGHTS, densities=[0.4, 0.5, 0.6], random_seed=7, name="x")
    monkeypatch.setattr(method_base, "CHUNK_ELEMENTS", 1000)  # chunks that cut rows
    again = fn(inputs, base, weights=WEIGHTS, densities=[0.4, 0.5, 0.6], random_seed=7, name="x")
    other = fn(inputs, base, weights=WEIGHTS, densities=[0.4, 0.5, 0.6], random_seed=8, name="x")
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_rescale_preserves_the_l1_norm() -> None:
    base, inputs = _data()
    merged = get_method("della_linear").fn(inputs[:1], base, weights=[1.0], densities=[0.3], random_seed=2, name="w")
    before, after = float((inputs[0] - base).abs().sum()), float((merged - base).abs().sum())
    assert math.isclose(before, after, rel_tol=1e-4)


def test_della_slack() -> None:
    base, inputs = _data()
    fn = get_method("della").fn
    plain = fn(inputs[:2], base, weights=[1.0, 0.8], densities=[0.5, 0.5], name="w")
    stats = TensorStats()
    zero = fn(inputs[:2], base, weights=[1.0, 0.8], densities=[0.5, 0.5], name="w", slack=0.0, protect=[1], stats=stats)
    assert torch.equal(plain, zero) and stats.conflicts[1] > 0
    stats = TensorStats()
    fn(inputs[:2], base, weights=[1.0, 0.8], densities=[0.5, 0.5], name="w", slack=0.2, protect=[1], stats=stats)
    assert stats.rescued[1] == math.ceil(0.2 * stats.conflicts[1])


def test_recipes() -> None:
    data = {
        "merge_method": "della",
        "base_model": "org/base",
        "models": [
            {"model": "org/ct", "role": "ct", "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": "org/sft", "role": "sft", "parameters": {"weight": 1.0, "density": 0.5}},
        ],
        "parameters": {"epsilon": 0.1, "slack": 0.05, "random_seed": 3},
    }
    assert parse_recipe(data).parameters.epsilon == 0.1  # type: ignore[attr-defined]
    linear = {**data, "merge_method": "della_linear", "parameters": {"epsilon": 0.1}}
    assert parse_recipe(linear).merge_method == "della_linear"
    with pytest.raises(RecipeError, match="density ± epsilon must lie in"):
        parse_recipe(
            {**data, "models": [{"model": "org/ct", "parameters": {"density": 0.2}}], "parameters": {"epsilon": 0.3}}
        )
    with pytest.raises(RecipeError, match="slack"):
        parse_recipe({**linear, "parameters": {"slack": 0.1}})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(37, 129), (3000,), (5, 1)])
def test_fused_masks_are_the_torch_paths(
    dtype: torch.dtype, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The C kernel ranks each row once (radix sort) and compares the draws to a table by rank; the torch
    # path sorts per block. Draw blocks of 1000 cut rows; bf16 deltas have many equal magnitudes (ties).
    from registry.merge.kernels import fused
    from registry.merge.methods import drop
    from registry.merge.methods.della import magprune_masks

    if not fused.enabled():
        pytest.skip("no C compiler: the fused kernels are off")
    monkeypatch.setattr(drop, "MASK_BLOCK", 1000)
    base, inputs = _data(shape)
    base, inputs = base.to(dtype), [x.to(dtype) for x in inputs]
    densities, seeds = [0.4, 0.5, 1.0], [11, 12, 13]
    ours = magprune_masks(inputs, base, densities, 0.15, seeds)
    monkeypatch.setenv("MERGELING_FUSED", "0")
    torch_path = magprune_masks(inputs, base, densities, 0.15, seeds)
    assert ours[2] is None and torch_path[2] is None
    for mine, theirs in zip(ours[:2], torch_path[:2], strict=True):
        assert mine is not None and theirs is not None and torch.equal(mine, theirs)
