"""Recipe parsing and validation: mergekit configs load unchanged, Mergeling keys, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from registry.errors import RecipeError, UnknownMethodError, UnsupportedFeatureError
from registry.recipe import load_recipe, parse_recipe

TIES_SV = {
    "merge_method": "ties_sv",
    "base_model": "org/base",
    "dtype": "bfloat16",
    "models": [
        {"model": "org/ct@v1", "role": "ct", "language": "ben_Beng", "parameters": {"weight": 1.0, "density": 0.2}},
        {"model": "org/sft", "role": "sft", "parameters": {"weight": 0.5, "density": 0.3}},
    ],
    "parameters": {"normalize": True, "lambda": 1.0, "slack": 0.05},
    "mergeling": {"output_repo": "me/out", "eval_suite": "recipes/eval/ben_Beng.yaml"},
}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_ties_sv_recipe_derived_views() -> None:
    recipe = parse_recipe(TIES_SV)
    assert [m.model for m in recipe.merge_inputs()] == ["org/ct@v1", "org/sft"]
    assert recipe.weights() == (1.0, 0.5)
    assert recipe.densities() == (0.2, 0.3)
    assert recipe.protected_indices() == (1,)  # default: the role sft input
    assert recipe.parameters.lambda_ == 1.0
    assert recipe.output_dtype() == "bfloat16"
    assert recipe.tokenizer_model() == "org/base"
    assert recipe.languages() == ("ben_Beng",)


def test_plain_mergekit_ties_config_loads_unchanged(tmp_path: Path) -> None:
    # The mergekit README's TIES example shape: base listed among the models, top-level defaults.
    text = """
models:
  - model: psmathur/orca_mini_v3_13b
    parameters:
      density: [1, 0.7, 0.1]
      weight: 1.0
  - model: garage-bAInd/Platypus2-13B
    parameters:
      density: 0.5
      weight: 1.0
  - model: TheBloke/Llama-2-13B-fp16
merge_method: ties
base_model: TheBloke/Llama-2-13B-fp16
parameters:
  normalize: true
  int8_mask: true
