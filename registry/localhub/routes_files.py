"""Routes: file resolve (HEAD/GET with Range), tree, paths-info, validate-yaml, preupload, commit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qs, urlencode

from registry.localhub.commits import AddLfs, apply_commit, branch_ref, lfs_object_missing, parse_items
from registry.localhub.http import Request, Response
from registry.localhub.names import InvalidInput, NotFound, TooLarge, validate_path, web_path
from registry.localhub.routes_repos import card_of
from registry.localhub.storage import FileEntry, RepoStore, lfs_pointer

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub
    from registry.localhub.auth import Principal

TREE_PAGE_SIZE = 1000


def resolve(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, revision: str, path: str) -> Response:
    """Serve a file directly (never a redirect), with the headers `hf_hub_download` needs."""
    from registry.localhub.access import check_download

    store = hub.read_repo(req, repo_type, repo_id)
    check_download(hub.principal(req), store)
    commit_id = store.resolve(revision)
    entry = store.commit(commit_id).entry(path) if path else None
    if entry is None:
        _entry_not_found(path, revision, repo_id, commit_id)
    headers = {
        "X-Repo-Commit": commit_id,
        "ETag": f'"{entry.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    if entry.lfs:
        headers["X-Linked-Etag"] = f'"{entry.sha256}"'
        headers["X-Linked-Size"] = str(entry.size)
    blob = hub.storage.blobs.path(entry.sha256)
    if not blob.is_file():  # an LFS object deleted permanently (lfs-files/batch) after this commit
        raise NotFound(
            f"{path!r} at revision {revision!r} of {repo_id} was permanently deleted",
            code="EntryNotFound",
            repo_commit=commit_id,
        )
    span = _parse_range(req.headers.get("Range"), entry.size)
    if span is None:
        return Response(status=200, headers=headers, file=(blob, 0, entry.size))
    start, end = span
    if start >= entry.size:
        headers["Content-Range"] = f"bytes */{entry.size}"
        return Response(status=416, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
    return Response(status=206, headers=headers, file=(blob, start, end - start + 1))


def _entry_not_found(path: str, revision: str, repo_id: str, commit_id: str) -> NoReturn:
    message = f"Entry not found: {path!r} at revision {revision!r} of {repo_id}"
    raise NotFound(message, code="EntryNotFound", repo_commit=commit_id)


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as inclusive (start, end), or None for "whole file"."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multiple or malformed ranges: serve the whole file (allowed by RFC 9110)
    if not m.group(1):
        n = int(m.group(2))
        return (max(size - n, 0), size - 1) if n else (size, size)
    start = int(m.group(1))
    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if m.group(2) and int(m.group(2)) < start:
        return None
    return start, end


def tree_entry(path: str, entry: FileEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
    if entry.lfs:
        out["lfs"] = {
            "oid": entry.sha256,
            "size": entry.size,
            "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
        }
    return out


def _with_last(out: dict[str, Any], last: dict[str, str] | None, expand: bool) -> dict[str, Any]:
    if expand and last:
        out["lastCommit"] = dict(last)
    return out


def _walk_entry(kind: str, path: str, rec: dict[str, Any], *, expand: bool) -> dict[str, Any]:
    """A tree/paths-info entry from a tree record (`trees.walk`)."""
    if kind == "directory":
        return _with_last({"type": "directory", "oid": rec["tree"], "size": 0, "path": path}, rec["last"], expand)
    return _with_last(tree_entry(path, FileEntry.from_json(rec)), rec["last"], expand)


def tree(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, revision: str, path: str) -> Response:
    """A folder's entries, from its tree object(s): the cost depends on the folder, never on history."""
    from registry.localhub.trees import folder, walk

    store = hub.read_repo(req, repo_type, repo_id)
    commit = store.commit(store.resolve(revision))
    path = path.strip("/")
    found = folder(store, commit.tree, path) if all(path.split("/")) or not path else None
    if found is None:
        message = f"Folder not found: {path!r} at revision {revision!r} of {repo_id}"
        raise NotFound(message, code="EntryNotFound")
    expand = req.qbool("expand")
    cursor = req.qint("cursor")
    # Folders first, then files, each sorted by path (what clients have always been given).
    entries = sorted(
        walk(store, found[0], path, recursive=req.qbool("recursive")), key=lambda e: (e[0] != "directory", e[1])
    )
    page = [_walk_entry(kind, p, rec, expand=expand) for kind, p, rec in entries[cursor : cursor + TREE_PAGE_SIZE]]
    more = cursor + TREE_PAGE_SIZE < len(entries)
    headers = {}
    if more:
        query = {k: v for k, v in req.query.items() if k != "cursor"}
        query["cursor"] = [str(cursor + TREE_PAGE_SIZE)]
        url = f"{req.base_url}/api/{repo_type}s/{repo_id}/tree/{_quote(revision)}"
        url += ("/" + _quote(path)) if path else ""
        headers["Link"] = f'<{url}?{urlencode(query, doseq=True)}>; rel="next"'
    return Response.json(page, headers=headers)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def paths_info(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, revision: str) -> Response:
    from registry.localhub.http import loads_json
    from registry.localhub.trees import folder, lookup

    store = hub.read_repo(req, repo_type, repo_id)
    commit = store.commit(store.resolve(revision))
    raw = req.body.read(limit=hub.config.max_json_bytes)
    if "json" in req.headers.get("Content-Type", ""):
        body = loads_json(raw or b"{}")
        paths = body.get("paths", []) if isinstance(body, dict) else None
        if not isinstance(paths, list):
            raise InvalidInput("paths-info body must be {'paths': [str], 'expand': bool}")
        expand = bool(body.get("expand"))
    else:
        form = parse_qs(raw.decode("utf-8", errors="replace"))
        paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() in ("1", "true")
    out = []
    for p in paths:
        p = str(p).strip("/")
        if not p or not all(p.split("/")):
            continue
        rec = lookup(store, commit.tree, p)
        if rec is not None:
            out.append(_walk_entry("file", p, rec, expand=expand))
            continue
        found = folder(store, commit.tree, p)
        if found is not None:
            out.append(_with_last({"type": "directory", "oid": found[0], "size": 0, "path": p}, found[1], expand))
    return Response.json(out)


