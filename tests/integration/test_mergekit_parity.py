"""Parity with mergekit 0.1.5 (a test-only peer, LGPL: the product never imports it).

Tensor level: mergekit's own method objects against ours on seeded tensors. Model level: tiny
random Llama checkpoints merged by mergekit's `run_merge` and by `registry merge` from the SAME
config file. fp32 inputs must give bit-identical tensors; bf16 inputs (fp32 compute, bf16 output)
may differ only at positions where an input's |τ| ties with its trimming threshold, where mergekit
keeps whichever entries its sort puts first and we keep the lowest flat indices.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from registry.lab.tiny import DemoFamily
from registry.merge.kernels.topk import Cut, find_cut, magnitude_keys
from registry.merge.methods import get_method
from tests._fixtures.mergekit_peer import load_tensors, run_both

mergekit = pytest.importorskip("mergekit", reason="mergekit 0.1.5 is the test extra: pip install -e '.[test]'")

WEIGHTS = [1.0, 0.6, 1.3]
DENSITIES = [0.3, 0.55, 0.2]


def _mergekit_tensor_merge(
    name: str, inputs: list[torch.Tensor], base: torch.Tensor | None, **params: object
) -> torch.Tensor:
    from mergekit.merge_methods import registry as mk_registry
    from mergekit.merge_methods.base import TensorGroup

    if base is None:
        group = TensorGroup.from_tensors(inputs)
    else:
        group = TensorGroup.from_tensors([base, *inputs], base_index=0)
    return mk_registry.get(name)([group], parameters={"weight": WEIGHTS[: len(inputs)], **params}, dtype=torch.float32)[
        0
    ]


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", [(257, 129), (1000,), (3,)])
def test_tensor_level_bit_identical(method: str, normalize: bool, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    base = torch.randn(shape, generator=g)
    inputs = [base + 0.01 * torch.randn(shape, generator=g) for _ in range(3)]
    spec = get_method(method)
    params: dict[str, object] = {"normalize": normalize}
    if method != "linear":
        params["lambda"] = 0.8
    if method == "ties":
        params["density"] = DENSITIES
    theirs = _mergekit_tensor_merge(method, inputs, base if spec.needs_base else None, **params)
    ours = spec.fn(
        inputs,
        base if spec.needs_base else None,
        weights=WEIGHTS,
        densities=DENSITIES,
        normalize=normalize,
        lambda_=params.get("lambda", 1.0),
    )
    assert torch.equal(theirs.view(torch.int32), ours.view(torch.int32))


@pytest.mark.parametrize("t", [0.0, 0.3, 0.85, 1.0])
@pytest.mark.parametrize("shape", [(257, 129), (1000,), (3,), (4, 5, 6), (1100, 1000)])
def test_slerp_tensor_level(t: float, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    base = torch.randn(shape, generator=g)
    for other in (base + 0.3 * torch.randn(shape, generator=g), 2 * base, -base):  # general, collinear, antipodal
        group = [base, other]
        from mergekit.merge_methods import registry as mk_registry
        from mergekit.merge_methods.base import TensorGroup

        theirs = mk_registry.get("slerp")(
            [TensorGroup.from_tensors(group, base_index=0)], parameters={"t": t}, dtype=torch.float32
        )[0]
        ours = get_method("slerp").fn([other], base, t=t)
        assert float((theirs - ours).abs().max()) <= 1e-6


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
@pytest.mark.parametrize("normalize", [True, False])
def test_dare_without_drop_bit_identical(method: str, normalize: bool) -> None:
    # density 1 drops nothing (no randomness): the combination step must be mergekit's, bit for bit.
    g = torch.Generator().manual_seed(3)
    base = torch.randn(300, 70, generator=g)
    inputs = [base + 0.01 * torch.randn(300, 70, generator=g) for _ in range(3)]
    theirs = _mergekit_tensor_merge(method, inputs, base, normalize=normalize, density=[1.0] * 3, **{"lambda": 0.8})
    ours = get_method(method).fn(inputs, base, weights=WEIGHTS, densities=[1.0] * 3, normalize=normalize, lambda_=0.8)
    assert torch.equal(theirs.view(torch.int32), ours.view(torch.int32))


def test_slerp_models_match(tiny_family: DemoFamily, tmp_path: Path) -> None:
    config = {
        "merge_method": "slerp",
        "base_model": str(tiny_family.base),
        "models": [{"model": str(tiny_family.base)}, {"model": str(tiny_family.ct)}],
        "parameters": {"t": 0.35},
        "dtype": "float32",
    }
    theirs, ours = run_both(config, tmp_path)
    assert theirs.keys() == ours.keys()
    for name in theirs:
        assert float((theirs[name] - ours[name]).abs().max()) <= 1e-6, name


# -- whole models -----------------------------------------------------------------------------
def _config(method: str, family: DemoFamily, *, dtype: str, out_dtype: str | None) -> dict[str, object]:
    models = []
    for path, weight, density in ((family.ct, WEIGHTS[0], DENSITIES[0]), (family.sft, WEIGHTS[1], DENSITIES[1])):
        parameters: dict[str, float] = {"weight": weight}
        if method == "ties":
            parameters["density"] = density
        models.append({"model": str(path), "parameters": parameters})
    config: dict[str, object] = {"merge_method": method, "models": models, "dtype": dtype}
    if method != "linear":
        config["base_model"] = str(family.base)
        config["parameters"] = {"lambda": 0.9}
    if out_dtype:
        config["out_dtype"] = out_dtype
    return config


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties"])
def test_fp32_models_bit_identical(method: str, tiny_family: DemoFamily, tmp_path: Path) -> None:
    theirs, ours = run_both(_config(method, tiny_family, dtype="float32", out_dtype=None), tmp_path)
    assert theirs.keys() == ours.keys()
    for name in theirs:
        assert theirs[name].dtype == ours[name].dtype == torch.float32, name
        assert torch.equal(_bits(theirs[name]), _bits(ours[name])), name


def _ambiguous_ties(inputs: list[torch.Tensor], base: torch.Tensor, densities: list[float]) -> torch.Tensor:
    """Positions where some input's |τ| equals its trimming threshold and not all such entries are kept."""
    ambiguous = torch.zeros(base.numel(), dtype=torch.bool)
    for tensor, density in zip(inputs, densities, strict=False):
        keys = magnitude_keys((tensor - base).reshape(-1))
        k = max(1, int(density * keys.numel()))
        cut = find_cut(lambda keys=keys: (keys,), k, numel=keys.numel())
        if cut in (Cut.keep_all(), Cut.keep_none()):
            continue
        equal = keys == cut.key
        if int(equal.sum()) > cut.ties:  # the cut splits the tied entries: which ones is sort order
            ambiguous |= equal
    return ambiguous.view(base.shape)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties"])
