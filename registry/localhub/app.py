"""The embedded hub application: configuration, authentication, access checks and routing.

`LocalHub(data_dir)` holds the state; `registry.localhub.edge` routes requests to the route
modules (`routes_repos`, `routes_files`, `lfs`, `discussions`, `webhooks`), which ask this module
who may do what.
"""

from __future__ import annotations

import fcntl
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.localhub.auth import Accounts, Principal
from registry.localhub.commits import RepoLocks
from registry.localhub.http import Request
from registry.localhub.names import AuthRequired, Forbidden
from registry.localhub.redirects import Moved
from registry.localhub.storage import RepoStore, Storage, repo_not_found

XET_DISABLED_HEADER = "X-Mergeling-Xet"
XET_DISABLED_ORIGIN = "mergeling-no-xet"


@dataclass(frozen=True)
class HubConfig:
    """Limits and policies of one server.

    Attributes:
        lfs_threshold: files at least this big are announced as "lfs" at preupload, and refused
            inline in a commit (413 `LfsRequired`); smaller files `.gitattributes` routes to LFS go
            "lfs" only to clients that signalled Xet is off (see `client_disabled_xet`).
        max_commit_bytes: the largest NDJSON commit body accepted (inline base64 content).
        max_json_bytes: the largest JSON body of any other API call.
        max_lfs_bytes: the largest single LFS object.
        webhook_attempts: delivery tries per event and webhook.
        webhook_backoff_s: first retry delay; doubled on each retry.
        body_idle_timeout_s: a request body that pauses this long is refused (408).
        webhook_allow: CIDRs or host names webhooks may target although private, loopback,
            link-local or multicast (`registry hub serve --webhook-allow`).
        webhook_loopback: allow loopback targets; None: only while the hub listens on loopback.
        public_url: the base of every absolute URL the hub writes (commit and LFS URLs, the OpenID
            issuer, webhook payloads); None: the bound address. Never taken from the Host header.
    """

    lfs_threshold: int = 10 * 1024 * 1024
    max_commit_bytes: int = 2 * 1024**3
    max_json_bytes: int = 16 * 1024 * 1024
    max_lfs_bytes: int = 64 * 1024**3
    webhook_attempts: int = 4
    webhook_backoff_s: float = 0.5
    body_idle_timeout_s: float = 30.0
    webhook_allow: tuple[str, ...] = ()
    webhook_loopback: bool | None = None
    public_url: str | None = None


def client_disabled_xet(req: Request) -> bool:
    """Whether the client will use the LFS batch API for "lfs" files instead of Xet.

    huggingface_hub >= 1.20 sends every "lfs" file through Xet whenever hf_xet is importable,
    which this server cannot speak. Our own client (`registry.hub.HubClient`) disables Xet and says so
    with a header; subprocess clients say so with `HF_HUB_USER_AGENT_ORIGIN=mergeling-no-xet`.
    Clients older than 1.20 let the server pick the transfer, so they are safe too.
    """
    if req.headers.get(XET_DISABLED_HEADER, "").lower() == "disabled":
        return True
    agent = req.headers.get("User-Agent", "")
    if XET_DISABLED_ORIGIN in agent:
        return True
    match = re.search(r"hf_hub/(\d+)\.(\d+)", agent)
    return match is not None and (int(match.group(1)), int(match.group(2))) < (1, 20)