def validate_yaml(hub: LocalHub, req: Request) -> Response:
    """JSON `{"errors": [{"message"}], "warnings": [...]}`, or, for `Accept: text/plain` (what
    `RepoCard.validate` sends, then raising `ValueError(response.text)`), the Hub's text: one
    `- Error: …` / `- Warning: …` line each."""
    from registry.localhub.cards import CardError, load_front_matter, metadata_problems

    body = req.json(limit=hub.config.max_json_bytes)
    text = body.get("content", "")
    if not isinstance(text, str):
        raise InvalidInput("validate-yaml needs {'content': str, 'repoType': str}")
    errors: list[str] = []
    warnings: list[str] = []
    try:
        card = load_front_matter(text)
    except CardError as exc:
        errors.append(str(exc))
    else:
        if not card:
            warnings.append("Empty or missing yaml metadata in repo card")
        else:
            errors += metadata_problems(card)
    status = 400 if errors else 200
    if "text/plain" in req.headers.get("Accept", ""):
        lines = [f"- Error: {m}" for m in errors] + [f"- Warning: {m}" for m in warnings]
        return Response(status=status, headers={"Content-Type": "text/plain; charset=utf-8"},
                        body="\n".join(lines).encode())  # fmt: skip
    body_ = {"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]}
    return Response.json(body_, status=status)


def preupload(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, revision: str) -> Response:
    from registry.localhub.app import client_disabled_xet

    store, _ = (
        hub.contribute_repo(req, repo_type, repo_id)
        if req.qbool("create_pr")
        else hub.write_repo(req, repo_type, repo_id)
    )
    body = req.json(limit=hub.config.max_json_bytes)
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list):
        raise InvalidInput("preupload body must be {'files': [{'path', 'size', 'sample'}]}", code="BadRequest")
    commit_ = store.commit(store.resolve(revision))
    current = commit_.files
    lfs_ok = client_disabled_xet(req)
    ignore = _text(hub, commit_.entry(".gitignore"))
    if isinstance(body.get("gitIgnore"), str):  # a .gitignore in this very upload wins
        ignore = body["gitIgnore"]
    rules = _lfs_rules(_text(hub, commit_.entry(".gitattributes")))
    ignored = _gitignore(ignore)
    out = []
    for item in files:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("path"), str)
            or not isinstance(item.get("size", 0), int)
        ):
            raise InvalidInput("each preupload file needs a 'path' (and an integer 'size')", code="BadRequest")
        path = validate_path(item["path"])
        size = item.get("size") or 0
        # Big files always go through LFS: inline, they would travel as base64 in the commit body
        # (which refuses them). A stock client with Xet on then asks for a Xet token and gets a
        # one-line "set HF_HUB_DISABLE_XET=1". Small files that `.gitattributes` routes to LFS do so
        # only for clients known to use the LFS batch API, so small uploads work without settings.
        wants_lfs = size >= hub.config.lfs_threshold or (lfs_ok and rules is not None and rules.match_file(path))
        mode = "lfs" if wants_lfs else "regular"
        existing = current.get(path)
        oid = None
        if existing is not None:
            oid = existing.sha256 if mode == "lfs" else (None if existing.lfs else existing.git_oid)
        should_ignore = ignored is not None and ignored.match_file(path)
        out.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": bool(should_ignore), "oid": oid})
    return Response.json({"files": out})


