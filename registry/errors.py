"""Every error Mergeling raises on purpose.

Each class also inherits the matching builtin, so callers can catch at the detail they need
(`except ValueError` still works), and carries the fields that locate the problem. Messages say
what failed, the offending value, and what to do instead. The CLI maps `RegistryError` to a
one-line message on stderr and exit code 1 (see `registry.cli.main`).
"""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """Base class of every expected, user-facing failure."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return self.message


# -- recipes and parameters -----------------------------------------------------------------
class RecipeError(RegistryError, ValueError):
    """A recipe file or override is invalid. Fields: `path`, `field`, `value`."""


class UnknownMethodError(RecipeError):
    """A merge method id that does not exist. Fields: `method`, `valid`."""


class UnsupportedFeatureError(RecipeError):
    """A mergekit feature Mergeling does not implement (refused by name, never ignored)."""


# -- checkpoints and merging ----------------------------------------------------------------
class CheckpointError(RegistryError, OSError):
    """An input checkpoint cannot be read safely (truncated, lying header, pickle). Fields: `path`."""


class CompatibilityError(RegistryError, ValueError):
    """Inputs cannot be merged together. Fields: `model`, `tensor`, `reason`."""


class OutputExistsError(RegistryError, FileExistsError):
    """The output path already exists. Fields: `path`."""


class MergeError(RegistryError, RuntimeError):
    """A merge failed while computing. Fields: `tensor`, `method`."""


# -- the Hub and the embedded server --------------------------------------------------------
class HubError(RegistryError, OSError):
    """A Hub call failed. Fields: `repo_id`, `status`, `endpoint`."""


class HubRepoNotFoundError(HubError):
    """The repository does not exist, or is private to someone else."""


class HubRevisionNotFoundError(HubError):
    """The repository exists but the revision does not."""


class HubAuthError(HubError, PermissionError):
    """Missing, invalid or insufficient token."""


class HubConflictError(HubError):
    """A concurrent write moved the branch (parent commit mismatch) or the entry already exists."""


class HubEntryNotFoundError(HubError, FileNotFoundError):
    """The repository and revision exist but the file or folder does not. Fields: `path`."""


class HubUnavailableError(HubError, ConnectionError):
    """The Hub endpoint cannot be reached (server down, wrong URL, offline mode)."""


class HubBadRequestError(HubError, ValueError):
    """The client refused the call before sending it (a malformed repo id). Fields: `repo_id`."""


# -- the catalog (registry entries) ---------------------------------------------------------
class CatalogError(RegistryError, ValueError):
    """An entry cannot be added, found or verified. Fields: `entry_id`, `repo_id`."""


# -- evaluation and the lab -----------------------------------------------------------------
class EvaluationError(RegistryError, RuntimeError):
    """Evaluation cannot run (missing data, unknown task, bad suite). Fields: `task`, `suite`."""


class DataNotFoundError(EvaluationError, FileNotFoundError):
    """Evaluation or lab data is missing. Fields: `path`."""


class LabError(RegistryError, RuntimeError):
    """The tiny-model lab cannot build what was asked."""
