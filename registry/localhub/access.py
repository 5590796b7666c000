"""Who may do what on the embedded hub: every access rule, in one place.

Routes never decide access themselves; they ask here (through the `LocalHub` methods of the same
names, which only forward):

- Who is calling: a Bearer token (`auth.Accounts`; an unknown token is 401 even where none is
  needed, as on the Hub), else, for GET requests only, the pages' sign-in cookie (read-only).
- See a repo: public, or private in one of the caller's namespaces (OAuth tokens also need
  `read-repos` or a write scope). A repo the caller may not see is exactly a missing one (404
  `RepoNotFound`), also through a redirect of a moved repo.
- Download its files: see it, and if it is gated be a member of its namespace or have an accepted
  access request (else 403 `GatedRepo`).
- Write (commit, branches, tags, settings, LFS, access requests of the repo): a write token of a
  member of the namespace (OAuth: `write-repos`); create, delete or move a repo also needs
  `manage-repos` for OAuth tokens. Open a pull request: any write token that can see the repo.
- Change state that is not content (discussions, comments, webhooks, access requests): a write
  token (read tokens may only read). Moderate a discussion: its author or a repo writer; merge a
  pull request or hide a comment: a repo writer.
- Use an LFS object in a commit: uploaded to this repo or committed in it, or a file of another
  repo the caller may download; answered alike, with the same work, whether or not it exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from registry.localhub.auth import Principal
from registry.localhub.http import Request
from registry.localhub.names import AuthRequired, Forbidden
from registry.localhub.redirects import Moved
from registry.localhub.storage import RepoStore, read_json, repo_not_found

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub


# -- who is calling --------------------------------------------------------------------------------
def principal(hub: LocalHub, req: Request) -> Principal | None:
    """Who is calling; None when anonymous.

    Raises:
        AuthRequired: for a token this hub does not know (or an expired OAuth token).
    """
    token = req.token
    if not token:
        return _session_principal(hub, req)
    who = hub.accounts.authenticate(token)
    if who is None:
        raise AuthRequired("Invalid credentials in Authorization header")
    return who


def _session_principal(hub: LocalHub, req: Request) -> Principal | None:
    """The user signed in through the pages (`hub_session` cookie), for GET requests only: the
    cookie reads what its user may read and never writes (so no request forged by another site
    can change anything), and other sites cannot read the answers (no CORS headers)."""
    from registry.localhub.oauth import session_user

    if req.method != "GET" or "cookie" not in req.headers:
        return None
    user = session_user(hub, req)
    if user is None:
        return None
    return Principal(name=user, orgs=hub.accounts.orgs_of(user), role="read", token_name="session")


def require_user(hub: LocalHub, req: Request) -> Principal:
    who = principal(hub, req)
    if who is None:
        raise AuthRequired(
            "Authorization header is required: pass a token (create one with `registry hub token create USER --data DIR --write`)",
        )
    return who


def require_writer(hub: LocalHub, req: Request, *, action: str) -> Principal:
    """The caller, when its token may write (not a read token).

    Raises:
        AuthRequired: no token.
        Forbidden: a read-only token (or an OAuth token without a write scope).
    """
    who = require_user(hub, req)
    if who.role != "write":
        raise Forbidden(f"A read-only token cannot {action}; use a write token of {who.name!r}", code="Forbidden")
    return who


# -- repos -------------------------------------------------------------------------------------------
def may_see(who: Principal | None, store: RepoStore) -> bool:
    if not store.info.get("private"):
        return True
    return who is not None and who.can_read_private(store.repo_id.split("/")[0])


def read_repo(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> RepoStore:
    """The repo if it exists and the caller may see it, else 404 `RepoNotFound`."""
    try:
        store = hub.storage.repo(repo_type, repo_id)
    except Moved as moved:  # a redirect to a private repo would tell its new name
        target = hub.storage.repo(repo_type, moved.new_id)
        if not may_see(principal(hub, req), target):
            raise repo_not_found(repo_type, repo_id) from None
        raise
    if store.info.get("private") and not may_see(principal(hub, req), store):
        raise repo_not_found(repo_type, repo_id)
    return store


def check_write(who: Principal, namespace: str) -> None:
    if not who.can_write(namespace):
        why = (
            "a read-only token"
            if who.role != "write"
            else "an OAuth token without the write-repos scope"
            if who.canonical(namespace)
            else f"no membership in {namespace!r}"
        )
        raise Forbidden(
            f"User {who.name!r} may not write to namespace {namespace!r} ({why}); use a write token of "
            f"{namespace!r} or one of its members",
            code="Forbidden",
        )


def check_manage(who: Principal, namespace: str) -> None:
    """Create, delete or move a repo of `namespace`: write access, and `manage-repos` for OAuth tokens."""
    check_write(who, namespace)
    if not who.can_manage(namespace):
        raise Forbidden(
            f"This OAuth token of {who.name!r} was not granted the manage-repos scope; sign in again asking for it",
            code="Forbidden",
        )


def write_repo(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> tuple[RepoStore, Principal]:
    """The repo if the caller may write it: 401 without a token, 403 without write access."""
    who = require_user(hub, req)
    store = read_repo(hub, req, repo_type, repo_id)
    check_write(who, repo_id.split("/")[0])
    return store, who


def contribute_repo(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> tuple[RepoStore, Principal]:
    """The repo if the caller may open a pull request on it: a write token and read access."""
    who = require_user(hub, req)
    store = read_repo(hub, req, repo_type, repo_id)
    if who.role != "write":
        raise Forbidden(f"User {who.name!r} may not open a pull request with a read-only token; use a write token")
    return store, who


# -- gated downloads ---------------------------------------------------------------------------------
def gate(store: RepoStore) -> str | None:
    """ "auto" or "manual" when the repo is gated, else None."""
    value = store.info.get("gated")
    return value if value in ("auto", "manual") else None


def access_requests(store: RepoStore) -> dict[str, Any]:
    """The repo's access requests (`access.json`: {"requests": {user: {status, requestId, timestamp}}})."""
    path = store.root / "access.json"
    with store.present():
        return read_json(path) if path.is_file() else {"requests": {}}


