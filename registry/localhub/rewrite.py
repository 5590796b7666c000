"""History rewriting: drop LFS objects from every commit that holds them (`lfs-files/batch`).

Each commit from the first one holding a dropped object onwards is written again without those
files, with its title, message and author (its date is the rewrite's), and the refs that reached
an old commit (branches, tags, pull requests) move to its rewritten twin; commits before it keep
their ids; the replaced records are removed (their ids answer `RevisionNotFound`, as on the Hub).
The caller holds the repo's lock; refs are written in one step before any record is removed, so a
killed server leaves the refs on the old or the new history (orphaned records are harmless).
"""

from __future__ import annotations

from registry.localhub.storage import RepoStore


def drop_lfs_objects(store: RepoStore, doomed: set[str]) -> list[tuple[str, str, str]]:
    """Rewrite every ref's history without the LFS files whose sha256 is in `doomed`.

    Returns:
        (ref, old commit, new commit) for each ref that moved (`refs/heads/x`, `refs/tags/x`, `refs/pr/N`).
    """
    memo: dict[str, str] = {}  # old commit id -> its twin (itself when untouched)

    def rewrite(top: str) -> str:
        stack = [top]
        while stack:  # post-order over all parents, without recursion (histories can be long)
            cid = stack[-1]
            if cid in memo:
                stack.pop()
                continue
            commit = store.commit(cid)
            todo = [p for p in commit.parents if p not in memo]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            parents = [memo[p] for p in commit.parents]
            files = commit.files
            kept = {p: e for p, e in files.items() if not (e.lfs and e.sha256 in doomed)}
            if len(kept) == len(files) and parents == list(commit.parents):
                memo[cid] = cid
            else:
                memo[cid] = store.write_commit(
                    parents=parents, title=commit.title, message=commit.message, author=commit.author, files=kept
                )
        return memo[top]

    refs = store.refs()
    moved: list[tuple[str, str, str]] = []
    prefix = {"heads": "refs/heads/", "tags": "refs/tags/", "prs": "refs/pr/"}
    for kind, names in refs.items():
        for name, old in names.items():
            new = rewrite(old)
            if new != old:
                names[name] = new
                moved.append((prefix.get(kind, f"refs/{kind}/") + name, old, new))
    if moved:
        store.write_refs(refs)
        for old, new in memo.items():  # as on the Hub, the old commits are gone: RevisionNotFound
            if old != new:
                store._commit_path(old).unlink(missing_ok=True)
    return moved
