"""A merge run inside the Space for lab-size models, with its diagnostics per layer.

The recipe is built from two catalog entries (a CT and an SFT, sharing the CT's base) and run by
the engine itself (`plan_merge` + `run_merge`), so the Space shows exactly what `registry merge`
and the bot would produce. Methods and which parameters they take come from the engine's method
registry, so a method added there appears here without a change.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from registry.catalog.entries import CtEntry, ModelRef, SftEntry
from registry.errors import RecipeError
from space.catalog_view import short_ref
from space.errors import MergeTooLargeError

if TYPE_CHECKING:
    from registry.recipe import Recipe

_LAYER_RE = re.compile(r"\blayers\.(\d+)\.")
_KEEP_PREVIEWS = 3  # merged folders kept on disk (the newest), so the Space's disk does not fill up


@dataclass(frozen=True)
class MethodInfo:
    """A merge method as the Merge tab offers it."""

    name: str
    summary: str
    uses_density: bool
    uses_slack: bool


def available_methods() -> list[MethodInfo]:
    """The methods of the engine's registry (`registry.merge.methods.METHODS`), in its order, that the
    Space's controls can drive: those whose top-level parameters all have defaults (slerp needs its `t`,
    which the Merge tab does not ask for; such methods run through a recipe and `registry merge`), that
    merge weighted inputs onto the CT's base, and take a CT and an SFT (not one or two models only)."""
    from registry.merge.methods import METHODS

    return [
        MethodInfo(
            name=name,
            summary=spec.summary,
            uses_density=spec.uses_density,
            uses_slack="slack" in spec.params.model_fields,
        )
        for name, spec in METHODS.items()
        if not any(field.is_required() for field in spec.params.model_fields.values())
        and spec.needs_base
        and spec.uses_weight
        and (spec.max_inputs is None or spec.max_inputs >= 2)
    ]


