"""Routes: discussions and pull requests (`/api/{type}s/{id}/discussions*`).

Stored per repo in `discussions.json` (written atomically under the repo lock). A pull request N
owns the ref `refs/pr/N`, which starts at the head of its base branch; merging applies the PR's
file changes onto the base branch (a fast-forward when the base has not moved) and refuses
paths changed on both sides.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from registry.localhub import access
from registry.localhub.auth import Principal
from registry.localhub.commits import CommitHeader, CommitResult, Operation, apply_commit
from registry.localhub.http import Request, Response
from registry.localhub.names import Conflict, Forbidden, InvalidInput, NotFound, StorageError, web_path
from registry.localhub.storage import RepoStore, atomic_write_json, now_iso, read_json

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub

PAGE_SIZE = 50


def _load(store: RepoStore) -> dict[str, Any]:
    path = store.root / "discussions.json"
    return read_json(path) if path.is_file() else {"next": 1, "items": {}}


def _save(store: RepoStore, data: dict[str, Any]) -> None:
    with store.present():
        atomic_write_json(store.root / "discussions.json", data, create_dirs=False)


def _event(kind: str, author: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": secrets.token_hex(12), "type": kind, "createdAt": now_iso(), "author": {"name": author}, "data": data}


def _comment(author: str, text: str) -> dict[str, Any]:
    latest = {"raw": text, "html": text, "updatedAt": now_iso(), "author": {"name": author}}
    return _event("comment", author, {"edited": False, "hidden": False, "latest": latest, "history": [latest]})


def _summary(d: dict[str, Any], store: RepoStore) -> dict[str, Any]:
    keys = ("num", "title", "status", "isPullRequest", "createdAt", "author", "pinned")
    return {**{k: d[k] for k in keys}, "repo": {"name": store.repo_id, "type": store.repo_type}}


def _create(
    store: RepoStore, who: Principal, *, title: str, description: str, pull_request: bool, base: str = "main"
) -> dict[str, Any]:
    data = _load(store)
    num = data["next"]
    d: dict[str, Any] = {
        "id": secrets.token_hex(12),
        "num": num,
        "title": title,
        "status": "draft" if pull_request else "open",
        "isPullRequest": pull_request,
        "createdAt": now_iso(),
        "author": {"name": who.name},
        "pinned": False,
        "events": [_comment(who.name, description)],
    }
    if pull_request:
        refs = store.refs()
        start = refs["heads"][base]
        d["changes"] = {"base": f"refs/heads/{base}"}
        d["startCommit"] = start
        refs["prs"][str(num)] = start
        store.write_refs(refs)
    data["items"][str(num)] = d
    data["next"] = num + 1
    _save(store, data)
    return d


def commit_pull_request(
    hub: LocalHub, store: RepoStore, *, who: Principal, header: CommitHeader, ops: list[Operation], base: str
) -> tuple[int, CommitResult]:
    """Open PR N on `base` (its ref starts at the base head) holding one commit of `ops`.

    Returns:
        N and the commit.

    Raises:
        StorageError: the commit was refused (stale parent, missing file or LFS object); the PR
            and its ref are dropped again, so nothing is kept.
    """
    with hub.locks.get(f"{store.repo_type}/{store.repo_id}"):
        discussions_before, refs_before = _load(store), store.refs()
        d = _create(
            store,
            who,
            title=header.summary or "Pull request",
            description=header.description or "",
            pull_request=True,
            base=base,
        )
        try:
            result = apply_commit(
                hub.storage, store, lock=None, kind="prs", name=str(d["num"]), header=header, ops=ops, author=who.name
            )
        except StorageError:
            store.write_refs(refs_before)
            _save(store, discussions_before)
            raise
    hub.webhooks.emit_discussion(store, scope="discussion", action="create", discussion=d, comment=d["events"][0])
    return d["num"], result


def route(hub: LocalHub, req: Request, repo_type: str, repo_id: str, rest: list[str]) -> Response:
    store = hub.read_repo(req, repo_type, repo_id)
    lock = hub.locks.get(f"{repo_type}/{repo_id}")
    if not rest:
        if req.method == "GET":
            return _list(req, store)
        if req.method == "POST":
            who = hub.require_writer(req, action="open a discussion")
            body = req.json(limit=hub.config.max_json_bytes)
            title = str(body.get("title") or "").strip()
            if not title:
                raise InvalidInput("A discussion needs a non-empty 'title'", code="BadRequest")
            with lock:
                d = _create(
                    store,
                    who,
                    title=title,
                    description=str(body.get("description") or ""),
                    pull_request=bool(body.get("pullRequest")),
                )
            hub.webhooks.emit_discussion(
                store, scope="discussion", action="create", discussion=d, comment=d["events"][0]
            )
            return Response.json(
                {"num": d["num"], "url": f"{req.base_url}{web_path(repo_type, repo_id)}/discussions/{d['num']}"}
            )
    num = rest[0]
    data = _load(store)
    if num not in data["items"]:
        raise NotFound(f"Discussion #{num} not found in {repo_id}")
    if req.method == "GET" and len(rest) == 1:
        return Response.json(_details(data["items"][num], store))
    if req.method != "POST" or len(rest) < 2:
        raise NotFound(f"No route for {req.method} discussions/{'/'.join(rest)}")
    who = hub.require_writer(req, action="comment on or change a discussion")
    body = req.json(limit=hub.config.max_json_bytes)
    action = rest[1]
    with lock:
        data = _load(store)
        d = data["items"][num]
        event, key, comment = _apply(hub, store, who, d, action, rest[2:], body)
        _save(store, data)
    scope = "discussion.comment" if action == "comment" else "discussion"
    hub.webhooks.emit_discussion(
        store,
        scope=scope,
        action="create" if action == "comment" and len(rest) == 2 else "update",
        discussion=d,
        comment=comment,
    )
    return Response.json({key: event} if key else {})


def _apply(
    hub: LocalHub,
    store: RepoStore,
    who: Principal,
    d: dict[str, Any],
    action: str,
    tail: list[str],
    body: dict[str, Any],
) -> tuple[dict[str, Any] | None, str | None, dict[str, Any] | None]:
    """Change discussion `d` in place; return (event, response key, comment event for webhooks)."""
    may_moderate = access.may_moderate(who, store, d["author"]["name"])
    if action == "comment" and not tail:
        text = str(body.get("comment") or "")
        if not text.strip():
            raise InvalidInput("A comment needs non-empty 'comment' text", code="BadRequest")
        event = _comment(who.name, text)
        d["events"].append(event)
        return event, "newMessage", event
    if action == "comment" and len(tail) == 2:
        found = [e for e in d["events"] if e["id"] == tail[0] and e["type"] == "comment"]
        if not found:
            raise NotFound(f"Comment {tail[0]!r} not found in discussion #{d['num']}")
        event = found[0]
        if tail[1] == "edit" and event["author"]["name"] == who.name:
            latest = {
                "raw": str(body.get("content") or ""),
                "html": str(body.get("content") or ""),
                "updatedAt": now_iso(),
                "author": {"name": who.name},
            }
            event["data"].update(edited=True, latest=latest, history=[latest, *event["data"]["history"]])
        elif tail[1] == "hide" and access.is_repo_writer(who, store):
            event["data"]["hidden"] = True
        else:
            raise Forbidden(f"User {who.name!r} may not {tail[1]} this comment")
        return event, "updatedComment", event
    if not may_moderate:
        raise Forbidden(f"User {who.name!r} may not change discussion #{d['num']}: only its author or repo writers can")
    if action == "title":
        new = str(body.get("title") or "").strip()
        event = _event("title-change", who.name, {"from": d["title"], "to": new})
        d["title"] = new
        d["events"].append(event)
        return event, "newTitle", None
    if action == "status":
        status = body.get("status")
        if status not in ("open", "closed"):
            raise InvalidInput(f"Invalid status {status!r}: expected 'open' or 'closed'", code="BadRequest")
        if body.get("comment"):
            d["events"].append(_comment(who.name, str(body["comment"])))
        event = _event("status-change", who.name, {"status": status})
        d["status"] = status
        d["events"].append(event)
        return event, "newStatus", None
    if action == "merge" and d["isPullRequest"]:
        if not access.is_repo_writer(who, store):
            raise Forbidden(f"User {who.name!r} may not merge into {store.repo_id}: a write token is needed")
        merged = _merge(hub, store, d, who)
        d["status"] = "merged"
        d["changes"]["mergeCommitId"] = merged
        d["events"].append(_event("status-change", who.name, {"status": "merged"}))
        return None, None, None
    raise NotFound(f"Unknown discussion action {action!r}")


def _merge(hub: LocalHub, store: RepoStore, d: dict[str, Any], who: Principal) -> str:
    """Apply the PR's changes onto its base branch (the caller holds the repo lock)."""
    from registry.localhub.commits import AddEntry, Delete

    refs = store.refs()
    base = d["changes"]["base"].removeprefix("refs/heads/")
    start, head, base_head = d["startCommit"], refs["prs"][str(d["num"])], refs["heads"][base]
    old, new, now = store.commit(start).files, store.commit(head).files, store.commit(base_head).files
    changed = {p for p in set(old) | set(new) if old.get(p) != new.get(p)}
    clash = sorted(p for p in changed if now.get(p) != old.get(p) and now.get(p) != new.get(p))
    if clash:
        raise Conflict(f"Cannot merge PR #{d['num']}: {clash[0]!r} changed on {base} too; update the PR")
    ops: list[Operation] = []
    for p in sorted(changed):
        ops.append(AddEntry(p, new[p]) if p in new else Delete(p, folder=False))
    header = CommitHeader(summary=f"Merge pull request #{d['num']}: {d['title']}", description="", parent=None)
    result = apply_commit(
        hub.storage, store, lock=None, kind="heads", name=base, header=header, ops=ops, author=who.name
    )
    return result.commit_id


def _list(req: Request, store: RepoStore) -> Response:
    items = sorted(_load(store)["items"].values(), key=lambda d: d["num"], reverse=True)
    kind, status, author = req.q("type") or "all", req.q("status") or "all", req.q("author")
    if kind != "all":
        items = [d for d in items if d["isPullRequest"] == (kind == "pull_request")]
    if status != "all":
        items = [d for d in items if (d["status"] in ("open", "draft")) == (status == "open")]
    if author:
        items = [d for d in items if d["author"]["name"] == author]
    page = req.qint("p")
    start = page * PAGE_SIZE
    return Response.json(
        {
            "discussions": [_summary(d, store) for d in items[start : start + PAGE_SIZE]],
            "count": len(items),
            "start": start,
        }
    )


def _details(d: dict[str, Any], store: RepoStore) -> dict[str, Any]:
    out = {**_summary(d, store), "events": d["events"]}
    if d["isPullRequest"]:
        out["changes"] = d["changes"]
        out["filesWithConflicts"] = []
        out["diff"] = ""
    return out
