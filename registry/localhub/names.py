"""Names and paths the embedded hub accepts, and the error that carries an HTTP status.

Every repo id, namespace and file path from a request passes through these validators before it
touches the filesystem, so traversal (`..`, absolute paths, `.git`) never reaches storage.
"""

from __future__ import annotations

import re

REPO_TYPES = ("model", "dataset", "space")
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?$")
# Namespaces that would collide with URL prefixes of the protocol.
RESERVED_NAMESPACES = frozenset({"api", "datasets", "spaces", "models", "lfs-upload", "settings"})


class StorageError(Exception):
    """A storage-level failure the HTTP layer maps to an error code.

    Attributes:
        status: the HTTP status to answer.
        code: the `X-Error-Code` value; 400, 409 and 413 get a generic one when none is given.
    """

    def __init__(self, message: str, *, status: int = 400, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code or {400: "BadRequest", 413: "PayloadTooLarge", 409: "Conflict"}.get(status, "")


def validate_name(part: str, *, what: str) -> str:
    """Check one namespace or repo-name segment.

    Raises:
        StorageError: 400 when `part` is not a safe name (path traversal, odd characters).
    """
    if not _NAME_RE.match(part) or ".." in part or part.endswith(".git"):
        raise StorageError(
            f"Invalid {what} {part!r}: use letters, digits, '-', '_' and '.', at most 96 characters, "
            "no '..' and no '.git' suffix",
            status=400,
        )
    return part


def validate_repo_id(repo_id: str) -> tuple[str, str]:
    """Split and check `ns/name`.

    Raises:
        StorageError: 400 for a malformed or unsafe id.
    """
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise StorageError(f"Invalid repo id {repo_id!r}: expected 'namespace/name'", status=400)
    ns, name = validate_name(parts[0], what="namespace"), validate_name(parts[1], what="repo name")
    if ns in RESERVED_NAMESPACES:
        raise StorageError(f"Namespace {ns!r} is reserved; choose another one", status=400)
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
        raise StorageError(
            f"Invalid path in repo {path!r}: paths are relative, '/'-separated, with no empty, '.', "
            "'..' or '.git' segments",
            status=400,
        )
    return path
