"""Seed files (`registry add --from`) and sync's reading of model-card metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.catalog.entries import CtEntry, SftEntry
from registry.catalog.pairing import find_pairs
from registry.catalog.seed import load_seed, seed_entries
from registry.catalog.sync import ct_fields_from_card, sft_fields_from_card
from registry.errors import CatalogError, RecipeError


def test_shipped_seed_lists_the_papers_checkpoints(repo_root: Path) -> None:
    seed = load_seed(repo_root / "recipes" / "registry-seed.yaml")
    assert seed.base == "meta-llama/Llama-2-7b-hf"
    cts = {c.repo: c.language for c in seed.checkpoints if c.kind == "ct"}
    assert cts == {
        "pkupie/Llama-2-7b-ben": "ben_Beng", "pkupie/Llama-2-7b-tam": "tam_Taml",
        "pkupie/Llama-2-7b-tel": "tel_Telu", "pkupie/Llama-2-7b-bod": "bod_Tibt",
        "pkupie/Llama-2-7b-uig": "uig_Arab", "pkupie/Llama-2-7b-mon": "mon_Mong",  # MC²: Traditional script
        "pkupie/Llama-2-7b-ori": "ory_Orya",
    }  # fmt: skip
    sfts = [c for c in seed.checkpoints if c.kind == "sft"]
    assert [(c.repo, c.data) for c in sfts] == [("pkupie/Llama-2-7b-FLAN-step884", "flan")]


def test_unverified_seed_entries(repo_root: Path) -> None:
    entries = seed_entries(None, load_seed(repo_root / "recipes" / "registry-seed.yaml"), verify=False)
    assert len(entries) == 8
    assert all(not e.verified and e.source == "seed" and e.revision == "main" and e.shape is None for e in entries)
    ben = next(e for e in entries if isinstance(e, CtEntry) and e.language == "ben_Beng")
    assert ben.id == "ct-ben_Beng-pkupie--Llama-2-7b-ben-main"
    assert str(ben.base) == "meta-llama/Llama-2-7b-hf"
    sft = next(e for e in entries if isinstance(e, SftEntry))
    assert sft.data == "flan" and sft.note == "English SFT on FLAN, step 884"
    # Unverified entries pair as "unverified", never as compatible.
    checks = find_pairs(entries)
    assert len(checks) == 7 and {c.status for c in checks} == {"unverified"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seed.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: a/b\ncheckpoints:\n  - {kind: ct, repo: c/d}\n", "checkpoints.0: CT checkpoint c/d needs a language"),
        ("base: a/b\ncheckpoints:\n  - {kind: ct, repo: c/d, language: bn}\n", "checkpoints.0.language: language 'bn'"),
        (
            "base: a/b\ncheckpoints:\n  - {kind: sft, repo: c/d, language: ben_Beng}\n",
            "'language' and 'tokens' are for CT",
        ),
        ("base: a/b\ncheckpoints:\n  - {kind: sft, repo: c/d, extra: 1}\n", "checkpoints.0.extra: Extra inputs"),
        ("base: nobase\ncheckpoints:\n  - {kind: sft, repo: c/d}\n", "base: repo id 'nobase'"),
        ("base: a/b\ncheckpoints: []\n", "checkpoints: Tuple should have at least 1 item"),
        ("base: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_seed_files_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RecipeError, match="seed file") as info:
        load_seed(_write(tmp_path, text))
    assert message in str(info.value)


def test_missing_seed_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="not found"):
        load_seed(tmp_path / "nope.yaml")


def test_verifying_without_a_hub_refuses_every_entry(repo_root: Path) -> None:
    with pytest.raises(CatalogError, match=r"8 of 8 seed checkpoints could not be verified.*--no-verify"):
        seed_entries(None, load_seed(repo_root / "recipes" / "registry-seed.yaml"), verify=True)


def test_ct_card_fields() -> None:
    card = {"language": ["bn", "en"], "base_model": "meta-llama/Llama-2-7b-hf", "ct_tokens": 1000}
    assert ct_fields_from_card(card) == ("ben_Beng", "meta-llama/Llama-2-7b-hf", 1000)
    assert ct_fields_from_card({"language": "tam_Taml", "base_model": ["x/y"]}) == ("tam_Taml", "x/y", None)
    with pytest.raises(ValueError, match="names no target language"):
        ct_fields_from_card({"language": ["en"], "base_model": "x/y"})
    with pytest.raises(ValueError, match="several target languages"):
        ct_fields_from_card({"language": ["bn", "ta"], "base_model": "x/y"})
    with pytest.raises(ValueError, match="needs exactly one"):
        ct_fields_from_card({"language": "bn"})
    with pytest.raises(ValueError, match="ct_tokens"):
        ct_fields_from_card({"language": "bn", "base_model": "x/y", "ct_tokens": "lots"})


def test_sft_card_fields() -> None:
    assert sft_fields_from_card({"base_model": "x/y", "datasets": ["flan"]}) == ("x/y", "flan")
    assert sft_fields_from_card({"base_model": "x/y"}) == ("x/y", None)
    with pytest.raises(ValueError, match="needs exactly one"):
        sft_fields_from_card({"base_model": ["x/y", "z/w"]})
