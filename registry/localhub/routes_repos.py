"""Routes: identity, repo lifecycle, repo info and search, refs, commits, branches and tags."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from registry.localhub.cards import parse_front_matter, tags_from_card
from registry.localhub.http import Request, Response
from registry.localhub.names import (
    REPO_TYPES,
    Conflict,
    InvalidInput,
    NotFound,
    StorageError,
    validate_path,
    validate_repo_id,
    web_path,
)
from registry.localhub.storage import Commit, RepoStore, atomic_write_json

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub

logger = logging.getLogger(__name__)


def whoami(hub: LocalHub, req: Request) -> Response:
    who = hub.require_user(req)
    return Response.json(
        {
            "type": "user",
            "id": who.name,
            "name": who.name,
            "fullname": who.name,
            "orgs": [{"type": "org", "name": o, "id": o} for o in who.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": who.token_name, "role": who.role}}
            if who.scopes is None
            else {
                "type": "oauth",
                "accessToken": {"displayName": who.token_name, "role": who.role},
                "scope": " ".join(sorted(who.scopes)),
            },
        }
    )


def _repo_type(value: Any) -> str:
    repo_type = value or "model"
    if repo_type not in REPO_TYPES:
        raise InvalidInput(f"Invalid repo type {repo_type!r}: expected one of {', '.join(REPO_TYPES)}")
    return repo_type


def _body_repo_id(body: dict[str, Any], *, default_namespace: str) -> str:
    """`organization/name` from a create or delete body (`organization` null: the caller)."""
    name, org = body.get("name"), body.get("organization")
    if not isinstance(name, str) or not (org is None or isinstance(org, str)):
        raise InvalidInput("'name' must be a string and 'organization' a string or null", code="BadRequest")
    return f"{org or default_namespace}/{name}"


def create(hub: LocalHub, req: Request) -> Response:
    who = hub.require_user(req)
    body = req.json(limit=hub.config.max_json_bytes)
    repo_type = _repo_type(body.get("type"))
    repo_id = _body_repo_id(body, default_namespace=who.name)
    ns, name = repo_id.split("/", 1)
    hub.check_manage(who, ns)
    repo_id = f"{who.canonical(ns) or ns}/{name}"  # the namespace's own casing
    url = req.base_url + web_path(repo_type, repo_id)
    private = body.get("visibility", "public") == "private" if "visibility" in body else bool(body.get("private"))
    extra = {"sdk": body["sdk"]} if repo_type == "space" and body.get("sdk") else {}
    try:
        store = hub.storage.create_repo(repo_type, repo_id, private=private, author=who.name, extra=extra)
    except Conflict as exc:
        canonical = hub.storage.canonical_id(repo_type, repo_id) or repo_id
        exc.fields["url"] = req.base_url + web_path(repo_type, canonical)
        raise
    hub.webhooks.emit_repo(store, scope="repo", action="create")
    return Response.json({"url": url, "name": repo_id, "id": store.info["objectId"]})


def delete(hub: LocalHub, req: Request) -> Response:
    who = hub.require_user(req)
    body = req.json(limit=hub.config.max_json_bytes)
    repo_type = _repo_type(body.get("type"))
    repo_id = _body_repo_id(body, default_namespace=who.name)
    store, _ = hub.write_repo(req, repo_type, repo_id)
    hub.check_manage(who, repo_id.split("/")[0])
    with hub.locks.get(f"{repo_type}/{repo_id}"):  # no commit, ref or discussion write runs meanwhile
        hub.webhooks.emit_repo(store, scope="repo", action="delete")  # reads the repo: before it goes
        hub.storage.delete_repo(repo_type, repo_id)
    return Response.json({})


def move(hub: LocalHub, req: Request) -> Response:
    body = req.json(limit=hub.config.max_json_bytes)
    repo_type = _repo_type(body.get("type"))
    src, dst = str(body.get("fromRepo", "")), str(body.get("toRepo", ""))
    store, who = hub.write_repo(req, repo_type, src)
    hub.check_manage(who, src.split("/")[0])
    hub.check_manage(who, dst.split("/")[0])
    dst_ns, _, dst_name = dst.partition("/")
    dst = f"{who.canonical(dst_ns) or dst_ns}/{dst_name}"
    validate_repo_id(dst)
    with hub.locks.get(f"{repo_type}/{store.repo_id}"):
        hub.storage.check_free(repo_type, store.repo_id, dst)
        hub.webhooks.emit_repo(store, scope="repo", action="move", moved_to=dst)  # names the old id: before
        hub.storage.move_repo(repo_type, store.repo_id, dst)
    return Response.json({})


def settings(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> Response:
    store, _ = hub.write_repo(req, repo_type, repo_id)
    body = req.json(limit=hub.config.max_json_bytes)
    changes: dict[str, Any] = {}
    if "visibility" in body:
        changes["private"] = body["visibility"] == "private"
    if "private" in body:
        changes["private"] = bool(body["private"])
    if "gated" in body:
        changes["gated"] = body["gated"]
    store.update_info(**changes)
    hub.webhooks.emit_repo(store, scope="repo.config", action="update")
    return Response.json({})


def card_of(hub: LocalHub, store: RepoStore, commit: Commit) -> dict[str, Any]:
    """The README's front matter: parsed once, when the commit that brings the README lands
    (`routes_files.commit` calls this), kept as JSON in `<data>/cards/<sha256>.json` (READMEs are
    immutable blobs) and in memory. A listing then loads JSON, never YAML."""
    import copy
    import json

    entry = commit.entry("README.md")
    if entry is None or entry.size > 1_000_000:
        return {}
    card = hub.cards.get(entry.sha256)
    if card is None:
        saved = hub.data_dir / "cards" / f"{entry.sha256}.json"
        try:
            card = json.loads(saved.read_bytes())
        except (OSError, ValueError):
            text = hub.storage.blobs.path(entry.sha256).read_text(encoding="utf-8", errors="replace")
            card = parse_front_matter(text)
            atomic_write_json(saved, card)
        if len(hub.cards) >= 4096:
            hub.cards.clear()
        hub.cards[entry.sha256] = card
    return copy.deepcopy(card)  # callers may change theirs


def repo_json(hub: LocalHub, store: RepoStore, commit: Commit, *, blobs: bool, siblings: bool = True) -> dict[str, Any]:
    """The info object of `GET /api/{type}s/{id}` for `commit`."""
    info = store.info
    card = card_of(hub, store, commit)
    out: dict[str, Any] = {
        "_id": info["objectId"],
        "id": store.repo_id,
        "author": store.repo_id.split("/")[0],
        "sha": commit.id,
        "private": bool(info.get("private")),
        "gated": info.get("gated", False),
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "lastModified": commit.date,
        "createdAt": info["createdAt"],
        "tags": tags_from_card(card, repo_type=store.repo_type),
    }
    if card:
        out["cardData"] = card
    if store.repo_type == "model":
        out["modelId"] = store.repo_id
        for key in ("library_name", "pipeline_tag"):
            if isinstance(card.get(key), str):
                out[key] = card[key]
    if store.repo_type == "space":
        out["sdk"] = info.get("sdk", card.get("sdk", "gradio"))
    if siblings:
        out["siblings"] = [_sibling(path, e, blobs=blobs) for path, e in sorted(commit.files.items())]
    return out


def _sibling(path: str, entry: Any, *, blobs: bool) -> dict[str, Any]:
    from registry.localhub.storage import lfs_pointer

    if not blobs:
        return {"rfilename": path}
    out: dict[str, Any] = {"rfilename": path, "size": entry.size, "blobId": entry.git_oid}
    if entry.lfs:
        out["lfs"] = {
            "size": entry.size,
            "sha256": entry.sha256,
            "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
        }
    return out


def info(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, revision: str | None) -> Response:
    store = hub.read_repo(req, repo_type, repo_id)
    commit = store.commit(store.resolve(revision or "main"))
    return Response.json(repo_json(hub, store, commit, blobs=req.qbool("blobs")))


def list_repos(hub: LocalHub, req: Request, repo_type: str) -> Response:
    """`GET /api/{type}s`: `filter` (all tags), `author`, `search`, `sort`, `limit`, `full`/`cardData`."""
    who = hub.principal(req)
    wanted = set(req.query.get("filter", []))
    author = req.q("author")
    searches = [s.lower() for s in req.query.get("search", []) if s]
    expand = set(req.query.get("expand", []))
    full = req.qbool("full") or "siblings" in expand
    with_card = full or req.qbool("cardData") or "cardData" in expand
    rows: list[dict[str, Any]] = []
    for store in hub.storage.iter_repos(repo_type):
        if author and store.repo_id.split("/")[0].lower() != author.lower():  # names are case-insensitive
            continue
        if searches and not any(s in store.repo_id.lower() for s in searches):
            continue
        try:  # one unreadable repo (half-written by a crash, deleted meanwhile) never breaks the listing
            if not hub.can_see(who, store):
                continue
            commit = store.commit(store.resolve("main"))
            row = repo_json(hub, store, commit, blobs=False, siblings=full)
        except (StorageError, OSError, ValueError, KeyError) as exc:
            logger.warning("Listing skips %s %s: %s", repo_type, store.repo_id, exc)
            continue
        if not wanted <= set(row["tags"]):
            continue
        if not with_card:
            row.pop("cardData", None)
        rows.append(row)
    sort = req.q("sort") or "createdAt"
    key = sort if sort in ("lastModified", "createdAt", "downloads", "likes") else "createdAt"
    rows.sort(key=lambda r: (r.get(key) or 0, r["id"]), reverse=True)
    limit = req.q("limit")
    if limit and limit.isdigit():
        rows = rows[: int(limit)]
    return Response.json(rows)


def refs(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> Response:
    store = hub.read_repo(req, repo_type, repo_id)
    refs_ = store.refs()

    def rows(kind: str, prefix: str) -> list[dict[str, str]]:
        return [
            {"name": n if kind != "prs" else f"refs/pr/{n}", "ref": prefix + n, "targetCommit": c}
            for n, c in sorted(refs_[kind].items())
        ]

    out: dict[str, Any] = {"branches": rows("heads", "refs/heads/"), "converts": [], "tags": rows("tags", "refs/tags/")}
    if req.qbool("include_prs"):
        out["pullRequests"] = rows("prs", "refs/pr/")
    return Response.json(out)


def commits(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, revision: str) -> Response:
    store = hub.read_repo(req, repo_type, repo_id)
    formatted = "formatted" in req.query.get("expand[]", []) + req.query.get("expand", [])
    out = []
    for c in store.history(store.resolve(revision)):
        row: dict[str, Any] = {
            "id": c.id,
            "title": c.title,
            "message": c.message,
            "date": c.date,
            "authors": [{"user": c.author}],
        }
        if formatted:
            row["formatted"] = {"title": c.title, "message": c.message}
        out.append(row)
    return Response.json(out)


def _check_ref_name(name: str) -> str:
    try:
        validate_path(name)
    except StorageError:
        raise InvalidInput(f"Invalid ref name {name!r}: use letters, digits, '-', '_', '.' and '/'") from None
    if name.startswith("refs/") or any(c in name for c in " ~^:?*[@{"):
        raise InvalidInput(f"Invalid ref name {name!r}: use letters, digits, '-', '_', '.' and '/'")
    return name


def create_branch(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, branch: str) -> Response:
    store, _ = hub.write_repo(req, repo_type, repo_id)
    body = req.json(limit=hub.config.max_json_bytes)
    name = _check_ref_name(branch)
    with hub.locks.get(f"{repo_type}/{repo_id}"):
        refs_ = store.refs()
        if name in refs_["heads"]:
            raise Conflict(f"Reference refs/heads/{name} already exists; pass exist_ok=True or pick another name")
        start = store.resolve(body.get("startingPoint") or "main")
        refs_["heads"][name] = start
        store.write_refs(refs_)
    hub.webhooks.emit_repo(
        store, scope="repo.content", action="update", updated_refs=[(f"refs/heads/{name}", None, start)]
    )
    return Response.json({})


def create_tag(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, revision: str) -> Response:
    store, _ = hub.write_repo(req, repo_type, repo_id)
    body = req.json(limit=hub.config.max_json_bytes)
    store.resolve(revision or "main")  # a missing revision is reported first (404), as on the Hub
    name = _check_ref_name(str(body.get("tag", "")))
    with hub.locks.get(f"{repo_type}/{repo_id}"):
        target = store.resolve(revision or "main")
        refs_ = store.refs()
        if name in refs_["tags"]:
            raise Conflict(f"Reference refs/tags/{name} already exists; pick another tag name")
        refs_["tags"][name] = target
        store.write_refs(refs_)
    hub.webhooks.emit_repo(
        store, scope="repo.content", action="update", updated_refs=[(f"refs/tags/{name}", None, target)]
    )
    return Response.json({})


def delete_ref(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, kind: str, name: str) -> Response:
    store, _ = hub.write_repo(req, repo_type, repo_id)
    if kind == "heads" and name == "main":  # the Hub's wording (huggingface_hub's tests match it)
        raise InvalidInput("Cannot delete refs/heads/main: it is the default branch; delete the repo instead")
    with hub.locks.get(f"{repo_type}/{repo_id}"):
        refs_ = store.refs()
        if name not in refs_[kind]:
            what = "branch" if kind == "heads" else "tag"  # "Invalid rev id": the Hub's words
            raise NotFound(f"Invalid rev id: {name} (no such {what} in {repo_id})", code="RevisionNotFound")
        old = refs_[kind].pop(name)
        store.write_refs(refs_)
    hub.webhooks.emit_repo(
        store, scope="repo.content", action="update", updated_refs=[(f"refs/{kind}/{name}", old, None)]
    )
    return Response.json({})


def super_squash(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, branch: str) -> Response:
    """Replace `branch`'s history by one commit holding its current files."""
    from registry.localhub.commits import branch_ref

    store, who = hub.write_repo(req, repo_type, repo_id)
    body = req.json(limit=hub.config.max_json_bytes)
    message = body.get("message")
    title = message if isinstance(message, str) and message.strip() else f"Super-squash branch '{branch}'"
    with hub.locks.get(f"{repo_type}/{repo_id}"):
        kind, name = branch_ref(store, branch or "main")
        refs_ = store.refs()
        old = refs_[kind][name]
        new = store.write_commit(parents=[], title=title, message="", author=who.name, files=store.commit(old).files)
        refs_[kind][name] = new
        store.write_refs(refs_)
    ref = f"refs/heads/{name}" if kind == "heads" else f"refs/pr/{name}"
    hub.webhooks.emit_repo(store, scope="repo.content", action="update", updated_refs=[(ref, old, new)])
    return Response.json({"commitId": new})


def one_part_id(hub: LocalHub, req: Request, repo_type: str, name: str) -> Response:
    """`gpt2`-style ids: this hub only has `namespace/name` repos, so they are missing repos."""
    from registry.localhub.storage import repo_not_found

    raise repo_not_found(repo_type, name)
