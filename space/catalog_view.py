"""The catalog as the Space shows it: entries read once per refresh, grouped by language, with lineage.

A `CatalogView` is an immutable snapshot of the registry repo (`registry.catalog.store`); the app
reads a fresh one when a tab is refreshed, so what it shows is always one consistent head.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.catalog.entries import CtEntry, CtSftEntry, MergeEntry, ModelRef, SftEntry
from registry.catalog.store import CatalogStore

AnyEntry = CtEntry | SftEntry | CtSftEntry | MergeEntry
# Merge states whose output repo holds weights: the bot ends at `published`, `registry push` and
# the lab record `merged` / `evaluated`; `pending`, `running` and `failed` have nothing to run.
_RUNNABLE = ("merged", "evaluated", "published")


@dataclass(frozen=True)
class Trio:
    """A merged model with the CT and SFT checkpoints it came from (`repo@revision` references)."""

    merge: MergeEntry
    merged: str
    ct: str | None
    sft: str | None


@dataclass(frozen=True)
class CatalogView:
    """Every entry of one registry head."""

    repo_id: str
    cts: tuple[CtEntry, ...]
    sfts: tuple[SftEntry, ...]
    merges: tuple[MergeEntry, ...]
    ct_sfts: tuple[CtSftEntry, ...] = ()  # CT-then-SFT checkpoints: the baseline merging is compared with

    @classmethod
    def load(cls, store: CatalogStore) -> CatalogView:
        """Read every entry at the registry's head.

        Raises:
            CatalogError: the registry repo does not exist or holds an invalid entry.
            HubError: the Hub cannot be reached.
        """
        entries = store.list_entries()
        return cls(
            repo_id=store.repo_id,
            cts=tuple(e for e in entries if isinstance(e, CtEntry)),
            sfts=tuple(e for e in entries if isinstance(e, SftEntry)),
            merges=tuple(e for e in entries if isinstance(e, MergeEntry)),
            ct_sfts=tuple(e for e in entries if isinstance(e, CtSftEntry)),
        )

    def only(self, repos: frozenset[str] | set[str]) -> CatalogView:
        """This view with only the CTs, SFTs and merges (by output repo) among `repos`."""
        return CatalogView(
            repo_id=self.repo_id,
            cts=tuple(e for e in self.cts if e.repo in repos),
            sfts=tuple(e for e in self.sfts if e.repo in repos),
            merges=tuple(m for m in self.merges if m.output_repo in repos),
            ct_sfts=tuple(e for e in self.ct_sfts if e.repo in repos),
        )

    @property
    def entries(self) -> tuple[AnyEntry, ...]:
        return (*self.cts, *self.sfts, *self.ct_sfts, *self.merges)

    def languages(self) -> list[str]:
        """Every language of a CT checkpoint or a merge, sorted."""
        found = {ct.language for ct in self.cts} | {e.language for e in self.ct_sfts}
        found |= {code for m in self.merges for code in m.languages}
        return sorted(found)

    def methods(self) -> list[str]:
        """Every merge method in the catalog, sorted."""
        return sorted({m.method for m in self.merges})

    def get(self, entry_id: str) -> AnyEntry | None:
        """The entry with this ID, or None."""
        return next((e for e in self.entries if e.id == entry_id), None)

    def find_checkpoint(self, reference: str) -> CtEntry | SftEntry | None:
        """The CT or SFT entry named by its ID or by `repo` / `repo@revision` (first match)."""
        entries: tuple[CtEntry | SftEntry, ...] = (*self.cts, *self.sfts)
        by_id = next((e for e in entries if e.id == reference), None)
        if by_id is not None:
            return by_id
        try:
            ref = ModelRef.parse(reference)
        except ValueError:
            return None
        return next((e for e in entries if e.repo == ref.repo and ref.revision in (None, e.revision)), None)

    def trios(self, language: str | None = None) -> list[Trio]:
        """Merged models with weights (state merged/evaluated/published, a commit recorded) of a language."""
        out = []
        for merge in sorted(self.merges, key=lambda m: m.output_repo):
            if merge.status not in _RUNNABLE or not merge.output_revision:
                continue
            if language and language not in merge.languages:
                continue
            ct = next((i for i in merge.inputs if i.role == "ct"), None)
            sft = next((i for i in merge.inputs if i.role == "sft"), None)
            out.append(
                Trio(
                    merge=merge,
                    merged=_ref(merge.output_repo, merge.output_revision),
                    ct=_ref(ct.repo, ct.revision) if ct else None,
                    sft=_ref(sft.repo, sft.revision) if sft else None,
                )
            )
        return out

    def registry_rows(self, language: str | None = None) -> list[dict[str, str]]:
        """One row per entry: kind, language, repo, revision, lineage (base → CT, CT + SFT → merge), id."""
        rows: list[dict[str, str]] = []
        for ct in sorted(self.cts, key=lambda e: (e.language, e.repo)):
            if language and ct.language != language:
                continue
            rows.append(_row("ct", ct.language, ct.repo, ct.revision, f"{ct.base.repo} → {ct.repo}", ct.id))
        for sft in sorted(self.sfts, key=lambda e: e.repo):
            rows.append(_row("sft", "eng_Latn", sft.repo, sft.revision, f"{sft.base.repo} → {sft.repo}", sft.id))
        for both in sorted(self.ct_sfts, key=lambda e: (e.language, e.repo)):
            if language and both.language != language:
                continue
            lineage = f"{both.base.repo} → {both.ct.repo} → {both.repo}"
            rows.append(_row("ct_sft", both.language, both.repo, both.revision, lineage, both.id))
        for merge in sorted(self.merges, key=lambda e: e.output_repo):
            if language and language not in merge.languages:
                continue
            parents = " + ".join(f"{i.role} {i.repo}" for i in merge.inputs if i.role != "base")
            rows.append(
                _row(
                    f"merge ({merge.method}, {merge.status})",
                    ", ".join(merge.languages),
                    merge.output_repo,
                    merge.output_revision or "",
                    f"{parents} → {merge.output_repo}",
                    merge.id,
                )
            )
        return rows


def _ref(repo: str, revision: str | None) -> str:
    return str(ModelRef(repo=repo, revision=revision or None))


def short_ref(reference: str) -> str:
    """`owner/name@1a2b3c4` for `owner/name@<40-hex commit>` (a branch or tag stays whole): the label users see.

    Raises:
        ValueError: not `owner/name[@revision]`.
    """
    ref = ModelRef.parse(reference)
    if ref.revision and len(ref.revision) == 40:
        ref = ref.model_copy(update={"revision": ref.revision[:7]})
    return str(ref)


def _row(kind: str, language: str, repo: str, revision: str, lineage: str, entry_id: str) -> dict[str, str]:
    return {
        "kind": kind,
        "language": language,
        "repo": repo,
        "revision": revision[:7] if len(revision) == 40 else revision,
        "lineage": lineage,
        "id": entry_id,
    }