class LocalHub:
    """A Hub-compatible application over one data directory.

    Args:
        data_dir: where repos, blobs, accounts and webhooks live (created if missing).
        config: limits and policies.

    Raises:
        OSError: when another server already serves `data_dir`.
    """

    def __init__(self, data_dir: Path, *, config: HubConfig | None = None) -> None:
        from registry.localhub.oauth import OAuthProvider
        from registry.localhub.webhooks import WebhookDispatcher

        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = (self.data_dir / ".server.lock").open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise OSError(
                f"Another hub server is already using {self.data_dir}; stop it or use another --data"
            ) from None
        self.config = config or HubConfig()
        self.storage = Storage(self.data_dir)
        # Writes interrupted by a crash leave temp files; we hold the lock, so none is live.
        self.storage.clean_temp_files()
        self.storage.prune_orphan_commits()
        self.accounts = Accounts(self.data_dir)
        with self.accounts.exclusive():  # the CLI writes accounts.json (the only other writer) under it
            for stale in self.data_dir.glob(".tmp-*"):  # webhooks.json, redirects.json, ... of a killed server
                stale.unlink(missing_ok=True)
        self.locks = RepoLocks()
        self.cards: dict[str, dict[str, Any]] = {}  # README sha256 -> parsed front matter
        self.secret = self._server_secret()
        self.public_url = (self.config.public_url or "http://127.0.0.1").rstrip("/")
        self.webhooks = WebhookDispatcher(self)
        self.oauth = OAuthProvider(self)

    def _server_secret(self) -> bytes:
        """A per-data-dir key that signs LFS upload URLs (which carry no auth header)."""
        from registry.localhub.storage import atomic_write

        path = self.data_dir / ".secret"
        if not path.is_file():
            atomic_write(path, secrets.token_hex(32).encode())
        return path.read_bytes()

    def close(self) -> None:
        """Stop webhook delivery and release the data directory."""
        self.webhooks.close()
        self._lock_file.close()

    # -- auth ------------------------------------------------------------------------------
    def principal(self, req: Request) -> Principal | None:
        """Who is calling; None when anonymous.

        Raises:
            AuthRequired: for a token this hub does not know.
        """
        token = req.token
        if not token:
            return self._session_principal(req)
        who = self.accounts.authenticate(token)
        if who is None:
            raise AuthRequired("Invalid credentials in Authorization header")
        return who

    def _session_principal(self, req: Request) -> Principal | None:
        """The user signed in through the pages (`hub_session` cookie), for GET requests only: the
        cookie reads what its user may read and never writes (so no request forged by another
        site can change anything), and other sites cannot read the answers (no CORS headers)."""
        from registry.localhub.oauth import session_user

        if req.method != "GET" or "cookie" not in req.headers:
            return None
        user = session_user(self, req)
        if user is None:
            return None
        return Principal(name=user, orgs=self.accounts.orgs_of(user), role="read", token_name="session")

    def require_user(self, req: Request) -> Principal:
        who = self.principal(req)
        if who is None:
            raise AuthRequired(
                "Authorization header is required: pass a token (create one with `registry hub token create USER --data DIR --write`)",
            )
        return who

    def require_writer(self, req: Request, *, action: str) -> Principal:
        """The caller, when its token may write (not a read token): discussions, comments, webhooks and
        access requests change state, which the Hub reserves to write tokens.

        Raises:
            AuthRequired: no token.
            Forbidden: a read-only token (or an OAuth token without a write scope).
        """
        who = self.require_user(req)
        if who.role != "write":
            raise Forbidden(f"A read-only token cannot {action}; use a write token of {who.name!r}", code="Forbidden")
        return who

    def read_repo(self, req: Request, repo_type: str, repo_id: str) -> RepoStore:
        """The repo if it exists and the caller may see it, else 404 `RepoNotFound`."""
        try:
            store = self.storage.repo(repo_type, repo_id)
        except Moved as moved:  # a redirect to a private repo would tell its new name
            store = self.storage.repo(repo_type, moved.new_id)
            who = self.principal(req)
            if store.info.get("private") and (who is None or not who.can_read_private(moved.new_id.split("/")[0])):
                raise repo_not_found(repo_type, repo_id) from None
            raise
        if store.info.get("private"):
            who = self.principal(req)
            if who is None or not who.can_read_private(repo_id.split("/")[0]):
                raise repo_not_found(repo_type, repo_id)
        return store

    def write_repo(self, req: Request, repo_type: str, repo_id: str) -> tuple[RepoStore, Principal]:
        """The repo if the caller may write it: 401 without a token, 403 without write access."""
        who = self.require_user(req)
        store = self.read_repo(req, repo_type, repo_id)
        self.check_write(who, repo_id.split("/")[0])
        return store, who

    def contribute_repo(self, req: Request, repo_type: str, repo_id: str) -> tuple[RepoStore, Principal]:
        """The repo if the caller may open a pull request on it: a write token and read access."""
        who = self.require_user(req)
        store = self.read_repo(req, repo_type, repo_id)
        if who.role != "write":
            raise Forbidden(f"User {who.name!r} may not open a pull request with a read-only token; use a write token")
        return store, who

    @staticmethod
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

    @staticmethod
    def check_manage(who: Principal, namespace: str) -> None:
        """Create, delete or move a repo of `namespace`: write access, and `manage-repos` for OAuth tokens."""
        LocalHub.check_write(who, namespace)
        if not who.can_manage(namespace):
            raise Forbidden(
                f"This OAuth token of {who.name!r} was not granted the manage-repos scope; sign in again asking for it",
                code="Forbidden",
            )

    def lfs_usable(self, who: Principal | None, store: RepoStore, oid: str) -> bool:
        """Whether `who` may reference LFS object `oid` in `store`: it is stored, and it was uploaded to
        `store` or is an LFS file of a repo `who` may download (seen, and not gated to them); never
        just "some repo has it".

        The same work is done whether or not `oid` exists anywhere (every repo is asked, no early
        exit, the blob store last), so the answer time tells nothing about other repos' files.
        """
        from registry.localhub.gating import may_download

        usable = store.references_lfs(oid)
        for other in self.storage.iter_all_repos():
            if other.root == store.root:
                continue
            try:
                found, allowed = other.references_lfs(oid), may_download(self, who, other)
                usable |= found and allowed
            except (OSError, ValueError, KeyError):
                continue  # a repo being deleted
        return usable and self.storage.blobs.exists(oid)

    def can_see(self, who: Principal | None, store: RepoStore) -> bool:
        if not store.info.get("private"):
            return True
        return who is not None and who.can_read_private(store.repo_id.split("/")[0])
