"""Lab model cards carry the metadata the catalog reads: language, base_model, role tag."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.catalog.entries import language_from_card
from registry.lab.cards import LabCardInfo, iso_language, write_lab_card


def _info(**changes) -> LabCardInfo:
    values = dict(
        repo_id="mergeling-lab/tiny-ct-uig_Arab", role="ct", language="uig_Arab",
        base_model="mergeling-lab/tiny-base", training="300 steps.", sources=("mono/ntrex128/uig_Arab.jsonl",),
        license="cc-by-sa-4.0", n_params=2_950_272, delta=0.0123, synthetic=False,
    )  # fmt: skip
    values.update(changes)
    return LabCardInfo(**values)


@pytest.mark.parametrize(
    ("role", "tag"), [("ct", "mergeling-ct"), ("sft", "mergeling-sft"), ("base", "mergeling-base")]
)
def test_card_metadata(tmp_path: Path, role: str, tag: str) -> None:
    from huggingface_hub import ModelCard

    language = "uig_Arab" if role == "ct" else "eng_Latn"
    base = None if role == "base" else "mergeling-lab/tiny-base"
    path = write_lab_card(tmp_path, _info(role=role, language=language, base_model=base))
    data = ModelCard.load(str(path)).data
    assert tag in data.tags
    assert data.base_model == base
    assert [language_from_card(code) for code in data.language] == [language]
    assert data.license == "cc-by-sa-4.0"
    assert data.library_name == "transformers"


def test_card_body_says_what_it_is(tmp_path: Path) -> None:
    text = write_lab_card(tmp_path, _info()).read_text(encoding="utf-8")
    assert "# mergeling-lab/tiny-ct-uig_Arab" in text
    assert "uig_Arab text mixed 4:1 with English" in text
    assert "3.0 M parameters" in text
    assert "0.0123" in text
    assert "Synthetic data" not in text


def test_synthetic_card_is_marked(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    path = write_lab_card(tmp_path, _info(synthetic=True, sources=()))
    assert "synthetic-data" in ModelCard.load(str(path)).data.tags
    assert "**Synthetic data**" in path.read_text(encoding="utf-8")


def test_iso_language() -> None:
    assert iso_language("ben_Beng") == "bn"
    assert iso_language("khk_Cyrl") == "mn"
    assert iso_language("xyz_Latn") == "xyz_Latn"
