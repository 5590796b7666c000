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
from collections.abc import Iterator
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


def _write_tree(store: RepoStore, node: dict[str, Any]) -> str:
    body = json.dumps(node, sort_keys=True, separators=(",", ":")).encode()
    tree_id = hashlib.sha1(body).hexdigest()
    path = _tree_path(store.root, tree_id)
    if not path.is_file():
        with store.present():
            (store.root / "trees").mkdir(exist_ok=True)  # never parents: a deleted repo stays deleted
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, body, create_dirs=False)
    return tree_id


def build_tree(store: RepoStore, files: dict[str, FileEntry], *, parent: str | None, last: Last | None) -> str:
    """Write the tree of `files` (reusing `parent`'s unchanged folders); its root id.

    Files and folders that differ from `parent` get `last`; the others keep theirs.
    """
    nested: dict[str, Any] = {}
    for path, entry in files.items():
        *dirs, name = path.split("/")
        node = nested
        for d in dirs:
            node = node.setdefault(d + "/", {})
        node[name] = entry
    return _build(store, nested, parent, last)


def _build(store: RepoStore, nested: dict[str, Any], parent: str | None, last: Last | None) -> str:
    old = read_tree(store, parent) if parent else {"f": {}, "d": {}}
    node: dict[str, Any] = {"f": {}, "d": {}}
    for key, value in nested.items():
        if key.endswith("/"):
            name = key[:-1]
            before = old["d"].get(name)
            sub = _build(store, value, before["tree"] if before else None, last)
            keep = before is not None and before["tree"] == sub
            node["d"][name] = {"tree": sub, "last": before["last"] if keep else last}
        else:
            entry = value.to_json()
            before = old["f"].get(key)
            keep = before is not None and {k: before[k] for k in entry} == entry
            node["f"][key] = {**entry, "last": before["last"] if keep else last}
    return _write_tree(store, node)


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
    """Every file of the tree: path -> entry."""
    return {
        path: FileEntry.from_json(rec) for kind, path, rec in walk(store, tree_id, "", recursive=True) if kind == "file"
    }
