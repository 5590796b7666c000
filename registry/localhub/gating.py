"""Gated repos (`PUT …/settings {"gated": "auto"|"manual"|false}`), access requests, auth-check.

A gated repo's metadata stays visible; its files (`resolve`) answer 403 `GatedRepo` to anyone who
is neither a member of its namespace nor granted access. A user asks with `POST /{repo}/ask-access`
(the Hub's web route): "auto" accepts at once, "manual" waits for the owner, who lists, accepts,
rejects (`…/user-access-request/{pending|accepted|rejected}`, `…/handle`) or grants (`…/grant`).
Stored per repo in `access.json`, written under the repo lock.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from registry.localhub.access import access_requests, check_download, gate
from registry.localhub.http import Request, Response
from registry.localhub.names import InvalidInput, NotFound
from registry.localhub.storage import RepoStore, atomic_write_json, now_iso

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub

STATUSES = ("pending", "accepted", "rejected")


def _load(store: RepoStore) -> dict[str, Any]:
    return access_requests(store)


def _save(store: RepoStore, data: dict[str, Any]) -> None:
    with store.present():
        atomic_write_json(store.root / "access.json", data, create_dirs=False)


def ask_access(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> Response:
    who = hub.require_writer(req, action="ask for access")
    store = hub.read_repo(req, repo_type, repo_id)
    mode = gate(store)
    if mode is None:
        raise InvalidInput(f"{repo_id} is not gated: no access request is needed")
    with hub.locks.get(f"{repo_type}/{repo_id}"):
        data = _load(store)
        current = data["requests"].get(who.name)
        if current is None or current["status"] == "pending":
            data["requests"][who.name] = {
                "requestId": (current or {}).get("requestId") or secrets.token_hex(12),
                "status": "accepted" if mode == "auto" else "pending",
                "timestamp": now_iso(),
            }
            _save(store, data)
    return Response.json({"status": data["requests"][who.name]["status"]})


def list_requests(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, status: str) -> Response:
    store, _ = hub.write_repo(req, repo_type, repo_id)
    if status not in STATUSES:
        raise NotFound(f"Unknown access request status {status!r}: use one of {', '.join(STATUSES)}")
    rows = [
        {"user": {"user": name, "fullname": name}, "requestId": r["requestId"], "status": r["status"],
         "timestamp": r["timestamp"]}
        for name, r in sorted(_load(store)["requests"].items())
        if r["status"] == status
    ]  # fmt: skip
    return Response.json(rows)


def handle_request(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, grant: bool) -> Response:
    """`…/user-access-request/handle` ({user|requestId, status}) or `…/grant` ({user})."""
    store, _ = hub.write_repo(req, repo_type, repo_id)
    body = req.json(limit=hub.config.max_json_bytes)
    status = "accepted" if grant else body.get("status")
    if status not in STATUSES:
        raise InvalidInput(f"Invalid status {status!r}: use one of {', '.join(STATUSES)}")
    with hub.locks.get(f"{repo_type}/{repo_id}"):
        data = _load(store)
        user = body.get("user")
        if not isinstance(user, str):
            rid = body.get("requestId")
            user = next((n for n, r in data["requests"].items() if r["requestId"] == rid), None)
        if not isinstance(user, str) or (not grant and user not in data["requests"]):
            raise NotFound(f"No access request from {user or body.get('requestId')!r} for {repo_id}")
        if data["requests"].get(user, {}).get("status") == status:  # as on the Hub: no-op handlings are refused
            if grant:
                raise InvalidInput(f"{user} already has access to {repo_id}")
            raise InvalidInput(f"The access request of {user} for {repo_id} is already {status}")
        old = data["requests"].get(user, {})
        data["requests"][user] = {
            "requestId": old.get("requestId") or secrets.token_hex(12),
            "status": status,
            "timestamp": now_iso(),
        }
        _save(store, data)
    return Response.json({})


def auth_check(hub: LocalHub, req: Request, repo_type: str, repo_id: str, *, write: bool) -> Response:
    """200 when the caller may read (or write) the repo; 404/403 as reads and writes would answer."""
    if write:
        hub.write_repo(req, repo_type, repo_id)
        return Response.json({})
    store = hub.read_repo(req, repo_type, repo_id)
    check_download(hub.principal(req), store)
    return Response.json({})
