"""Catalog entry models: IDs, validation, JSON round trips, reference parsing."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from registry.catalog.entries import (
    AdapterFacts,
    CtEntry,
    EvalResult,
    MergeEntry,
    MergeInput,
    ModelRef,
    ModelShape,
    SftEntry,
    TokenizerFacts,
    ct_entry_id,
    dump_entry,
    entry_kind,
    entry_path,
    language_from_card,
    merge_entry_id,
    parse_entry,
    sft_entry_id,
    split_reference,
    validate_language,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
BASE_SHA = "fedcba9876543210fedcba9876543210fedcba98"
LLAMA = ModelShape(
    architecture="LlamaForCausalLM", model_type="llama", hidden_size=4096, num_hidden_layers=32,
    intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
)  # fmt: skip


def _ct(**overrides: object) -> CtEntry:
    fields: dict[str, object] = dict(
        repo="pkupie/Llama-2-7b-ben", revision=SHA, language="ben_Beng",
        base=ModelRef(repo="meta-llama/Llama-2-7b-hf", revision=BASE_SHA), shape=LLAMA,
        tokenizer=TokenizerFacts.from_sizes(vocab_size=32000, base_vocab_size=32000),
    )  # fmt: skip
    fields.update(overrides)
    fields.setdefault(
        "id", ct_entry_id(repo=str(fields["repo"]), revision=str(fields["revision"]), language=str(fields["language"]))
    )
    return CtEntry(**fields)


def test_ids_are_readable_and_stable() -> None:
    assert ct_entry_id(repo="pkupie/Llama-2-7b-ben", revision=SHA, language="ben_Beng") == (
        "ct-ben_Beng-pkupie--Llama-2-7b-ben-0123456"
    )
    assert sft_entry_id(repo="pkupie/Llama-2-7b-FLAN-step884", revision="main") == (
        "sft-pkupie--Llama-2-7b-FLAN-step884-main"
    )
    assert sft_entry_id(repo="a/b", revision="refs/pr/3") == "sft-a--b-refs-pr-3"
    assert merge_entry_id(output_repo="me/out", recipe_hash="ab" * 32) == "merge-me--out-abababa"


def test_ct_entry_round_trips_through_json() -> None:
    entry = _ct(tokens=1_000_000)
    again = parse_entry(dump_entry(entry))
    assert again == entry
    assert isinstance(again, CtEntry)
    stored = json.loads(dump_entry(entry))
    assert stored["kind"] == "ct"
    assert stored["tokenizer"] == {"vocab_size": 32000, "base_vocab_size": 32000, "extended": False}
    assert stored["added_at"].endswith("Z")


def test_adapter_ct_round_trips_and_must_sit_on_its_own_base() -> None:
    facts = AdapterFacts(base_model_name_or_path="meta-llama/Llama-2-7b-hf", r=64, lora_alpha=128)
    entry = _ct(adapter=facts)
    assert parse_entry(dump_entry(entry)) == entry
    assert json.loads(dump_entry(entry))["adapter"]["peft_type"] == "LORA"
    assert json.loads(dump_entry(_ct()))["adapter"] is None  # entries written before adapters parse unchanged
    with pytest.raises(ValidationError, match="is a LoRA adapter of other/base, but its base is meta-llama"):
        _ct(adapter=facts.model_copy(update={"base_model_name_or_path": "other/base"}))
    with pytest.raises(ValidationError, match="peft_type"):
        AdapterFacts(peft_type="IA3", base_model_name_or_path="a/b", r=4, lora_alpha=8)  # type: ignore[arg-type]


def test_entry_rejects_id_that_does_not_match_content() -> None:
    with pytest.raises(ValidationError, match="does not match its content"):
        _ct(id="ct-ben_Beng-someone--else-0123456")


def test_entry_rejects_unknown_fields_and_is_frozen() -> None:
    data = json.loads(dump_entry(_ct()))
    data["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        parse_entry(json.dumps(data))
    with pytest.raises(ValidationError):
        _ct().language = "tam_Taml"  # type: ignore[misc]


def test_verified_entry_needs_a_commit_sha_and_shapes() -> None:
    with pytest.raises(ValidationError, match="not a 40-hex commit sha"):
        _ct(revision="main")
    with pytest.raises(ValidationError, match="no shape facts"):
        _ct(shape=None)
    unverified = _ct(revision="main", shape=None, tokenizer=None, verified=False, source="seed")
    assert unverified.id == "ct-ben_Beng-pkupie--Llama-2-7b-ben-main"


@pytest.mark.parametrize("code", ["ben_Beng", "khk_Cyrl", "uig_Arab"])
def test_language_codes_accepted(code: str) -> None:
    assert validate_language(code) == code


@pytest.mark.parametrize("code", ["bn", "ben", "ben_beng", "BEN_Beng", "ben-Beng", ""])
def test_language_codes_rejected_with_examples(code: str) -> None:
    with pytest.raises(ValueError, match="e.g. ben_Beng"):
        validate_language(code)


def test_language_from_card_maps_iso_codes() -> None:
    assert language_from_card("bn") == "ben_Beng"
    assert language_from_card("mon") == "mon_Mong"  # MC² and MiLiC-Eval: Traditional script
    assert language_from_card("mn") == "mon_Mong" and language_from_card("khk") == "khk_Cyrl"
    assert language_from_card("tam_Taml") == "tam_Taml"
    assert language_from_card("xx") is None


def test_tokenizer_facts_must_be_consistent() -> None:
    facts = TokenizerFacts.from_sizes(vocab_size=32016, base_vocab_size=32000)
    assert facts.extended and facts.added_tokens == 16
    with pytest.raises(ValidationError, match="extended=False"):
        TokenizerFacts(vocab_size=32016, base_vocab_size=32000, extended=False)


def test_split_reference() -> None:
    assert split_reference("pkupie/Llama-2-7b-ben") == ("pkupie/Llama-2-7b-ben", None)
    assert split_reference("pkupie/Llama-2-7b-ben@v1.0") == ("pkupie/Llama-2-7b-ben", "v1.0")
    with pytest.raises(ValueError, match="empty revision"):
        split_reference("a/b@")
    with pytest.raises(ValueError, match="owner/name"):
        split_reference("just-a-name")
    with pytest.raises(ValueError, match="owner/name"):
        split_reference("a/../b")


def test_entry_paths_and_kinds() -> None:
    assert entry_path("ct-ben_Beng-a--b-0123456") == "entries/ct/ct-ben_Beng-a--b-0123456.json"
    assert entry_kind("merge-a--b-abcdef0") == "merge"
    for bad in ("nope-1", "ct-../../etc", "ct-a/b", ""):
        with pytest.raises(ValueError, match="does not start with one of"):
            entry_kind(bad)


def test_merge_entry_states() -> None:
    recipe_hash = "c" * 64
    inputs = (
        MergeInput(role="ct", repo="pkupie/Llama-2-7b-ben", revision=SHA),
        MergeInput(role="sft", repo="pkupie/Llama-2-7b-FLAN-step884", revision=BASE_SHA),
    )
    common = dict(id=merge_entry_id(output_repo="me/ben-ties-sv", recipe_hash=recipe_hash), method="ties_sv",
                  recipe_hash=recipe_hash, inputs=inputs, output_repo="me/ben-ties-sv", languages=("ben_Beng",))  # fmt: skip
    pending = MergeEntry(**common)
    assert pending.status == "pending"
    with pytest.raises(ValidationError, match="needs the output commit sha"):
        MergeEntry(**common, status="merged")
    done = MergeEntry(
        **common, status="evaluated", output_revision=SHA,
        results=(EvalResult(task="sib200", metric="acc", value=0.61, language="ben_Beng", n=204),),
    )  # fmt: skip
    assert parse_entry(dump_entry(done)) == done
    with pytest.raises(ValidationError, match="at least 2"):
        MergeEntry(**{**common, "inputs": inputs[:1]})


def test_sft_entry_kind_discriminates() -> None:
    sft = SftEntry(
        id=sft_entry_id(repo="pkupie/Llama-2-7b-FLAN-step884", revision=SHA), repo="pkupie/Llama-2-7b-FLAN-step884",
        revision=SHA, base=ModelRef(repo="meta-llama/Llama-2-7b-hf"), shape=LLAMA, data="flan",
    )  # fmt: skip
    assert isinstance(parse_entry(dump_entry(sft)), SftEntry)
