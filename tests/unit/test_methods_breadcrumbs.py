"""`breadcrumbs` / `breadcrumbs_ties` against mergekit 0.1.5's own methods: bit for bit on fp32 (≤ 1e-6 with rescale)."""

from __future__ import annotations

import math

import pytest
import torch

from registry.errors import RecipeError
from registry.merge.methods import base as method_base
from registry.merge.methods import get_method
from registry.merge.methods.base import TensorStats
from registry.recipe import parse_recipe

mergekit = pytest.importorskip("mergekit", reason="mergekit 0.1.5 is the test extra")

WEIGHTS = [1.0, 0.6, 1.3]
DENSITIES = [0.3, 0.55, 0.9]


def _mergekit(name: str, inputs: list[torch.Tensor], base: torch.Tensor, **params: object) -> torch.Tensor:
    from mergekit.merge_methods import registry as mk_registry
    from mergekit.merge_methods.base import TensorGroup

    group = TensorGroup.from_tensors([base, *inputs], base_index=0)
    return mk_registry.get(name)([group], parameters={"weight": WEIGHTS, **params}, dtype=torch.float32)[0]


@pytest.mark.parametrize("method", ["breadcrumbs", "breadcrumbs_ties"])
@pytest.mark.parametrize(
    ("gamma", "rescale", "normalize"), [(0.01, False, False), (0.1, True, True), (0.5, False, True)]
)
@pytest.mark.parametrize("shape", [(257, 129), (1000,), (7,)])
def test_bit_identical_to_mergekit(
    method: str, gamma: float, rescale: bool, normalize: bool, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(method_base, "CHUNK_ELEMENTS", 4096)  # several chunks: the cuts carry across them
    g = torch.Generator().manual_seed(sum(shape))
    base = torch.randn(shape, generator=g)
    inputs = [base + 0.01 * torch.randn(shape, generator=g) for _ in range(3)]
    params = {"gamma": gamma, "rescale": rescale, "normalize": normalize, "density": DENSITIES, "lambda": 0.8}
    theirs = _mergekit(method, inputs, base, **params)
    ours = get_method(method).fn(
        inputs, base, weights=WEIGHTS, densities=DENSITIES, normalize=normalize, lambda_=0.8, gamma=gamma,
        rescale=rescale,
    )  # fmt: skip
    if rescale:  # ‖τ‖₁ summed in fp64 by chunks here, in one fp32 torch reduction there
        assert torch.allclose(theirs, ours, rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(theirs.view(torch.int32), ours.view(torch.int32))


def test_kept_counts_are_the_target() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(300, 100, generator=g)
    inputs = [base + torch.randn(300, 100, generator=g) for _ in range(2)]
    stats = TensorStats()
    get_method("breadcrumbs").fn(inputs, base, weights=[1, 1], densities=[0.2, 0.5], gamma=0.05, stats=stats)
    assert stats.kept == [int(0.2 * 30000), int(0.5 * 30000)]


def test_breadcrumbs_ties_slack() -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(200, 100, generator=g)
    inputs = [base + 0.01 * torch.randn(200, 100, generator=g) for _ in range(2)]
    fn = get_method("breadcrumbs_ties").fn
    plain = fn(inputs, base, weights=[1.0, 0.8], densities=[0.5, 0.5])
    stats = TensorStats()
    zero = fn(inputs, base, weights=[1.0, 0.8], densities=[0.5, 0.5], slack=0.0, protect=[1], stats=stats)
    assert torch.equal(plain, zero) and stats.conflicts[1] > 0
    stats = TensorStats()
    fn(inputs, base, weights=[1.0, 0.8], densities=[0.5, 0.5], slack=0.25, protect=[1], stats=stats)
    assert stats.rescued[1] == math.ceil(0.25 * stats.conflicts[1])


def test_recipes() -> None:
    data = {
        "merge_method": "breadcrumbs_ties",
        "base_model": "org/base",
        "models": [
            {"model": "org/ct", "role": "ct", "parameters": {"density": 0.5}},
            {"model": "org/sft", "role": "sft", "parameters": {"density": 0.5}},
        ],
        "parameters": {"gamma": 0.02, "slack": 0.1, "majority_sign_method": "frequency"},
    }
    assert parse_recipe(data).parameters.gamma == 0.02  # type: ignore[attr-defined]
    with pytest.raises(RecipeError, match="gamma"):
        parse_recipe({**data, "parameters": {"gamma": 1.5}})
    with pytest.raises(RecipeError, match="slack"):
        parse_recipe({**data, "merge_method": "breadcrumbs"})


@pytest.mark.parametrize("method", ["breadcrumbs", "breadcrumbs_ties"])
def test_fused_cuts_are_the_torch_paths(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # bf16: many equal magnitudes straddle both cuts; the fused kernels and the torch radix select agree.
    monkeypatch.setattr(method_base, "CHUNK_ELEMENTS", 4096)
    g = torch.Generator().manual_seed(5)
    base = (0.02 * torch.randn(300, 200, generator=g)).bfloat16()
    inputs = [(base.float() + 0.002 * torch.randn(300, 200, generator=g)).bfloat16() for _ in range(2)]
    kwargs = {"weights": [1.0, 0.7], "densities": [0.3, 0.6], "gamma": 0.05}
    fused_result = get_method(method).fn(inputs, base, **kwargs)
    monkeypatch.setenv("MERGELING_FUSED", "0")
    torch_result = get_method(method).fn(inputs, base, **kwargs)
    assert torch.equal(fused_result.view(torch.int32), torch_result.view(torch.int32))
