"""Publish a merged model folder to the Hub in one commit: weights, side files and a model card
that carries the evaluation results as `model-index`; then record the merge in the catalog.

Shared by `registry push`, `registry merge --push` and the merge bot. Nothing partial reaches the
Hub: the repo is created only right before the single commit, and deleted again if that commit
fails and the repo was new. With a `marker` (the bot's job id) a publish is idempotent: when the
repo's card already carries the marker, its head commit is returned and nothing is committed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import (
    CatalogError,
    HubConflictError,
    HubEntryNotFoundError,
    HubRepoNotFoundError,
    ProvenanceError,
    RecipeError,
)

if TYPE_CHECKING:
    from registry.catalog.entries import EvalResult, MergeEntry, MergeInput
    from registry.evaluate.records import EvalRecord
    from registry.hub import HubClient

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("mergeling_recipe.yaml", "merge_report.json", "config.json")


@dataclass(frozen=True)
class Published:
    """What a publish wrote."""

    repo_id: str
    commit: str
    url: str
    entry_id: str | None = None
    reused: bool = False  # the marker was found: nothing new was committed


def marker_line(marker: str) -> str:
    """The hidden line a card carries so a re-run of the same publish can find it."""
    return f"<!-- mergeling-publish: {marker} -->"


_PROVENANCE = re.compile(r"<!-- mergeling-provenance: (\{.*?\}) -->")


def provenance_line(ct_repos: Sequence[str]) -> str:
    """The hidden line recording which CT repos a published merge came from (checked before any later commit)."""
    return f"<!-- mergeling-provenance: {json.dumps({'ct': sorted(set(ct_repos))})} -->"


def read_provenance(readme: str) -> list[str] | None:
    """The CT repos a card records (None: the card records none)."""
    found = _PROVENANCE.search(readme)
    if found is None:
        return None
    try:
        value = json.loads(found.group(1)).get("ct")
    except (json.JSONDecodeError, AttributeError):
        return None
    return sorted(str(v) for v in value) if isinstance(value, list) else None


def ct_repos_of(folder: Path) -> list[str]:
    """The Hub repos of a merge output's CT inputs (from its merge_report.json)."""
    try:
        report = json.loads((folder / "merge_report.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    return sorted({s["repo_id"] for s in report.get("sources", []) if s.get("role") == "ct" and s.get("repo_id")})


def publishable_files(folder: Path) -> dict[str, bytes | Path]:
    """What a publish uploads from `folder`: no hidden files and no code (`*.py`), and every JSON
    config without `auto_map`, so nothing published asks a loader to run code from the Hub."""
    add: dict[str, bytes | Path] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts) or path.suffix == ".py":
            continue
        add[rel.as_posix()] = _without_auto_map(path) if path.suffix == ".json" else path
    return add


def _without_auto_map(path: Path) -> bytes | Path:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return path
    if not isinstance(data, dict) or "auto_map" not in data:
        return path
    data.pop("auto_map")
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def check_folder(folder: Path) -> None:
    """Refuse a folder that is not a `registry merge` output (what the card is built from).

    Raises:
        RecipeError: a required file is missing.
    """
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    weights = list(folder.glob("*.safetensors"))
    if missing or not weights:
        what = ", ".join(missing + ([] if weights else ["*.safetensors"]))
        raise RecipeError(
            f"{folder} is not a `registry merge` output (missing {what}); merge into it first with "
            "`registry merge RECIPE --out DIR`",
            path=str(folder),
        )


def build_card_text(
    folder: Path,
    *,
    repo_id: str,
    records: Sequence[EvalRecord] = (),
    comparison: Sequence[tuple[str, EvalRecord]] = (),
    sections: Sequence[str] = (),
    marker: str | None = None,
) -> str:
    """The README.md of a published merge.

    Args:
        folder: the merge output (recipe and report are read from it).
        repo_id: where it is published.
        records: the merge's own evaluation records (become `model-index`).
        comparison: (label, record) pairs for a comparison table (e.g. CT, SFT, merge).
        sections: more markdown sections appended to the body (provenance, notes).
        marker: a hidden marker that makes the publish idempotent.
    """
    from registry.card import build_card_for_output
    from registry.evaluate.model_index import to_eval_results

    results = [result for record in records for result in to_eval_results(record)]
    card = build_card_for_output(folder, eval_results=results or None, repo_id=repo_id)
    parts = [str(card).rstrip("\n")]
    if len(comparison) > 1:
        from registry.evaluate.compare import build_comparison, render_markdown

        table = render_markdown(build_comparison([r for _, r in comparison], labels=[label for label, _ in comparison]))
        first = comparison[0][0]
        parts.append(
            f"## Evaluation: comparison\n\nDifferences in brackets are to the first column ({first}).\n\n{table}"
        )
    parts.extend(section.rstrip("\n") for section in sections)
    ct_repos = ct_repos_of(folder)
    if ct_repos:
        parts.append(provenance_line(ct_repos))
    if marker:
        parts.append(marker_line(marker))
    return "\n\n".join(parts) + "\n"


def publish_merge(
    hub: HubClient,
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    records: Sequence[EvalRecord] = (),
    comparison: Sequence[tuple[str, EvalRecord]] = (),
    sections: Sequence[str] = (),
    registry: str | None = None,
    marker: str | None = None,
    message: str | None = None,
    revision: str | None = None,
    strict: bool = False,
) -> Published:
    """Publish `folder` to `repo_id` in one commit and (with `registry`) record the merge.

    Args:
        hub: the Hub client (its token needs write access to the namespace).
        folder: a `registry merge` output.
        repo_id: the model repo to publish to (created if missing).
        private: create the repo private.
        records, comparison, sections, marker: see `build_card_text`.
        registry: the catalog dataset repo to record the merge in (None: no catalog entry).
        message: the commit message.
        revision: the branch to commit to (default: main; it must exist).
        strict: the bot's rule: an existing repo is committed into only when its card records the
            same CT repos (or it is empty); without it, only a card recording other CTs refuses.

    Returns:
        The repo, the commit and the catalog entry id.

    Raises:
        RecipeError: the folder is not a merge output.
        HubError: the Hub refused (no write access, unreachable); the repo is removed again if new.
        ProvenanceError: the repo exists and records other CT repos, or is public for a private merge.
    """
    folder = Path(folder)
    check_folder(folder)
    readme = build_card_text(
        folder, repo_id=repo_id, records=records, comparison=comparison, sections=sections, marker=marker
    )
    existing = _published_before(hub, repo_id, marker, revision=revision) if marker else None
    if existing is not None:
        commit, reused = existing, True
    else:
        created = not hub.repo_exists(repo_id)
        if created:
            try:
                hub.create_repo(repo_id, private=private, exist_ok=False)
            except HubConflictError:
                raise ProvenanceError(
                    f"{repo_id} was created by someone else while this publish ran; nothing was committed "
                    "(retry: its card is then checked)",
                    repo_id=repo_id,
                ) from None
        elif revision is None:
            check_existing(hub, repo_id, ct_repos=ct_repos_of(folder), private=private, strict=strict)
        add = publishable_files(folder)
        add["README.md"] = readme.encode("utf-8")
        try:
            commit = hub.commit_files(
                repo_id, message=message or f"Publish merge ({len(add)} files)", add=add, revision=revision
            )
        except BaseException:
            if created:
                try:
                    hub.delete_repo(repo_id, missing_ok=True)
                except Exception:  # noqa: BLE001 (the commit's error is the one to report)
                    logger.warning("could not remove the empty repo %s after a failed commit", repo_id)
            raise
        reused = False
    entry_id = None
    if registry:
        entry_id = record_published(hub, folder, repo_id=repo_id, commit=commit, registry=registry, records=records)
    return Published(repo_id=repo_id, commit=commit, url=f"{hub.endpoint}/{repo_id}", entry_id=entry_id, reused=reused)


def check_existing(hub: HubClient, repo_id: str, *, ct_repos: Sequence[str], private: bool, strict: bool) -> None:
    """Refuse to commit into an existing repo that records other CT repos or is wider than allowed.

    Raises:
        ProvenanceError: with the repo, what its card records and what to do.
    """
    info = hub.repo_info(repo_id)
    if private and not getattr(info, "private", False):
        raise ProvenanceError(
            f"{repo_id} exists and is public, but this merge has a private or gated input and must stay private; "
            "make the repo private or delete it",
            repo_id=repo_id,
        )
    try:
        readme = hub.read_file(repo_id, "README.md").decode("utf-8", "replace")
    except (HubRepoNotFoundError, HubEntryNotFoundError):
        readme = None
    if readme is None:
        files = [f for f in hub.list_files(repo_id) if f != ".gitattributes"]
        if not files:
            return  # an empty repo (a publish that died between create and commit)
        recorded = None
    else:
        recorded = read_provenance(readme)
    wanted = sorted(set(ct_repos))
    if recorded is not None and recorded != wanted:
        raise ProvenanceError(
            f"refusing to publish into {repo_id}: its card records CT {', '.join(recorded) or '(none)'}, this merge "
            f"is of {', '.join(wanted) or '(no Hub CT)'}; publish under another name (the bot's --name-template "
            "should contain {ct_owner})",
            repo_id=repo_id,
        )
    if recorded is None and strict:
        raise ProvenanceError(
            f"refusing to publish into {repo_id}: it exists and its card records no Mergeling merge provenance; "
            "delete or rename it, or choose another --name-template",
            repo_id=repo_id,
        )


def _published_before(hub: HubClient, repo_id: str, marker: str | None, *, revision: str | None) -> str | None:
    if not marker:
        return None
    try:
        readme = hub.read_file(repo_id, "README.md", revision=revision or "main")
        head = hub.head_sha(repo_id, revision=revision)
    except (HubRepoNotFoundError, HubEntryNotFoundError):
        return None
    except Exception as exc:  # noqa: BLE001 (a revision that does not exist yet, say)
        logger.debug("no earlier publish of %s found: %s", repo_id, exc)
        return None
    return head if marker_line(marker) in readme.decode("utf-8", "replace") else None


def merge_entry(
    folder: Path,
    *,
    repo_id: str,
    commit: str | None,
    status: str,
    records: Sequence[EvalRecord] = (),
    error: str | None = None,
) -> MergeEntry:
    """The catalog entry of the merge in `folder` (its inputs must be Hub repos at commits).

    Raises:
        CatalogError: fewer than two inputs come from the Hub (local inputs cannot be recorded).
    """
    from registry.catalog.entries import MergeInput
    from registry.recipe import load_recipe

    recipe = load_recipe(folder / "mergeling_recipe.yaml")
    report = json.loads((folder / "merge_report.json").read_text(encoding="utf-8"))
    inputs = []
    for source in report.get("sources", []):
        role = source.get("role")
        if source.get("repo_id") and source.get("revision") and role in ("ct", "sft", "base"):
            inputs.append(MergeInput(role=role, repo=source["repo_id"], revision=source["revision"]))
    if len(inputs) < 2:
        raise CatalogError(
            f"cannot record {repo_id} in the catalog: fewer than two of its inputs are Hub repos at a commit "
            "(merge from repo ids, or push without --registry)",
            repo_id=repo_id,
        )
    return build_merge_entry(
        output_repo=repo_id, method=recipe.merge_method, recipe_hash=recipe.recipe_hash(), inputs=inputs,
        languages=recipe.languages(), status=status, commit=commit, records=records, error=error,
    )  # fmt: skip


def build_merge_entry(
    *,
    output_repo: str,
    method: str,
    recipe_hash: str,
    inputs: Sequence[MergeInput],
    languages: Sequence[str],
    status: str,
    commit: str | None = None,
    records: Sequence[EvalRecord] = (),
    error: str | None = None,
) -> MergeEntry:
    """The one place a catalog merge entry is built (`registry push` and the bot both call it).

    Args:
        records: the merge's evaluation records (every language's, for a group merge): its results.
        commit: the published commit (kept only with status `published`).
    """
    from registry.catalog.entries import MergeEntry, merge_entry_id

    results = eval_results(records)
    return MergeEntry(
        id=merge_entry_id(output_repo=output_repo, recipe_hash=recipe_hash),
        method=method,
        recipe_hash=recipe_hash,
        inputs=tuple(inputs),
        output_repo=output_repo,
        output_revision=commit if status == "published" else None,
        status=status,  # type: ignore[arg-type]
        languages=tuple(languages),
        results=tuple(results),
        error=error,
    )


def eval_results(records: Sequence[EvalRecord]) -> list[EvalResult]:
    """Evaluation records as catalog results: one per (task, metric), with the record's language and
    the examples evaluated. The same records for a merge entry and for CT / SFT entries."""
    from registry.catalog.entries import EvalResult

    return [
        EvalResult(task=task.task, metric=metric, value=value.value, language=record.language, n=task.n_samples)
        for record in records
        for task in record.tasks
        for metric, value in task.metrics.items()
    ]


def with_results(results: Sequence[EvalResult], new: Sequence[EvalResult]) -> tuple[EvalResult, ...]:
    """`results` updated with `new`: a newer number of the same (task, metric, language) replaces the older."""
    merged = {(r.task, r.metric, r.language): r for r in results}
    merged.update({(r.task, r.metric, r.language): r for r in new})
    return tuple(merged.values())


def record_published(
    hub: HubClient, folder: Path, *, repo_id: str, commit: str, registry: str, records: Sequence[EvalRecord] = ()
) -> str:
    """Record the published merge in the catalog; return the entry id."""
    from registry.catalog.store import CatalogStore, record_merge

    entry = merge_entry(folder, repo_id=repo_id, commit=commit, status="published", records=records)
    record_merge(CatalogStore(hub=hub, repo_id=registry), entry)
    return entry.id
