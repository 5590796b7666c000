"""Routes: the plain git-LFS batch API (`transfer: basic`), the signed upload PUT, and verify.

The client's single-part PUT carries no auth header and none of the batch's `header` values, so
the upload URL authorises itself: it is signed with the server secret (HMAC-SHA256 over repo,
oid, size and expiry) and valid for one hour.

An object is a repo's only once its bytes were uploaded to that repo (or committed there, or it
belongs to a repo the caller can read): the batch API asks for the bytes of any other object, even
a stored one, and verify answers 404 for objects of other repos, exactly as for missing ones.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from registry.localhub.http import Request, Response
from registry.localhub.names import Forbidden, InvalidInput, NotFound, Unprocessable, web_path

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub
    from registry.localhub.storage import RepoStore

_OID = re.compile(r"^[0-9a-f]{64}$")
URL_LIFETIME_S = 3600
LFS_JSON = "application/vnd.git-lfs+json"


def _sign(hub: LocalHub, repo: str, oid: str, size: int, expires: int) -> str:
    return hmac.new(hub.secret, f"{repo}:{oid}:{size}:{expires}".encode(), hashlib.sha256).hexdigest()


def batch(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> Response:
    store, who = hub.write_repo(req, repo_type, repo_id)
    repo = f"{repo_type}/{repo_id}"
    body = req.json(limit=hub.config.max_json_bytes)
    if not isinstance(body, dict) or body.get("operation") != "upload":
        raise InvalidInput(
            "Only the 'upload' operation is supported; download files through /resolve", code="BadRequest"
        )
    objects = body.get("objects")
    if not isinstance(objects, list):
        raise InvalidInput("LFS batch body needs an 'objects' list", code="BadRequest")
    verify = f"{req.base_url}{web_path(repo_type, repo_id)}.git/info/lfs/objects/verify"
    out: list[dict[str, Any]] = []
    for obj in objects:
        if not isinstance(obj, dict):
            raise InvalidInput("each LFS batch object must be {'oid', 'size'}", code="BadRequest")
        oid, size = str(obj.get("oid", "")), obj.get("size")
        if not _OID.match(oid) or not isinstance(size, int) or size < 0:
            out.append(
                {"oid": oid, "size": size, "error": {"code": 422, "message": f"Invalid oid {oid!r} or size {size!r}"}}
            )
        elif size > hub.config.max_lfs_bytes:
            msg = f"Object {oid} of {size} bytes exceeds this hub's limit of {hub.config.max_lfs_bytes} bytes"
            out.append({"oid": oid, "size": size, "error": {"code": 422, "message": msg}})
        elif hub.lfs_usable(who, store, oid) and hub.storage.blobs.size(oid) == size:
            out.append({"oid": oid, "size": size})
        else:
            expires = int(time.time()) + URL_LIFETIME_S
            sig = _sign(hub, repo, oid, size, expires)
            query = urlencode({"repo": repo, "size": size, "expires": expires, "sig": sig})
            out.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": {
                            "href": f"{req.base_url}/lfs-upload/{oid}?{query}",
                            "header": {},
                            "expires_in": URL_LIFETIME_S,
                        },
                        "verify": {"href": verify, "header": {}},
                    },
                }
            )
    resp = Response.json({"transfer": "basic", "objects": out})
    resp.headers["Content-Type"] = LFS_JSON
    return resp


def upload(hub: LocalHub, req: Request, *, oid: str) -> Response:
    """`PUT /lfs-upload/{oid}?repo&size&expires&sig`: stream the body into the blob store, checking the hash.

    The bytes are hashed even when the object is already stored: uploading them is what proves the
    uploader has them, and what grants the object to the repo.
    """
    repo = req.q("repo") or ""
    try:
        size, expires = int(req.q("size") or -1), int(req.q("expires") or 0)
    except ValueError:
        raise InvalidInput("Malformed LFS upload URL; request a new one from the batch API") from None
    if not _OID.match(oid) or not hmac.compare_digest(_sign(hub, repo, oid, size, expires), req.q("sig") or ""):
        raise Forbidden("Invalid LFS upload signature; request a new upload URL from the batch API")
    if expires < time.time():
        raise Forbidden("Expired LFS upload URL; request a new one from the batch API")
    repo_type, _, repo_id = repo.partition("/")
    store = hub.storage.repo(repo_type, repo_id)
    stored_oid, stored_size = hub.storage.blobs.put_stream(req.body.iter_chunks(limit=size), expected_sha256=oid)
    if stored_size != size:  # cannot happen with a matching sha256 unless the size was wrong
        raise Unprocessable(f"Uploaded {stored_size} bytes, announced {size}")
    store.grant_lfs([stored_oid])
    return Response.json({})


def verify(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> Response:
    store = hub.read_repo(req, repo_type, repo_id)
    body = req.json(limit=hub.config.max_json_bytes)
    oid, size = str(body.get("oid", "")), body.get("size")
    if (
        not _OID.match(oid)
        or not hub.storage.blobs.exists(oid)
        or not store.references_lfs(oid)
        or (size is not None and hub.storage.blobs.size(oid) != size)
    ):
        raise NotFound(f"LFS object {oid} is not stored (or has another size); upload it again")
    return Response.json({})


def _lfs_files(store: RepoStore) -> dict[str, dict[str, Any]]:
    """sha256 -> listing row for every LFS object of the repo (files of its refs, then uploads)."""
    rows: dict[str, dict[str, Any]] = {}
    refs = store.refs()
    for kind, prefix in (("heads", "refs/heads/"), ("tags", "refs/tags/"), ("prs", "refs/pr/")):
        for name, commit_id in sorted(refs[kind].items()):
            commit = store.commit(commit_id)
            for path, entry in sorted(commit.files.items()):
                if entry.lfs and entry.sha256 not in rows:
                    rows[entry.sha256] = {
                        "fileOid": entry.sha256,
                        "oid": entry.git_oid,
                        "filename": path,
                        "size": entry.size,
                        "pushedAt": commit.date,
                        "ref": prefix + name,
                    }
    return rows


def list_lfs_files(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> Response:
    """`GET …/lfs-files`: the repo's LFS objects (owners only, as on the Hub)."""
    store, _ = hub.write_repo(req, repo_type, repo_id)
    return Response.json(list(_lfs_files(store).values()))


