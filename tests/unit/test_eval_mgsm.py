"""MGSM answer extraction (native digits, separators, answer phrases) and the dataset hook."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.evaluate.mgsm import extract_number, is_correct, load_mgsm, normalize_digits, process_results


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5 + 6 = 11. The answer is 11.", 11),
        ("Step by step: 2,125 + 5 = 2,130. The answer is 2,130.", 2130),
        ("The answer is $1,234.50 dollars.", 1234.5),
        ("She has 3 apples and 4 pears. The answer is 7. Then 100 more.", 7),  # after the phrase
        ("no phrase here, 12 then 18", 18),  # last number
        ("The answer is -5.", -5),
        ("Total is 1,00,000 rupees", 100000),  # Indian grouping
        ("রজারের প্রথমে ৫টি বল ছিল। ৫ + ৬ = ১১। উত্তর হল ১১।", 11),  # Bengali digits and danda
        ("উত্তর হল ২,১২৫।", 2125),
        ("మొత్తం ౧౨ + ౮ = ౨౦. సమాధానం ౨౦.", 20),  # Telugu digits
        ("సమాధానం 39.చాక్లెట్‌లు", 39),  # exemplar 3's shape: no space after the period
        ("numbers 5,6 in a list", 6),  # a comma between single digits is not a thousands separator
        ("३४५", 345),  # any Unicode decimal digit (Devanagari)
    ],
)
def test_extract_number(text: str, expected: float) -> None:
    assert extract_number(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "no digits at all", "উত্তর হল কিছু না"])
def test_extract_number_none(text: str) -> None:
    assert extract_number(text) is None


def test_normalize_digits_keeps_other_characters() -> None:
    assert normalize_digits("৫টি ౧౨ abc 3") == "5টি 12 abc 3"


def test_exact_match() -> None:
    assert is_correct(70000.0, 70000)
    assert not is_correct(7000.0, 70000)
    assert not is_correct(None, 3)
    assert process_results({"answer_number": 18}, ["... উত্তর হল ১৮।"]) == {"exact_match": 1}
    assert process_results({"answer_number": 18}, ["The answer is 81."]) == {"exact_match": 0}


@pytest.mark.parametrize(
    ("lang", "q_label", "a_label"),
    [
        ("ben_Beng", "প্রশ্ন:", "ধাপে ধাপে উত্তর:"),
        ("tel_Telu", "ప్రశ్న:", "దశలవారీగా సమాధానం:"),
        ("eng_Latn", "Question:", "Step-by-Step Answer:"),
    ],
)
def test_load_mgsm_uses_native_labels(shared_data: Path, lang: str, q_label: str, a_label: str) -> None:
    ds = load_mgsm(
        data_files={
            "test": str(shared_data / f"mgsm/{lang}.jsonl"),
            "exemplars": str(shared_data / f"mgsm/exemplars/{lang}.jsonl"),
        },
        version=1.0,
    )
    assert len(ds["test"]) == 250 and len(ds["exemplars"]) == 8
    shot = ds["exemplars"][0]
    assert shot["prompt"].startswith(q_label) and shot["prompt"].endswith("\n" + a_label)
    # every exemplar's worked answer yields its own gold number
    for ex in ds["exemplars"]:
        assert is_correct(extract_number(ex["target"]), ex["answer_number"]), ex["target"]
    assert ds["test"][0]["prompt"].startswith(q_label)
    assert ds["test"][0]["target"] == "18"
