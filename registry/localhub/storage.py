"""On-disk storage of the embedded hub: content-addressed blobs, commit records and refs.

Layout under the data directory:

    blobs/<sha256[:2]>/<sha256>           file contents, named by their sha256
    repos/<type>s/<ns>/<name>/repo.json   repo record (visibility, creation date, object id)
    repos/<type>s/<ns>/<name>/refs.json   {"heads": {...}, "tags": {...}, "prs": {...}} -> commit ids
    repos/<type>s/<ns>/<name>/commits/<id>.json   one record per commit, holding the full file map

Crash safety: every file is written to a temp file in the same folder, fsynced, then renamed
over its target (atomic on POSIX). A commit writes its blobs first, then its commit record, and
moves the ref last; a process killed at any point leaves the ref on the old or the new commit,
and both are complete. Orphan blobs are harmless; orphan commit records are removed at the next
start (`Storage.prune_orphan_commits`), so a commit that was never acknowledged cannot be resolved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from registry.localhub.blobs import BlobStore as BlobStore
from registry.localhub.blobs import atomic_write as atomic_write
from registry.localhub.blobs import atomic_write_json as atomic_write_json
from registry.localhub.blobs import read_json as read_json
from registry.localhub.names import (
    REPO_TYPES,
    Conflict,
    InvalidInput,
    NotFound,
    validate_repo_id,
)
from registry.localhub.redirects import Moved, Redirects
from registry.localhub.trees import FileEntry as FileEntry
from registry.localhub.trees import build_tree, lookup

DEFAULT_GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n*.pth filter=lfs diff=lfs merge=lfs -text\n"
    b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.gguf filter=lfs diff=lfs merge=lfs -text\n"
)
SHARDED_MARK = ".sharded"  # in commits/: the repo has only sharded commit records
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"


def now_iso() -> str:
    """The current UTC time as the client expects it: `YYYY-MM-DDTHH:MM:SS.fffZ`."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def git_blob_oid(data: bytes) -> str:
    """The git blob id of `data`: sha1 of `blob <len>\\0` + bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer text stored in git for an LFS file."""
    return LFS_POINTER.format(sha256=sha256, size=size).encode()


class Commit:
    """A commit record. Its files live in a content-addressed tree (`registry.localhub.trees`);
    `entry(path)` reads one file's record, `files` (loaded on first use) all of them."""

    def __init__(self, store: RepoStore, commit_id: str, rec: dict[str, Any]) -> None:
        self.store = store
        self.id = commit_id
        self.parents: tuple[str, ...] = tuple(rec["parents"])
        self.title: str = rec["title"]
        self.message: str = rec["message"]
        self.author: str = rec["author"]
        self.date: str = rec["date"]
        self._legacy: dict[str, Any] | None = rec.get("files")  # records written before trees
        self._tree: str | None = rec.get("tree")
        self._files: dict[str, FileEntry] | None = None

    @property
    def tree(self) -> str:
        """The root tree id (written now for a legacy record, without `last` information)."""
        if self._tree is None:
            self._tree = build_tree(self.store, self.files, parent=None, last=None)
        return self._tree

    @property
    def files(self) -> dict[str, FileEntry]:
        if self._files is None:
            if self._legacy is not None:
                self._files = {p: FileEntry.from_json(e) for p, e in self._legacy.items()}
            else:
                from registry.localhub.trees import flatten

                self._files = flatten(self.store, self.tree)
        return self._files

    def entry(self, path: str) -> FileEntry | None:
        """The file at `path`, reading only the trees on its way."""
        if self._legacy is not None or self._files is not None:
            return self.files.get(path)

        rec = lookup(self.store, self.tree, path)
        return FileEntry.from_json(rec) if rec is not None else None


