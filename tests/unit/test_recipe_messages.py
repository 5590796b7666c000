"""Recipe error wording: typos and syntax errors say what to fix, on one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.errors import RecipeError
from registry.recipe import load_recipe, parse_recipe


def test_a_typo_is_named_first_with_the_key_it_meant() -> None:
    # With no models, pydantic's "Tuple should have at least 1 item after validation, not 0" came
    # first and the typo second.
    with pytest.raises(RecipeError) as exc:
        parse_recipe({"merge_method": "ties", "base_model": "org/base", "models": [], "densty": 0.2})
    message = str(exc.value)
    assert message.startswith("<recipe>: unknown key `densty`")
    assert "Tuple should have" not in message and "models: no input models" in message
    with pytest.raises(RecipeError, match=r"unknown key `densty` in models.0.parameters \(did you mean `density`\?\)"):
        parse_recipe(
            {
                "merge_method": "ties",
                "base_model": "org/base",
                "models": [{"model": "org/ct", "parameters": {"densty": 0.2}}],
            }
        )


def test_yaml_syntax_errors_are_one_line(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("merge_method: ties\nmodels:\n  - model: org/ct\n  parameters:\n    density: 0.2\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    assert "\n" not in str(exc.value) and "not valid YAML at line 4" in str(exc.value)
