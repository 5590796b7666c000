"""CT × SFT pairing: compatible pairs, and the reason for every incompatible one."""

from __future__ import annotations

from registry.catalog.entries import (
    AdapterFacts,
    CtEntry,
    ModelRef,
    ModelShape,
    SftEntry,
    TokenizerFacts,
    ct_entry_id,
    sft_entry_id,
)
from registry.catalog.pairing import check_pair, find_pairs

BASE = ModelRef(repo="meta-llama/Llama-2-7b-hf", revision="b" * 40)
SHAPE = ModelShape(
    architecture="LlamaForCausalLM", model_type="llama", hidden_size=64, num_hidden_layers=2,
    intermediate_size=128, num_attention_heads=4, num_key_value_heads=4, vocab_size=300,
)  # fmt: skip


def ct(language: str = "ben_Beng", *, sha: str = "1" * 40, vocab: int = 300, base: ModelRef = BASE,
       shape: ModelShape | None = SHAPE, repo: str = "lab/ct") -> CtEntry:  # fmt: skip
    shape = shape.model_copy(update={"vocab_size": vocab}) if shape else None
    return CtEntry(
        id=ct_entry_id(repo=repo, revision=sha, language=language), repo=repo, revision=sha, language=language,
        base=base, shape=shape, verified=shape is not None,
        tokenizer=TokenizerFacts.from_sizes(vocab_size=vocab, base_vocab_size=300) if shape else None,
    )  # fmt: skip


def sft(
    *, sha: str = "2" * 40, base: ModelRef = BASE, shape: ModelShape | None = SHAPE, repo: str = "lab/sft"
) -> SftEntry:
    return SftEntry(
        id=sft_entry_id(repo=repo, revision=sha), repo=repo, revision=sha, base=base, shape=shape,
        verified=shape is not None,
    )  # fmt: skip


def test_same_base_and_shapes_is_compatible() -> None:
    check = check_pair(ct(), sft())
    assert check.status == "compatible" and check.compatible
    assert check.reasons == () and check.notes == ()
    assert check.language == "ben_Beng"


def test_extended_ct_vocabulary_is_compatible_and_says_so() -> None:
    check = check_pair(ct(vocab=316), sft())
    assert check.status == "compatible"
    assert any("extended by 16 tokens" in note and "tokenizer_source: ct" in note for note in check.notes)


def test_different_base_is_incompatible() -> None:
    other = ModelRef(repo="mistralai/Mistral-7B-v0.1", revision="c" * 40)
    check = check_pair(ct(), sft(base=other))
    assert check.status == "incompatible"
    assert check.reasons == ("different base: CT is on meta-llama/Llama-2-7b-hf, SFT on mistralai/Mistral-7B-v0.1",)


def test_architecture_and_shape_differences_are_each_named() -> None:
    other = SHAPE.model_copy(update={"architecture": "MistralForCausalLM", "model_type": "mistral", "hidden_size": 32})
    check = check_pair(ct(), sft(shape=other))
    assert check.status == "incompatible"
    assert check.reasons[0].startswith("architecture: CT is LlamaForCausalLM (llama), SFT is MistralForCausalLM")
    assert check.reasons[1] == "shapes (CT vs SFT): hidden_size 64 vs 32"


def test_sft_vocabulary_off_the_base_is_incompatible() -> None:
    check = check_pair(ct(), sft(shape=SHAPE.model_copy(update={"vocab_size": 301})))
    assert check.status == "incompatible"
    assert "SFT has 301 tokens but the base has 300" in check.reasons[0]


def test_unverified_entry_gives_unverified_not_compatible() -> None:
    check = check_pair(ct(shape=None, sha="main"), sft())
    assert check.status == "unverified"
    assert "ct-ben_Beng-lab--ct-main" in check.notes[0]
    # A known reason still wins over missing shapes.
    other = ModelRef(repo="x/y")
    assert check_pair(ct(shape=None, sha="main"), sft(base=other)).status == "incompatible"


def test_base_revision_difference_is_a_note() -> None:
    check = check_pair(ct(), sft(base=ModelRef(repo=BASE.repo, revision="d" * 40)))
    assert check.status == "compatible"
    assert check.notes == ("base revisions differ (bbbbbbb vs ddddddd); the merge uses one",)


def test_find_pairs_filters_by_language_and_orders() -> None:
    entries = [sft(), ct("tam_Taml", repo="lab/ct-tam"), ct("ben_Beng"), sft(sha="3" * 40, repo="lab/sft2")]
    checks = find_pairs(entries)
    assert [(c.language, c.ct_id, c.sft_id) for c in checks] == sorted((c.language, c.ct_id, c.sft_id) for c in checks)
    assert len(checks) == 4
    only_tam = find_pairs(entries, language="tam_Taml")
    assert {c.language for c in only_tam} == {"tam_Taml"} and len(only_tam) == 2
    assert find_pairs(entries, language="uig_Arab") == []


def test_an_adapter_ct_pairs_only_with_sfts_of_its_base() -> None:
    adapter = ct().model_copy(update={"adapter": AdapterFacts(base_model_name_or_path=BASE.repo, r=8, lora_alpha=16)})
    same = check_pair(adapter, sft())
    assert same.compatible and same.notes == (f"CT is a LoRA adapter (r 8) of {BASE.repo}: the merge applies it "
                                              "to the base (the recipe's base_model)",)  # fmt: skip
    other = check_pair(adapter, sft(base=ModelRef(repo="other/base", revision="c" * 40)))
    assert other.status == "incompatible" and other.notes == ()
    assert other.reasons == (f"different base: CT is on {BASE.repo}, SFT on other/base",)


def test_pairs_name_the_ct_then_sft_baselines_of_their_ct() -> None:
    from registry.catalog.entries import CtSftEntry, ct_sft_entry_id, dump_entry, parse_entry

    ben, ben_old, tam = ct(), ct(sha="3" * 40), ct("tam_Taml", repo="lab/ct-tam")

    def ct_sft(of: CtEntry, repo: str) -> CtSftEntry:
        return CtSftEntry(
            id=ct_sft_entry_id(repo=repo, revision="4" * 40, language=of.language), repo=repo, revision="4" * 40,
            language=of.language, base=BASE, shape=SHAPE, ct=of.ref, data="flan", ct_tokens=1000,
        )  # fmt: skip

    baseline, old_baseline = ct_sft(ben, "lab/ct-sft"), ct_sft(ben_old, "lab/ct-sft-old")
    assert baseline.id.startswith("ct_sft-ben_Beng-lab--ct-sft-")
    assert parse_entry(dump_entry(baseline)) == baseline  # stored and read back as its own kind
    checks = find_pairs([ben, ben_old, tam, sft(), baseline, old_baseline])
    by_ct = {c.ct_id: c.ct_sft_ids for c in checks}
    assert by_ct == {ben.id: (baseline.id,), ben_old.id: (old_baseline.id,), tam.id: ()}  # same CT commit only
    assert len(checks) == 3  # a CT-then-SFT is neither a CT nor an SFT input
