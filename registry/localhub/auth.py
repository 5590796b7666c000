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
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.localhub.names import RESERVED_NAMESPACES, StorageError, validate_name
from registry.localhub.storage import atomic_write_json, now_iso, read_json

TOKEN_PREFIX = "hf_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    name: str
    orgs: tuple[str, ...]
    role: str  # "read" | "write"
    token_name: str

    def namespaces(self) -> set[str]:
        return {self.name, *self.orgs}

    def canonical(self, namespace: str) -> str | None:
        """`namespace` in its stored casing when it is one of ours (names are case-insensitive)."""
        return next((n for n in self.namespaces() if n.lower() == namespace.lower()), None)

    def can_write(self, namespace: str) -> bool:
        return self.role == "write" and self.canonical(namespace) is not None

    def can_read_private(self, namespace: str) -> bool:
        return self.canonical(namespace) is not None


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
        for value, what in ((user, "user name"), (org, "organisation name")):
            if value is None:
                continue
            try:
                validate_name(value, what=what)
            except StorageError as exc:
                raise ValueError(str(exc)) from None
            if value in RESERVED_NAMESPACES:
                raise ValueError(f"{what.capitalize()} {value!r} is reserved; choose another one")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._locked() as data:
            # Names are case-insensitive, as on the Hub: `Alice` is the existing `alice`.
            user = _canonical(user, data["users"], data["orgs"])
            org = _canonical(org, data["orgs"], data["users"]) if org is not None else None
            if user in data["orgs"] or (org is not None and org in data["users"]) or user == org:
                raise ValueError(f"{user!r} or {org!r} is already used by an organisation/user of the other kind")
            users, orgs, tokens = data["users"], data["orgs"], data["tokens"]
            users.setdefault(user, {"createdAt": now_iso(), "orgs": []})
            if org is not None:
                orgs.setdefault(org, {"createdAt": now_iso(), "members": []})
                if user not in orgs[org]["members"]:
                    orgs[org] = {**orgs[org], "members": [*orgs[org]["members"], user]}
                if org not in users[user]["orgs"]:
                    users[user] = {**users[user], "orgs": [*users[user]["orgs"], org]}
            tokens[hash_token(token)] = {
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
        return Principal(name=rec["user"], orgs=tuple(user["orgs"]), role=rec["role"], token_name=rec["name"])

    def orgs_of(self, user: str) -> tuple[str, ...]:
        """The organisations `user` belongs to (empty for an unknown user)."""
        return tuple(self._load()["users"].get(user, {}).get("orgs", []))


def _canonical(name: str, *tables: dict[str, Any]) -> str:
    """The stored casing of `name` in any of `tables`, else `name` itself."""
    return next((n for table in tables for n in table if n.lower() == name.lower()), name)
