"""The methods mergekit 0.1.5 registers besides the TIES family, tensor by tensor against mergekit's own objects.

fp32 inputs; bit-identical where the same float operations run in the same order (every method
here), on general, collinear and antipodal inputs where those are special cases.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from registry.errors import RecipeError
from registry.merge.methods import get_method
from registry.recipe import parse_recipe

mergekit = pytest.importorskip("mergekit", reason="mergekit 0.1.5 is the test extra")

SHAPES = [(64, 33), (1000,), (3, 4, 5)]


def _theirs(name: str, inputs: list[torch.Tensor], base: torch.Tensor | None, **params: Any) -> torch.Tensor:
    from mergekit.merge_methods import registry as mk_registry
    from mergekit.merge_methods.base import TensorGroup

    group = (
        TensorGroup.from_tensors(inputs) if base is None else TensorGroup.from_tensors([base, *inputs], base_index=0)
    )
    return mk_registry.get(name)([group], parameters=params, dtype=torch.float32)[0]


def _data(shape: tuple[int, ...], n: int, scale: float = 0.05) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(sum(shape) + n)
    base = torch.randn(shape, generator=g)
    return base, [base + scale * torch.randn(shape, generator=g) for _ in range(n)]


def _same(theirs: torch.Tensor, ours: torch.Tensor) -> None:
    assert ours.dtype == torch.float32 and ours.shape == theirs.shape
    assert torch.equal(theirs.float().view(torch.int32), ours.view(torch.int32)), float((theirs - ours).abs().max())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [1e-4, 0.02, 10.0])
def test_nearswap(shape: tuple[int, ...], t: float) -> None:
    base, inputs = _data(shape, 1)
    _same(_theirs("nearswap", inputs, base, t=t), get_method("nearswap").fn(inputs, base, t=t))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock(shape: tuple[int, ...], n: int, filter_wise: bool) -> None:
    base, inputs = _data(shape, n)
    theirs = _theirs("model_stock", inputs, base, filter_wise=filter_wise)
    _same(theirs, get_method("model_stock").fn(inputs, base, filter_wise=filter_wise))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [None, 0.5])
def test_passthrough(shape: tuple[int, ...], scale: float | None) -> None:
    _, inputs = _data(shape, 1)
    _same(_theirs("passthrough", inputs, None, scale=[scale]), get_method("passthrough").fn(inputs, scale=scale))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weights", [[1.0, 0.5, 2.0], [0.3, 0.3, 0.4]])
@pytest.mark.parametrize("normalize_weights", [True, False])
def test_multislerp(shape: tuple[int, ...], weights: list[float], normalize_weights: bool) -> None:
    _, inputs = _data(shape, 3, scale=1.0)
    theirs = _theirs("multislerp", inputs, None, weight=weights, normalize_weights=normalize_weights)
    _same(theirs, get_method("multislerp").fn(inputs, weights=weights, normalize_weights=normalize_weights))


def test_multislerp_antipodal_pair_falls_back_to_the_weighted_sum() -> None:
    x = torch.randn(50, 7)
    theirs = _theirs("multislerp", [x, -x], None, weight=[1.0, 1.0])
    _same(theirs, get_method("multislerp").fn([x, -x], weights=[1.0, 1.0]))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("row_wise", "flatten"), [(False, True), (False, False), (True, False)])
def test_nuslerp(shape: tuple[int, ...], row_wise: bool, flatten: bool) -> None:
    _, inputs = _data(shape, 2, scale=1.0)
    for pair in (inputs, [inputs[0], 2 * inputs[0]]):  # general, collinear
        theirs = _theirs("nuslerp", pair, None, weight=[0.7, 0.4], nuslerp_row_wise=row_wise, nuslerp_flatten=flatten)
        ours = get_method("nuslerp").fn(pair, weights=[0.7, 0.4], row_wise=row_wise, flatten=flatten)
        _same(theirs, ours)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [2, 3])
def test_karcher(shape: tuple[int, ...], n: int) -> None:
    _, inputs = _data(shape, n, scale=1.0)
    _same(_theirs("karcher", inputs, None), get_method("karcher").fn(inputs))
    zeros = [torch.zeros(shape) for _ in range(n)]
    _same(_theirs("karcher", zeros, None), get_method("karcher").fn(zeros))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("select_topk", [1.0, 0.3, 0.0])
def test_sce(shape: tuple[int, ...], select_topk: float) -> None:
    base, inputs = _data(shape, 3)
    _same(
        _theirs("sce", inputs, base, select_topk=select_topk),
        get_method("sce").fn(inputs, base, select_topk=select_topk),
    )


@pytest.mark.parametrize("shape", [(64, 33), (300, 1000), (1000,)])
def test_arcee_fusion_up_to_a_million_entries(shape: tuple[int, ...]) -> None:
    base, inputs = _data(shape, 1)
    _same(_theirs("arcee_fusion", inputs, base), get_method("arcee_fusion").fn(inputs, base))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ["ram", "ramplus_tl"])
def test_ram(shape: tuple[int, ...], method: str) -> None:
    base, inputs = _data(shape, 3)
    g = torch.Generator().manual_seed(9)
    # Some entries unchanged, so that unique and shared positions both occur.
    inputs = [torch.where(torch.rand(shape, generator=g) < 0.5, base, x) for x in inputs]
    params = {"epsilon": 1e-5} if method == "ram" else {"epsilon": 1e-5, "r": 0.3, "alpha": 0.5}
    theirs = _theirs(method, inputs, base, **params)
    keywords = {"epsilon": 1e-5} if method == "ram" else {"epsilon": 1e-5, "r": 0.3, "alpha": 0.5}
    _same(theirs, get_method(method).fn(inputs, base, **keywords))


def _recipe(method: str, n: int, *, base: bool, **parameters: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "merge_method": method,
        "models": [{"model": f"org/m{i}"} for i in range(n)],
        "parameters": parameters,
    }
    if base:
        data["base_model"] = "org/base"
    return data


@pytest.mark.parametrize(
    ("method", "n", "base", "parameters"),
    [
        ("nearswap", 1, True, {"t": 0.001}),
        ("model_stock", 2, True, {"filter_wise": True}),
        ("passthrough", 1, False, {"scale": 0.5}),
        ("multislerp", 3, False, {"normalize_weights": False}),
        ("nuslerp", 2, False, {"nuslerp_flatten": False}),
        ("karcher", 3, False, {"max_iter": 20}),
        ("sce", 3, True, {"select_topk": 0.1}),
        ("arcee_fusion", 1, True, {}),
        ("ram", 2, True, {"epsilon": 1e-4}),
        ("ramplus_tl", 2, True, {"r": 0.2, "alpha": 0.3}),
    ],
)
def test_mergekit_configs_load(method: str, n: int, base: bool, parameters: dict[str, Any]) -> None:
    recipe = parse_recipe(_recipe(method, n, base=base, **parameters))
    assert recipe.merge_method == method


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (_recipe("nuslerp", 2, base=True), "nuslerp merges the listed models without a base"),
        (_recipe("multislerp", 2, base=True), "remove base_model"),
        (_recipe("model_stock", 1, base=True), "at least 2 input models"),
        (_recipe("nearswap", 2, base=True, t=0.1), "at most 1 other model"),
        (_recipe("nearswap", 1, base=True), "parameters.t: required"),
        (_recipe("sce", 2, base=True, select_topk=2), "select_topk is a share"),
        (_recipe("passthrough", 2, base=False), "at most 1 other model"),
    ],
)
def test_mergekit_configs_refused_with_a_reason(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(RecipeError, match=needle):
        parse_recipe(data)


@pytest.mark.parametrize("select_topk", [1.0, 0.3])
def test_sce_streams_in_chunks(select_topk: float, monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks that cut the tensor anywhere give the same bits as one chunk (the selection's ties carry over).
    from registry.merge.methods import base as method_base

    base, inputs = _data((97, 61), 3)
    inputs = [x.bfloat16() for x in inputs]  # many equal variances at the selection cut
    whole = get_method("sce").fn(inputs, base.bfloat16(), select_topk=select_topk)
    monkeypatch.setattr(method_base, "CHUNK_ELEMENTS", 1000)
    chunked = get_method("sce").fn(inputs, base.bfloat16(), select_topk=select_topk)
    assert torch.equal(whole.view(torch.int32), chunked.view(torch.int32))


@pytest.mark.parametrize("method", ["ram", "ramplus_tl"])
def test_ram_streams_in_chunks(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks that cut the tensor anywhere give the same bits (RAM+'s overlap ratios count the whole tensor).
    from registry.merge.methods import base as method_base

    base, inputs = _data((97, 61), 3)
    g = torch.Generator().manual_seed(1)
    inputs = [torch.where(torch.rand(base.shape, generator=g) < 0.5, base, x) for x in inputs]  # unique and shared
    whole = get_method(method).fn(inputs, base)
    monkeypatch.setattr(method_base, "CHUNK_ELEMENTS", 1000)
    assert torch.equal(whole.view(torch.int32), get_method(method).fn(inputs, base).view(torch.int32))
