"""The embedded hub application: configuration, authentication, access checks and routing.

`LocalHub(data_dir)` holds the state; `registry.localhub.edge` routes requests to the route
modules (`routes_repos`, `routes_files`, `lfs`, `discussions`, `webhooks`), which ask
`registry.localhub.access` (through this object) who may do what.
"""

from __future__ import annotations

import fcntl
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.localhub import access
from registry.localhub.auth import Accounts, Principal
from registry.localhub.commits import RepoLocks
from registry.localhub.http import Request
from registry.localhub.oauth import OAuthProvider
from registry.localhub.storage import RepoStore, Storage
from registry.localhub.webhooks import WebhookDispatcher

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
        webhook_backoff_s: the first retry delay's ceiling, doubled on each retry (up to 60 s), with full
            jitter (`registry.retry.Backoff`): failures of every kind are retried alike.
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

    # -- access: the rules live in `registry.localhub.access`; these only forward ----------------
    def principal(self, req: Request) -> Principal | None:
        return access.principal(self, req)

    def require_user(self, req: Request) -> Principal:
        return access.require_user(self, req)

    def require_writer(self, req: Request, *, action: str) -> Principal:
        return access.require_writer(self, req, action=action)

    def read_repo(self, req: Request, repo_type: str, repo_id: str) -> RepoStore:
        return access.read_repo(self, req, repo_type, repo_id)

    def write_repo(self, req: Request, repo_type: str, repo_id: str) -> tuple[RepoStore, Principal]:
        return access.write_repo(self, req, repo_type, repo_id)

    def contribute_repo(self, req: Request, repo_type: str, repo_id: str) -> tuple[RepoStore, Principal]:
        return access.contribute_repo(self, req, repo_type, repo_id)

    @staticmethod
    def check_write(who: Principal, namespace: str) -> None:
        access.check_write(who, namespace)

    @staticmethod
    def check_manage(who: Principal, namespace: str) -> None:
        access.check_manage(who, namespace)

    def lfs_usable(self, who: Principal | None, store: RepoStore, oid: str) -> bool:
        return access.lfs_usable(self, who, store, oid)

    def can_see(self, who: Principal | None, store: RepoStore) -> bool:
        return access.may_see(who, store)
