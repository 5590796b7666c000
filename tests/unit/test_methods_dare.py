"""DARE: reproducible from random_seed, the kept fraction and the L1 rescale (statistically), and density 0 refused."""

from __future__ import annotations

import math

import pytest
import torch

import registry.merge.methods.base as methods_base
from registry.errors import RecipeError
from registry.merge.methods import TensorStats
from registry.merge.methods.dare import merge_dare
from registry.recipe import parse_recipe

DARE = {
    "merge_method": "dare_ties",
    "base_model": "org/base",
    "models": [
        {"model": "org/ct", "parameters": {"density": 0.3}},
        {"model": "org/sft", "parameters": {"density": 0.5}},
    ],
    "parameters": {"random_seed": 7},
}


def _pair(n: int = 300_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g)
    return base, base + 0.01 * torch.randn(n, generator=g)


def test_same_seed_same_bytes_other_seed_other_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    base, x = _pair()
    y = base + 0.01 * torch.randn(base.shape, generator=torch.Generator().manual_seed(9))
    kw = {"weights": [1.0, 0.7], "densities": [0.3, 0.6], "random_seed": 5, "name": "w"}
    a = merge_dare([x, y], base, **kw)
    assert torch.equal(a.view(torch.int32), merge_dare([x, y], base, **kw).view(torch.int32))
    assert not torch.equal(a, merge_dare([x, y], base, **{**kw, "random_seed": 6}))
    assert not torch.equal(a, merge_dare([x, y], base, **{**kw, "name": "v"}))  # each tensor its own mask
    # Neither the compute chunks nor bf16 storage change a bit.
    monkeypatch.setattr(methods_base, "CHUNK_ELEMENTS", 77_777)
    assert torch.equal(a.view(torch.int32), merge_dare([x, y], base, **kw).view(torch.int32))


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_kept_fraction_is_density(density: float) -> None:
    base, x = _pair(400_000, seed=int(density * 10))
    stats = TensorStats()
    merged = merge_dare([x], base, weights=[1.0], densities=[density], rescale=False, consensus=False, stats=stats)
    kept = int(torch.count_nonzero(merged - base))
    n = base.numel()
    sigma = math.sqrt(n * density * (1 - density))
    assert abs(kept - density * n) < 5 * sigma, (kept, density * n)
    assert stats.kept == [int(torch.count_nonzero(merged - base))]
    # Kept entries are the task vector unchanged (no rescale); dropped ones are the base.
    delta = merged - base
    survivors = delta != 0
    assert torch.allclose(delta[survivors], (x - base)[survivors], atol=1e-6)


def test_rescale_preserves_the_l1_norm() -> None:
    base, x = _pair()
    tau = x - base
    merged = merge_dare([x], base, weights=[1.0], densities=[0.25], consensus=False)
    got = merged - base
    assert math.isclose(float(got.abs().sum()), float(tau.abs().sum()), rel_tol=1e-4)
    kept = got != 0
    scale = float(tau.abs().sum()) / float(tau[kept].abs().sum())
    assert 3.8 < scale < 4.2  # ≈ 1 / density
    assert torch.allclose(got[kept], tau[kept] * scale, rtol=1e-4, atol=1e-6)  # fp32 of base + τ


def test_dare_ties_elects_signs() -> None:
    base = torch.zeros(6)
    a = torch.tensor([1.0, -1.0, 2.0, 0.5, -3.0, 0.0])
    b = torch.tensor([-2.0, -1.0, 1.0, -0.2, 1.0, 0.0])
    # density 1: nothing dropped; TIES election over the weighted sum, normalize off (DARE's default).
    got = merge_dare([a, b], base, weights=[1.0, 1.0], densities=[1.0, 1.0])
    assert got.tolist() == [-2.0, -2.0, 3.0, 0.5, -3.0, 0.0]
    linear = merge_dare([a, b], base, weights=[1.0, 1.0], densities=[1.0, 1.0], consensus=False)
    assert torch.equal(linear, a + b)


def test_density_zero_refused() -> None:
    x = torch.ones(4)
    with pytest.raises(ValueError, match=r"density=0.0 must be in \(0, 1\]"):
        merge_dare([x], x, weights=[1.0], densities=[0.0])
    with pytest.raises(RecipeError, match=r"models.0.parameters.density = 0.0: density is the kept fraction"):
        parse_recipe({**DARE, "models": [{"model": "org/ct", "parameters": {"density": 0.0}}, DARE["models"][1]]})
    with pytest.raises(RecipeError, match=r"parameters.density = 0"):
        parse_recipe({**DARE, "parameters": {"density": 0}})


def test_recipe_parameters() -> None:
    recipe = parse_recipe({**DARE, "parameters": {"random_seed": 3, "rescale": False, "lambda": 0.5}})
    assert recipe.parameters.random_seed == 3 and recipe.parameters.rescale is False  # type: ignore[attr-defined]
    assert parse_recipe({**DARE, "merge_method": "dare_linear"}).merge_method == "dare_linear"
    with pytest.raises(RecipeError, match="random_seed is a non-negative whole number"):
        parse_recipe({**DARE, "parameters": {"random_seed": -1}})
    with pytest.raises(RecipeError, match="a DARE rescaling parameter, not used by ties"):
        parse_recipe({**DARE, "merge_method": "ties", "parameters": {"rescale": True}})
