"""Users, organisations and access tokens of the embedded hub.

Stored in `<data>/accounts.json`. Tokens are stored as their sha256 only: they are 256-bit
random strings, so a fast hash cannot be brute-forced and a slow KDF would add nothing. The
plain token is shown once, when created, and never logged. The CLI (`registry hub token
create`) may write this file while a server runs, so writes take an exclusive file lock and
readers reload the file when its mtime changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.localhub.names import RESERVED_NAMESPACES, StorageError, validate_name
from registry.localhub.storage import atomic_write_json, now_iso, read_json

TOKEN_PREFIX = "hf_"
OAUTH_TOKEN_PREFIX = "hf_oauth_"
WRITE_SCOPES = ("write-repos", "manage-repos")
# scrypt (RFC 7914) for passwords, which, unlike tokens, a person picks: ~16 MiB and ~50 ms a try.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    name: str
    orgs: tuple[str, ...]
    role: str  # "read" | "write"
    token_name: str
    # OAuth tokens: the scopes granted at sign-in (`read-repos`, `write-repos`, `manage-repos`, ...);
    # None for access tokens, whose role alone decides.
    scopes: frozenset[str] | None = None

    def namespaces(self) -> set[str]:
        return {self.name, *self.orgs}

    def canonical(self, namespace: str) -> str | None:
        """`namespace` in its stored casing when it is one of ours (names are case-insensitive)."""
        return next((n for n in self.namespaces() if n.lower() == namespace.lower()), None)

    def _scoped(self, *any_of: str) -> bool:
        return self.scopes is None or not self.scopes.isdisjoint(any_of)

    def can_write(self, namespace: str) -> bool:
        return self.role == "write" and self.canonical(namespace) is not None and self._scoped(*WRITE_SCOPES)

    def can_manage(self, namespace: str) -> bool:
        """Create, delete or move repos of `namespace` (OAuth tokens need `manage-repos`)."""
        return self.can_write(namespace) and self._scoped("manage-repos")

    def can_read_private(self, namespace: str) -> bool:
        return self.canonical(namespace) is not None and self._scoped("read-repos", *WRITE_SCOPES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """Read and change `accounts.json` (users, orgs, hashed tokens)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "accounts.json"
        self._lock_path = data_dir / ".accounts.lock"
        self._cache: tuple[float, dict[str, Any]] | None = None

    def _load(self) -> dict[str, Any]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {"users": {}, "orgs": {}, "tokens": {}}
        if self._cache is None or self._cache[0] != mtime:
            self._cache = (mtime, read_json(self.path))
        return self._cache[1]

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock the CLI takes to write `accounts.json` (no write of it is in flight meanwhile)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._cache = None
            data = self._load()
            data = {k: dict(v) for k, v in data.items()}
            yield data
            atomic_write_json(self.path, data)
            self._cache = None

    def create_token(self, user: str, *, org: str | None = None, write: bool = False, name: str = "cli") -> str:
        """Create `user` (and `org`, with the user as member) if needed; return a new token.

        Args:
            user: the username.
            org: an organisation to create or join.
            write: a write token (else read-only).
            name: a label shown by whoami.

        Returns:
            The plain token (only ever returned here).

        Raises:
            ValueError: for an invalid user or org name.
        """
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._locked() as data:
            user = _ensure_user(data, user, org)
            data["tokens"][hash_token(token)] = {
                "user": user,
                "role": "write" if write else "read",
                "name": name,
                "createdAt": now_iso(),
            }
        return token

    def authenticate(self, token: str) -> Principal | None:
        """The principal for `token`, or None when it is unknown."""
        data = self._load()
        rec = data["tokens"].get(hash_token(token))
        if rec is None:
            return None
        user = data["users"].get(rec["user"], {"orgs": []})
        if rec.get("expiresAt") is not None and rec["expiresAt"] < time.time():
            return None
        scopes = frozenset(rec["scopes"]) if "scopes" in rec else None
        return Principal(
            name=rec["user"], orgs=tuple(user["orgs"]), role=rec["role"], token_name=rec["name"], scopes=scopes
        )

    # -- passwords (sign-in pages, OAuth) --------------------------------------------------------
    def set_password(self, user: str, password: str, *, org: str | None = None) -> str:
        """Create `user` if needed (joining `org`) and set its password; returns the stored name.

        Raises:
            ValueError: for an invalid name or a password shorter than 8 characters.
        """
        if len(password) < 8:
            raise ValueError("the password must have at least 8 characters")
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
        with self._locked() as data:
            user = _ensure_user(data, user, org)
            data["users"][user] = {**data["users"][user], "password": f"{salt.hex()}${digest.hex()}"}
        return user

    def check_password(self, user: str, password: str) -> str | None:
        """The stored name of `user` when `password` is its password, else None (same cost either way)."""
        users = self._load()["users"]
        name = _canonical(user, users)
        stored = users.get(name, {}).get("password", "00" * 16 + "$" + "00" * 64)
        salt, _, want = stored.partition("$")
        got = hashlib.scrypt(password.encode()[:1024], salt=bytes.fromhex(salt), **_SCRYPT)
        ok = hmac.compare_digest(got.hex(), want) and "password" in users.get(name, {})
        return name if ok else None

    def user_record(self, user: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = self._load()["users"].get(user)
        return record

    # -- OAuth apps and their tokens -------------------------------------------------------------
    def create_oauth_app(self, name: str, *, redirect_uris: list[str], scopes: list[str]) -> tuple[str, str]:
        """Register an OAuth app; returns (client id, client secret). Only the secret's hash is kept."""
        client_id = str(uuid.uuid4())
        secret = secrets.token_urlsafe(32)
        with self._locked() as data:
            apps = data.setdefault("oauthApps", {})
            apps[client_id] = {
                "name": name,
                "secretHash": hash_token(secret),
                "redirectUris": list(redirect_uris),
                "scopes": list(scopes),
                "createdAt": now_iso(),
            }
        return client_id, secret

    def oauth_app(self, client_id: str) -> dict[str, Any] | None:
        app: dict[str, Any] | None = self._load().get("oauthApps", {}).get(client_id)
        return app

    def issue_oauth_token(self, user: str, *, scopes: list[str], app: str, expires_in: int) -> str:
        """A bearer token for `user` limited to `scopes`, expiring in `expires_in` seconds."""
        token = OAUTH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        with self._locked() as data:
            data["tokens"] = {h: t for h, t in data["tokens"].items() if t.get("expiresAt", now + 1) > now}
            data["tokens"][hash_token(token)] = {
                "user": user,
                "role": "write" if not set(scopes).isdisjoint(WRITE_SCOPES) else "read",
                "name": f"oauth:{app}",
                "scopes": list(scopes),
                "expiresAt": now + expires_in,
                "createdAt": now_iso(),
            }
        return token

    def revoke(self, token: str) -> None:
        with self._locked() as data:
            data["tokens"].pop(hash_token(token), None)

    def orgs_of(self, user: str) -> tuple[str, ...]:
        """The organisations `user` belongs to (empty for an unknown user)."""
        return tuple(self._load()["users"].get(user, {}).get("orgs", []))


def _ensure_user(data: dict[str, Any], user: str, org: str | None) -> str:
    """Create `user` (and `org`, with the user as member) in `data` if needed; the user's stored name.

    Raises:
        ValueError: for an invalid or reserved name, or a name used by the other kind.
    """
    for value, what in ((user, "user name"), (org, "organisation name")):
        if value is None:
            continue
        try:
            validate_name(value, what=what)
        except StorageError as exc:
            raise ValueError(str(exc)) from None
        if value in RESERVED_NAMESPACES:
            raise ValueError(f"{what.capitalize()} {value!r} is reserved; choose another one")
    # Names are case-insensitive, as on the Hub: `Alice` is the existing `alice`.
    user = _canonical(user, data["users"], data["orgs"])
    org = _canonical(org, data["orgs"], data["users"]) if org is not None else None
    if user in data["orgs"] or (org is not None and org in data["users"]) or user == org:
        raise ValueError(f"{user!r} or {org!r} is already used by an organisation/user of the other kind")
    users, orgs = data["users"], data["orgs"]
    users.setdefault(user, {"createdAt": now_iso(), "orgs": []})
    if org is not None:
        orgs.setdefault(org, {"createdAt": now_iso(), "members": []})
        if user not in orgs[org]["members"]:
            orgs[org] = {**orgs[org], "members": [*orgs[org]["members"], user]}
        if org not in users[user]["orgs"]:
            users[user] = {**users[user], "orgs": [*users[user]["orgs"], org]}
    return user


def _canonical(name: str, *tables: dict[str, Any]) -> str:
    """The stored casing of `name` in any of `tables`, else `name` itself."""
    return next((n for table in tables for n in table if n.lower() == name.lower()), name)