def _text(hub: LocalHub, entry: FileEntry | None, limit: int = 1 << 20) -> str | None:
    if entry is None or entry.size > limit:
        return None
    return hub.storage.blobs.path(entry.sha256).read_text(encoding="utf-8", errors="replace")


class _Patterns:
    """gitignore-style patterns (pathspec's GitIgnoreSpec; a simpler fnmatch fallback without it)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        try:
            import pathspec
        except ImportError:
            self.spec = None
        else:
            self.spec = pathspec.GitIgnoreSpec.from_lines(self.lines)

    def match_file(self, path: str) -> bool:
        if self.spec is not None:
            return bool(self.spec.match_file(path))
        from fnmatch import fnmatchcase

        hit = False
        parts = path.split("/")
        for line in self.lines:
            negate, raw = line.startswith("!"), line.lstrip("!")
            anchored = raw.startswith("/") or "/" in raw.rstrip("/")
            pat = raw.strip("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            names = prefixes if anchored else parts
            if any(fnmatchcase(n, pat) for n in names):
                hit = not negate
        return hit


def _gitignore(text: str | None) -> _Patterns | None:
    return _Patterns(text.splitlines()) if text else None


def _lfs_rules(text: str | None) -> _Patterns | None:
    """The patterns of `.gitattributes` lines with `filter=lfs`."""
    if not text:
        return None
    patterns = [ln.split()[0] for ln in text.splitlines() if "filter=lfs" in ln.split()[1:] and not ln.startswith("#")]
    return _Patterns(patterns) if patterns else None


def commit(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, revision: str) -> Response:
    # Like the Hub, anyone with a write token may open a pull request on a repo they can read.
    pr = req.qbool("create_pr")
    store, who = hub.contribute_repo(req, repo_type, repo_id) if pr else hub.write_repo(req, repo_type, repo_id)
    spooled: list[Path] = []
    try:
        return _commit(hub, req, store, who, revision=revision, spooled=spooled)
    finally:
        for path in spooled:  # adopted ones were moved into the store; the rest are dropped
            path.unlink(missing_ok=True)


def _commit(
    hub: LocalHub, req: Request, store: RepoStore, who: Principal, *, revision: str, spooled: list[Path]
) -> Response:
    from registry.localhub import discussions
    from registry.localhub.ndjson import iter_items

    repo_type, repo_id = store.repo_type, store.repo_id
    chunks = req.body.iter_chunks(limit=hub.config.max_commit_bytes)
    try:
        items = iter_items(chunks, hub.storage.blobs.tmp, created=spooled, max_file=hub.config.lfs_threshold)
        header, ops = parse_items(items)
    except TooLarge as exc:
        if exc.code == "LfsRequired":
            raise
        raise TooLarge(
            f"{exc} (inline file content). Send large files through LFS: set HF_HUB_DISABLE_XET=1 and "
            "HF_HUB_USER_AGENT_ORIGIN=mergeling-no-xet, or use registry.hub.HubClient",
        ) from None
    kind, name = branch_ref(store, revision)
    lfs_oids = [op.sha256 for op in ops if isinstance(op, AddLfs)]
    for op in ops:
        if isinstance(op, AddLfs) and not hub.lfs_usable(who, store, op.sha256):
            raise lfs_object_missing(op)
    pr_num = None
    if req.qbool("create_pr"):
        pr_num, result = discussions.commit_pull_request(hub, store, who=who, header=header, ops=ops, base=name)
    else:
        lock = hub.locks.get(f"{repo_type}/{repo_id}")
        result = apply_commit(
            hub.storage, store, lock=lock, kind=kind, name=name, header=header, ops=ops, author=who.name
        )
    store.grant_lfs(lfs_oids)
    card_of(hub, store, store.commit(result.commit_id))  # the card is parsed here, once, not per listing
    hub.webhooks.emit_repo(
        store, scope="repo.content", action="update", updated_refs=[(result.ref, result.old_head, result.commit_id)]
    )
    base = req.base_url + web_path(repo_type, repo_id)
    out: dict[str, Any] = {"commitOid": result.commit_id, "commitUrl": f"{base}/commit/{result.commit_id}"}
    if pr_num is not None:
        out["pullRequestUrl"] = f"{base}/discussions/{pr_num}"
    return Response.json(out)
