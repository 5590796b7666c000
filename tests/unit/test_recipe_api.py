"""The typed recipe API the bot and the Space build on: from_parts, with_models, sweep points, replace."""

from __future__ import annotations

import pytest

from registry.catalog.entries import ModelRef
from registry.errors import RecipeError, UnknownMethodError
from registry.recipe import ModelEntry, Recipe, parse_recipe

TEMPLATE = {
    "merge_method": "ties_sv",
    "base_model": "base",  # a template's placeholders: replaced with `with_models`
    "dtype": "float32",
    "tokenizer_source": "ct",
    "models": [
        {"model": "ct", "role": "ct", "parameters": {"weight": 1.0, "density": 0.2}},
        {"model": "sft", "role": "sft", "parameters": {"weight": 1.0, "density": 0.2}},
    ],
    "parameters": {"normalize": True, "lambda": 1.0, "slack": 0.05, "slack_scope": "tensor", "protect": ["sft"]},
}


def test_from_parts_equals_the_same_recipe_written_as_yaml_data() -> None:
    built = Recipe.from_parts(
        method="ties_sv",
        base="org/base@v1",
        models=[
            {"model": "org/ct@abc", "role": "ct", "language": "ben_Beng", "parameters": {"density": 0.3}},
            ModelEntry(model="org/sft", role="sft", parameters={"density": 0.3, "weight": 0.5}),  # type: ignore[arg-type]
        ],
        parameters={"slack": 0.1, "lambda": 1.0},
        dtype="bf16",
        tokenizer_source="ct",
        mergeling={"output_repo": "me/out"},
    )
    written = parse_recipe(
        {
            "merge_method": "ties_sv",
            "base_model": "org/base@v1",
            "dtype": "bfloat16",
            "tokenizer_source": "ct",
            "models": [
                {"model": "org/ct@abc", "role": "ct", "language": "ben_Beng", "parameters": {"density": 0.3}},
                {"model": "org/sft", "role": "sft", "parameters": {"weight": 0.5, "density": 0.3}},
            ],
            "parameters": {"slack": 0.1, "lambda": 1.0},
            "mergeling": {"output_repo": "me/out"},
        }
    )
    assert built == written and built.recipe_hash() == written.recipe_hash()
    assert built.densities() == (0.3, 0.3) and built.weights() == (1.0, 0.5)
    assert built.protected_indices() == (1,)


def test_from_parts_accepts_pairs_and_bare_references() -> None:
    recipe = Recipe.from_parts(method="linear", models=[("a/one", {"weight": 2.0}), "a/two"])
    assert [m.model for m in recipe.models] == ["a/one", "a/two"]
    assert recipe.weights() == (2.0, 1.0)


def test_from_parts_refuses_as_a_yaml_file_would() -> None:
    with pytest.raises(RecipeError, match=r"Space merge: .*density is the kept fraction"):
        Recipe.from_parts(method="ties", base="b/base", models=[("a/x", {"density": 1.5})], source="Space merge")
    with pytest.raises(UnknownMethodError, match="frankenstein"):
        Recipe.from_parts(method="frankenstein", models=["a/x"])
    with pytest.raises(RecipeError, match="slack is a ties_sv"):
        Recipe.from_parts(method="ties", base="b/base", models=["a/x"], parameters={"slack": 0.1})


def test_with_models_replaces_every_occurrence_and_keeps_the_parameters() -> None:
    template = parse_recipe(TEMPLATE)
    concrete = template.with_models(
        {"ct": "org/ct@" + "1" * 40, "sft": "org/sft@" + "2" * 40, "base": "org/base@" + "3" * 40},
        languages={"org/ct@" + "1" * 40: "ben_Beng"},
    )
    assert [m.model for m in concrete.models] == ["org/ct@" + "1" * 40, "org/sft@" + "2" * 40]
    assert concrete.base_model == "org/base@" + "3" * 40
    assert concrete.languages() == ("ben_Beng",)
    assert concrete.parameters.protect == ("org/sft@" + "2" * 40,)  # type: ignore[attr-defined]
    assert concrete.protected_indices() == (1,)
    assert concrete.tokenizer_model() == "org/ct@" + "1" * 40
    assert concrete.densities() == template.densities() and concrete.parameters.slack == 0.05  # type: ignore[attr-defined]
    # The template itself is unchanged (frozen).
    assert template.models[0].model == "ct"


