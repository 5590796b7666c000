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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.catalog.entries import CtEntry, ModelRef, SftEntry
from space.catalog_view import short_ref
from space.errors import MergeTooLargeError

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


def build_recipe(
    *,
    method: str,
    cts: list[tuple[CtEntry, Path]],
    sft_path: Path,
    base_path: Path,
    density: float,
    slack: float,
) -> Any:
    """The recipe of a CT(s) + SFT merge of local folders; density/slack only where the method takes them.

    Several CTs make a group merge (e.g. Mongolian + Uyghur + SFT); the output then takes the base's
    tokenizer (one CT's would not fit the others), a single CT's tokenizer otherwise.

    Raises:
        RecipeError / UnknownMethodError: the engine's own refusal (an unknown method, a density
            outside (0, 1], a slack outside [0, 1]).
    """
    from registry.recipe import Recipe

    info = {m.name: m for m in available_methods()}.get(method)
    per_model: dict[str, Any] = {"weight": 1.0}
    if info is not None and info.uses_density:
        per_model["density"] = density
    models: list[dict[str, Any]] = [
        {"model": str(path), "role": "ct", "language": ct.language, "parameters": dict(per_model)} for ct, path in cts
    ]
    models.append({"model": str(sft_path), "role": "sft", "parameters": dict(per_model)})
    return Recipe.from_parts(
        method=method,
        models=models,
        base=str(base_path),
        parameters={"slack": slack} if info is not None and info.uses_slack else None,
        tokenizer_source="ct" if len(cts) == 1 else "base",
        source=f"Space merge ({method})",
    )


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
    base = cts[0].base
    refs = [(ct.repo, ct.revision) for ct in cts] + [(sft.repo, sft.revision), (base.repo, base.revision)]
    paths = [hub.snapshot(repo, revision=_pinned(revision)) for repo, revision in refs]
    recipe = build_recipe(
        method=method,
        cts=list(zip(cts, paths[: len(cts)], strict=True)),
        sft_path=paths[-2],
        base_path=paths[-1],
        density=density,
        slack=slack,
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


RUN_COLUMNS = ("run", "method", "density", "slack", "CT", "sign conflicts %", "SFT discarded %", "rescued by slack %",
               "seconds")  # fmt: skip


def run_row(
    number: int, result: PreviewResult, *, method: str, density: float, slack: float, cts: str
) -> dict[str, Any]:
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
        "CT": cts,
        "sign conflicts %": round(100 * int(totals.get("sign_conflicts") or 0) / elements, 3),
        "SFT discarded %": round(100 * discarded / elements, 3),
        "rescued by slack %": round(100 * rescued / elements, 3),
        "seconds": round(result.seconds, 2),
    }
