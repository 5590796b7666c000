"""The pipeline's first step: a CT revision -> catalog entry -> the merges to run.

`expand` verifies the CT like `registry add ct` (and records it), asks `registry pairs` which SFT
checkpoints it merges with, and returns one job spec per compatible SFT (plus group merges that
include its language, and a sweep when the language's recipe carries one). A CT that is a LoRA
adapter goes into the recipe as itself (`repo@sha`), with its base as `base_model`: the engine
applies the adapter to the base. Every refusal is a
`BotInputError` with one line saying what is wrong and what to fix, plus any per-pair reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.config import BotConfig
from bot.recipes import (
    concrete_recipe,
    group_recipes,
    language_recipe,
    output_name,
    pop_sweep,
    recipe_hash,
    short_name,
    template_hash,
)
from registry.catalog.entries import CtEntry, SftEntry
from registry.errors import CatalogError, HubRepoNotFoundError, RegistryError
from registry.io.lora import ADAPTER_CONFIG

CT_TAG = "mergeling-ct"


class BotInputError(RegistryError):
    """The pushed CT cannot be merged; `reasons` lists per-pair details."""


class NotACheckpoint(RegistryError):
    """The repo is not a CT checkpoint (no mergeling-ct tag): nothing to do."""


class Superseded(RegistryError):
    """A newer revision exists; this one is not merged."""


@dataclass
class PlannedJob:
    """One merge to enqueue."""

    key: str
    kind: str
    language: str
    sft_repo: str
    sft_sha: str
    output_repo: str
    spec: dict[str, Any] = field(default_factory=dict)


def ct_language(card: dict[str, Any], given: str | None) -> str:
    """The CT's language: `given` (POST /jobs) or the card's one non-English language."""
    from registry.catalog.entries import validate_language
    from registry.catalog.sync import ct_fields_from_card

    if given:
        try:
            return validate_language(given)
        except ValueError as exc:
            raise BotInputError(f"{exc}") from None
    try:
        return ct_fields_from_card({k: v for k, v in card.items() if k in ("language",)} | {"base_model": "x/y"})[0]
    except ValueError as exc:
        raise BotInputError(
            f"the model card cannot say which language this CT is for: {exc}. Add `language: [<code>]` "
            "(e.g. bn or ben_Beng) to the card's metadata and push again"
        ) from None


def verify_ct(config: BotConfig, hub: Any, *, repo: str, sha: str, language: str | None) -> CtEntry:
    """Check the CT revision is current, tagged and valid; record it in the catalog.

    Raises:
        Superseded: `sha` is no longer the head of main.
        NotACheckpoint: the card lacks the mergeling-ct tag (and no language was given by hand).
        BotInputError: unreadable, no language, unknown base, mismatched shapes.
    """
    from registry.catalog.store import CatalogStore
    from registry.catalog.sync import _single_base
    from registry.catalog.verify import build_ct_entry

    try:
        info = hub.model_info(repo)
    except HubRepoNotFoundError:
        raise BotInputError(
            f"the CT repo {repo} is gone or not readable by the bot (deleted or made private after the push); "
            "make it readable to the bot's account and push again"
        ) from None
    if info.sha and info.sha != sha:
        raise Superseded(f"revision {sha[:7]} is no longer the head of {repo} (now {info.sha[:7]}): not merged")
    card = info.card_data.to_dict() if getattr(info, "card_data", None) is not None else {}
    tags = set(getattr(info, "tags", None) or ()) | set(card.get("tags") or ())
    if CT_TAG not in tags and not language:
        raise NotACheckpoint(f"{repo} has no `{CT_TAG}` tag in its card: not a CT checkpoint, ignored")
    lang = ct_language(card, language)
    files = {sibling.rfilename for sibling in (getattr(info, "siblings", None) or [])}
    base: str | None = None  # a LoRA adapter's base is its adapter_config.json's (the card is checked against it)
    if ADAPTER_CONFIG not in files:
        try:
            base = _single_base(card)
        except ValueError as exc:
            raise BotInputError(f"{exc}; add `base_model: <the model the CT was trained from>` to the card") from None
    try:
        entry = build_ct_entry(hub, repo=repo, revision=sha, language=lang, base=base, source="sync")
    except CatalogError as exc:
        raise BotInputError(str(exc)) from None
    store = CatalogStore(hub=hub, repo_id=config.registry)
    try:
        store.add(entry)
    except CatalogError as exc:
        if "already in registry" not in str(exc):
            raise
    return entry


def _only_base_differs(reasons: list[str] | tuple[str, ...]) -> bool:
    return bool(reasons) and all(reason.startswith("different base:") for reason in reasons)


def latest_sfts(entries: list[Any]) -> list[SftEntry]:
    """One SFT entry per repo: the most recently added revision."""
    best: dict[str, SftEntry] = {}
    for entry in entries:
        if isinstance(entry, SftEntry) and (entry.repo not in best or entry.added_at >= best[entry.repo].added_at):
            best[entry.repo] = entry
    return sorted(best.values(), key=lambda e: e.repo)


def latest_cts(entries: list[Any], language: str, *, base: str) -> CtEntry | None:
    cts = [e for e in entries if isinstance(e, CtEntry) and e.language == language and e.base.repo == base]
    return max(cts, key=lambda e: e.added_at) if cts else None


def expand(config: BotConfig, hub: Any, ct: CtEntry) -> list[PlannedJob]:
    """The merges a new CT revision triggers.

    Raises:
        BotInputError: no compatible SFT (with every pair's reasons).
    """
    from registry.catalog.pairing import check_pair
    from registry.catalog.store import CatalogStore

    entries = CatalogStore(hub=hub, repo_id=config.registry).list_entries()
    sfts = latest_sfts(entries)
    checks = [(sft, check_pair(ct, sft)) for sft in sfts]
    compatible = [sft for sft, check in checks if check.compatible]
    if not compatible:
        reasons = [f"{check.sft_id}: {check.status}: {'; '.join(check.reasons or check.notes)}" for _, check in checks]
        # Shapes match an SFT whose base differs only by name: the CT's card most likely names the wrong base.
        only_base = sorted({sft.base.repo for sft, check in checks if _only_base_differs(check.reasons)})
        if only_base:
            raise BotInputError(
                f"{ct.repo}'s card names base_model {ct.base.repo}, but the SFT checkpoints it would merge with are on "
                f"{', '.join(only_base)}: fix `base_model` in your card (README.md metadata) and push again, or add an "
                f"SFT on {ct.base.repo} with `registry add sft`",
                reasons=reasons,
            )
        raise BotInputError(
            f"no compatible SFT checkpoint in the catalog {config.registry} for {ct.repo} "
            f"({len(sfts)} checked); add one on the same base ({ct.base.repo}) with `registry add sft`",
            reasons=reasons or ["the catalog holds no SFT checkpoint"],
        )
    base = f"{ct.base.repo}@{ct.base.revision}" if ct.base.revision else ct.base.repo
    template, source = language_recipe(config.recipes_dir, ct.language)
    sweep = pop_sweep(template, source=source)
    jobs = []
    for sft in compatible:
        method = str(template.get("merge_method", "ties_sv"))
        name = output_name(
            config.name_template, ct=short_name(ct.repo), sft=short_name(sft.repo), method=method, language=ct.language
        )
        output = f"{config.namespace}/{name}"
        raw = concrete_recipe(
            template, cts=[(f"{ct.repo}@{ct.revision}", ct.language)], sft=f"{sft.repo}@{sft.revision}", base=base,
            output_repo=output,
        )  # fmt: skip
        spec: dict[str, Any] = {
            "recipe": raw, "recipe_source": source, "recipe_hash": recipe_hash(raw), "ct_entry": ct.id,
            "sft_entry": sft.id, "base": base,
            "members": [{"repo": ct.repo, "sha": ct.revision, "language": ct.language}],
        }  # fmt: skip
        kind = "pair"
        if sweep is not None:
            kind = "sweep"
            spec["sweep"] = {"density": sweep.density, "slack": sweep.slack, "metric": sweep.metric,
                             "higher_is_better": sweep.higher_is_better, "template": template}  # fmt: skip
        key = f"{kind}:{ct.repo}@{ct.revision}|{sft.repo}@{sft.revision}|{template_hash(template)}"
        jobs.append(PlannedJob(key, kind, ct.language, sft.repo, sft.revision, output, spec))
        jobs.extend(_groups(config, ct, sft, entries, base=base))
    return jobs


def _groups(config: BotConfig, ct: CtEntry, sft: SftEntry, entries: list[Any], *, base: str) -> list[PlannedJob]:
    out = []
    for path, template, languages in group_recipes(config.recipes_dir):
        if ct.language not in languages:
            continue
        members = []
        for language in languages:
            member = ct if language == ct.language else latest_cts(entries, language, base=ct.base.repo)
            if member is None:
                break
            members.append(member)
        else:
            method = str(template.get("merge_method", "ties_sv"))
            ct_names = "+".join(short_name(m.repo) for m in members)
            name = output_name(config.name_template, ct=ct_names, sft=short_name(sft.repo), method=method,
                               language="+".join(languages))  # fmt: skip
            output = f"{config.namespace}/{name}"
            raw = concrete_recipe(
                template, cts=[(f"{m.repo}@{m.revision}", m.language) for m in members],
                sft=f"{sft.repo}@{sft.revision}", base=base, output_repo=output,
            )  # fmt: skip
            spec = {
                "recipe": raw, "recipe_source": f"recipes/{path.name}", "recipe_hash": recipe_hash(raw), "ct_entry": ct.id,
                "sft_entry": sft.id, "base": base,
                "members": [{"repo": m.repo, "sha": m.revision, "language": m.language} for m in members],
            }  # fmt: skip
            shas = ",".join(f"{m.repo}@{m.revision}" for m in members)
            key = f"group:{shas}|{sft.repo}@{sft.revision}|{template_hash(template)}"
            out.append(PlannedJob(key, "group", ct.language, sft.repo, sft.revision, output, spec))
    return out