def delete_lfs_files(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> Response:
    """`POST …/lfs-files/batch {"deletions": {"sha": [...], "rewriteHistory": bool}}`.

    The objects leave the repo. With `rewriteHistory` (the client's default) they leave every commit:
    the history from the first commit holding one is rewritten and every ref (branches, tags, pull
    requests) moves onto it (`registry.localhub.rewrite`); without it, each branch and pull request
    gets a commit deleting those files. The repo no longer owns them (its uploads list); the bytes
    leave the blob store once no repo owns them.
    """
    from registry.localhub.rewrite import drop_lfs_objects

    store, who = hub.write_repo(req, repo_type, repo_id)
    body = req.json(limit=hub.config.max_json_bytes)
    deletions = body.get("deletions")
    shas = deletions.get("sha") if isinstance(deletions, dict) else None
    if not isinstance(shas, list) or not all(isinstance(s, str) and _OID.match(s) for s in shas):
        raise InvalidInput("lfs-files/batch needs {'deletions': {'sha': [sha256, ...], 'rewriteHistory': bool}}")
    doomed = set(shas)
    rewrite = deletions.get("rewriteHistory", True) is not False  # type: ignore[union-attr]
    with hub.locks.get(f"{repo_type}/{store.repo_id}"):
        if rewrite:  # the client's default: the files leave every commit, as if never committed
            moved = drop_lfs_objects(store, doomed)
        else:  # a commit deleting the files on each branch and pull request; older commits keep them
            moved = _delete_on_each_ref(hub, store, doomed, author=who.name)
        store.revoke_lfs(doomed)
    for sha in doomed:
        if not any(other.references_lfs(sha) for other in hub.storage.iter_all_repos()):
            hub.storage.blobs.path(sha).unlink(missing_ok=True)
    if moved:
        hub.webhooks.emit_repo(store, scope="repo.content", action="update", updated_refs=list(moved))
    return Response.json({})


def _delete_on_each_ref(
    hub: LocalHub, store: RepoStore, doomed: set[str], *, author: str
) -> list[tuple[str, str, str]]:
    from registry.localhub.commits import CommitHeader, Delete, Operation, apply_commit

    moved = []
    refs = store.refs()
    for kind, prefix in (("heads", "refs/heads/"), ("prs", "refs/pr/")):
        for name, commit_id in refs[kind].items():
            files = store.commit(commit_id).files
            ops: list[Operation] = [Delete(p, folder=False) for p, e in files.items() if e.lfs and e.sha256 in doomed]
            if ops:
                header = CommitHeader(summary="Permanently delete LFS files", description="", parent=None)
                apply_commit(hub.storage, store, lock=None, kind=kind, name=name, header=header, ops=ops, author=author)
                moved.append((prefix + name, commit_id, store.refs()[kind][name]))
    return moved
