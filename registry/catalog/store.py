"""The catalog on the Hub: a dataset repo holding one JSON file per entry.

Layout: `entries/<kind>/<id>.json`. One file per entry means two writers adding different entries
touch different paths; each write is still a commit whose `parent_commit` is the head the writer
read, so a write that raced another is refused by the Hub (412) and retried on the new head (with
jittered exponential backoff). That retry is what makes "refuse a duplicate" and "replace a merge
entry" safe: the check and the write see the same head, or the write fails and both are redone.

All Hub traffic goes through a `CatalogHub` (implemented by `registry.hub.HubClient`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from registry.catalog.entries import (
    CtEntry,
    CtSftEntry,
    EntryKind,
    MergeEntry,
    SftEntry,
    dump_entry,
    entry_kind,
    entry_path,
    parse_entry,
)
from registry.errors import CatalogError, HubConflictError, HubRepoNotFoundError

logger = logging.getLogger(__name__)

AnyEntry = CtEntry | SftEntry | CtSftEntry | MergeEntry
REGISTRY_REPO_NAME = "mergeling-registry"


class CatalogHub(Protocol):
    """The Hub operations the catalog needs (all on dataset repos here)."""

    def create_repo(self, repo_id: str, *, repo_type: str, exist_ok: bool) -> Any: ...

    def repo_info(self, repo_id: str, *, repo_type: str) -> Any: ...

    def read_file(self, repo_id: str, path: str, *, repo_type: str, revision: str) -> bytes: ...

    def commit_files(
        self,
        repo_id: str,
        *,
        repo_type: str,
        message: str,
        add: dict[str, bytes],
        delete: Sequence[str] = (),
        parent_commit: str | None,
    ) -> str: ...


@dataclass(frozen=True)
class AddManyResult:
    """What `CatalogStore.add_many` wrote."""

    added: tuple[str, ...]
    present: tuple[str, ...]
    commit: str | None


@dataclass
class CatalogStore:
    """Read and write catalog entries in a Hub dataset repo.

    Args:
        hub: the Hub client.
        repo_id: the registry dataset repo (`<namespace>/mergeling-registry` by default).
        max_attempts: commits tried before giving up when other writers keep moving the head.
        backoff_s: first retry delay; it doubles each attempt (capped at 2 s), with full jitter.
        read_workers: entry files fetched concurrently by `list_entries`.
        sleep: how to wait between retries (injectable for tests).
        rng: the jitter's random source.
    """

    hub: CatalogHub
    repo_id: str
    max_attempts: int = 30
    backoff_s: float = 0.05
    read_workers: int = 8
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self) -> tuple[str | None, list[str]]:
        """The registry's head commit (None for an empty repo) and the entry IDs at that commit.

        One repo-info call gives both, so they are consistent and a write costs one round trip less.

        Raises:
            CatalogError: when the registry repo does not exist.
        """
        try:
            info = self.hub.repo_info(self.repo_id, repo_type="dataset")
        except HubRepoNotFoundError as exc:
            raise CatalogError(
                f"registry {self.repo_id!r} does not exist on this Hub: add a first entry "
                "(`registry add ct ...`) to create it, or pass --registry OWNER/NAME",
                repo_id=self.repo_id,
            ) from exc
        paths = [sibling.rfilename for sibling in (info.siblings or [])]
        return info.sha, _ids_in(paths)

    def head(self) -> str | None:
        """The registry's current commit sha (None for an empty repo).

        Raises:
            CatalogError: when the registry repo does not exist.
        """
        return self.snapshot()[0]

    def entry_ids(self, *, kind: EntryKind | None = None) -> list[str]:
        """IDs of the stored entries (sorted), optionally of one kind.

        Raises:
            CatalogError: when the registry repo does not exist.
        """
        return [entry_id for entry_id in self.snapshot()[1] if kind is None or entry_kind(entry_id) == kind]

    def list_entries(self, *, kind: EntryKind | None = None) -> list[AnyEntry]:
        """Every stored entry (optionally of one kind), read at one consistent head, sorted by id.

        Raises:
            CatalogError: when the registry does not exist or holds an invalid entry file.
        """
        revision, ids = self.snapshot()
        if revision is None:
            return []
        ids = [entry_id for entry_id in ids if kind is None or entry_kind(entry_id) == kind]
        # One small file per entry: fetch them concurrently, since each read is a round trip.
        with ThreadPoolExecutor(max_workers=self.read_workers) as pool:
            return list(pool.map(lambda entry_id: self._read(entry_id, revision), ids))

    def get(self, entry_id: str) -> AnyEntry:
        """One entry by ID.

        Raises:
            CatalogError: when the ID is malformed or no such entry exists.
        """
        _check_id(entry_id)
        revision, ids = self.snapshot()
        if revision is None or entry_id not in ids:
            raise CatalogError(
                f"no entry {entry_id!r} in registry {self.repo_id!r}; `registry list` shows the IDs",
                entry_id=entry_id,
                repo_id=self.repo_id,
            )
        return self._read(entry_id, revision)

    def _read(self, entry_id: str, revision: str) -> AnyEntry:
        path = entry_path(entry_id)
        raw = self.hub.read_file(self.repo_id, path, repo_type="dataset", revision=revision)
        try:
            return parse_entry(raw)
        except ValidationError as exc:
            raise CatalogError(
                f"registry file {path!r} at {revision[:7]} is not a valid entry ({exc.error_count()} errors: "
                f"{exc.errors()[0]['msg']}); fix or `registry remove {entry_id}` it",
                entry_id=entry_id,
                repo_id=self.repo_id,
            ) from exc

    # -- writing ----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the registry dataset repo if it does not exist yet."""
        self.hub.create_repo(self.repo_id, repo_type="dataset", exist_ok=True)

    def add(self, entry: AnyEntry, *, replace: bool = False) -> str:
        """Write one entry (creating the registry repo if needed).

        Args:
            entry: the entry to store.
            replace: overwrite an existing entry with the same ID instead of refusing.

        Returns:
            The commit sha that holds the entry.

        Raises:
            CatalogError: when the entry exists and `replace` is False.
            HubConflictError: when other writers kept moving the head for `max_attempts` tries.
        """
        path = entry_path(entry.id)
        payload = dump_entry(entry)

        def attempt(head: str | None, existing: set[str]) -> str | None:
            if entry.id in existing and not replace:
                raise CatalogError(
                    f"entry {entry.id!r} is already in registry {self.repo_id!r}; "
                    f"`registry show {entry.id}` shows it, `registry remove {entry.id}` drops it",
                    entry_id=entry.id,
                    repo_id=self.repo_id,
                )
            verb = "Update" if entry.id in existing else "Add"
            return self.hub.commit_files(
                self.repo_id, repo_type="dataset", message=f"{verb} {entry.id}", add={path: payload},
                parent_commit=head,
            )  # fmt: skip

        return self._retrying(attempt, what=f"add {entry.id}", create=True)

    def add_many(self, entries: Sequence[AnyEntry]) -> AddManyResult:
        """Write several new entries in one commit, leaving those already recorded untouched.

        Returns:
            The IDs added, the IDs already present, and the commit sha (None when nothing was new).

        Raises:
            HubConflictError: when other writers kept moving the head for `max_attempts` tries.
        """
        if not entries:
            return AddManyResult(added=(), present=(), commit=None)
        outcome: list[AddManyResult] = []

        def attempt(head: str | None, existing: set[str]) -> str | None:
            fresh = {entry.id: entry for entry in entries if entry.id not in existing}
            present = tuple(entry.id for entry in entries if entry.id in existing)
            outcome[:] = [AddManyResult(added=tuple(fresh), present=present, commit=None)]
            if not fresh:
                return None
            return self.hub.commit_files(
                self.repo_id, repo_type="dataset", message=f"Add {len(fresh)} entries",
                add={entry_path(entry_id): dump_entry(entry) for entry_id, entry in fresh.items()},
                parent_commit=head,
            )  # fmt: skip

        sha = self._retrying(attempt, what=f"add {len(entries)} entries", create=True)
        return AddManyResult(added=outcome[0].added, present=outcome[0].present, commit=sha or None)

    def remove(self, entry_id: str) -> str:
        """Delete one entry.

        Returns:
            The commit sha without the entry.

        Raises:
            CatalogError: when the ID is malformed or no such entry exists.
        """
        _check_id(entry_id)

        def attempt(head: str | None, existing: set[str]) -> str | None:
            if entry_id not in existing:
                raise CatalogError(
                    f"no entry {entry_id!r} in registry {self.repo_id!r}; `registry list` shows the IDs",
                    entry_id=entry_id,
                    repo_id=self.repo_id,
                )
            return self.hub.commit_files(
                self.repo_id, repo_type="dataset", message=f"Remove {entry_id}", add={},
                delete=[entry_path(entry_id)], parent_commit=head,
            )  # fmt: skip

        return self._retrying(attempt, what=f"remove {entry_id}")

    def _retrying(
        self, attempt: Callable[[str | None, set[str]], str | None], *, what: str, create: bool = False
    ) -> str:
        from registry.retry import Backoff, retry

        def once() -> str:
            try:
                head, ids = self.snapshot()
            except CatalogError:
                if not create:
                    raise
                self.ensure()  # the first write creates the registry repo
                head, ids = self.snapshot()
            sha = attempt(head, set(ids))
            logger.debug("registry %s: %s (commit %s)", self.repo_id, what, (sha or "")[:7])
            return sha or ""

        backoff = Backoff(attempts=self.max_attempts, first_s=self.backoff_s, sleep=self.sleep, rng=self.rng)
        try:
            return retry(once, on=HubConflictError, backoff=backoff, what=f"registry {what}")
        except HubConflictError as exc:
            raise HubConflictError(
                f"could not {what} in registry {self.repo_id!r}: other writers moved its head {self.max_attempts} "
                "times in a row; try again",
                repo_id=self.repo_id,
            ) from exc


def record_merge(store: CatalogStore, entry: MergeEntry) -> str:
    """Record (or update) a merge entry: the bot calls this as a merge moves through its states.

    Args:
        store: the catalog.
        entry: the merge entry; its `updated_at` is set to now.

    Returns:
        The commit sha holding the entry.
    """
    now = datetime.now(UTC).replace(microsecond=0)
    return store.add(entry.model_copy(update={"updated_at": now}), replace=True)


def _ids_in(paths: Sequence[str]) -> list[str]:
    """Entry IDs from repo paths: `entries/<kind>/<id>.json` where the ID's kind matches the folder."""
    ids = []
    for path in paths:
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "entries" and parts[2].endswith(".json"):
            entry_id = parts[2][: -len(".json")]
            if entry_id.split("-", 1)[0] == parts[1]:
                ids.append(entry_id)
    return sorted(ids)


def _check_id(entry_id: str) -> None:
    try:
        entry_kind(entry_id)
    except ValueError as exc:
        raise CatalogError(str(exc), entry_id=entry_id) from exc
