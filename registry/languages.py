"""Language codes: the FLORES-200 list Mergeling accepts, and the override for other languages.

Codes are `xxx_Xxxx` (ISO 639-3 '_' ISO 15924 script), as FLORES-200, SIB-200 and Belebele write
them. A code of the right shape can still be wrong (`xxx_Yyyy`, `ben_Latn`), so every code a user
gives (recipes, `registry add ct --language`, `registry lab build --languages`) is checked against
the shipped FLORES-200 list (`flores200.txt`, package data). A language outside FLORES-200 is
allowed only explicitly: `MERGELING_EXTRA_LANGUAGES=xxx_Xxxx,yyy_Yyyy` in the environment, except
the few codes Mergeling ships (`SHIPPED_NON_FLORES`).

Mongolian is two entries. FLORES-200 (and SIB-200, Belebele) has only Halh Mongolian in Cyrillic,
`khk_Cyrl`. The paper's Mongolian checkpoint (`pkupie/Llama-2-7b-mon`) is trained on MC²'s
Traditional-script Mongolian and evaluated on MiLiC-Eval's `mn`, also Traditional script, which no
FLORES code names: Mergeling calls it `mon_Mong` (ISO 639-3 `mon`, the macrolanguage MC² and
MiLiC-Eval write as `mn`; ISO 15924 `Mong`, the Mongolian script). A card's `mn` or `mon` means
`mon_Mong` (MC² and MiLiC-Eval use `mn` for it); only `khk` means the Cyrillic `khk_Cyrl`.
Entries already stored (a registry on the Hub) are checked for shape only, so a registry written
with an override stays readable everywhere.
"""

from __future__ import annotations

import difflib
import os
import re
from functools import cache
from importlib import resources

EXTRA_LANGUAGES_ENV = "MERGELING_EXTRA_LANGUAGES"
LANGUAGE_SHAPE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")

# The languages Mergeling ships evaluation data for: FLORES-200 code -> the ISO 639-1 code that
# model-card `language` metadata uses (the Hub's convention). Model cards may also write the
# ISO 639-3 part (`ben`). Both Mongolian scripts are `mn` on a card; reading a card, `mn` is
# `mon_Mong` (the MC²-trained checkpoints are Traditional script) and only `khk` is Cyrillic.
ISO_639_1: dict[str, str] = {
    "ben_Beng": "bn",
    "tam_Taml": "ta",
    "tel_Telu": "te",
    "ory_Orya": "or",
    "bod_Tibt": "bo",
    "uig_Arab": "ug",
    "khk_Cyrl": "mn",
    "mon_Mong": "mn",
    "eng_Latn": "en",
}
# Codes outside FLORES-200 that Mergeling ships tasks for (accepted like FLORES-200 codes).
SHIPPED_NON_FLORES: frozenset[str] = frozenset({"mon_Mong"})
_CARD_CODES: dict[str, str] = {
    **{iso: code for code, iso in ISO_639_1.items()},
    **{code.split("_")[0]: code for code in ISO_639_1},
    "mn": "mon_Mong",
    "mon": "mon_Mong",
}


def code_from_card(value: str) -> str | None:
    """The FLORES-200 code of a model-card `language` value (`bn`, `ben`), among the shipped
    languages; None for any other value."""
    return _CARD_CODES.get(value.lower())


@cache
def flores200_codes() -> frozenset[str]:
    """The 204 FLORES-200 codes (read once from the shipped list)."""
    text = resources.files("registry").joinpath("flores200.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def extra_languages() -> frozenset[str]:
    """The codes allowed on top of FLORES-200: `SHIPPED_NON_FLORES` and `MERGELING_EXTRA_LANGUAGES`
    (comma-separated)."""
    listed = os.environ.get(EXTRA_LANGUAGES_ENV, "").split(",")
    return SHIPPED_NON_FLORES | frozenset(code.strip() for code in listed if code.strip())


def check_language(code: str) -> str:
    """Check that `code` is a FLORES-200 code, or one allowed by `MERGELING_EXTRA_LANGUAGES`.

    Returns:
        The code unchanged.

    Raises:
        ValueError: a malformed code, or one in neither list (the message suggests the closest
            FLORES-200 codes and names the override).
    """
    if not LANGUAGE_SHAPE.match(code):
        raise ValueError(
            f"language {code!r} is not a FLORES-200 code (ISO 639-3 '_' ISO 15924 script): write e.g. ben_Beng or khk_Cyrl"
        )
    if code in flores200_codes() or code in extra_languages():
        return code
    known = flores200_codes() | extra_languages()
    same_language = sorted(c for c in known if c[:3] == code[:3])
    suggestions = same_language or difflib.get_close_matches(code, sorted(flores200_codes()), n=2, cutoff=0.75)
    hint = f" (did you mean {' or '.join(suggestions)}?)" if suggestions else ""
    raise ValueError(
        f"language {code!r} is not in the FLORES-200 list{hint}; "
        f"for a language outside FLORES-200 set {EXTRA_LANGUAGES_ENV}={code}"
    )