class RepoStore:
    """One repository's record, refs and commits."""

    def __init__(self, root: Path, *, repo_type: str, repo_id: str) -> None:
        self.root = root
        self.repo_type = repo_type
        self.repo_id = repo_id

    @contextmanager
    def present(self) -> Iterator[None]:
        """Turn "the repo folder vanished" (deleted or moved meanwhile) into `RepoNotFound`."""
        try:
            yield
        except FileNotFoundError:
            raise repo_not_found(self.repo_type, self.repo_id) from None

    @property
    def info(self) -> dict[str, Any]:
        with self.present():
            return read_json(self.root / "repo.json")  # type: ignore[no-any-return]

    def update_info(self, **changes: Any) -> None:
        with self.present():
            atomic_write_json(self.root / "repo.json", {**self.info, **changes}, create_dirs=False)

    def refs(self) -> dict[str, dict[str, str]]:
        with self.present():
            return read_json(self.root / "refs.json")  # type: ignore[no-any-return]

    def write_refs(self, refs: dict[str, dict[str, str]]) -> None:
        with self.present():
            atomic_write_json(self.root / "refs.json", refs, create_dirs=False)

    def _commit_path(self, commit_id: str) -> Path:
        """`commits/<id[:2]>/<id>.json`; records written before sharding sit in `commits/` itself."""
        sharded = self.root / "commits" / commit_id[:2] / f"{commit_id}.json"
        legacy = self.root / "commits" / f"{commit_id}.json"
        return legacy if not sharded.is_file() and legacy.is_file() else sharded

    def has_commit(self, commit_id: str) -> bool:
        return self._commit_path(commit_id).is_file()

    def commit(self, commit_id: str) -> Commit:
        with self.present():
            return Commit(self, commit_id, read_json(self._commit_path(commit_id)))

    def write_commit(
        self,
        *,
        parents: list[str],
        title: str,
        message: str,
        author: str,
        files: dict[str, FileEntry],
        changed: Iterable[str] | None = None,
    ) -> str:
        """Write the trees of `files` and a commit record (not yet on any ref); return its 40-hex id.

        `changed`: the paths that differ from the first parent (see `trees.build_tree`); None
        compares every folder.
        """

        date = now_iso()
        rec: dict[str, Any] = {
            "parents": parents,
            "title": title,
            "message": message,
            "author": author,
            "date": date,
            "nonce": secrets.token_hex(8),
        }
        commit_id = hashlib.sha1(json.dumps(rec, sort_keys=True).encode()).hexdigest()
        parent_tree = self.commit(parents[0]).tree if parents else None
        last = {"id": commit_id, "title": title, "date": date}
        rec["tree"] = build_tree(self, files, parent=parent_tree, last=last, changed=changed)
        path = self.root / "commits" / commit_id[:2] / f"{commit_id}.json"
        with self.present():
            path.parent.mkdir(exist_ok=True)  # never parents: a deleted repo stays deleted
            atomic_write(path, json.dumps(rec, sort_keys=True).encode(), create_dirs=False)
        return commit_id

    # -- LFS objects this repo may use -------------------------------------------------------------
    def granted_lfs(self) -> set[str]:
        """sha256 of every LFS object uploaded to this repo or committed to it."""
        path = self.root / "lfs-objects.txt"
        return set(path.read_text().split()) if path.is_file() else set()

    def grant_lfs(self, oids: list[str]) -> None:
        """Record that this repo holds `oids` (an append-only list; duplicates are harmless)."""
        new = [o for o in oids if o not in self.granted_lfs()]
        if not new:
            return
        with self.present():
            fd = os.open(self.root / "lfs-objects.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, "".join(f"{o}\n" for o in new).encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def revoke_lfs(self, oids: set[str]) -> None:
        """Forget `oids` (permanently deleted LFS files); the caller holds the repo lock."""
        kept = sorted(self.granted_lfs() - oids)
        with self.present():
            atomic_write(self.root / "lfs-objects.txt", "".join(f"{o}\n" for o in kept).encode(), create_dirs=False)

    def references_lfs(self, oid: str) -> bool:
        """Whether `oid` was uploaded to this repo or is an LFS file of one of its refs' commits."""
        refs = self.refs()
        heads = {c for kind in ("heads", "tags", "prs") for c in refs[kind].values()}
        # No early exit: the time taken must not tell whether `oid` is here (see `LocalHub.lfs_usable`).
        found = oid in self.granted_lfs()
        for c in heads:
            found |= any([e.lfs and e.sha256 == oid for e in self.commit(c).files.values()])
        return found

    def resolve(self, revision: str) -> str:
        """A branch, tag, `refs/heads/x`, `refs/tags/x`, `refs/pr/N` or (prefix of a) commit id.

        Raises:
            StorageError: 404 `RevisionNotFound`.
        """
        refs = self.refs()
        rev = revision
        for prefix, kind in (("refs/heads/", "heads"), ("refs/tags/", "tags"), ("refs/pr/", "prs")):
            if rev.startswith(prefix) and rev[len(prefix) :] in refs[kind]:
                return refs[kind][rev[len(prefix) :]]
        if rev in refs["heads"]:
            return refs["heads"][rev]
        if rev in refs["tags"]:
            return refs["tags"][rev]
        if re.fullmatch(r"[0-9a-f]{5,40}", rev):
            if len(rev) == 40 and self.has_commit(rev):
                return rev
            matches: list[str] = []
            if len(rev) < 40:  # one shard folder (and legacy flat records, if any): cost independent of history
                matches = [p.stem for p in (self.root / "commits" / rev[:2]).glob(f"{rev}*.json")]
                if not (self.root / "commits" / SHARDED_MARK).is_file():
                    matches += [p.stem for p in (self.root / "commits").glob(f"{rev}*.json")]
            if len(matches) > 1:  # ambiguous: only commits on some ref's history count
                matches = [m for m in matches if self._is_reachable(m)]
            if len(matches) == 1:
                return matches[0]
        raise NotFound(
            f"Revision {revision!r} not found in {self.repo_type} repo {self.repo_id}: use a branch, tag, "
            "refs/pr/N or commit id",
            code="RevisionNotFound",
        )

    def _is_reachable(self, commit_id: str) -> bool:
        return any(commit_id == c.id for head in self._all_heads() for c in self.history(head))

    def _all_heads(self) -> list[str]:
        refs = self.refs()
        return [*refs["heads"].values(), *refs["tags"].values(), *refs["prs"].values()]

    def history(self, commit_id: str) -> Iterator[Commit]:
        """Commits from `commit_id` back along first parents, newest first."""
        current: str | None = commit_id
        while current:
            commit = self.commit(current)
            yield commit
            current = commit.parents[0] if commit.parents else None


def repo_not_found(repo_type: str, repo_id: str) -> NotFound:
    """THE answer for a repo that is missing or private to the caller: the two are indistinguishable."""
    return NotFound(
        f"Repository not found: {repo_type} {repo_id!r}. Check the id and repo type; if the repo is private "
        "or gated, pass a token that has access",
        code="RepoNotFound",
    )


def repo_dir(root: Path, repo_type: str, repo_id: str) -> Path:
    ns, name = validate_repo_id(repo_id)
    if repo_type not in REPO_TYPES:
        raise InvalidInput(f"Invalid repo type {repo_type!r}: expected one of {', '.join(REPO_TYPES)}")
    return root / "repos" / f"{repo_type}s" / ns / name


class Storage:
    """All repos and blobs under one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.blobs = BlobStore(data_dir / "blobs")
        (data_dir / "repos").mkdir(parents=True, exist_ok=True)
        self._trash = data_dir / ".trash"
        # A repo deleted while the server was killed is left in the trash: finish deleting it.
        if self._trash.exists():
            shutil.rmtree(self._trash, ignore_errors=True)
        self._trash.mkdir(parents=True, exist_ok=True)
        self.redirects = Redirects(data_dir)

    def clean_temp_files(self) -> int:
        """Remove temp files a killed server left inside repos (`.tmp-*` of `atomic_write`); the count.

        Only for startup, while holding the data directory's lock (no write is in flight).
        """
        removed = 0
        for stale in [*(self.data_dir / "repos").glob("*/*/*/**/.tmp-*"), *(self.data_dir / "cards").glob(".tmp-*")]:
            stale.unlink(missing_ok=True)
            removed += 1
        for stale in self.blobs.tmp.iterdir():
            stale.unlink(missing_ok=True)
            removed += 1
        return removed

    def prune_orphan_commits(self) -> int:
        """Remove commit records a killed server wrote but never put on a ref; the count.

        A commit writes its record, then moves the ref (rewriting `refs.json`). So a record newer
        than `refs.json` that no ref names is one whose ref move never happened: nothing can
        reach it, yet its id would resolve. Older unreachable records (a deleted branch's) are
        left alone. Only for startup, while holding the data directory's lock; one `stat` per
        record, no record is read.
        """
        removed = 0
        for store in self.iter_all_repos():
            try:
                refs_mtime = (store.root / "refs.json").stat().st_mtime_ns
                heads = {c for kind in store.refs().values() for c in kind.values()}
            except (OSError, ValueError):
                continue
            for record in (store.root / "commits").rglob("*.json"):
                try:
                    if record.stat().st_mtime_ns > refs_mtime and record.stem not in heads:
                        record.unlink()
                        removed += 1
                except OSError:
                    continue
        return removed

    def repo(self, repo_type: str, repo_id: str) -> RepoStore:
        """The store of an existing repo.

        Raises:
            StorageError: 404 `RepoNotFound`.
        """
        canonical = self.canonical_id(repo_type, repo_id)
        if canonical is None:
            moved_to = self.redirects.target(repo_type, repo_id)
            target = self.canonical_id(repo_type, moved_to) if moved_to else None
            if target is not None:
                raise Moved(repo_type, repo_id, target)
            raise repo_not_found(repo_type, repo_id)
        return RepoStore(repo_dir(self.data_dir, repo_type, canonical), repo_type=repo_type, repo_id=canonical)

    def canonical_id(self, repo_type: str, repo_id: str) -> str | None:
        """The stored casing of `repo_id` (ids are case-insensitive, as on the Hub), or None."""
        root = repo_dir(self.data_dir, repo_type, repo_id)
        if (root / "refs.json").is_file():
            return repo_id
        ns, name = repo_id.lower().split("/")
        base = self.data_dir / "repos" / f"{repo_type}s"
        for ns_dir in base.iterdir() if base.is_dir() else []:
            if ns_dir.name.lower() != ns or not ns_dir.is_dir():
                continue
            for repo in ns_dir.iterdir():
                if repo.name.lower() == name and (repo / "refs.json").is_file():
                    return f"{ns_dir.name}/{repo.name}"
        return None

    def exists(self, repo_type: str, repo_id: str) -> bool:
        return self.canonical_id(repo_type, repo_id) is not None

    def create_repo(
        self, repo_type: str, repo_id: str, *, private: bool, author: str, extra: dict[str, Any]
    ) -> RepoStore:
        """Create a repo with one initial commit (`.gitattributes`) on `main`.

        Raises:
            StorageError: 409 when it exists.
        """
        root = repo_dir(self.data_dir, repo_type, repo_id)
        existing = self.canonical_id(repo_type, repo_id)
        if existing is not None:
            raise Conflict(f"You already created this {repo_type} repo: {existing}")
        (root / "commits").mkdir(parents=True, exist_ok=True)
        (root / "commits" / SHARDED_MARK).touch()  # no flat (pre-tree) commit records in this repo
        (root / "trees").mkdir(exist_ok=True)
        store = RepoStore(root, repo_type=repo_type, repo_id=repo_id)
        atomic_write_json(
            root / "repo.json",
            {"private": private, "createdAt": now_iso(), "objectId": secrets.token_hex(12), **extra},
        )
        initial = {".gitattributes": DEFAULT_GITATTRIBUTES}
        if repo_type == "space":  # like the Hub: a new Space has a README naming its SDK
            sdk = extra.get("sdk", "gradio")
            initial["README.md"] = f"---\ntitle: {repo_id.split('/')[1]}\nsdk: {sdk}\n---\n".encode()
        files = {}
        for path, data in initial.items():
            sha = self.blobs.put_bytes(data)
            files[path] = FileEntry(sha256=sha, size=len(data), git_oid=git_blob_oid(data), lfs=False)
        commit_id = store.write_commit(parents=[], title="initial commit", message="", author=author, files=files)
        # refs.json last: its presence is what makes the repo exist.
        store.write_refs({"heads": {"main": commit_id}, "tags": {}, "prs": {}})
        self.redirects.forget(repo_type, repo_id)  # the old id of a moved repo is taken again
        return store

    def check_free(self, repo_type: str, src: str, dst: str) -> None:
        """Raise 409 when a repo already lives at `dst` (the target of a move from `src`)."""
        if self.canonical_id(repo_type, dst) is not None:
            # The Hub's wording (clients match on it), then what to do.
            raise Conflict(
                f"A {repo_type} repository called {dst} already exists: cannot move {src} there; pick another id"
            )

    def move_repo(self, repo_type: str, src: str, dst: str) -> None:
        """Rename a repo; `src` then redirects to `dst`. The caller holds the repo's lock.

        Raises:
            StorageError: 404 when `src` is missing, 409 when `dst` exists.
        """
        store = self.repo(repo_type, src)
        self.check_free(repo_type, src, dst)
        target = repo_dir(self.data_dir, repo_type, dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(store.root, target)
        self.redirects.record(repo_type, store.repo_id, dst)

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        """Delete a repo (rename into the trash first, so a crash never leaves half a repo).

        The caller holds the repo's lock, so no commit writes into it meanwhile.
        """
        store = self.repo(repo_type, repo_id)
        target = self._trash / secrets.token_hex(8)
        os.replace(store.root, target)
        shutil.rmtree(target, ignore_errors=True)

    def iter_all_repos(self) -> Iterator[RepoStore]:
        for repo_type in REPO_TYPES:
            yield from self.iter_repos(repo_type)

    def iter_repos(self, repo_type: str) -> Iterator[RepoStore]:
        base = self.data_dir / "repos" / f"{repo_type}s"
        if not base.is_dir():
            return
        for ns_dir in sorted(base.iterdir()):
            for repo in sorted(ns_dir.iterdir()) if ns_dir.is_dir() else []:
                if (repo / "refs.json").is_file():
                    yield RepoStore(repo, repo_type=repo_type, repo_id=f"{ns_dir.name}/{repo.name}")
