"""What every tab shares: the `gr.Error` edge, the visitor's token, the `(all)` choice."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from registry.errors import RegistryError
from space.config import SpaceConfig
from space.services import SpaceServices

logger = logging.getLogger(__name__)

ALL = "(all)"
PRIVATE: dict[str, Any] = {"api_visibility": "private"}  # UI events; the named API is in `space.api`


@dataclass(frozen=True)
class Context:
    """What a tab builder needs: the services, the settings and the page (for its load event)."""

    services: SpaceServices
    config: SpaceConfig
    demo: gr.Blocks


def token_of(oauth_token: gr.OAuthToken | None) -> str | None:
    """The signed-in visitor's Hub token, or None (anonymous)."""
    return oauth_token.token if oauth_token is not None else None


def choice(value: Any) -> str | None:
    """A dropdown value, None for `(all)` or nothing."""
    return None if value in (None, "", ALL) else str(value)


def to_gr_error(exc: BaseException) -> Exception:
    """A `gr.Error` with our one-line message (unexpected errors are logged with their traceback)."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, RegistryError):
        return gr.Error(str(exc), print_exception=False)
    logger.exception("unexpected error in a Space handler")
    return gr.Error(f"unexpected error ({type(exc).__name__}); the Space's log has the details", print_exception=False)


def edge(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler, raising errors as `gr.Error` (generators too, at any yield)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 (shown to the user as one line)
                raise to_gr_error(exc) from exc

        return stream

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (shown to the user as one line)
            raise to_gr_error(exc) from exc

    return call
