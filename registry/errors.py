"""Every error Mergeling raises on purpose.

Each class also inherits the matching builtin, so callers can catch at the detail they need
(`except ValueError` still works), and carries typed fields that locate the problem (declared per
class below, all optional keyword arguments). Messages say what failed, the offending value, and
what to do instead. The CLI maps `RegistryError` to a one-line message on stderr and exit code 1
(see `registry.cli.main`).
"""

from __future__ import annotations

import os
from typing import Any

# A path field takes a str or a Path (as callers have them) and stores the str.
PathLike = str | os.PathLike[str]


def _path(value: PathLike | None) -> str | None:
    return None if value is None else os.fspath(value)


class RegistryError(Exception):
    """Base class of every expected, user-facing failure.

    Subclasses declare their fields as keyword-only constructor arguments and typed attributes.
    Keywords a class does not declare are still accepted (callers written before the fields were
    declared keep working) and kept in `fields`; declare a field before reading it as an attribute.
    """

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self._extra = extra
        for name, value in extra.items():
            setattr(self, name, value)

    @property
    def fields(self) -> dict[str, Any]:
        """The fields that locate the problem: the declared ones that are set, then any extras."""
        declared = {
            name: getattr(self, name)
            for cls in type(self).__mro__
            for name in getattr(cls, "__annotations__", {})
            if name not in ("message", "_extra") and getattr(self, name, None) is not None
        }
        return {**declared, **self._extra}

    def __str__(self) -> str:
        return self.message


# -- recipes and parameters -----------------------------------------------------------------
class RecipeError(RegistryError, ValueError):
    """A recipe file or override is invalid."""

    path: str | None
    field: str | None
    value: Any

    def __init__(
        self, message: str, *, path: PathLike | None = None, field: str | None = None, value: Any = None, **extra: Any
    ) -> None:
        super().__init__(message, **extra)
        self.path, self.field, self.value = _path(path), field, value


class UnknownMethodError(RecipeError):
    """A merge method id that does not exist."""

    method: str | None
    valid: tuple[str, ...]

    def __init__(
        self, message: str, *, method: str | None = None, valid: tuple[str, ...] | list[str] = (), **rest: Any
    ) -> None:
        super().__init__(message, **rest)
        self.method, self.valid = method, tuple(valid)


class UnsupportedFeatureError(RecipeError):
    """A mergekit feature Mergeling does not implement (refused by name, never ignored)."""


# -- checkpoints and merging ----------------------------------------------------------------
class CheckpointError(RegistryError, OSError):
    """An input checkpoint cannot be read safely (truncated, lying header, pickle)."""

    path: str | None
    tensor: str | None
    dtype: str | None
    reason: str | None

    def __init__(
        self,
        message: str,
        *,
        path: PathLike | None = None,
        tensor: str | None = None,
        dtype: str | None = None,
        reason: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message, **extra)
        self.path, self.tensor, self.dtype, self.reason = _path(path), tensor, dtype, reason


class CompatibilityError(RegistryError, ValueError):
    """Inputs cannot be merged together."""

    model: str | None
    tensor: str | None
    reason: str | None

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        tensor: str | None = None,
        reason: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message, **extra)
        self.model, self.tensor, self.reason = model, tensor, reason


class OutputExistsError(RegistryError, FileExistsError):
    """The output path already exists."""

    path: str | None

    def __init__(self, message: str, *, path: PathLike | None = None, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.path = _path(path)


class MergeError(RegistryError, RuntimeError):
    """A merge failed while computing."""

    tensor: str | None
    method: str | None
    device: str | None

    def __init__(
        self,
        message: str,
        *,
        tensor: str | None = None,
        method: str | None = None,
        device: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message, **extra)
        self.tensor, self.method, self.device = tensor, method, device


# -- the Hub and the embedded server --------------------------------------------------------
class HubError(RegistryError, OSError):
    """A Hub call failed."""

    repo_id: str | None
    status: int | None
    endpoint: str | None
    revision: str | None
    path: str | None

    def __init__(
        self,
        message: str,
        *,
        repo_id: str | None = None,
        status: int | None = None,
        endpoint: str | None = None,
        revision: str | None = None,
        path: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message, **extra)
        self.repo_id, self.status, self.endpoint = repo_id, status, endpoint
        self.revision, self.path = revision, path


class HubRepoNotFoundError(HubError):
    """The repository does not exist, or is private to someone else."""


class HubRevisionNotFoundError(HubError):
    """The repository exists but the revision does not (`revision`)."""


class HubAuthError(HubError, PermissionError):
    """Missing, invalid or insufficient token."""


class HubConflictError(HubError):
    """A concurrent write moved the branch (parent commit mismatch) or the entry already exists."""


class HubEntryNotFoundError(HubError, FileNotFoundError):
    """The repository and revision exist but the file or folder (`path`) does not."""


class HubUnavailableError(HubError, ConnectionError):
    """The Hub endpoint cannot be reached (server down, wrong URL, offline mode)."""


class HubBadRequestError(HubError, ValueError):
    """The client refused the call before sending it (a malformed repo id)."""


# -- the catalog (registry entries) ---------------------------------------------------------
class CatalogError(RegistryError, ValueError):
    """An entry cannot be added, found or verified."""

    entry_id: str | None
    repo_id: str | None
    reason: str | None

    def __init__(
        self,
        message: str,
        *,
        entry_id: str | None = None,
        repo_id: str | None = None,
        reason: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message, **extra)
        self.entry_id, self.repo_id, self.reason = entry_id, repo_id, reason


# -- evaluation and the lab -----------------------------------------------------------------
class EvaluationError(RegistryError, RuntimeError):
    """Evaluation cannot run (missing data, unknown task, bad suite)."""

    task: str | None
    suite: str | None

    def __init__(self, message: str, *, task: str | None = None, suite: str | None = None, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.task, self.suite = task, suite


class DataNotFoundError(EvaluationError, FileNotFoundError):
    """Evaluation or lab data is missing."""

    path: str | None

    def __init__(self, message: str, *, path: PathLike | None = None, **rest: Any) -> None:
        super().__init__(message, **rest)
        self.path = _path(path)


class LabError(RegistryError, RuntimeError):
    """The tiny-model lab cannot build what was asked."""


# -- local services -------------------------------------------------------------------------
class PortInUseError(RegistryError, OSError):
    """A service (hub, bot, Space) cannot listen where it was asked to."""

    host: str | None
    port: int | None

    def __init__(self, message: str, *, host: str | None = None, port: int | None = None, **rest: Any) -> None:
        super().__init__(message, **rest)
        self.host, self.port = host, port
