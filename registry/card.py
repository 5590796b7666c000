"""Model cards for merged models, written with `huggingface_hub.ModelCard`/`ModelCardData`.

Metadata: `base_model` (every input, base included), `base_model_relation: merge`, tags, languages
(ISO 639-1 of the CT languages, plus `en`; none when the recipe names no CT language, as a plain
mergekit config without roles does), the most restrictive input license, library and pipeline. Body: inputs with revisions, the recipe, the diagnostics summary, a usage snippet,
optional evaluation results, and the TIES and TIES-SV citations. No dates or local paths go in,
so the same merge gives the same card.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.languages import ISO_639_1

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCard

    from registry.recipe import Recipe

# Higher is more restrictive; an unknown license is treated as the most restrictive of all.
_LICENSE_RANK = {
    "mit": 0,
    "apache-2.0": 0,
    "bsd-3-clause": 0,
    "bsd-2-clause": 0,
    "cc0-1.0": 0,
    "cc-by-4.0": 1,
    "openrail": 2,
    "cc-by-sa-4.0": 3,
    "llama2": 4,
    "llama3": 4,
    "llama3.1": 4,
    "llama3.2": 4,
    "gemma": 4,
    "cc-by-nc-4.0": 5,
    "cc-by-nc-sa-4.0": 6,
    "other": 7,
}
CITATIONS = """```bibtex
@inproceedings{yadav2023ties,
  title     = {{TIES}-Merging: Resolving Interference When Merging Models},
  author    = {Yadav, Prateek and Tam, Derek and Choshen, Leshem and Raffel, Colin and Bansal, Mohit},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2023},
  eprint    = {2306.01708},
  archivePrefix = {arXiv}
}

@inproceedings{tao2024unlocking,
  title     = {Unlocking the Potential of Model Merging for Low-Resource Languages},
  author    = {Tao, Mingxu and Zhang, Chen and Huang, Quzhe and Ma, Tianyao and Huang, Songfang and Zhao, Dongyan and Feng, Yansong},
  booktitle = {Findings of the Association for Computational Linguistics: EMNLP 2024},
  year      = {2024},
  eprint    = {2407.03994},
  archivePrefix = {arXiv}
}
```"""


@dataclass(frozen=True)
class CardInput:
    """One input as the card shows it."""

    ref: str
    role: str  # base | ct | sft | input | tokenizer (a source used only for its tokenizer)
    revision: str | None = None  # the Hub commit used, or None for a local path
    repo_id: str | None = None  # None for a local path (left out of `base_model`)
    license: str | None = None
    language: str | None = None


def most_restrictive_license(licenses: Sequence[str | None]) -> str:
    """The most restrictive license id of the inputs (`other` when one is unknown or unlisted)."""
    ranked = [(lic or "other").lower() for lic in licenses] or ["other"]
    return max(ranked, key=lambda lic: (_LICENSE_RANK.get(lic, _LICENSE_RANK["other"]), lic))


def card_languages(codes: Sequence[str]) -> list[str]:
    """ISO 639-1 codes for FLORES-style codes (unknown ones by their 3-letter part), plus `en`."""
    out = [ISO_639_1.get(code, code.split("_")[0]) for code in codes]
    return list(dict.fromkeys([*out, "en"]))


def read_card_license(model_dir: Path | None) -> str | None:
    """The `license:` of a model directory's README.md front matter, or None."""
    if model_dir is None or not (model_dir / "README.md").is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(model_dir / "README.md")
    except (ValueError, OSError):
        return None
    lic = getattr(card.data, "license", None)
    return str(lic) if lic else None


