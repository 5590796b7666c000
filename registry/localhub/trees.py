"""Content-addressed trees: one JSON object per folder, shared between commits while unchanged.

A tree object (`repos/…/trees/<id[:2]>/<id>.json`, id = sha1 of its canonical JSON) maps names to

    {"f": {name: {sha256, size, git, lfs, last}}, "d": {name: {"tree": id, "last": last}}}

where `last` is `{"id", "title", "date"}` of the newest commit that changed that file or anything
under that folder. A commit writes only the tree objects of folders it changed, so storage grows
with the change, not with the repo, and reading a file, a folder or its `lastCommit` costs the
same at the first commit and at the ten-thousandth: nothing ever walks history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.localhub.blobs import atomic_write, read_json

if TYPE_CHECKING:
    from registry.localhub.storage import RepoStore

Last = dict[str, str]


@dataclass(frozen=True)
class FileEntry:
    """One file in a commit: where its bytes are and how the client should see it."""

    sha256: str
    size: int
    git_oid: str  # git blob id: of the content, or of the LFS pointer when `lfs`
    lfs: bool

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "git": self.git_oid, "lfs": self.lfs}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> FileEntry:
        return FileEntry(sha256=obj["sha256"], size=obj["size"], git_oid=obj["git"], lfs=obj["lfs"])

    @property
    def etag(self) -> str:
        """The Hub's rule: sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid


def _tree_path(root: Path, tree_id: str) -> Path:
    return root / "trees" / tree_id[:2] / f"{tree_id}.json"


def read_tree(store: RepoStore, tree_id: str) -> dict[str, Any]:
    with store.present():
        return read_json(_tree_path(store.root, tree_id))  # type: ignore[no-any-return]


def _write_tree(store: RepoStore, tree_id: str, body: bytes) -> None:
    path = _tree_path(store.root, tree_id)
    if not path.is_file():
        with store.present():
            (store.root / "trees").mkdir(exist_ok=True)  # never parents: a deleted repo stays deleted
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, body, create_dirs=False)


def build_tree(
    store: RepoStore,
    files: dict[str, FileEntry],
    *,
    parent: str | None,
    last: Last | None,
    changed: Iterable[str] | None = None,
) -> str:
    """Write the tree of `files` (reusing `parent`'s unchanged folders); its root id.

    Files and folders that differ from `parent` get `last`; the others keep theirs. `changed`
    (every path added, replaced or deleted since `parent`; a superset is fine) lets folders with
    no change under them be reused as they are, without reading or hashing them: the cost of a
    commit then follows its change, not the repo. None compares every folder.
    """
    nested: dict[str, Any] = {}
    for path, entry in files.items():
        *dirs, name = path.split("/")
        node = nested
        for d in dirs:
            node = node.setdefault(d + "/", {})
        node[name] = entry
    touched: set[str] | None = None
    if changed is not None:
        touched = set()
        for path in changed:
            parts = path.split("/")
            touched.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return _Builder(store, last, touched).build(nested, parent, "")


class _Builder:
    """One `build_tree` call: trees already written in it are not checked on disk again (20k
    folders holding the same file are one tree object)."""

    def __init__(self, store: RepoStore, last: Last | None, touched: set[str] | None) -> None:
        self.store, self.last, self.touched = store, last, touched
        self.written: set[str] = set()

    def build(self, nested: dict[str, Any], parent: str | None, prefix: str) -> str:
        old = read_tree(self.store, parent) if parent else {"f": {}, "d": {}}
        node: dict[str, Any] = {"f": {}, "d": {}}
        for key, value in nested.items():
            if key.endswith("/"):
                name = key[:-1]
                before = old["d"].get(name)
                if before is not None and self.touched is not None and prefix + name not in self.touched:
                    node["d"][name] = before
                    continue
                sub = self.build(value, before["tree"] if before else None, prefix + name + "/")
                keep = before is not None and before["tree"] == sub
                node["d"][name] = {"tree": sub, "last": before["last"] if keep else self.last}
            else:
                entry = value.to_json()
                before = old["f"].get(key)
                keep = before is not None and {k: before[k] for k in entry} == entry
                node["f"][key] = {**entry, "last": before["last"] if keep else self.last}
        body = json.dumps(node, sort_keys=True, separators=(",", ":")).encode()
        tree_id = hashlib.sha1(body).hexdigest()
        if tree_id not in self.written:
            _write_tree(self.store, tree_id, body)
            self.written.add(tree_id)
        return tree_id


def lookup(store: RepoStore, tree_id: str, path: str) -> dict[str, Any] | None:
    """The file record at `path` (with its `last`), or None."""
    *dirs, name = path.split("/")
    node = read_tree(store, tree_id)
    for d in dirs:
        sub = node["d"].get(d)
        if sub is None:
            return None
        node = read_tree(store, sub["tree"])
    found = node["f"].get(name)
    return found if isinstance(found, dict) else None


def folder(store: RepoStore, tree_id: str, path: str) -> tuple[str, Last | None] | None:
    """(tree id, last) of the folder at `path` ("" is the root), or None when it is no folder."""
    if not path:
        return tree_id, None
    node = read_tree(store, tree_id)
    dirs = path.split("/")
    for i, d in enumerate(dirs):
        sub = node["d"].get(d)
        if sub is None:
            return None
        if i == len(dirs) - 1:
            return sub["tree"], sub["last"]
        node = read_tree(store, sub["tree"])
    return None


def walk(store: RepoStore, tree_id: str, prefix: str, *, recursive: bool) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """("file" | "directory", path, record) under the folder `tree_id` at `prefix`, folders first."""
    node = read_tree(store, tree_id)
    base = prefix + "/" if prefix else ""
    for name, sub in sorted(node["d"].items()):
        yield "directory", base + name, sub
    for name, rec in sorted(node["f"].items()):
        yield "file", base + name, rec
    if recursive:
        for name, sub in sorted(node["d"].items()):
            yield from walk(store, sub["tree"], base + name, recursive=True)


def flatten(store: RepoStore, tree_id: str) -> dict[str, FileEntry]:
    """Every file of the tree: path -> entry.

    Trees are immutable, so each is read once even when many folders share it (20k folders
    holding the same file), and each file record becomes a `FileEntry` once.
    """
    nodes: dict[str, dict[str, Any]] = {}
    entries: dict[str, dict[str, FileEntry]] = {}
    out: dict[str, FileEntry] = {}

    def visit(tid: str, base: str) -> None:
        node = nodes.get(tid)
        if node is None:
            node = nodes[tid] = read_tree(store, tid)
            entries[tid] = {name: FileEntry.from_json(rec) for name, rec in node["f"].items()}
        for name, entry in entries[tid].items():
            out[base + name] = entry
        for name, sub in node["d"].items():
            visit(sub["tree"], base + name + "/")

    visit(tree_id, "")
    return out
