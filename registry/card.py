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

    from registry.evaluate.records import EvalRecord
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


# -- the card of a published merge: one typed context, one renderer ----------------------------------
# `registry push` and the bot pass data (records, inputs, reasons), never markdown; every section of a
# published merge's card is written here, in this order: what `registry merge` writes (inputs, recipe,
# diagnostics, model-index results), the comparison table(s), the unverified-results note, the bot's
# provenance, the sweep table, then the hidden provenance and job marker lines.

# The reason a bot started with --no-eval gives: merges are published un-evaluated on purpose.
NO_EVAL = "not evaluated: this bot runs with --no-eval"
_LABELS = {"ct": "CT", "sft": "SFT", "merge": "merged"}


def describe_unavailable(reason: str) -> str:
    """The sentence a card (and the bot's comment) shows for a merge without evaluation results."""
    return f"{reason[0].upper()}{reason[1:]}." if reason == NO_EVAL else f"Evaluation unavailable: {reason}."


@dataclass(frozen=True)
class ResultsTable:
    """One comparison table: the merge beside the models it is compared with, on one suite.

    Args:
        columns: (label, record) in column order; labels `ct`, `sft`, `merge` are shown as CT, SFT,
            merged, any other label as given. Differences are to the first column.
        language: a group merge's member language (one table each); None: the merge's one suite.
        unavailable: why this table has no numbers (a one-line reason, e.g. `NO_EVAL`).
    """

    columns: tuple[tuple[str, EvalRecord], ...] = ()
    language: str | None = None
    unavailable: str | None = None


@dataclass(frozen=True)
class MergeProvenance:
    """Where a merge the bot made came from (its card's Provenance section)."""

    ct_repo: str
    ct_sha: str
    ct_url: str
    job_id: str
    members: tuple[tuple[str, str, str], ...]  # (repo, sha, language) of each CT
    sft_repo: str
    sft_sha: str
    base: str  # repo@sha
    recipe: str  # where the recipe came from (a path, catalog:..., default, custom recipe <tag>)
    requested_by: str | None = None


@dataclass(frozen=True)
class SweepResult:
    """A sweep's points and their dev values; `best` was promoted to `main`."""

    metric: str
    scores: tuple[tuple[str, float | None], ...]  # (point name, dev value or None)
    best: str
    unavailable: str | None = None  # why the dev evaluation gave no values (the first point was kept)


@dataclass(frozen=True)
class MergeCardContext:
    """Everything the card of a published merge shows.

    Args:
        folder: the `registry merge` output (its recipe, report and diagnostics are read from it).
        repo_id: where it is published.
        records: the merge's own evaluation records: its `model-index` (every language's for a group).
        tables: comparison tables (one per language for a group merge).
        unverified: why the records may not describe these weights (`registry push --force`).
        provenance: the bot's job that made it.
        sweep: the sweep the bot ran.
        marker: a hidden marker that makes the publish idempotent (the bot's job id).
    """

    folder: Path
    repo_id: str
    records: tuple[EvalRecord, ...] = ()
    tables: tuple[ResultsTable, ...] = ()
    unverified: tuple[str, ...] = ()
    provenance: MergeProvenance | None = None
    sweep: SweepResult | None = None
    marker: str | None = None

    def section_titles(self) -> list[str]:
        """The `## ` headings of the rendered card, in order (what a test compares across callers)."""
        return [line[3:] for line in render_merge_card(self).splitlines() if line.startswith("## ")]


def render_merge_card(ctx: MergeCardContext) -> str:
    """The README.md of a published merge: every section, from `ctx` alone."""
    from registry.evaluate.model_index import to_eval_results
    from registry.publish import ct_repos_of, marker_line, provenance_line

    results = [result for record in ctx.records for result in to_eval_results(record)]
    card = build_card_for_output(ctx.folder, eval_results=results or None, repo_id=ctx.repo_id)
    parts = [str(card).rstrip("\n")]
    parts += [_results_table(table) for table in ctx.tables if table.columns or table.unavailable]
    if ctx.unverified:
        parts.append(
            "## Evaluation: unverified\n\nThe results in this card were published with `registry push --force`: "
            "they were not measured on these weights.\n\n" + "\n".join(f"- {problem}" for problem in ctx.unverified)
        )
    if ctx.provenance is not None:
        parts.append(_provenance(ctx.provenance))
    if ctx.sweep is not None:
        parts.append(sweep_markdown(ctx.sweep))
    ct_repos = ct_repos_of(ctx.folder)
    if ct_repos:
        parts.append(provenance_line(ct_repos))
    if ctx.marker:
        parts.append(marker_line(ctx.marker))
    return "\n\n".join(parts) + "\n"


def comparison_markdown(columns: Sequence[tuple[str, EvalRecord]]) -> str:
    """The markdown table of `columns` (label, record); differences are to the first column."""
    from registry.evaluate.compare import build_comparison, render_markdown

    labels = [_LABELS.get(label, label) for label, _ in columns]
    return render_markdown(build_comparison([record for _, record in columns], labels=labels))


def _results_table(table: ResultsTable) -> str:
    if table.language is not None:
        language = table.language
        if table.unavailable or len(table.columns) < 2:
            return f"## Evaluation: {language}\n\n{describe_unavailable(table.unavailable or 'no results')}"
        return (
            f"## Evaluation: {language}\n\nThe {language} CT, the SFT and the merge on the {language} suite "
            f"(differences in brackets are to the CT).\n\n{comparison_markdown(table.columns)}"
        )
    if table.unavailable:
        return f"## Evaluation\n\n{describe_unavailable(table.unavailable)}"
    if len(table.columns) < 2:
        return ""
    first = _LABELS.get(table.columns[0][0], table.columns[0][0])
    return (
        f"## Evaluation: comparison\n\nDifferences in brackets are to the first column ({first}).\n\n"
        f"{comparison_markdown(table.columns)}"
    )


def _provenance(p: MergeProvenance) -> str:
    inputs = "\n".join(f"- CT `{repo}` at commit `{sha}` ({language})" for repo, sha, language in p.members)
    text = (
        "## Provenance\n\n"
        f"Merged by the Mergeling bot from [{p.ct_repo}]({p.ct_url}) at commit `{p.ct_sha}` (job `{p.job_id}`).\n\n"
        f"{inputs}\n- SFT `{p.sft_repo}` at commit `{p.sft_sha}`\n- base `{p.base}`\n- recipe: `{p.recipe}`"
    )
    return text + (f"\n- requested by `{p.requested_by}`" if p.requested_by else "")


def sweep_markdown(sweep: SweepResult) -> str:
    """The Sweep section (the card's; the bot's comment shows it too)."""
    rows = "\n".join(
        f"| `{name}` | {'' if value is None else f'{value:.4f}'} | {'**best**' if name == sweep.best else ''} |"
        for name, value in sweep.scores
    )
    how = f"dev split ({sweep.unavailable}: the first point was kept)" if sweep.unavailable else "dev split"
    return (
        f"## Sweep\n\nEvery point is on branch `sweep/<point>`; chosen by `{sweep.metric}` on the {how}; the "
        f"evaluation above is the chosen point's on the test split.\n\n| point | dev value | |\n|---|---|---|\n{rows}"
    )
