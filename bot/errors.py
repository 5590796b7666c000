"""The bot's errors (each one line saying what is wrong and what to do), and the scrubbing of
error texts before anyone outside the bot's machine sees them.

Every error shown to a user (`GET /jobs`, `bot status`, a discussion comment) goes through
`public_text`: it names repos and reasons, never the bot's folders (`<data>/hf-cache/...`).
"""

from __future__ import annotations

import re
from pathlib import Path

from registry.errors import ProvenanceError, RegistryError

__all__ = [
    "BotInputError",
    "NotACheckpoint",
    "ProvenanceError",
    "Superseded",
    "TokenizerMismatchError",
    "VisibilityError",
    "public_text",
]


class BotInputError(RegistryError):
    """The pushed CT cannot be merged; `reasons` lists per-pair details."""


class NotACheckpoint(RegistryError):
    """The repo is not a CT checkpoint (no mergeling-ct tag): nothing to do."""


class Superseded(RegistryError):
    """A newer revision exists; this one is not merged."""


class VisibilityError(BotInputError, PermissionError):
    """A private or gated input whose merge cannot be published where only its readers see it."""


class TokenizerMismatchError(BotInputError, ValueError):
    """The CT, SFT and base map some shared token id to different strings."""


# An absolute path of two or more segments that is not part of a URL (`http://host/a/b`) or a repo id.
_PATH = re.compile(r"(?<![\w:/.%-])(?:/[\w.@+~-]+){2,}/?")


def public_text(text: str, *, roots: tuple[Path, ...] = ()) -> str:
    """`text` with the bot's folders and any other absolute path replaced by a placeholder.

    Args:
        text: an error message.
        roots: known folders (the bot's data folder first): shown as `<bot data>`.
    """
    for root in roots:
        for form in {str(root), str(root.resolve())}:
            if form and form != "/":
                text = text.replace(form, "<bot data>")
    return _PATH.sub("<path>", text)