def check_download(who: Principal | None, store: RepoStore) -> None:
    """Raise 403 `GatedRepo` unless `who` may download files of `store` (which they can see).

    Raises:
        Forbidden: the repo is gated and `who` has no access.
    """
    if gate(store) is None:
        return
    if who is not None and who.can_read_private(store.repo_id.split("/")[0]):
        return
    if who is not None and access_requests(store)["requests"].get(who.name, {}).get("status") == "accepted":
        return
    raise Forbidden(
        f"Access to {store.repo_type} {store.repo_id} is restricted and you are not in the authorized list. "
        f"Ask for access (POST /{store.repo_id}/ask-access) with a token, then wait for the owner's approval",
        code="GatedRepo",
    )


def may_download(who: Principal | None, store: RepoStore) -> bool:
    if not may_see(who, store):
        return False
    try:
        check_download(who, store)
    except Forbidden:
        return False
    return True


# -- discussions -------------------------------------------------------------------------------------
def is_repo_writer(who: Principal, store: RepoStore) -> bool:
    """May merge pull requests, hide comments and moderate any discussion of `store`."""
    return who.can_write(store.repo_id.split("/")[0])


def may_moderate(who: Principal, store: RepoStore, discussion_author: str) -> bool:
    """May change a discussion's title or status: its author or a repo writer."""
    return is_repo_writer(who, store) or who.name == discussion_author


# -- LFS objects -------------------------------------------------------------------------------------
def lfs_usable(hub: LocalHub, who: Principal | None, store: RepoStore, oid: str) -> bool:
    """Whether `who` may reference LFS object `oid` in `store`: it is stored, and it was uploaded to
    `store` or is an LFS file of a repo `who` may download (seen, and not gated to them); never
    just "some repo has it".

    The same work is done whether or not `oid` exists anywhere (every repo is asked, no early
    exit, the blob store last), so the answer time tells nothing about other repos' files.
    """
    usable = store.references_lfs(oid)
    for other in hub.storage.iter_all_repos():
        if other.root == store.root:
            continue
        try:
            found, allowed = other.references_lfs(oid), may_download(who, other)
            usable |= found and allowed
        except (OSError, ValueError, KeyError):
            continue  # a repo being deleted
    return usable and hub.storage.blobs.exists(oid)
