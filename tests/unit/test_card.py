"""Model cards: metadata fields the Hub reads, licenses, languages, body sections."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard

from registry.card import CardInput, build_model_card, card_languages, most_restrictive_license, read_card_license
from registry.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _inputs() -> list[CardInput]:
    return [
        CardInput(
            "meta-llama/Llama-2-7b-hf", "base", revision="a" * 40, repo_id="meta-llama/Llama-2-7b-hf", license="llama2"
        ),
        CardInput(
            "pkupie/Llama-2-7b-mon",
            "ct",
            revision="b" * 40,
            repo_id="pkupie/Llama-2-7b-mon",
            license="apache-2.0",
            language="khk_Cyrl",
        ),
        CardInput(
            "pkupie/Llama-2-7b-uig",
            "ct",
            revision="c" * 40,
            repo_id="pkupie/Llama-2-7b-uig",
            license="mit",
            language="uig_Arab",
        ),
        CardInput("./local/sft", "sft"),
    ]


def test_license_and_languages() -> None:
    assert most_restrictive_license(["apache-2.0", "llama2", "mit"]) == "llama2"
    assert most_restrictive_license(["cc-by-nc-4.0", "llama2"]) == "cc-by-nc-4.0"
    assert most_restrictive_license(["apache-2.0", None]) == "other"
    assert card_languages(["khk_Cyrl", "uig_Arab", "ben_Beng"]) == ["mn", "ug", "bn", "en"]
    assert card_languages(["ory_Orya", "eng_Latn"]) == ["or", "en"]


def test_card_metadata_and_body() -> None:
    recipe = load_recipe(RECIPES / "multi-mon_Mong-uig_Arab-ties-sv.yaml")
    inputs = _inputs()[:3] + [
        CardInput(
            "pkupie/Llama-2-7b-FLAN-step884",
            "sft",
            revision="d" * 40,
            repo_id="pkupie/Llama-2-7b-FLAN-step884",
            license="llama2",
        )
    ]
    card = build_model_card(recipe, inputs, diagnostics="ties_sv: 3 tensors\n  sft: 10 discarded")
    reparsed = ModelCard(str(card))
    data = reparsed.data.to_dict()
    assert data["base_model"] == [i.repo_id for i in inputs]
    assert data["base_model_relation"] == "merge"
    assert data["language"] == ["mn", "ug", "en"]
    assert data["license"] == "llama2"
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert set(data["tags"]) == {"merge", "mergeling", "ties-sv", "low-resource"}
    text = reparsed.text
    assert "`" + "b" * 40 + "`" in text  # revisions of the inputs
    assert "slack: 0.05" in text  # the recipe
    assert "sft: 10 discarded" in text  # diagnostics
    assert 'AutoModelForCausalLM.from_pretrained("mergeling/Llama-2-7b-mon-uig-ties-sv"' in text
    assert "2306.01708" in text and "2407.03994" in text  # TIES and TIES-SV citations


def test_local_inputs_are_not_base_models_and_eval_results_optional() -> None:
    recipe = load_recipe(RECIPES / "ben_Beng-ties-sv.yaml")
    result = EvalResult(
        task_type="text-classification",
        dataset_type="sib200",
        dataset_name="SIB-200 ben_Beng",
        metric_type="accuracy",
        metric_value=0.61,
    )
    card = build_model_card(recipe, _inputs(), eval_results=[result])
    data = ModelCard(str(card)).data
    assert "./local/sft" not in data.base_model
    assert data.license == "other"  # an input with an unknown license
    assert data.eval_results[0].metric_value == 0.61
    assert "| SIB-200 ben_Beng | accuracy | 0.61 |" in str(card)
    assert str(build_model_card(recipe, _inputs())) == str(build_model_card(recipe, _inputs()))  # deterministic


def test_read_card_license(tmp_path: Path) -> None:
    assert read_card_license(tmp_path) is None
    (tmp_path / "README.md").write_text("---\nlicense: llama2\n---\n# model\n")
    assert read_card_license(tmp_path) == "llama2"


def test_a_mergekit_config_without_roles_claims_no_language() -> None:
    # It used to say "for the CT model's language" with `language: [en]`.
    from registry.recipe import parse_recipe

    recipe = parse_recipe(
        {
            "merge_method": "ties",
            "base_model": "org/base",
            "models": [{"model": "org/a", "parameters": {"density": 0.5}}, {"model": "org/b"}],
            "parameters": {"density": 0.5},
        }
    )
    inputs = [
        CardInput(ref=r, role=role, repo_id=r)
        for r, role in (("org/base", "base"), ("org/a", "input"), ("org/b", "input"))
    ]
    card = build_model_card(recipe, inputs)
    assert card.data.language is None and "language:" not in str(card).split("---")[1]
    text = str(card)
    assert "the CT model's language" not in text and "merge of 2 models" in text and "gives no roles" in text


def test_evaluation_table_has_a_ct_then_sft_column_when_given() -> None:
    recipe = load_recipe(RECIPES / "ben_Beng-ties-sv.yaml")

    def result(task: str, value: float) -> EvalResult:
        return EvalResult(
            task_type="text-classification", dataset_type="sib200", dataset_name=task, metric_type="accuracy",
            metric_value=value,
        )  # fmt: skip

    merged = [result("SIB-200 ben_Beng", 0.61), result("SIB-200 eng_Latn", 0.7)]
    card = str(
        build_model_card(recipe, _inputs(), eval_results=merged, ct_sft_results=[result("SIB-200 ben_Beng", 0.55)])
    )
    assert "| task | metric | value | CT-then-SFT |" in card
    assert (
        "| SIB-200 ben_Beng | accuracy | 0.61 | 0.55 |" in card and "| SIB-200 eng_Latn | accuracy | 0.7 | — |" in card
    )
    assert "CT-then-SFT" not in str(build_model_card(recipe, _inputs(), eval_results=merged))
    assert ModelCard(card).data.eval_results[0].metric_value == 0.61  # the model-index holds the merge's only
