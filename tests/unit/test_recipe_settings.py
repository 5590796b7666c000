"""Gradient and `filter:` parameter values in the typed recipe: validation, round trip, per-tensor resolution."""

from __future__ import annotations

import pytest

from registry.errors import RecipeError
from registry.merge.recipe import Recipe, parse_recipe

ATTN = "model.layers.2.self_attn.q_proj.weight"
MLP = "model.layers.0.mlp.up_proj.weight"
EMBED = "model.embed_tokens.weight"


def _ties(**parameters: object) -> dict[str, object]:
    return {
        "merge_method": "ties",
        "base_model": "org/base",
        "models": [
            {"model": "org/ct", "parameters": {"weight": [{"filter": "embed_tokens", "value": 1.0}, {"value": 0.3}]}},
            {"model": "org/sft", "parameters": {"density": [0.1, 0.9]}},
        ],
        "parameters": parameters or {"density": 0.5},
    }


def test_settings_resolve_per_tensor_with_mergekits_precedence() -> None:
    recipe = parse_recipe(_ties(density=0.5, weight=[{"filter": "mlp", "value": 0.8}], **{"lambda": [1.0, 0.5]}))
    assert recipe.has_tensor_parameters()
    params, ctx = recipe.tensor_parameters(EMBED, 0.0)
    assert ctx.weights == (1.0, 1.0)  # ct: its own filter; sft: the top-level filter misses mlp -> default 1.0
    assert ctx.densities == (0.5, 0.1)
    assert params.lambda_ == 1.0  # type: ignore[attr-defined]
    params, ctx = recipe.tensor_parameters(MLP, 0.5)
    assert ctx.weights == (0.3, 0.8)
    assert ctx.densities == (0.5, 0.5)
    assert params.lambda_ == 0.75  # type: ignore[attr-defined]
    # the typed parameters hold a representative (t = 0, the unfiltered default, else the first value)
    assert recipe.weights() == (0.3, 0.8) and recipe.parameters.lambda_ == 1.0  # type: ignore[attr-defined]


def test_canonical_round_trip_keeps_settings_in_place() -> None:
    recipe = parse_recipe(_ties(density=0.5, **{"lambda": [1.0, 0.5]}))
    data = recipe.canonical()
    assert data["parameters"]["lambda"] == [1.0, 0.5]
    assert data["models"][0]["parameters"]["weight"] == [{"filter": "embed_tokens", "value": 1.0}, {"value": 0.3}]
    assert data["models"][1]["parameters"]["density"] == [0.1, 0.9]
    again = parse_recipe(data)
    assert again == recipe and again.recipe_hash() == recipe.recipe_hash()
    assert recipe.recipe_hash() != parse_recipe(_ties(density=0.5, **{"lambda": [1.0, 0.4]})).recipe_hash()
    assert "settings" not in recipe.to_yaml()
    # a sweep point over weight replaces the per-model gradient outright
    point = recipe.at_point({"weight": 0.7})
    assert point.tensor_parameters(EMBED, 0.0)[1].weights == (0.7, 0.7)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"density": [0.5, 1.5]}, r"parameters\.density holds 1\.5: density is the kept fraction"),
        ({"density": [{"filter": "mlp"}]}, r"parameters\.density: condition .*value"),
        ({"density": []}, r"parameters\.density: an empty list"),
        ({"density": [0.2, {"filter": "mlp", "value": 0.5}]}, "mixes numbers"),
        ({"lambda": [1.0, float("nan")]}, "lambda must be a finite number"),
    ],
)
def test_bad_settings_refused_with_the_field(parameters: dict[str, object], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(_ties(**parameters))


def test_settings_key_is_not_a_recipe_key() -> None:
    with pytest.raises(RecipeError, match="unknown key `settings`"):
        parse_recipe({**_ties(density=0.5), "settings": {"values": {}}})


def test_resolved_value_refused_per_tensor() -> None:
    # election_weights: after needs weights >= 0; a filter gives one tensor a negative weight.
    recipe = parse_recipe(
        {
            **_ties(density=0.5, election_weights="after"),
            "models": [{"model": "org/ct", "parameters": {"weight": [{"filter": "mlp", "value": -1.0}, {"value": 1}]}}],
        }
    )
    recipe.tensor_parameters(ATTN, 1.0)
    with pytest.raises(RecipeError, match=r"tensor 'model.layers.0.mlp.up_proj.weight'.*weights >= 0"):
        recipe.tensor_parameters(MLP, 0.0)


def test_list_parameters_stay_lists() -> None:
    recipe = Recipe.from_parts(
        method="ties_sv",
        base="org/base",
        models=[{"model": "org/ct", "role": "ct"}, {"model": "org/sft", "role": "sft"}],
        parameters={"protect": ["org/sft"], "slack": [0.0, 0.1]},
    )
    assert recipe.parameters.protect == ("org/sft",)  # type: ignore[attr-defined]
    assert set(recipe.settings.values) == {"parameters.slack"}
