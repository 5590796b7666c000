"""Renamed repos: the old id answers with a redirect to the new one, as on the Hub.

`move_repo` records `old -> new` in `redirects.json` (per repo type, old ids lowercased: ids are
case-insensitive). A chain of moves keeps one hop (`a -> b`, then `b -> c` makes `a -> c`); creating a
repo under an old id, or moving one onto it, drops its redirect. `Storage.repo` raises `Moved` for an
old id; the HTTP edge turns it into a 307 to the same path under the new id.
"""

from __future__ import annotations

import threading
from pathlib import Path

from registry.localhub.blobs import atomic_write_json, read_json
from registry.localhub.names import NotFound


class Moved(NotFound):
    """The repo was renamed: `new_id` is where it lives now (307 at the edge, 404 where no path names it)."""

    default_code = "RepoNotFound"

    def __init__(self, repo_type: str, old_id: str, new_id: str) -> None:
        super().__init__(f"Repository {repo_type} {old_id!r} was moved to {new_id!r}; use the new id")
        self.old_id, self.new_id = old_id, new_id


class Redirects:
    """The `old id -> new id` table of one data directory (a small JSON file, rewritten atomically)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "redirects.json"
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, str]]:
        return read_json(self.path) if self.path.is_file() else {}

    def _save(self, table: dict[str, dict[str, str]]) -> None:
        atomic_write_json(self.path, table)

    def target(self, repo_type: str, repo_id: str) -> str | None:
        """The id `repo_id` was moved to, or None."""
        if not self.path.is_file():  # the common case: no repo was ever moved
            return None
        return self._load().get(repo_type, {}).get(repo_id.lower())

    def record(self, repo_type: str, old_id: str, new_id: str) -> None:
        """Remember a move; earlier redirects to `old_id` now point at `new_id`."""
        with self._lock:
            table = self._load()
            moves = table.setdefault(repo_type, {})
            for old, new in list(moves.items()):
                if new.lower() == old_id.lower():
                    moves[old] = new_id
            moves[old_id.lower()] = new_id
            moves.pop(new_id.lower(), None)  # a repo lives there now
            self._save(table)

    def forget(self, repo_type: str, repo_id: str) -> None:
        """A repo now lives at `repo_id`: it no longer redirects."""
        if not self.path.is_file():
            return
        with self._lock:
            table = self._load()
            if table.get(repo_type, {}).pop(repo_id.lower(), None) is not None:
                self._save(table)


def redirect_path(path: str, exc: Moved) -> str | None:
    """`path` (raw, `/api/models/ns/name/...` or `/ns/name/resolve/...`) with the old id swapped for the new."""
    old_ns, old_name = exc.old_id.split("/")
    parts = path.split("/")
    for i in range(len(parts) - 1):
        if parts[i].lower() == old_ns.lower() and parts[i + 1].lower() == old_name.lower():
            return "/".join([*parts[:i], *exc.new_id.split("/"), *parts[i + 2 :]])
    return None


__all__ = ["Moved", "Redirects", "redirect_path"]
