"""Who may do what, asked of the Hub: the one place the bot decides access.

- `Identity`: a token's user, its organisations and whether the token may write (`whoami`).
- `may_submit`: `POST /jobs` takes a CT only from someone who can write to it.
- `restricted`: which inputs are private or gated (their merge is published privately).
- `ReadCheck`: can a caller (a token, or anonymous) read these repos? `GET /jobs` shows a caller
  only the jobs whose repos it can read, asked of the Hub with the caller's own token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import HubAuthError, HubError, HubRepoNotFoundError

if TYPE_CHECKING:
    from registry.hub import HubClient

log = logging.getLogger(__name__)

# The org roles that may push (the Hub's `roleInOrg`); the embedded hub does not send one: members write.
_WRITE_ROLES = {"admin", "write", "contributor"}


@dataclass(frozen=True)
class Identity:
    """What `whoami` says about a token."""

    name: str
    orgs: tuple[str, ...] = ()  # organisations where the user may push
    token_writes: bool = True

    def can_write(self, namespace: str) -> bool:
        """Whether this token may push to repos of `namespace` (the user's own, or a write org)."""
        if not self.token_writes:
            return False
        return namespace.lower() == self.name.lower() or namespace.lower() in {o.lower() for o in self.orgs}


def identity(hub: HubClient) -> Identity:
    """The token's identity, from the Hub's `whoami`.

    Raises:
        HubAuthError: the Hub does not know the token.
    """
    with hub._errors("whoami"):
        raw = hub.api.whoami()
    orgs = tuple(
        str(o.get("name"))
        for o in raw.get("orgs") or []
        if isinstance(o, dict) and o.get("name") and (o.get("roleInOrg") in (None, *_WRITE_ROLES))
    )
    token = ((raw.get("auth") or {}).get("accessToken") or {}) if isinstance(raw.get("auth"), dict) else {}
    role = token.get("role") if isinstance(token, dict) else None
    return Identity(name=str(raw["name"]), orgs=orgs, token_writes=role != "read")


def may_submit(user: Identity, ct_repo: str) -> str | None:
    """None when `user` may submit `ct_repo` to the bot; else the one-line reason it may not."""
    owner = ct_repo.split("/")[0]
    if not user.token_writes:
        return f"this is a read-only token: submit {ct_repo} with a write token of {owner} or a member of it"
    if not user.can_write(owner):
        return (
            f"{user.name} cannot write to {ct_repo}: only its owner ({owner}) or a member of its organisation "
            "with write access may submit it"
        )
    return None


def restricted(hub: HubClient, repos: Iterable[str]) -> list[str]:
    """The repos (as the bot sees them) that are private or gated, in the given order.

    A repo the bot cannot see at all counts as restricted: it is not public.
    """
    out = []
    for repo in dict.fromkeys(repos):
        try:
            info = hub.model_info(repo)
        except HubRepoNotFoundError:
            out.append(repo)
            continue
        if getattr(info, "private", False) or getattr(info, "gated", False):
            out.append(repo)
    return out


def is_private_repo(hub: HubClient, repo: str, *, repo_type: str = "model") -> bool:
    """Whether `repo` is private (True also when the bot cannot tell: assume the narrower)."""
    try:
        return bool(getattr(hub.repo_info(repo, repo_type=repo_type), "private", True))
    except HubError:
        return True


@dataclass
class ReadCheck:
    """Can one caller read a repo? Answers are remembered for the life of this object (one request).

    Args:
        endpoint: the Hub.
        token: the caller's token; None: anonymous (never the bot's own token or a stored login).
        cache_dir: unused for reads of metadata; kept so the client never writes elsewhere.
    """

    endpoint: str | None
    token: str | None
    cache_dir: Path | None = None
    _seen: dict[str, bool] = field(default_factory=dict)
    _hub: HubClient | None = None

    def _client(self) -> HubClient:
        if self._hub is None:
            from registry.hub import HubClient

            # token False: anonymous, even where HF_TOKEN or a login is set (huggingface_hub's convention).
            self._hub = HubClient(endpoint=self.endpoint, token=self.token or False, cache_dir=self.cache_dir)  # type: ignore[arg-type]
        return self._hub

    def readable(self, repo: str) -> bool:
        """Whether the caller can see `repo` and, when it is gated, has been granted access."""
        if repo not in self._seen:
            self._seen[repo] = self._ask(repo)
        return self._seen[repo]

    def _ask(self, repo: str) -> bool:
        hub = self._client()
        try:
            info = hub.model_info(repo)
            if getattr(info, "gated", False):
                with hub._errors("auth check", repo_id=repo):
                    hub.api.auth_check(repo)
        except (HubRepoNotFoundError, HubAuthError):
            return False
        except HubError as exc:
            log.info("read check of %s failed: %s (hidden)", repo, exc)
            return False
        except Exception:  # noqa: BLE001 (a gated repo's refusal from auth_check: not readable)
            return False
        return True

    def all_readable(self, repos: Iterable[str]) -> bool:
        return all(self.readable(repo) for repo in repos if repo)
