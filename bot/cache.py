"""The size bound of the bot's Hub download cache (`<data>/hf-cache`, `--cache-max-gb`): least
recently used repos go first.

"Used" is when a job last read the repo: `mark_used` sets the repo folder's mtime at the end of
each job, because file access times are not kept on most mounts (relatime, noatime). The cache is
read and pruned with huggingface_hub's own `scan_cache_dir` / `delete_revisions`, so its layout
(blobs shared by revisions, refs, snapshots' symlinks) stays consistent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def _folder(cache_dir: Path, repo_id: str, repo_type: str = "model") -> Path:
    return cache_dir / f"{repo_type}s--{repo_id.replace('/', '--')}"


def mark_used(cache_dir: Path, repo_ids: Iterable[str]) -> None:
    """Record that a job has just read these repos (missing ones are skipped)."""
    for repo_id in repo_ids:
        folder = _folder(cache_dir, repo_id)
        if folder.is_dir():
            os.utime(folder)


def enforce_cache_bound(cache_dir: Path, *, max_bytes: int, keep: Iterable[str] = ()) -> list[str]:
    """Delete whole repos, least recently used first, until the cache holds at most `max_bytes`.

    Args:
        keep: repos that running jobs read: never removed (the bound may then be passed for a while).

    Returns:
        The repo ids removed, in the order they were removed.
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    if not cache_dir.is_dir():
        return []
    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    size = info.size_on_disk
    if size <= max_bytes:
        return []

    def last_used(repo: object) -> float:
        path = Path(getattr(repo, "repo_path"))  # noqa: B009 (typed loosely by huggingface_hub)
        return max(float(getattr(repo, "last_accessed", 0.0)), path.stat().st_mtime)

    removed = []
    kept = set(keep)
    for repo in sorted((r for r in info.repos if r.repo_id not in kept), key=last_used):
        if size <= max_bytes:
            break
        hashes = [revision.commit_hash for revision in repo.revisions]
        info.delete_revisions(*hashes).execute()
        size -= repo.size_on_disk
        removed.append(repo.repo_id)
        log.info("cache: removed %s (%d bytes) to stay under %d bytes", repo.repo_id, repo.size_on_disk, max_bytes)
    return removed
