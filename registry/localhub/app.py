"""The embedded hub application: configuration, authentication, access checks and routing.

`LocalHub(data_dir)` is a callable `Request -> Response`; `registry.localhub.http.HttpServer`
serves it. Routes live in modules by capability (`routes_repos`, `routes_files`, `lfs`,
`discussions`, `webhooks`); this module only decides who may do what and where a path goes.
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
from registry.localhub.http import HttpError, Request, Response
from registry.localhub.names import REPO_TYPES, StorageError, validate_repo_id
from registry.localhub.storage import RepoStore, Storage

XET_DISABLED_HEADER = "X-Mergeling-Xet"
XET_DISABLED_ORIGIN = "mergeling-no-xet"


@dataclass(frozen=True)
class HubConfig:
    """Limits and policies of one server.

    Attributes:
        lfs_threshold: files at least this big are announced as "lfs" at preupload, but only to
            clients that signalled Xet is off (see `client_disabled_xet`); others get "regular".
        max_commit_bytes: the largest NDJSON commit body accepted (inline base64 content).
        max_json_bytes: the largest JSON body of any other API call.
        max_lfs_bytes: the largest single LFS object.
        webhook_attempts: delivery tries per event and webhook.
        webhook_backoff_s: first retry delay; doubled on each retry.
    """

    lfs_threshold: int = 10 * 1024 * 1024
    max_commit_bytes: int = 2 * 1024**3
    max_json_bytes: int = 16 * 1024 * 1024
    max_lfs_bytes: int = 64 * 1024**3
    webhook_attempts: int = 4
    webhook_backoff_s: float = 0.5


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
    return bool(match) and (int(match.group(1)), int(match.group(2))) < (1, 20)


class LocalHub:
    """A Hub-compatible application over one data directory.

    Args:
        data_dir: where repos, blobs, accounts and webhooks live (created if missing).
        config: limits and policies.

    Raises:
        OSError: when another server already serves `data_dir`.
    """

    def __init__(self, data_dir: Path, *, config: HubConfig | None = None) -> None:
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
        # Uploads interrupted by a crash leave partial files here; we hold the lock, so none is live.
        for stale in self.storage.blobs.tmp.iterdir():
            stale.unlink(missing_ok=True)
        self.accounts = Accounts(self.data_dir)
        self.locks = RepoLocks()
        self.secret = self._server_secret()
        self.webhooks = WebhookDispatcher(self)

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
            HttpError: 401 for a token this hub does not know.
        """
        token = req.token
        if not token:
            return None
        who = self.accounts.authenticate(token)
        if who is None:
            raise HttpError("Invalid credentials in Authorization header", status=401)
        return who

    def require_user(self, req: Request) -> Principal:
        who = self.principal(req)
        if who is None:
            raise HttpError(
                "Authorization header is required: pass a token (create one with `registry hub token create USER --data DIR --write`)",
                status=401,
            )
        return who

    def read_repo(self, req: Request, repo_type: str, repo_id: str) -> RepoStore:
        """The repo if it exists and the caller may see it, else 404 `RepoNotFound`."""
        store = self.storage.repo(repo_type, repo_id)
        if store.info.get("private"):
            who = self.principal(req)
            if who is None or not who.can_read_private(repo_id.split("/")[0]):
                raise StorageError(
                    f"Repository not found: {repo_type} {repo_id!r}. It may be private: pass a token with access",
                    status=404,
                    code="RepoNotFound",
                )
        return store

    def write_repo(self, req: Request, repo_type: str, repo_id: str) -> tuple[RepoStore, Principal]:
        """The repo if the caller may write it: 401 without a token, 403 without write access."""
        who = self.require_user(req)
        store = self.read_repo(req, repo_type, repo_id)
        self.check_write(who, repo_id.split("/")[0])
        return store, who

    @staticmethod
    def check_write(who: Principal, namespace: str) -> None:
        if not who.can_write(namespace):
            why = "a read-only token" if who.role != "write" else f"no membership in {namespace!r}"
            raise HttpError(
                f"User {who.name!r} may not write to namespace {namespace!r} ({why}); use a write token of "
                f"{namespace!r} or one of its members",
                status=403,
                code="Forbidden",
            )

    def can_see(self, who: Principal | None, store: RepoStore) -> bool:
        if not store.info.get("private"):
            return True
        return who is not None and who.can_read_private(store.repo_id.split("/")[0])

    # -- routing ---------------------------------------------------------------------------
    def __call__(self, req: Request) -> Response:
        from registry.localhub import lfs, routes_files

        s = req.segments
        # Like the Hub: a token that is sent must be valid, even for reads that need none.
        self.principal(req)
        if s and s[0] == "api":
            return self._api(req, s[1:])
        if s and s[0] == "lfs-upload" and len(s) == 2 and req.method == "PUT":
            return lfs.upload(self, req, oid=s[1])
        repo_type = "model"
        if s and s[0] in ("datasets", "spaces") and len(s) > 1:
            repo_type, s = s[0][:-1], s[1:]
        if len(s) >= 5 and s[1].endswith(".git") and s[2:4] == ["info", "lfs"]:
            repo_id = f"{s[0]}/{s[1][:-4]}"
            if s[4:] == ["batch"] or s[4:] == ["objects", "batch"]:
                return lfs.batch(self, req, repo_type, repo_id)
            if s[4:] == ["objects", "verify"] or s[4:] == ["verify"]:
                return lfs.verify(self, req, repo_type, repo_id)
        if len(s) >= 5 and s[2] == "resolve" and req.method in ("GET", "HEAD"):
            return routes_files.resolve(self, req, repo_type, f"{s[0]}/{s[1]}", revision=s[3], path="/".join(s[4:]))
        raise HttpError(f"No route for {req.method} /{'/'.join(s)}", status=404)

    def _api(self, req: Request, s: list[str]) -> Response:
        from registry.localhub import discussions, routes_files, routes_repos, webhooks

        head = s[0] if s else ""
        if head == "whoami-v2":
            return routes_repos.whoami(self, req)
        if head == "validate-yaml":
            return routes_files.validate_yaml(self, req)
        if head == "repos" and len(s) == 2:
            return routes_repos.repos_action(self, req, s[1])
        if head == "agent-harnesses":
            return Response.json({"standardEnvVars": [], "harnesses": {}})
        if head == "telemetry":
            return Response.json({})
        if head == "settings" and len(s) >= 2 and s[1] == "webhooks":
            return webhooks.route(self, req, s[2:])
        if head in ("models", "datasets", "spaces") and head[:-1] in REPO_TYPES:
            repo_type = head[:-1]
            if len(s) == 1 and req.method == "GET":
                return routes_repos.list_repos(self, req, repo_type)
            if len(s) >= 3:
                repo_id = f"{s[1]}/{s[2]}"
                validate_repo_id(repo_id)
                rest = s[3:]
                if rest and rest[0] == "discussions":
                    return discussions.route(self, req, repo_type, repo_id, rest[1:])
                return self._repo_api(req, repo_type, repo_id, rest)
        raise HttpError(f"No route for {req.method} /api/{'/'.join(s)}", status=404)

    def _repo_api(self, req: Request, repo_type: str, repo_id: str, rest: list[str]) -> Response:
        from registry.localhub import routes_files, routes_repos

        action = rest[0] if rest else ""
        tail = "/".join(rest[1:])
        m = req.method
        table: dict[tuple[str, str], Any] = {
            ("", "GET"): lambda: routes_repos.info(self, req, repo_type, repo_id, revision=None),
            ("revision", "GET"): lambda: routes_repos.info(self, req, repo_type, repo_id, revision=tail),
            ("tree", "GET"): lambda: routes_files.tree(
                self, req, repo_type, repo_id, revision=rest[1] if len(rest) > 1 else "main", path="/".join(rest[2:])
            ),
            ("paths-info", "POST"): lambda: routes_files.paths_info(self, req, repo_type, repo_id, revision=tail),
            ("preupload", "POST"): lambda: routes_files.preupload(self, req, repo_type, repo_id, revision=tail),
            ("commit", "POST"): lambda: routes_files.commit(self, req, repo_type, repo_id, revision=tail),
            ("refs", "GET"): lambda: routes_repos.refs(self, req, repo_type, repo_id),
            ("commits", "GET"): lambda: routes_repos.commits(self, req, repo_type, repo_id, revision=tail or "main"),
            ("branch", "POST"): lambda: routes_repos.create_branch(self, req, repo_type, repo_id, branch=tail),
            ("branch", "DELETE"): lambda: routes_repos.delete_ref(
                self, req, repo_type, repo_id, kind="heads", name=tail
            ),
            ("tag", "POST"): lambda: routes_repos.create_tag(self, req, repo_type, repo_id, revision=tail),
            ("tag", "DELETE"): lambda: routes_repos.delete_ref(self, req, repo_type, repo_id, kind="tags", name=tail),
            ("settings", "PUT"): lambda: routes_repos.settings(self, req, repo_type, repo_id),
        }
        if action in ("xet-read-token", "xet-write-token"):
            raise HttpError(
                "This hub does not support Xet; set HF_HUB_DISABLE_XET=1 (registry.hub.HubClient does this for you)",
                status=501,
                code="XetNotSupported",
            )
        handler = table.get((action, m))
        if handler is None:
            raise HttpError(f"No route for {m} /api/{repo_type}s/{repo_id}/{'/'.join(rest)}", status=404)
        return handler()
