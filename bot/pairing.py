"""The pipeline's first step: a CT revision -> catalog entry -> the merges to run.

`expand` verifies the CT like `registry add ct` (and records it), asks `registry pairs` which SFT
checkpoints it merges with, and returns one job spec per compatible SFT (plus group merges that
include its language, and a sweep when the language's recipe carries one). A CT that is a LoRA
adapter goes into the recipe as itself (`repo@sha`), with its base as `base_model`: the engine
applies the adapter to the base. Every refusal is a
`BotInputError` with one line saying what is wrong and what to fix, plus any per-pair reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.access import identity, is_private_repo, restricted
from bot.config import BotConfig
from bot.errors import BotInputError, NotACheckpoint, Superseded, VisibilityError
from bot.models import JobSpec, Member, RecipeRequest, SweepSpec
from bot.recipes import (
    concrete_recipe,
    custom_recipe,
    custom_tag,
    group_recipes,
    language_recipe,
    output_name,
    owner_of,
    pop_sweep,
    short_name,
    template_hash,
)
from registry.catalog.entries import CtEntry, SftEntry
from registry.errors import CatalogError, HubEntryNotFoundError, HubRepoNotFoundError
from registry.io.lora import ADAPTER_CONFIG

if TYPE_CHECKING:
    from registry.hub import HubClient

CT_TAG = "mergeling-ct"


@dataclass
class PlannedJob:
    """One merge to enqueue."""

    key: str
    kind: str
    language: str
    sft_repo: str
    sft_sha: str
    output_repo: str
    spec: JobSpec = field(default_factory=JobSpec)


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


def verify_ct(config: BotConfig, hub: HubClient, *, repo: str, sha: str, language: str | None) -> CtEntry:
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
    card = info.card_data.to_dict() if info.card_data is not None else {}  # type: ignore[no-untyped-call]
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
    if restricted(hub, [repo]) and not is_private_repo(hub, config.registry, repo_type="dataset"):
        return entry  # a private or gated CT leaves no trace in a public catalog
    store = CatalogStore(hub=hub, repo_id=config.registry)
    try:
        store.add(entry)
    except CatalogError as exc:
        if "already in registry" not in str(exc):
            raise
    return entry


def output_place(config: BotConfig, hub: HubClient, *, ct_repo: str, inputs: list[str], name: str) -> tuple[str, bool]:
    """Where a merge of `inputs` is published: (repo id, private).

    A merge is at most as visible as its least visible input: with a private or gated input it goes,
    private, into the CT owner's namespace (an organisation the bot belongs to, so the CT's owners
    read it); when the bot cannot write there, the job is refused.

    Raises:
        VisibilityError: a restricted input and no private place the CT's owner can read.
    """
    hidden = restricted(hub, inputs)
    if not hidden:
        return f"{config.namespace}/{name}", False
    owner = owner_of(ct_repo)
    bot = identity(hub)
    if bot.can_write(owner):
        return f"{owner}/{name}", True
    raise VisibilityError(
        f"{', '.join(hidden)} is private or gated, so its merge may only be published privately where {owner} "
        f"can read it, and the bot ({bot.name}) cannot write to {owner}: put the CT in an organisation that "
        f"{bot.name} belongs to with write access, or make the inputs public"
    )


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


def expand(config: BotConfig, hub: HubClient, ct: CtEntry, *, custom: RecipeRequest | None = None) -> list[PlannedJob]:
    """The merges a new CT revision triggers (with `custom`: one merge per compatible SFT with that recipe).

    Raises:
        BotInputError: no compatible SFT (with every pair's reasons).
        RecipeError: `custom` does not validate with these inputs.
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
    if custom is not None:
        return [_custom_job(config, hub, ct, sft, custom, base=base) for sft in compatible]
    template, source = language_recipe(config.recipes_dir, ct.language, catalog=_catalog_reader(config, hub))
    sweep = pop_sweep(template, source=source)
    jobs = []
    for sft in compatible:
        method = str(template.get("merge_method", "ties_sv"))
        name = output_name(
            config.name_template, ct=short_name(ct.repo), sft=short_name(sft.repo), method=method,
            language=ct.language, ct_owner=owner_of(ct.repo),
        )  # fmt: skip
        output, private = output_place(
            config, hub, ct_repo=ct.repo, inputs=[ct.repo, sft.repo, ct.base.repo], name=name
        )
        raw = concrete_recipe(
            template, cts=[(f"{ct.repo}@{ct.revision}", ct.language)], sft=f"{sft.repo}@{sft.revision}", base=base,
            output_repo=output,
        )  # fmt: skip
        kind = "pair" if sweep is None else "sweep"
        spec = JobSpec(
            recipe=raw.canonical(), recipe_source=source, recipe_hash=raw.recipe_hash(), ct_entry=ct.id, sft_entry=sft.id,
            base=base, members=[Member(repo=ct.repo, sha=ct.revision, language=ct.language)], private=private,
            sweep=None if sweep is None else SweepSpec(
                density=sweep.density, slack=sweep.slack, metric=sweep.metric,
                higher_is_better=sweep.higher_is_better, template=template,
            ),
        )  # fmt: skip
        key = f"{kind}:{ct.repo}@{ct.revision}|{sft.repo}@{sft.revision}|{template_hash(template)}"
        jobs.append(PlannedJob(key, kind, ct.language, sft.repo, sft.revision, output, spec))
        jobs.extend(_groups(config, hub, ct, sft, entries, base=base))
    return jobs


def _custom_job(
    config: BotConfig, hub: HubClient, ct: CtEntry, sft: SftEntry, custom: RecipeRequest, *, base: str
) -> PlannedJob:
    """One pair merge with a recipe sent with POST /jobs, published under a name that carries its tag."""
    tag = custom_tag(custom)
    method = f"{custom_recipe(custom).merge_method}-{tag}"
    name = output_name(
        config.name_template, ct=short_name(ct.repo), sft=short_name(sft.repo), method=method,
        language=ct.language, ct_owner=owner_of(ct.repo),
    )  # fmt: skip
    if tag not in name:  # a --name-template without {method}: the tag still keeps it off the default's repo
        name = f"{name[: 95 - len(tag)].rstrip('-.')}-{tag}"
    output, private = output_place(config, hub, ct_repo=ct.repo, inputs=[ct.repo, sft.repo, ct.base.repo], name=name)
    recipe = custom_recipe(
        custom, ct=f"{ct.repo}@{ct.revision}", language=ct.language, sft=f"{sft.repo}@{sft.revision}", base=base,
        output_repo=output,
    )  # fmt: skip
    spec = JobSpec(
        recipe=recipe.canonical(), recipe_source=f"custom recipe {tag} (POST /jobs)", recipe_hash=recipe.recipe_hash(),
        ct_entry=ct.id, sft_entry=sft.id, base=base, private=private, custom_recipe=custom,
        members=[Member(repo=ct.repo, sha=ct.revision, language=ct.language)],
    )  # fmt: skip
    key = f"pair:{ct.repo}@{ct.revision}|{sft.repo}@{sft.revision}|custom-{tag}"
    return PlannedJob(key, "pair", ct.language, sft.repo, sft.revision, output, spec)


def _catalog_reader(config: BotConfig, hub: HubClient) -> Callable[[str], bytes | None]:
    """Read a file of the catalog dataset repo (None when it has none)."""

    def read(path: str) -> bytes | None:
        try:
            return hub.read_file(config.registry, path, repo_type="dataset")
        except (HubEntryNotFoundError, HubRepoNotFoundError):
            return None

    return read


def _groups(
    config: BotConfig, hub: HubClient, ct: CtEntry, sft: SftEntry, entries: list[Any], *, base: str
) -> list[PlannedJob]:
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
            owners = "+".join(dict.fromkeys(owner_of(m.repo) for m in members))
            name = output_name(config.name_template, ct=ct_names, sft=short_name(sft.repo), method=method,
                               language="+".join(languages), ct_owner=owners)  # fmt: skip
            output, private = output_place(
                config, hub, ct_repo=ct.repo, inputs=[*(m.repo for m in members), sft.repo, ct.base.repo], name=name
            )
            raw = concrete_recipe(
                template, cts=[(f"{m.repo}@{m.revision}", m.language) for m in members],
                sft=f"{sft.repo}@{sft.revision}", base=base, output_repo=output,
            )  # fmt: skip
            spec = JobSpec(
                recipe=raw.canonical(), recipe_source=f"recipes/{path.name}", recipe_hash=raw.recipe_hash(), ct_entry=ct.id,
                sft_entry=sft.id, base=base, private=private,
                members=[Member(repo=m.repo, sha=m.revision, language=m.language) for m in members],
            )  # fmt: skip
            shas = ",".join(f"{m.repo}@{m.revision}" for m in members)
            key = f"group:{shas}|{sft.repo}@{sft.revision}|{template_hash(template)}"
            out.append(PlannedJob(key, "group", ct.language, sft.repo, sft.revision, output, spec))
    return out
