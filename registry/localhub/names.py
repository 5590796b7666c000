"""Names and paths the embedded hub accepts, and the error that carries an HTTP status.

Every repo id, namespace and file path from a request passes through these validators before it
touches the filesystem, so traversal (`..`, absolute paths, `.git`) never reaches storage.
"""

from __future__ import annotations

import re

REPO_TYPES = ("model", "dataset", "space")
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?$")
# Namespaces that would collide with URL prefixes of the protocol.
RESERVED_NAMESPACES = frozenset({"api", "datasets", "spaces", "models", "lfs-upload", "settings", "oauth", "login"})


def web_path(repo_type: str, repo_id: str) -> str:
    """The path of a repo's web pages and git routes: `/{id}`, `/datasets/{id}`, `/spaces/{id}`."""
    return {"model": "", "dataset": "/datasets", "space": "/spaces"}[repo_type] + f"/{repo_id}"


class StorageError(Exception):
    """A refused operation. The kind of refusal is the subclass; the HTTP edge (and only it) maps
    kinds to statuses, through Starlette exception handlers built from `registry.localhub.edge.STATUS_OF`.

    Attributes:
        code: the Hub's error code (`X-Error-Code`), e.g. `RepoNotFound`; each kind has a default.
        repo_commit: the commit a file lookup was answered at (the edge sends it as `X-Repo-Commit`).
        fields: extra fields of the JSON error body (e.g. the existing repo's `url` on a 409).
    """

    default_code = "BadRequest"

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        repo_commit: str | None = None,
        fields: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.repo_commit = repo_commit
        self.fields = fields or {}


class InvalidInput(StorageError):
    """Malformed or unsafe input (400)."""


class AuthRequired(StorageError):
    """No valid credentials (401)."""

    default_code = ""


class Forbidden(StorageError):
    """Valid credentials without the right (403)."""

    default_code = "Forbidden"


class NotFound(StorageError):
    """A repo, revision, entry or object that does not exist or may not be seen (404)."""

    default_code = ""


class NotAllowed(StorageError):
    """A route that exists without this method (405)."""

    default_code = "MethodNotAllowed"


class TimedOut(StorageError):
    """The client stopped sending its request body (408)."""

    default_code = "RequestTimeout"


class Conflict(StorageError):
    """The target exists or changed (409)."""

    default_code = "Conflict"


class StaleParent(StorageError):
    """`parentCommit` is not the branch head (412)."""

    default_code = "PreconditionFailed"


class TooLarge(StorageError):
    """A body over its limit (413)."""

    default_code = "PayloadTooLarge"


class Unprocessable(StorageError):
    """Well-formed input that cannot be applied: a hash mismatch, a missing LFS object (422)."""

    default_code = "Unprocessable"


class NotSupported(StorageError):
    """A Hub feature this server does not implement (501)."""

    default_code = "NotSupported"


def validate_name(part: str, *, what: str) -> str:
    """Check one namespace or repo-name segment.

    Raises:
        StorageError: 400 when `part` is not a safe name (path traversal, odd characters).
    """
    if not _NAME_RE.match(part) or ".." in part or part.endswith(".git"):
        raise InvalidInput(
            f"Invalid {what} {part!r}: use letters, digits, '-', '_' and '.', at most 96 characters, "
            "no '..' and no '.git' suffix",
        )
    return part


def validate_repo_id(repo_id: str) -> tuple[str, str]:
    """Split and check `ns/name`.

    Raises:
        StorageError: 400 for a malformed or unsafe id.
    """
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise InvalidInput(f"Invalid repo id {repo_id!r}: expected 'namespace/name'")
    ns, name = validate_name(parts[0], what="namespace"), validate_name(parts[1], what="repo name")
    if ns in RESERVED_NAMESPACES:
        raise InvalidInput(f"Namespace {ns!r} is reserved; choose another one")
    return ns, name


def validate_path(path: str) -> str:
    """Check a file path inside a repo (relative, no traversal, no `.git` segment).

    Raises:
        StorageError: 400 for an unsafe path.
    """
    bad = (
        not path
        or len(path) > 1024
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(seg in ("", ".", "..", ".git") for seg in path.split("/"))
    )
    if bad:
        raise InvalidInput(
            f"Invalid path in repo {path!r}: paths are relative, '/'-separated, with no empty, '.', "
            "'..' or '.git' segments",
        )
    return path
