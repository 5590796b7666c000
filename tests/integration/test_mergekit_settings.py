"""Gradient and `filter:` parameter values, exact against mergekit 0.1.5 on tiny models.

mergekit (a test-only peer, LGPL) and `registry merge` run the SAME config file; fp32 outputs must
be bit-identical tensor by tensor. The unit rules (`registry.merge.settings.evaluate`) are checked
against mergekit's own `evaluate_setting` on many values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from registry.lab.tiny import DemoFamily
from registry.merge.settings import evaluate, gradient_t, parse_setting
from tests._fixtures.mergekit_peer import load_tensors, run_both

mergekit = pytest.importorskip("mergekit", reason="mergekit 0.1.5 is the test extra: pip install -e '.[test]'")


def _assert_identical(theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> None:
    assert theirs.keys() == ours.keys()
    for name in theirs:
        assert theirs[name].dtype == ours[name].dtype, name
        assert torch.equal(theirs[name].view(torch.int32), ours[name].view(torch.int32)), name


SETTINGS = [
    0.4,
    [0.0, 1.0],
    [0.1, 0.9, 0.3],
    [0.2, 0.5, 0.7, 0.25, 1.0],
    [True, False],
    ["a", "b", "c"],
    [{"filter": "self_attn", "value": [0.0, 0.5, 0.3, 0.7, 1.0]}, {"filter": "mlp", "value": 0.8}, {"value": 0.5}],
    {"filter": "embed_tokens", "value": 0.25},
    [{"filter": "*", "value": 0.6}],
]
NAMES = ["model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight", "lm_head.weight"]  # fmt: skip


@pytest.mark.parametrize("raw", SETTINGS)
def test_evaluate_equals_mergekit(raw: object) -> None:
    from mergekit.config import ConditionalParameter, evaluate_setting

    theirs_setting: object = raw
    if isinstance(raw, dict):
        theirs_setting = ConditionalParameter.model_validate(raw)
    elif isinstance(raw, list) and raw and isinstance(raw[0], dict):
        theirs_setting = [ConditionalParameter.model_validate(c) for c in raw]
    ours_setting = parse_setting(raw)
    for name in NAMES:
        for step in range(11):
            t = step / 10 if step < 10 else 1.0
            theirs = evaluate_setting(name, theirs_setting, t, validate=lambda v: v)  # type: ignore[arg-type]
            ours = evaluate(ours_setting, name, t, lambda v: v)
            assert theirs == ours and type(theirs) is type(ours), (name, t)


def test_gradient_position_is_mergekits() -> None:
    assert gradient_t("model.embed_tokens.weight", 4) == 0.0
    assert gradient_t("lm_head.weight", 4) == 0.0
    assert gradient_t("model.norm.weight", 4) == 0.0
    assert gradient_t("model.layers.0.mlp.up_proj.weight", 4) == 0.0
    assert gradient_t("model.layers.2.mlp.up_proj.weight", 4) == 2 / 3
    assert gradient_t("model.layers.3.input_layernorm.weight", 4) == 1.0
    assert gradient_t("model.layers.0.mlp.up_proj.weight", 1) == 1.0


def test_slerp_filter_gradients_match(tiny_family: DemoFamily, tmp_path: Path) -> None:
    # mergekit's README slerp example: t per module type, a gradient over the layers, a default.
    config = {
        "merge_method": "slerp",
        "base_model": str(tiny_family.base),
        "models": [{"model": str(tiny_family.base)}, {"model": str(tiny_family.ct)}],
        "parameters": {
            "t": [
                {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                {"value": 0.5},
            ]
        },
        "dtype": "float32",
    }
    theirs, ours = run_both(config, tmp_path)
    assert theirs.keys() == ours.keys()
    for name in theirs:  # slerp is equal within 1e-6 (see test_mergekit_parity), not bitwise
        assert float((theirs[name] - ours[name]).abs().max()) <= 1e-6, name


def test_ties_gradient_and_filter_weights_densities_match(tiny_family: DemoFamily, tmp_path: Path) -> None:
    config = {
        "merge_method": "ties",
        "base_model": str(tiny_family.base),
        "models": [
            {
                "model": str(tiny_family.ct),
                "parameters": {
                    "weight": [{"filter": "self_attn", "value": [1.0, 0.2]}, {"filter": "lm_head", "value": 0.9}],
                    "density": [0.2, 0.9, 0.5],
                },
            },
            {"model": str(tiny_family.sft), "parameters": {"weight": 0.6, "density": {"filter": "mlp", "value": 0.35}}},
        ],
        "parameters": {"weight": 0.7, "density": 0.5, "lambda": [1.0, 0.8], "normalize": [True, False]},
        "dtype": "float32",
    }
    _assert_identical(*run_both(config, tmp_path))


@pytest.mark.parametrize("method", ["dare_linear", "della_linear", "breadcrumbs"])
def test_more_methods_with_per_layer_values_match(method: str, tiny_family: DemoFamily, tmp_path: Path) -> None:
    # density 1 / gamma 0 draw and cut nothing, so the per-layer weights and epsilon are compared exactly.
    params: dict[str, object] = {"density": 1.0, "weight": [0.3, 1.2]}
    if method == "della_linear":
        params["epsilon"] = [{"filter": "self_attn", "value": [0.0, 0.0]}, {"value": 0.0}]
    if method == "breadcrumbs":
        params["gamma"] = [{"filter": "mlp", "value": 0.0}, {"value": 0.0}]
    config = {
        "merge_method": method,
        "base_model": str(tiny_family.base),
        "models": [
            {"model": str(tiny_family.ct)},
            {"model": str(tiny_family.sft), "parameters": {"weight": [0.5, 0.1]}},
        ],
        "parameters": params,
        "dtype": "float32",
    }
    _assert_identical(*run_both(config, tmp_path))


def test_embeddings_and_head_from_one_model(tiny_family: DemoFamily, tmp_path: Path) -> None:
    # A per-module recipe: embed_tokens and lm_head taken from the CT model only, the rest averaged.
    one = [{"filter": "embed_tokens", "value": 1.0}, {"filter": "lm_head", "value": 1.0}, {"value": 0.5}]
    other = [{"filter": "embed_tokens", "value": 0.0}, {"filter": "lm_head", "value": 0.0}, {"value": 0.5}]
    config = {
        "merge_method": "linear",
        "models": [
            {"model": str(tiny_family.ct), "parameters": {"weight": one}},
            {"model": str(tiny_family.sft), "parameters": {"weight": other}},
        ],
        "dtype": "float32",
    }
    theirs, ours = run_both(config, tmp_path)
    _assert_identical(theirs, ours)
    ct, sft = load_tensors(tiny_family.ct), load_tensors(tiny_family.sft)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(ours[name], ct[name]), name
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(ours[name], ct[name]) and not torch.equal(ours[name], sft[name])


def test_per_tensor_values_refused_with_a_whole_model_scan(tiny_family: DemoFamily, tmp_path: Path) -> None:
    from registry.errors import CompatibilityError
    from registry.merge.plan import plan_merge
    from registry.merge.recipe import parse_recipe

    recipe = parse_recipe(
        {
            "merge_method": "ties_sv",
            "base_model": str(tiny_family.base),
            "models": [
                {"model": str(tiny_family.ct), "role": "ct"},
                {"model": str(tiny_family.sft), "role": "sft"},
            ],
            "parameters": {"density": [0.2, 0.8], "slack": 0.1, "slack_scope": "model"},
        }
    )
    with pytest.raises(CompatibilityError, match="whole model.*slack_scope: tensor"):
        plan_merge(recipe)
    plan = plan_merge(recipe.replace(parameters={"density": [0.2, 0.8], "slack": 0.1}))
    assert len(plan.bindings) > 1 and {t.binding for t in plan.tensors} == set(range(len(plan.bindings)))