def test_bf16_models_differ_only_at_threshold_ties(method: str, tiny_family_bf16: DemoFamily, tmp_path: Path) -> None:
    family = tiny_family_bf16
    theirs, ours = run_both(_config(method, family, dtype="float32", out_dtype="bfloat16"), tmp_path)
    base, ct, sft = (load_tensors(p) for p in (family.base, family.ct, family.sft))
    assert theirs.keys() == ours.keys()
    differing = 0
    for name in theirs:
        assert theirs[name].dtype == ours[name].dtype == torch.bfloat16, name
        differ = _bits(theirs[name]) != _bits(ours[name])
        if method != "ties":
            assert not differ.any(), name  # no trimming: nothing may differ
            continue
        inputs = [ct[name].float(), sft[name].float()]
        allowed = _ambiguous_ties(inputs, base[name].float(), DENSITIES[:2])
        assert not (differ & ~allowed).any(), f"{name}: differs outside trimming ties"
        differing += int(differ.sum())
    if method == "ties":
        # bf16 deltas tie often, so the allowance is exercised, but it stays a small share.
        total = sum(t.numel() for t in theirs.values())
        print(f"bf16 ties: {differing} of {total} entries differ, all at threshold ties")
        assert differing < 0.01 * total


# -- the other methods mergekit 0.1.5 registers: whole tiny models, the same config file ------------
def _more_config(method: str, family: DemoFamily) -> dict[str, object]:
    two = [{"model": str(family.ct)}, {"model": str(family.sft)}]
    weighted = [{"model": str(family.ct), "parameters": {"weight": 0.7}}, {"model": str(family.sft), "parameters": {"weight": 0.4}}]  # fmt: skip
    configs: dict[str, dict[str, object]] = {
        "breadcrumbs": {
            "base_model": str(family.base),
            "parameters": {"density": 0.6, "gamma": 0.02},
            "models": weighted,
        },
        "breadcrumbs_ties": {"base_model": str(family.base), "parameters": {"density": 0.5}, "models": weighted},
        "model_stock": {"base_model": str(family.base), "models": two},
        "nearswap": {"base_model": str(family.base), "parameters": {"t": 0.001}, "models": two[:1]},
        "sce": {"base_model": str(family.base), "parameters": {"select_topk": 0.3}, "models": two},
        "ram": {"base_model": str(family.base), "models": two},
        "arcee_fusion": {"base_model": str(family.base), "models": two[:1]},
        "nuslerp": {"models": weighted},
        "multislerp": {"models": weighted},
        "karcher": {"models": two},
        "passthrough": {"models": two[:1]},
    }
    return {"merge_method": method, "dtype": "float32", **configs[method]}


@pytest.mark.parametrize(
    "method",
    [
        "breadcrumbs",
        "breadcrumbs_ties",
        "model_stock",
        "nearswap",
        "sce",
        "ram",
        "arcee_fusion",
        "nuslerp",
        "multislerp",
        "karcher",
        "passthrough",
    ],
)
def test_more_methods_fp32_models_bit_identical(method: str, tiny_family: DemoFamily, tmp_path: Path) -> None:
    theirs, ours = run_both(_more_config(method, tiny_family), tmp_path)
    assert theirs.keys() == ours.keys()
    for name in theirs:
        assert theirs[name].dtype == ours[name].dtype == torch.float32, name
        assert torch.equal(_bits(theirs[name]), _bits(ours[name])), name