def test_with_models_replaces_the_base_and_a_named_tokenizer_source() -> None:
    recipe = Recipe.from_parts(
        method="ties", base="old/base", models=["old/a", "old/b"], tokenizer_source="model:old/a"
    )
    new = recipe.with_models({"old/base": "new/base", "old/a": "new/a"})
    assert new.base_model == "new/base" and new.tokenizer_source == "new/a"
    assert [m.model for m in new.merge_inputs()] == ["new/a", "old/b"]


def test_with_models_refuses_an_unknown_old_reference_and_revalidates() -> None:
    template = parse_recipe(TEMPLATE)
    with pytest.raises(RecipeError, match="'nope' is not a model of this recipe"):
        template.with_models({"nope": "org/x"})
    with pytest.raises(RecipeError, match="at most one @revision"):
        template.with_models({"ct": "org/x@a@b"})
    # Both inputs renamed to one base: the base is not an input, too few inputs remain.
    with pytest.raises(RecipeError):
        template.with_models({"ct": "org/base", "sft": "org/base"}, base="org/base")


def test_sweep_points_enumerate_the_grid_in_order() -> None:
    sweep = {"density": [0.1, 0.2], "slack": [0.0, 0.05, 0.1], "metric": "sib200/acc", "higher_is_better": False}
    recipe = parse_recipe({**TEMPLATE, "base_model": "org/base", "mergeling": {"sweep": sweep, "output_repo": "a/b"}})
    assert recipe.mergeling.sweep is not None and recipe.mergeling.sweep.higher_is_better is False
    grid = recipe.sweep_grid()
    assert grid == [{"density": d, "slack": s} for d in (0.1, 0.2) for s in (0.0, 0.05, 0.1)]
    points = recipe.sweep_points()
    assert len(points) == 6
    for point, concrete in zip(grid, points, strict=True):
        assert concrete.densities() == (point["density"],) * 2
        assert concrete.parameters.slack == point["slack"]  # type: ignore[attr-defined]
        assert concrete.mergeling.sweep is None and concrete.mergeling.output_repo == "a/b"
    assert len({p.recipe_hash() for p in points}) == 6
    assert parse_recipe({**TEMPLATE, "base_model": "org/base"}).sweep_points() == []


def test_at_point_refuses_a_value_the_method_refuses() -> None:
    recipe = parse_recipe({**TEMPLATE, "base_model": "org/base"})
    with pytest.raises(RecipeError, match="slack"):
        recipe.at_point({"slack": 2.0})


def test_replace_changes_top_level_fields_and_revalidates() -> None:
    recipe = parse_recipe({**TEMPLATE, "base_model": "org/base"})
    out = recipe.replace(mergeling={"output_repo": "me/merged"}, tokenizer_source=None)
    assert out.mergeling.output_repo == "me/merged" and out.tokenizer_source is None
    with pytest.raises(RecipeError, match="output_repo"):
        recipe.replace(mergeling={"output_repo": "not a repo"})


@pytest.mark.parametrize(
    ("text", "repo", "revision"),
    [("org/name", "org/name", None), ("org/name@main", "org/name", "main"), ("o/n@" + "a" * 40, "o/n", "a" * 40)],
)
def test_model_ref_parse(text: str, repo: str, revision: str | None) -> None:
    ref = ModelRef.parse(text)
    assert (ref.repo, ref.revision) == (repo, revision)
    assert str(ref) == text


@pytest.mark.parametrize("text", ["org/name@", "org/name@a@b", "noslash", "org/na--me", "@rev"])
def test_model_ref_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        ModelRef.parse(text)


def test_model_ref_split_is_lexical() -> None:
    assert ModelRef.split("./local/dir") == ("./local/dir", None)
    assert ModelRef.split("org/x@") == ("org/x", None)
    assert ModelRef.split("org/x@v2") == ("org/x", "v2")