def build_model_card(
    recipe: Recipe,
    inputs: Sequence[CardInput],
    *,
    diagnostics: str | None = None,
    repo_id: str | None = None,
    eval_results: list[EvalResult] | None = None,
    ct_sft_results: Sequence[EvalResult] | None = None,
) -> ModelCard:
    """Build the model card of a merge.

    Args:
        recipe: the validated recipe.
        inputs: every input (base included) with role, revision and license.
        diagnostics: the printed summary of merge_report.json.
        repo_id: where the model is published (defaults to `mergeling.output_repo`).
        eval_results: evaluation results to add to the metadata (model-index) and the body.
        ct_sft_results: the CT-then-SFT baseline's results on the same tasks (the paper's
            comparison): a column beside the merge's in the body only, matched by dataset and metric.

    Returns:
        The card; `str(card)` is the README.md text.
    """
    from huggingface_hub import ModelCard, ModelCardData

    repo_id = repo_id or recipe.mergeling.output_repo
    name = repo_id.split("/")[-1] if repo_id else f"{recipe.merge_method}-merge"
    method = recipe.merge_method
    tags = ["merge", "mergeling", method.replace("_", "-"), "low-resource"]
    data = ModelCardData(
        base_model=[i.repo_id for i in inputs if i.repo_id] or None,
        # A recipe without CT languages (a mergekit config has no roles) says nothing about the
        # merge's language: leave it out rather than claim English.
        language=card_languages(recipe.languages()) if recipe.languages() else None,
        license=most_restrictive_license([i.license for i in inputs]),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
        model_name=name if eval_results else None,
        eval_results=eval_results or None,
        base_model_relation="merge",
    )
    body = _body(
        recipe,
        inputs,
        name=name,
        repo_id=repo_id,
        diagnostics=diagnostics,
        eval_results=eval_results,
        ct_sft_results=ct_sft_results,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _body(
    recipe: Recipe,
    inputs: Sequence[CardInput],
    *,
    name: str,
    repo_id: str | None,
    diagnostics: str | None,
    eval_results: list[EvalResult] | None,
    ct_sft_results: Sequence[EvalResult] | None = None,
) -> str:
    rows = "\n".join(
        f"| {i.role} | `{i.ref.partition('@')[0]}` | {('`' + i.revision + '`') if i.revision else 'local'} "
        f"| {i.language or ''} | {i.license or 'unknown'} |"
        for i in inputs
    )
    parts = [
        f"# {name}",
        _summary(recipe, n_inputs=sum(i.role not in ("base", "tokenizer") for i in inputs)),
        "## Inputs\n\n| role | model | revision | language | license |\n|---|---|---|---|---|\n" + rows,
        "## Recipe\n\nAlso in this repository as `mergeling_recipe.yaml`.\n\n```yaml\n" + recipe.to_yaml() + "```",
    ]
    if diagnostics:
        parts.append(
            "## Merge diagnostics\n\nFrom `merge_report.json` (share of each input's entries kept after "
            "trimming, sign conflicts, and the protected SFT entries the sign election discarded):\n\n"
            "```text\n" + diagnostics.rstrip() + "\n```"
        )
    if eval_results:
        parts.append(_evaluation_table(eval_results, ct_sft_results))
    model_id = repo_id or "path/to/this/model"
    parts.append(
        "## Usage\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")\n'
        f'model = AutoModelForCausalLM.from_pretrained("{model_id}", dtype="auto")\n'
        'inputs = tokenizer("Question: ...\\nAnswer:", return_tensors="pt")\n'
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0]))\n```"
    )
    parts.append("## Citation\n\n" + CITATIONS)
    return "\n\n".join(parts) + "\n"


def _evaluation_table(results: Sequence[EvalResult], ct_sft: Sequence[EvalResult] | None = None) -> str:
    if not ct_sft:
        lines = "\n".join(f"| {r.dataset_name} | {r.metric_type} | {r.metric_value} |" for r in results)
        return "## Evaluation\n\n| task | metric | value |\n|---|---|---|\n" + lines
    baseline = {(r.dataset_name, r.metric_type): r.metric_value for r in ct_sft}
    lines = "\n".join(
        f"| {r.dataset_name} | {r.metric_type} | {r.metric_value} | {baseline.get((r.dataset_name, r.metric_type), '—')} |"
        for r in results
    )
    return "## Evaluation\n\n| task | metric | value | CT-then-SFT |\n|---|---|---|---|\n" + lines


def _summary(recipe: Recipe, *, n_inputs: int) -> str:
    """The card's first paragraph: what was merged, as far as the recipe says."""
    method = recipe.merge_method
    languages = recipe.languages()
    has_roles = any(m.role in ("ct", "sft") for m in recipe.models)
    if languages:
        return (
            f"A `{method}` merge made with Mergeling for {', '.join(languages)}: a model continually "
            "pre-trained on the target language (CT) merged with an English instruction-tuned (SFT) model, so "
            "that the merge can solve tasks in the low-resource language (Tao et al., 2024)."
        )
    if has_roles:
        return (
            f"A `{method}` merge made with Mergeling of a continually pre-trained (CT) model and an English "
            "instruction-tuned (SFT) model; the recipe names no target language (add `language:` to the CT input)."
        )
    return (
        f"A `{method}` merge of {n_inputs} models made with Mergeling from a mergekit-style configuration. "
        "The configuration gives no roles or languages, so this card does not say which input brings which "
        "language or skill (add `role: ct` / `role: sft` and `language:` to the recipe's models to record them)."
    )


def build_card_for_output(
    out_dir: Path, *, eval_results: list[EvalResult] | None = None, repo_id: str | None = None
) -> ModelCard:
    """Rebuild the model card of a merge output directory, e.g. to add evaluation results.

    Reads `mergeling_recipe.yaml` and `merge_report.json` (its `sources` and `summary`).

    Args:
        out_dir: a directory written by `registry merge`.
        eval_results: results to add (see `registry.evaluate.model_index.to_eval_results`).
        repo_id: where it is published (defaults to the recipe's `mergeling.output_repo`).

    Returns:
        The card (write it with `card.save(out_dir / "README.md")`).

    Raises:
        RecipeError: the directory lacks a valid recipe or report.
    """
    import json

    from registry.errors import RecipeError
    from registry.recipe import load_recipe

    recipe = load_recipe(out_dir / "mergeling_recipe.yaml")
    try:
        report = json.loads((out_dir / "merge_report.json").read_text(encoding="utf-8"))
        inputs = [CardInput(**source) for source in report["sources"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecipeError(
            f"{out_dir}: no usable merge_report.json ({exc}); is this a `registry merge` output?", path=str(out_dir)
        ) from None
    return build_model_card(
        recipe, inputs, diagnostics=report.get("summary"), repo_id=repo_id, eval_results=eval_results
    )
