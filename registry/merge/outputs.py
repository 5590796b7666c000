"""The files written beside the weights: config, generation config, tokenizer, recipe, report, card.

No code ever reaches the output: no `*.py` file is copied (only the named files below), and every
JSON config written (`config.json`, `generation_config.json`, `tokenizer_config.json`) loses its
`auto_map`, so loading the merged model never runs an input's custom code (`trust_remote_code`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from registry.card import CardInput, build_model_card, read_card_license
from registry.merge.plan import TOKENIZER_FILES, MergePlan
from registry.merge.report import MergeReport

RECIPE_FILE = "mergeling_recipe.yaml"
REPORT_FILE = "merge_report.json"


def card_inputs(plan: MergePlan) -> list[CardInput]:
    """The plan's sources as the model card lists them (role, Hub commit, license, language)."""
    recipe = plan.recipe
    roles: dict[str, tuple[str, str | None]] = {m.model: (m.role or "input", m.language) for m in recipe.models}
    out = []
    for i, src in enumerate(plan.models or plan.sources):
        role, language = roles.get(src.ref, ("input", None))
        if plan.models:  # slices: the models themselves, not the engine's stitched slots
            role = "base" if src.ref == recipe.base_model else role
        elif i == plan.base_index:
            role = "base"
        elif i not in plan.input_indices:
            role = "tokenizer"
        out.append(
            CardInput(
                ref=src.ref,
                role=role,
                revision=src.commit,
                repo_id=src.repo_id,
                license=read_card_license(src.path),
                language=language,
            )
        )
    return out


def write_side_files(plan: MergePlan, out: Path, *, report: MergeReport, extra_files: dict[str, str]) -> None:
    """Write everything but the weights into `out` (deterministic content).

    Args:
        plan: the executed plan.
        out: the (temporary) output directory.
        report: the diagnostics.
        extra_files: more files (name -> text) that win over the defaults (e.g. a custom README.md).
    """
    config = without_code(plan.config)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    order = [plan.base_index, plan.tokenizer_index, *plan.input_indices]
    for i in order:
        if i is None:
            continue
        gen = plan.sources[i].path / "generation_config.json"  # type: ignore[operator]
        if gen.is_file():
            copy_config(gen, out / "generation_config.json")
            break
    tok_dir = plan.sources[plan.tokenizer_index].path
    for name in TOKENIZER_FILES:
        src = tok_dir / name  # type: ignore[operator]
        if src.is_file():
            if name.endswith(".json") and name != "tokenizer.json":
                copy_config(src, out / name)
            else:
                shutil.copyfile(src, out / name)
    (out / RECIPE_FILE).write_text(plan.recipe.to_yaml(), encoding="utf-8")
    inputs = card_inputs(plan)
    report.sources = [asdict(i) for i in inputs]
    report.write(out / REPORT_FILE)
    card = build_model_card(plan.recipe, inputs, diagnostics=report.summary())
    (out / "README.md").write_text(str(card), encoding="utf-8")
    for name, text in extra_files.items():
        (out / name).write_text(text, encoding="utf-8")


def without_code(config: dict[str, Any]) -> dict[str, Any]:
    """A config without `auto_map` (the pointers to an input's custom `*.py` code, never copied)."""
    return {k: v for k, v in config.items() if k != "auto_map"}


def copy_config(src: Path, dst: Path) -> None:
    """Copy a JSON config, dropping `auto_map`; a file that is not a JSON object is copied as is
    (it cannot name code transformers would load)."""
    text = src.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or "auto_map" not in data:
        shutil.copyfile(src, dst)
        return
    dst.write_text(json.dumps(without_code(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
