"""Every method takes bf16/fp16 inputs as read and gives exactly the fp32-input result."""

from __future__ import annotations

import pytest
import torch

import registry.merge.methods.base as methods_base
from registry.merge.methods import METHODS


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_equal_their_fp32_copies(
    name: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(4)
    base = (torch.randn(37, 29, generator=g) * 0.02).to(dtype)
    inputs = [(base.float() + 0.002 * torch.randn(37, 29, generator=g)).to(dtype) for _ in range(3)]
    spec = METHODS[name]
    kwargs: dict[str, object] = {
        "weights": [1.0, 0.5, 0.8],
        "densities": [0.2, 0.4, 0.3],
        "normalize": spec.default_normalize,
        "lambda_": 1.0,
    }
    if name == "ties_sv":
        kwargs.update(slack=0.2, protect=[2])
    if name == "slerp":  # the base and one other model
        inputs = inputs[:1]
        kwargs = {"t": 0.3}
    if name.startswith(("dare", "della")):
        kwargs.update(normalize=True, random_seed=7, name="w")
    # Methods without weights/densities: their own parameters, and as many inputs as they take.
    own: dict[str, tuple[int, dict[str, object]]] = {
        "nearswap": (1, {"t": 0.001}),
        "arcee_fusion": (1, {}),
        "passthrough": (1, {"scale": 0.5}),
        "nuslerp": (2, {"weights": [1.0, 0.5]}),
        "multislerp": (3, {"weights": [1.0, 0.5, 0.8]}),
        "karcher": (3, {}),
        "model_stock": (3, {"filter_wise": True}),
        "sce": (3, {"select_topk": 0.5}),
        "ram": (3, {"epsilon": 1e-4}),
        "ramplus_tl": (3, {"epsilon": 1e-4, "r": 0.3}),
    }
    if name in own:
        count, kwargs = own[name]
        inputs = inputs[:count]
    with_base = spec.needs_base
    expected = spec.fn([t.float() for t in inputs], base.float() if with_base else None, **kwargs)
    monkeypatch.setattr(methods_base, "CHUNK_ELEMENTS", 100)  # several chunks, a short last one
    got = spec.fn(inputs, base if with_base else None, **kwargs)
    assert got.dtype == torch.float32
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))


def test_integer_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="floating point, got torch.int64"):
        METHODS["ties"].fn([torch.arange(4)], torch.zeros(4), weights=[1.0], densities=[1.0])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("columns", [1, 3, 17, 4099])
def test_sum_inputs_matches_torch_sum_bit_for_bit(n: int, columns: int) -> None:
    g = torch.Generator().manual_seed(n * 1000 + columns)
    stack = torch.randn(n, columns, generator=g) * torch.logspace(-30, 30, columns)
    stack[:, ::3] = -0.0  # signed zeros: the sum's zero sign must match too
    stack[0, ::5] = 0.0
    stack[-1, ::7] = -stack[0, ::7]  # exact cancellations
    out = torch.empty(columns)
    expected = torch.sum(stack, dim=0)
    assert torch.equal(methods_base.sum_inputs(stack, out=out).view(torch.int32), expected.view(torch.int32))