def screen_recipe(
    *,
    method: str,
    cts: Sequence[CtEntry],
    sft: SftEntry,
    density: float,
    slack: float,
    ct_weight: float = 1.0,
    sft_weight: float = 1.0,
) -> Recipe:
    """The recipe the Merge tab shows, on the catalog's pinned Hub references (`repo@sha`).

    Built with the engine's typed API (`ModelEntry`, `ModelParameters`, `Recipe.from_parts`, the
    method's own parameter model through `Recipe.replace`), so it validates exactly as a recipe file
    does. Density and slack go in only where the method takes them. Several CTs make a group merge
    (e.g. Mongolian + Uyghur + SFT); the output then takes the base's tokenizer (one CT's would not
    fit the others), a single CT's tokenizer otherwise. The same recipe runs here (`local_recipe`)
    and goes to the bot ("Hand to the bot").

    Raises:
        RecipeError / UnknownMethodError: the engine's own refusal (an unknown method, a density
            outside (0, 1], a slack outside [0, 1], a weight that is not finite).
    """
    from registry.recipe import ModelEntry, ModelParameters, Recipe

    info = {m.name: m for m in available_methods()}.get(method)
    uses_density = info is not None and info.uses_density

    def parameters(weight: float) -> ModelParameters:
        return ModelParameters(weight=weight, density=density if uses_density else None)

    try:
        models = [
            ModelEntry(model=_pinned_ref(ct.repo, ct.revision), role="ct", language=ct.language,
                       parameters=parameters(ct_weight))
            for ct in cts
        ]  # fmt: skip
        models.append(
            ModelEntry(model=_pinned_ref(sft.repo, sft.revision), role="sft", parameters=parameters(sft_weight))
        )
    except ValidationError as exc:
        raise RecipeError(f"Space merge: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    base = cts[0].base if cts else sft.base
    recipe = Recipe.from_parts(
        method=method,
        models=models,
        base=_pinned_ref(base.repo, base.revision),
        tokenizer_source="ct" if len(cts) == 1 else "base",
        source=f"Space merge ({method})",
    )
    if info is not None and info.uses_slack:  # the method's own parameter model, validated again by `replace`
        recipe = recipe.replace(
            parameters=recipe.parameters.model_copy(update={"slack": slack}), source=f"Space merge ({method})"
        )
    return recipe


def local_recipe(recipe: Recipe, paths: Mapping[str, Path]) -> Recipe:
    """`recipe` on local folders: each Hub reference (`repo@sha`) replaced by its download (`Recipe.with_models`)."""
    return recipe.with_models(
        {ref: str(path) for ref, path in paths.items()}, source=f"Space merge ({recipe.merge_method})"
    )


def _pinned_ref(repo: str, revision: str | None) -> str:
    """`repo@sha` for a verified entry; a branch (an unverified entry's) reads the default: `repo`."""
    return str(ModelRef(repo=repo, revision=_pinned(revision)))


@dataclass(frozen=True)
class PreviewResult:
    """What a Space merge produced."""

    out: Path
    summary: str
    totals: dict[str, Any]
    layers: list[dict[str, Any]]
    seconds: float


def layer_of(tensor: str) -> str:
    """`layer 3` for `model.layers.3.mlp...`, else `embeddings / head / norm`."""
    found = _LAYER_RE.search(tensor)
    return f"layer {int(found.group(1)):02d}" if found else "embeddings / head / norm"


def per_layer(report: Any) -> list[dict[str, Any]]:
    """Diagnostics per layer, as shares of the layer's parameters (long form, for a bar plot).

    Rows: `layer`, `stat` (sign conflicts, SFT discarded, rescued by slack, and `kept <input role>`),
    `share` (0-1), `count`.
    """
    from registry.merge.methods import TensorStats

    groups: dict[str, TensorStats] = {}
    for name in sorted(report.tensors):
        groups.setdefault(layer_of(name), TensorStats()).merge(report.tensors[name])
    roles = [r if r and r != "input" else f"input {i}" for i, r in enumerate(report.roles or [""] * len(report.inputs))]
    rows: list[dict[str, Any]] = []
    for layer in sorted(groups):
        stats = groups[layer]
        n = stats.elements or 1
        counts = {"sign conflicts": stats.sign_conflicts}
        if report.protected:
            counts["SFT discarded"] = sum(stats.protected_discarded.get(i, 0) for i in report.protected)
            counts["rescued by slack"] = sum(stats.rescued.get(i, 0) for i in report.protected)
        for i, count in enumerate(stats.kept):
            counts[f"kept {roles[i] if i < len(roles) else i}"] = count
        for stat, count in counts.items():
            rows.append({"layer": layer, "stat": stat, "share": round(count / n, 6), "count": int(count)})
    return rows


def parameter_count(hub: Any, repo: str, revision: str | None) -> int:
    """Parameters of a Hub model from its safetensors headers (no weights read)."""
    metadata = hub.safetensors_metadata(repo, revision=revision)
    return int(sum(metadata.parameter_count.values()))


def run_preview(
    hub: Any,
    *,
    cts: list[CtEntry],
    sft: SftEntry,
    method: str,
    density: float,
    slack: float,
    workdir: Path,
    max_parameters: int,
    ct_weight: float = 1.0,
    sft_weight: float = 1.0,
) -> PreviewResult:
    """Download the CT(s), SFT and base at their recorded revisions, merge them on CPU, report.

    Raises:
        MergeTooLargeError: a CT has more than `max_parameters` parameters (hand it to the bot).
        SpaceError: the CTs of a group do not share one base.
        RecipeError, CompatibilityError, CheckpointError, MergeError, HubError: as the engine raises them.
    """
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge
    from space.errors import SpaceError

    bases = {ct.base.repo for ct in cts}
    if len(bases) != 1:
        raise SpaceError(f"the CTs of a group merge must share one base; these are on {', '.join(sorted(bases))}")
    for ct in cts:
        size = parameter_count(hub, ct.repo, _pinned(ct.revision))
        if size > max_parameters:
            raise MergeTooLargeError(
                f"{ct.repo} has {size / 1e6:.1f} M parameters; the Space merges models up to "
                f"{max_parameters / 1e6:.0f} M. Submit the CT to the bot (Submit tab) to merge and publish it",
                parameters=size,
                limit=max_parameters,
            )
    on_screen = screen_recipe(
        method=method, cts=cts, sft=sft, density=density, slack=slack, ct_weight=ct_weight, sft_weight=sft_weight
    )
    base = cts[0].base
    refs = [(ct.repo, ct.revision) for ct in cts] + [(sft.repo, sft.revision), (base.repo, base.revision)]
    paths = [hub.snapshot(repo, revision=_pinned(revision)) for repo, revision in refs]
    recipe = local_recipe(
        on_screen, {_pinned_ref(repo, revision): path for (repo, revision), path in zip(refs, paths, strict=True)}
    )
    name = hashlib.sha256(recipe.recipe_hash().encode() + str(paths).encode()).hexdigest()[:12]
    out = workdir / f"merge-{name}"
    result = run_merge(plan_merge(recipe), out=out, device="cpu", overwrite=True, progress=False)
    _prune(workdir, keep=out)
    report = result.report.to_dict()
    summary = result.report.summary()
    # The engine labels inputs by the local snapshot path; the user knows them by repo@revision.
    for path, (repo, revision) in zip(paths, refs, strict=True):
        summary = summary.replace(str(path), short_ref(str(ModelRef(repo=repo, revision=revision or None))))
    return PreviewResult(
        out=result.out,
        summary=summary,
        totals={"totals": report["totals"], "shares": report["shares"]},
        layers=per_layer(result.report),
        seconds=result.seconds,
    )


def _pinned(revision: str | None) -> str | None:
    """A commit sha pins the download; anything else (an unverified entry's branch) reads the default."""
    return revision if revision and len(revision) == 40 else None


def _prune(workdir: Path, *, keep: Path) -> None:
    old = sorted((p for p in workdir.glob("merge-*") if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
    for path in old[: max(0, len(old) - (_KEEP_PREVIEWS - 1))]:
        shutil.rmtree(path, ignore_errors=True)


RUN_COLUMNS = ("run", "method", "density", "slack", "weights CT/SFT", "CT", "sign conflicts %", "SFT discarded %", "rescued by slack %",
               "seconds")  # fmt: skip


def run_row(
    number: int, result: PreviewResult, *, method: str, density: float, slack: float, cts: str,
    weights: tuple[float, float] = (1.0, 1.0),
) -> dict[str, Any]:  # fmt: skip
    """One merge run as a row of the session's history: its settings and its headline figures, as
    percentages of all merged parameters (the same scale for every run, so runs compare)."""
    totals = result.totals.get("totals", {})
    elements = int(totals.get("elements") or 0) or 1
    discarded = sum((totals.get("protected_discarded") or {}).values())
    rescued = sum((totals.get("rescued") or {}).values())
    return {
        "run": number,
        "method": method,
        "density": density,
        "slack": slack,
        "weights CT/SFT": f"{weights[0]:g} / {weights[1]:g}",
        "CT": cts,
        "sign conflicts %": round(100 * int(totals.get("sign_conflicts") or 0) / elements, 3),
        "SFT discarded %": round(100 * discarded / elements, 3),
        "rescued by slack %": round(100 * rescued / elements, 3),
        "seconds": round(result.seconds, 2),
    }
