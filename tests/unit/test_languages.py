"""registry.languages: the shipped FLORES-200 list and the explicit override; where codes are checked."""

from __future__ import annotations

import pytest
import yaml

from registry.errors import RecipeError
from registry.languages import EXTRA_LANGUAGES_ENV, check_language, flores200_codes
from registry.recipe import parse_recipe

RECIPE = {
    "merge_method": "ties",
    "base_model": "org/base",
    "models": [{"model": "org/ct", "role": "ct", "language": "ben_Beng"}, {"model": "org/sft", "role": "sft"}],
    "parameters": {"density": 0.2},
}


def test_the_list_has_the_204_flores_codes() -> None:
    codes = flores200_codes()
    assert len(codes) == 204
    assert {"ben_Beng", "khk_Cyrl", "uig_Arab", "tam_Taml", "tel_Telu", "bod_Tibt", "ory_Orya", "eng_Latn"} <= codes
    assert {"sat_Olck", "arb_Latn", "min_Arab"} <= codes  # FLORES-200's, not NLLB's (sat_Beng)


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("xxx_Yyyy", "not in the FLORES-200 list"),
        ("ben_Latn", "did you mean ben_Beng?"),
        ("bn", "ISO 639-3 '_' ISO 15924 script"),
    ],
)
def test_codes_outside_the_list_are_refused(code: str, fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXTRA_LANGUAGES_ENV, raising=False)
    with pytest.raises(ValueError, match=fragment.replace("?", r"\?")):
        check_language(code)


def test_the_override_allows_named_languages_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXTRA_LANGUAGES_ENV, "xyz_Latn, abc_Cyrl")
    assert check_language("xyz_Latn") == "xyz_Latn" and check_language("abc_Cyrl") == "abc_Cyrl"
    with pytest.raises(ValueError, match="not in the FLORES-200 list"):
        check_language("xxx_Yyyy")


def test_recipes_check_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXTRA_LANGUAGES_ENV, raising=False)
    assert parse_recipe(RECIPE).languages() == ("ben_Beng",)
    with pytest.raises(RecipeError, match="models.0.language = 'xyz_Latn'.*MERGELING_EXTRA_LANGUAGES"):
        parse_recipe(yaml.safe_load(yaml.safe_dump(RECIPE)), overrides=["models.0.language=xyz_Latn"])
    monkeypatch.setenv(EXTRA_LANGUAGES_ENV, "xyz_Latn")
    assert parse_recipe(RECIPE, overrides=["models.0.language=xyz_Latn"]).languages() == ("xyz_Latn",)


def test_lab_languages_check_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from registry.lab.build import LabConfig

    monkeypatch.delenv(EXTRA_LANGUAGES_ENV, raising=False)
    with pytest.raises(ValidationError, match="not in the FLORES-200 list"):
        LabConfig(languages=("xxx_Yyyy",))


def test_traditional_mongolian_has_its_own_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.languages import ISO_639_1, code_from_card

    monkeypatch.delenv(EXTRA_LANGUAGES_ENV, raising=False)
    assert "mon_Mong" not in flores200_codes()  # FLORES-200 has only the Cyrillic khk_Cyrl
    assert check_language("mon_Mong") == "mon_Mong" and check_language("khk_Cyrl") == "khk_Cyrl"
    assert code_from_card("mn") == "mon_Mong" and code_from_card("MON") == "mon_Mong"
    assert code_from_card("khk") == "khk_Cyrl"
    assert ISO_639_1["mon_Mong"] == ISO_639_1["khk_Cyrl"] == "mn"  # what a card writes for either
    with pytest.raises(ValueError, match="did you mean mon_Mong"):
        check_language("mon_Cyrl")
