"""slerp: mergekit 0.1.5's formula, its endpoints, and the refusals (more than two models, t outside [0, 1])."""

from __future__ import annotations

import math

import pytest
import torch

from registry.errors import RecipeError
from registry.merge.methods import get_method
from registry.merge.methods.slerp import merge_slerp
from registry.recipe import parse_recipe

SLERP = {
    "merge_method": "slerp",
    "base_model": "org/base",
    "models": [{"model": "org/base"}, {"model": "org/ct"}],
    "parameters": {"t": 0.4},
}


def test_endpoints_and_the_arc() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(64, 33, generator=g)
    other = torch.randn(64, 33, generator=g)
    assert torch.equal(merge_slerp([other], base, t=0.0), base)
    assert torch.allclose(merge_slerp([other], base, t=1.0), other, atol=1e-6)
    # Between two vectors of equal norm, slerp stays on the sphere (a linear average would not).
    unit_a, unit_b = base / base.norm(), other / other.norm()
    mid = merge_slerp([unit_b], unit_a, t=0.5)
    assert math.isclose(float(mid.norm()), 1.0, rel_tol=1e-5)
    assert float((unit_a + unit_b).div(2).norm()) < 0.9
    # The angle to each end is t·θ and (1 − t)·θ.
    theta = math.acos(float((unit_a * unit_b).sum()))
    got = merge_slerp([unit_b], unit_a, t=0.25)
    assert math.isclose(math.acos(float((got * unit_a).sum()) / float(got.norm())), 0.25 * theta, rel_tol=1e-4)


def test_collinear_tensors_interpolate_linearly() -> None:
    base = torch.linspace(-1, 1, 100)
    assert torch.allclose(merge_slerp([3 * base], base, t=0.5), 2 * base, atol=1e-6)


def test_bf16_inputs_give_the_fp32_result() -> None:
    g = torch.Generator().manual_seed(2)
    base, other = (torch.randn(40, 50, generator=g).bfloat16() for _ in range(2))
    got = merge_slerp([other], base, t=0.3)
    assert got.dtype == torch.float32
    assert torch.equal(got, merge_slerp([other.float()], base.float(), t=0.3))


def test_function_refuses_bad_input() -> None:
    x = torch.ones(4)
    with pytest.raises(ValueError, match="ONE other model"):
        merge_slerp([x, x], x, t=0.5)
    with pytest.raises(ValueError, match=r"t=1.5 must be within \[0, 1\]"):
        merge_slerp([x], x, t=1.5)
    with pytest.raises(ValueError, match="needs a base"):
        merge_slerp([x], None, t=0.5)


def test_recipe_accepts_slerp() -> None:
    recipe = parse_recipe(SLERP)
    assert [m.model for m in recipe.merge_inputs()] == ["org/ct"]
    assert recipe.parameters.t == 0.4  # type: ignore[attr-defined]
    assert get_method("slerp").describe(recipe.parameters, recipe.method_context()) == "t 0.4"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            {"models": [{"model": "org/base"}, {"model": "org/a"}, {"model": "org/b"}]},
            "at most 1 other model(s), got 2",
        ),
        ({"parameters": {"t": 1.5}}, "parameters.t = 1.5: t is the position between the base (0)"),
        ({"parameters": {"t": -0.1}}, "write a number in [0, 1]"),
        ({"parameters": {}}, "parameters.t: required"),
        ({"parameters": {"t": 0.5, "density": 0.3}}, "density is not used by slerp"),
        ({"models": [{"model": "org/base"}, {"model": "org/ct", "parameters": {"weight": 2.0}}]}, "weight is not used"),
        ({"parameters": {"t": 0.5, "slack": 0.1}}, "slack is a ties_sv / dare_ties"),
    ],
)
def test_recipe_refuses_bad_slerp(change: dict, needle: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe({**SLERP, **change})
    assert needle in str(info.value)
