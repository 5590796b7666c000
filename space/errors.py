"""Errors the Space raises on purpose; the app shows their one-line message (never a traceback)."""

from __future__ import annotations

from registry.errors import RegistryError


class SpaceError(RegistryError):
    """Base of the Space's expected failures."""


class UnsupportedModelError(SpaceError, ValueError):
    """A repo the Space cannot run: not a causal LM, or not a Llama-family model. Fields: `repo_id`."""


class ModelTooLargeError(SpaceError, MemoryError):
    """A model that does not fit the memory the Space may use. Fields: `repo_id`, `needed`, `available`."""


class PromptError(SpaceError, ValueError):
    """An empty prompt, or one that leaves no room for the new tokens in the context."""


class BotUnavailableError(SpaceError, ConnectionError):
    """The bot's HTTP API cannot be reached, or no bot URL is configured. Fields: `url`."""


class BotRequestError(SpaceError):
    """The bot refused a request. Fields: `status`, `reasons`."""


class MergeTooLargeError(SpaceError, ValueError):
    """A merge too big to run inside the Space; the bot should run it. Fields: `parameters`, `limit`."""


class SignInRequiredError(SpaceError, PermissionError):
    """An action that runs as the visitor (Submit) by an anonymous visitor."""
