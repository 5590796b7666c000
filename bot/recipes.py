"""Which recipe the bot merges with, and the concrete recipe of one job.

A language's recipe is `recipes/<lang>-ties-sv.yaml` (or `recipes/<lang>.yaml`) when present, else
the built-in TIES-SV default below. Only its method and parameters are used: the bot puts the CT
and SFT it was given (pinned to commit shas) and their base in place of the recipe's models.
Group recipes are those listing two or more CT models with languages (`multi-*.yaml`).

A recipe may carry a sweep, `mergeling: {sweep: {density: [...], slack: [...], metric: TASK/METRIC}}`.
The block is read here from the raw YAML and removed before validation, so this keeps working
once the recipe model itself accepts `mergeling.sweep`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bot.models import RecipeRequest
from registry.errors import RecipeError

if TYPE_CHECKING:
    from registry.recipe import Recipe

DEFAULT_RECIPE: dict[str, Any] = {
    "merge_method": "ties_sv",
    "dtype": "float32",
    "tokenizer_source": "ct",
    "models": [
        {"model": "ct", "role": "ct", "parameters": {"weight": 1.0, "density": 0.2}},
        {"model": "sft", "role": "sft", "parameters": {"weight": 1.0, "density": 0.2}},
    ],
    "parameters": {"normalize": True, "lambda": 1.0, "slack": 0.05, "slack_scope": "tensor"},
}


@dataclass(frozen=True)
class Sweep:
    """A grid of parameter values; the best point by `metric` is promoted."""

    density: tuple[float, ...]
    slack: tuple[float, ...]
    metric: str  # "<task>/<metric>", e.g. sib200_ben_Beng/acc
    higher_is_better: bool = True

    def points(self) -> list[dict[str, float]]:
        return [{"density": d, "slack": s} for d, s in itertools.product(self.density, self.slack)]


def point_name(point: dict[str, float]) -> str:
    return "-".join(f"{k}{v:g}" for k, v in sorted(point.items()))


def read_raw(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}", path=str(path)) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping", path=str(path))
    return data


def pop_sweep(raw: dict[str, Any], *, source: str) -> Sweep | None:
    """Remove `mergeling.sweep` from raw recipe data and return it parsed (None when absent)."""
    block = (raw.get("mergeling") or {}).pop("sweep", None) if isinstance(raw.get("mergeling"), dict) else None
    if block is None:
        return None
    try:
        density = tuple(float(x) for x in block.get("density") or [])
        slack = tuple(float(x) for x in block.get("slack") or [])
        metric = str(block["metric"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RecipeError(
            f"{source}: mergeling.sweep needs density: [..], slack: [..] and metric: TASK/METRIC", path=source
        ) from None
    if not density or not slack or "/" not in metric:
        raise RecipeError(f"{source}: mergeling.sweep needs non-empty density and slack lists and metric: TASK/METRIC")
    return Sweep(
        density=density, slack=slack, metric=metric, higher_is_better=bool(block.get("higher_is_better", True))
    )


MAX_RECIPE_BYTES = 256 * 1024


def language_recipe(
    recipes_dir: Path, language: str, *, catalog: Callable[[str], bytes | None] | None = None
) -> tuple[dict[str, Any], str]:
    """The raw recipe for a language and where it came from.

    Looked up in `recipes_dir`, then (with `catalog`, which reads a file of the catalog dataset repo
    or returns None) as `recipes/<name>` in the catalog, else the built-in default.

    Returns:
        (raw recipe data, its source: a path, `catalog:recipes/<name>` or `default`).

    Raises:
        RecipeError: a recipe file that is not a YAML mapping (or over 256 KB in the catalog).
    """
    names = (f"{language}.yaml", f"{language}-ties-sv.yaml")
    for name in names:
        path = recipes_dir / name
        if path.is_file():
            return read_raw(path), _shown(path)
    for name in names if catalog is not None else ():
        assert catalog is not None
        body = catalog(f"recipes/{name}")
        if body is None:
            continue
        source = f"catalog:recipes/{name}"
        if len(body) > MAX_RECIPE_BYTES:
            raise RecipeError(f"{source} is over {MAX_RECIPE_BYTES} bytes; a recipe is a short YAML file", path=source)
        try:
            data = yaml.safe_load(body.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise RecipeError(f"cannot read recipe {source}: {exc}", path=source) from None
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a recipe is a YAML mapping", path=source)
        return data, source
    return copy.deepcopy(DEFAULT_RECIPE), "default"


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path(__file__).resolve().parents[1]).as_posix()
    except ValueError:
        return path.name


def group_recipes(recipes_dir: Path) -> list[tuple[Path, dict[str, Any], tuple[str, ...]]]:
    """Recipes with two or more CT models with languages: (path, raw, languages)."""
    out = []
    for path in sorted(recipes_dir.glob("*.yaml")):
        try:
            raw = read_raw(path)
        except RecipeError:
            continue
        models = raw.get("models") or []
        languages = tuple(str(m.get("language") or "") for m in models if isinstance(m, dict) and m.get("role") == "ct")
        if len(languages) >= 2 and all(languages):
            out.append((path, raw, languages))
    return out


def concrete_recipe(
    template: dict[str, Any],
    *,
    cts: list[tuple[str, str]],
    sft: str,
    base: str,
    output_repo: str,
    point: dict[str, float] | None = None,
) -> Recipe:
    """The template's method and parameters with these inputs (refs pinned `repo@sha`), validated.

    Args:
        cts: (ref, language) of each CT input, in the template's CT order.
        sft: the SFT ref.
        base: the base ref.
        point: sweep values (density of every input, slack) to apply.

    Raises:
        RecipeError: the template's method or parameters do not validate with these inputs.
    """
    from registry.recipe import Recipe

    models = [m for m in template.get("models") or [] if isinstance(m, dict)]
    ct_params = [m.get("parameters") or {} for m in models if m.get("role") == "ct"] or [{}]
    sft_params = next((m.get("parameters") or {} for m in models if m.get("role") == "sft"), {})
    inputs: list[dict[str, Any]] = [
        {"model": ref, "role": "ct", "language": language, "parameters": dict(ct_params[min(i, len(ct_params) - 1)])}
        for i, (ref, language) in enumerate(cts)
    ]
    inputs.append({"model": sft, "role": "sft", "parameters": dict(sft_params)})
    params = {k: v for k, v in (template.get("parameters") or {}).items() if k != "protect"}  # role sft protects
    tokenizer = template.get("tokenizer_source")
    if len(cts) > 1 and tokenizer == "ct":
        tokenizer = "base"
    recipe = Recipe.from_parts(
        method=str(template.get("merge_method", "ties_sv")), models=inputs, base=base, parameters=params,
        dtype=template.get("dtype"), tokenizer_source=tokenizer, mergeling={"output_repo": output_repo},
        source="bot recipe",
    )  # fmt: skip
    return recipe.at_point(point, source="bot recipe") if point else recipe


def template_hash(template: dict[str, Any]) -> str:
    """A short hash of what the template decides (method and parameters), for job keys."""
    keep = {k: v for k, v in template.items() if k not in ("models", "base_model", "mergeling")}
    keep["model_parameters"] = [
        (m.get("role"), m.get("parameters")) for m in template.get("models") or [] if isinstance(m, dict)
    ]
    sweep = (template.get("mergeling") or {}).get("sweep") if isinstance(template.get("mergeling"), dict) else None
    keep["sweep"] = sweep
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def short_name(repo: str) -> str:
    return repo.split("/")[-1]


def owner_of(repo: str) -> str:
    return repo.split("/")[0]


def output_name(template: str, *, ct: str, sft: str, method: str, language: str, ct_owner: str = "") -> str:
    """The output repo's name (no namespace) from `--name-template`.

    `{ct_owner}` (the CT repo's namespace; for group merges the members' owners joined by `+`, shown
    as `-`) keeps `alice/x` and `bob/x` apart: the default template starts with it, followed by `__`
    (Hub user and org names hold no `_`, so the owner cannot run into the CT's name; the Hub refuses `--`).

    Raises:
        RecipeError: the template names a field that does not exist.
    """
    try:
        name = template.format(ct=ct, sft=sft, method=method.replace("_", "-"), language=language, ct_owner=ct_owner)
    except (KeyError, IndexError, ValueError) as exc:
        raise RecipeError(
            f"--name-template {template!r} is not valid ({exc}); use the fields {{ct_owner}}, {{ct}}, {{sft}}, "
            "{method}, {language}"
        ) from None
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
    name = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", name))  # the Hub refuses "--" and ".." in repo names
    return name.strip("-.")[:96].strip("-.")


# -- a recipe sent with POST /jobs ------------------------------------------------------------------
CUSTOM_SOURCE = "the job's recipe"
MAX_RECIPE_DEPTH = 16  # a recipe is 4 levels deep (mergeling.sweep.<name>: [..])


def recipe_text_data(text: str) -> dict[str, Any]:
    """A full recipe sent as text (YAML, or JSON, which is YAML), parsed with bounds.

    Anchors and aliases are refused (a few KB of aliases expand to gigabytes when the recipe is
    copied), and so is nesting deeper than `MAX_RECIPE_DEPTH`, before anything is built.

    Raises:
        RecipeError: not YAML, not a mapping, an alias, or too deep; one line.
    """
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise RecipeError(
                    f"{CUSTOM_SOURCE}: YAML anchors and aliases (&name, *name) are not accepted; write the values out",
                    path=CUSTOM_SOURCE,
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_RECIPE_DEPTH:
                    raise RecipeError(
                        f"{CUSTOM_SOURCE}: nested deeper than {MAX_RECIPE_DEPTH} levels; a recipe is a few levels deep",
                        path=CUSTOM_SOURCE,
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise RecipeError(f"{CUSTOM_SOURCE}: not valid YAML or JSON{line}", path=CUSTOM_SOURCE) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{CUSTOM_SOURCE}: a recipe is a mapping with merge_method, models, ...", path=CUSTOM_SOURCE)
    return data


def custom_recipe(
    request: RecipeRequest,
    *,
    ct: str = "ct",
    language: str | None = None,
    sft: str = "sft",
    base: str = "base",
    output_repo: str | None = None,
) -> Recipe:
    """The recipe of a `POST /jobs` request with the job's inputs in place (defaults: placeholders).

    Parts become `Recipe.from_parts` (CT and SFT with `density` and their `weights`, the method's
    top-level `parameters` and `slack`); a full recipe text is parsed, its `role: ct` / `role: sft`
    models and base are replaced with `Recipe.with_models`, and its `mergeling` block with
    `Recipe.replace`. A sweep is refused: a job merges one recipe.

    Raises:
        RecipeError (UnknownMethodError, UnsupportedFeatureError): the engine's one-line refusal.
    """
    from registry.recipe import Recipe, parse_recipe

    mergeling = {"output_repo": output_repo} if output_repo else None
    if request.text is not None:
        parts = request.model_dump(exclude={"text", "parameters"}, exclude_none=True)
        if parts or request.parameters:
            raise RecipeError(
                f"{CUSTOM_SOURCE}: send either `text` (a full recipe) or method/density/slack/weights/parameters, "
                "not both",
                path=CUSTOM_SOURCE,
            )
        given = parse_recipe(recipe_text_data(request.text), source=CUSTOM_SOURCE)
        if given.mergeling.sweep is not None:
            raise RecipeError(
                f"{CUSTOM_SOURCE}: mergeling.sweep is not accepted here; send one point (a job merges one recipe)",
                path=CUSTOM_SOURCE,
            )
        roles = {role: [m.model for m in given.models if m.role == role] for role in ("ct", "sft")}
        if len(roles["ct"]) != 1 or len(roles["sft"]) != 1:
            raise RecipeError(
                f"{CUSTOM_SOURCE}: list exactly one `role: ct` and one `role: sft` model (found "
                f"{len(roles['ct'])} and {len(roles['sft'])}); the bot puts the job's CT and SFT in their place",
                path=CUSTOM_SOURCE,
            )
        replacements = {roles["ct"][0]: ct, roles["sft"][0]: sft}
        if given.base_model is not None and given.base_model not in replacements:
            replacements[given.base_model] = base
        placed = given.with_models(
            replacements, base=base, languages={ct: language} if language else None, source=CUSTOM_SOURCE
        )
        others = sorted(placed.references() - {ct, sft, base})
        if others:
            raise RecipeError(
                f"{CUSTOM_SOURCE}: it may read only the job's CT, SFT and base; it also names {', '.join(others)} "
                "(remove it, or submit a recipe of those three)",
                path=CUSTOM_SOURCE,
            )
        return placed.replace(mergeling=mergeling, source=CUSTOM_SOURCE)
    weights = {str(k): v for k, v in (request.weights or {}).items()}
    models: list[dict[str, Any]] = []
    for ref, role in ((ct, "ct"), (sft, "sft")):
        values = {"weight": weights.get(role), "density": request.density}
        model: dict[str, Any] = {
            "model": ref,
            "role": role,
            "parameters": {k: v for k, v in values.items() if v is not None},
        }
        if role == "ct" and language:
            model["language"] = language
        models.append(model)
    parameters = dict(request.parameters) | ({"slack": request.slack} if request.slack is not None else {})
    return Recipe.from_parts(
        method=request.method or str(DEFAULT_RECIPE["merge_method"]), models=models, base=base,
        parameters=parameters, dtype=str(DEFAULT_RECIPE["dtype"]), tokenizer_source="ct", mergeling=mergeling,
        source=CUSTOM_SOURCE,
    )  # fmt: skip


def custom_tag(request: RecipeRequest) -> str:
    """8 hex digits naming a custom recipe (its method and parameters; not its inputs): in the output
    repo's name, so a custom merge never lands in the default recipe's repo.

    Raises:
        RecipeError: the recipe does not validate.
    """
    return custom_recipe(request).recipe_hash()[:8]