dtype: float16
"""
    path = tmp_path / "mk.yml"
    path.write_text(text, encoding="utf-8")
    recipe = load_recipe(path)  # the density gradient is resolved per tensor (test_recipe_settings)
    assert recipe.canonical()["models"][0]["parameters"]["density"] == [1, 0.7, 0.1]
    assert recipe.tensor_parameters("model.layers.3.mlp.up_proj.weight", 0.75)[1].densities[0] == pytest.approx(0.4)
    recipe = load_recipe(path, overrides=["models.0.parameters.density=0.7"])
    assert [m.model for m in recipe.merge_inputs()] == ["psmathur/orca_mini_v3_13b", "garage-bAInd/Platypus2-13B"]
    assert recipe.densities() == (0.7, 0.5)
    assert recipe.output_dtype() == "float16"


def test_top_level_weight_and_density_are_defaults() -> None:
    data = {
        "merge_method": "ties",
        "base_model": "b/b",
        "models": [{"model": "a/a"}, {"model": "c/c", "parameters": {"density": 0.9}}],
        "parameters": {"weight": 0.3, "density": 0.4},
    }
    recipe = parse_recipe(data)
    assert recipe.weights() == (0.3, 0.3)
    assert recipe.densities() == (0.4, 0.9)


def test_overrides_are_yaml_typed(tmp_path: Path) -> None:
    path = _write(tmp_path, TIES_SV)
    recipe = load_recipe(
        path,
        overrides=[
            "parameters.slack=0.1",
            "parameters.slack_scope=model",
            "models.1.parameters.density=0.5",
            "parameters.normalize=false",
        ],
    )
    assert recipe.parameters.slack == 0.1
    assert recipe.parameters.slack_scope == "model"
    assert recipe.densities() == (0.2, 0.5)
    assert recipe.parameters.normalize is False


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("parameters.slack=-0.1", "parameters.slack = -0.1"),
        ("models.0.parameters.density=1.5", "models.0.parameters.density = 1.5"),
        ("parameters.slack_scope=layer", "parameters.slack_scope = 'layer'"),
        ("models.0.role=teacher", "models.0.role = 'teacher'"),
        ("models.0.language=bengali", "models.0.language = 'bengali'"),
        ("dtype=int8", "dtype = 'int8'"),
        ("parameters.protect=[org/nope]", "protect lists 'org/nope'"),
        ("models.7.role=ct", "is a list of 2; use an index 0..1"),
        ("noequals", "write key=value"),
        # Type errors say what to write, not only what pydantic expected.
        (
            "parameters.lambda=abc",
            "parameters.lambda = 'abc': Input should be a valid number, unable to parse "
            "string as a number; write a number, e.g. 0.5",
        ),
        ("parameters.normalize=maybe", "write true or false"),
        (
            "models.0.model={path: x}",
            "models.0.model = {'path': 'x'}: Input should be a valid string; write a local path or a Hub repo id",
        ),
        ("parameters=[1]", "write a mapping"),
    ],
)
def test_bad_values_name_field_and_value(tmp_path: Path, override: str, needle: str) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(_write(tmp_path, TIES_SV), overrides=[override])
    assert needle in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "recipe.yaml")) or "--set" in str(info.value)


def test_density_error_says_what_to_write() -> None:
    data = {**TIES_SV, "models": [{**TIES_SV["models"][0], "parameters": {"density": 1.5}}, TIES_SV["models"][1]]}
    with pytest.raises(RecipeError) as info:
        parse_recipe(data)
    assert "(0, 1]" in str(info.value)
    assert info.value.field == "models.0.parameters.density"
    assert info.value.value == 1.5


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe({**TIES_SV, "parameters": {**TIES_SV["parameters"], "slak": 0.1}})
    message = str(info.value)
    assert "unknown key `slak` in parameters" in message
    assert "slack" in message and "slack_scope" in message


def test_unknown_method_lists_valid_ids() -> None:
    with pytest.raises(UnknownMethodError) as info:
        parse_recipe({**TIES_SV, "merge_method": "core_space"})
    assert "'core_space' is a mergekit method Mergeling does not implement" in str(info.value)
    assert "ties_sv" in str(info.value) and "linear" in str(info.value)
    with pytest.raises(UnknownMethodError, match="'tie' is unknown"):
        parse_recipe({**TIES_SV, "merge_method": "tie"})
    # The method is named before its parameters: a core_space config is refused as core_space, not as `gamma`.
    with pytest.raises(UnknownMethodError, match="'core_space' is a mergekit method"):
        parse_recipe({**TIES_SV, "merge_method": "core_space", "parameters": {"gamma": 0.1}})


def test_unsupported_feature_refused_through_parse_recipe() -> None:
    # Every case is in test_mergekit_compat.py; this checks parse_recipe runs the refusals.
    with pytest.raises(UnsupportedFeatureError, match="modules"):
        parse_recipe({**TIES_SV, "modules": {"text_decoder": {"models": []}}})


def test_method_specific_parameters_checked() -> None:
    linear = {"merge_method": "linear", "models": [{"model": "a/a"}, {"model": "b/b"}]}
    assert parse_recipe(linear).merge_inputs()[1].model == "b/b"
    with pytest.raises(RecipeError, match="density is not used by linear"):
        parse_recipe({**linear, "parameters": {"density": 0.5}})
    with pytest.raises(RecipeError, match="slack is a ties_sv / dare_ties"):
        parse_recipe({**TIES_SV, "merge_method": "ties"})
    with pytest.raises(RecipeError, match="ties needs `base_model:`"):
        parse_recipe({"merge_method": "ties", "models": [{"model": "a/a"}]})
    no_sft = {**TIES_SV, "models": [{"model": "org/ct", "role": "ct"}, {"model": "org/x"}]}
    with pytest.raises(RecipeError, match="role: sft"):
        parse_recipe(no_sft)
    assert parse_recipe({**no_sft, "parameters": {"slack": 0.1, "protect": ["org/x"]}}).protected_indices() == (1,)


def test_tokenizer_source_roles() -> None:
    assert parse_recipe({**TIES_SV, "tokenizer_source": "ct"}).tokenizer_model() == "org/ct@v1"
    assert parse_recipe({**TIES_SV, "tokenizer_source": "org/sft"}).tokenizer_model() == "org/sft"
    # mergekit writes a model reference as `model:<path>`.
    assert parse_recipe({**TIES_SV, "tokenizer_source": "model:org/sft"}).tokenizer_model() == "org/sft"
    with pytest.raises(RecipeError, match="tokenizer_source"):
        parse_recipe({**TIES_SV, "tokenizer_source": "other/model"})


def test_hash_ignores_layout_but_not_values(tmp_path: Path) -> None:
    a = parse_recipe(TIES_SV)
    b = parse_recipe(yaml.safe_load(yaml.safe_dump(TIES_SV, sort_keys=True)))
    c = parse_recipe(TIES_SV, overrides=["parameters.slack=0.06"])
    assert a.recipe_hash() == b.recipe_hash()
    assert a.recipe_hash() != c.recipe_hash()
    assert parse_recipe(yaml.safe_load(a.to_yaml())) == a


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge_method: [ties\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="YAML mapping"):
        load_recipe(bad)


def test_mergeling_sweep_block() -> None:
    sweep = {"density": [0.1, 0.2], "slack": [0.0, 0.05, 0.1], "metric": "belebele_acc"}
    recipe = parse_recipe({**TIES_SV, "mergeling": {"sweep": sweep}})
    block = recipe.mergeling.sweep
    assert block is not None and block.metric == "belebele_acc"
    assert block.values() == {"density": (0.1, 0.2), "slack": (0.0, 0.05, 0.1)}
    assert parse_recipe(yaml.safe_load(recipe.to_yaml())) == recipe  # round-trips, and is hashed
    assert recipe.recipe_hash() != parse_recipe(TIES_SV).recipe_hash()
    with pytest.raises(ValidationError, match="frozen"):
        block.metric = "x"  # type: ignore[misc]
    for bad, needle in (
        ({**sweep, "slak": [0.1]}, "mergeling.sweep.slak: not a parameter of ties_sv"),
        ({**sweep, "slack": [1.5]}, "mergeling.sweep.slack = 1.5: slack is a fraction"),
        ({**sweep, "density": []}, "mergeling.sweep.density: an empty list"),
        ({"density": [0.1]}, "mergeling.sweep.metric: required"),
        ({**sweep, "slack": ["x"]}, "mergeling.sweep.slack.0"),
    ):
        with pytest.raises(RecipeError) as info:
            parse_recipe({**TIES_SV, "mergeling": {"sweep": bad}})
        assert needle in str(info.value), str(info.value)
