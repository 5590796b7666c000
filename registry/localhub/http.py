"""What routes see of HTTP: a `Request` (raw-path segments, query, headers, a streamed body) and
the `Response` they return. Wire parsing belongs to uvicorn; `registry.localhub.edge` turns ASGI
into these and back.

Routes are plain synchronous functions (file and JSON I/O), run in a worker thread. The body is
pulled from the ASGI `receive` channel piece by piece from that thread, so a route never holds
more of a request than it asks for, and every read is checked against the route's limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.localhub.names import InvalidInput, TooLarge

# Receives one ASGI message (called from the route's worker thread).
Receive = Callable[[], dict[str, Any]]


@dataclass
class Response:
    """What a route returns. `file` streams (path, start, length) after the headers."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: tuple[Path, int, int] | None = None

    @staticmethod
    def json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
            body=json.dumps(obj).encode(),
        )


class ClientGone(InvalidInput):
    """The client closed the connection before its body was read."""


class Body:
    """The request body, pulled lazily from the server, never more than a route's limit.

    `length` is the declared `Content-Length` (None for a chunked body); uvicorn has already
    refused malformed lengths and chunk sizes.
    """

    def __init__(self, receive: Receive | None, length: int | None) -> None:
        self._receive = receive
        self.length = length
        self.consumed = receive is None or length == 0

    def iter_chunks(self, *, limit: int) -> Iterator[bytes]:
        """Yield the body in the pieces the server received.

        Raises:
            TooLarge: when the body exceeds `limit` bytes (before reading, if its length says so).
        """
        if self.length is not None and self.length > limit:
            raise TooLarge(f"Request body of {self.length} bytes exceeds the limit of {limit}")
        if self.consumed or self._receive is None:
            return
        total = 0
        while True:
            message = self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone("The client closed the connection before sending its whole body")
            piece = message.get("body", b"")
            total += len(piece)
            if total > limit:
                raise TooLarge(f"Request body exceeds the limit of {limit} bytes")
            if piece:
                yield piece
            if not message.get("more_body", False):
                self.consumed = True
                return

    def read(self, *, limit: int) -> bytes:
        return b"".join(self.iter_chunks(limit=limit))


def loads_json(raw: bytes | str) -> Any:
    """`json.loads` that answers 400 for bad or too deeply nested JSON (never a RecursionError).

    Raises:
        InvalidInput: not JSON, or nested too deep.
    """
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidInput("Request body is JSON nested too deeply") from None
    except ValueError:
        raise InvalidInput("Request body is not valid JSON") from None


@dataclass
class Request:
    method: str
    segments: list[str]  # raw path split on "/", then each segment percent-decoded
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # case-insensitive
    base_url: str  # the hub's public URL (`HubConfig.public_url`), never the Host header
    body: Body

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def qint(self, name: str, default: int = 0) -> int:
        """A non-negative integer query parameter (`default` when absent or empty).

        Raises:
            InvalidInput: when the value is not a non-negative integer.
        """
        raw = self.q(name)
        if not raw:
            return default
        if not raw.isdigit() or not raw.isascii():
            raise InvalidInput(f"Query parameter {name}={raw!r} must be a non-negative integer")
        return int(raw)

    def qbool(self, name: str) -> bool:
        return (self.q(name) or "").lower() in ("1", "true", "yes")

    def json(self, *, limit: int = 16 << 20) -> dict[str, Any]:
        """The body as a JSON object (`{}` when empty); every JSON API body of the Hub is one.

        Raises:
            InvalidInput: when the body is not a JSON object (or is nested too deep).
            TooLarge: when it exceeds `limit`.
        """
        raw = self.body.read(limit=limit)
        if not raw:
            return {}
        obj = loads_json(raw)
        if not isinstance(obj, dict):
            raise InvalidInput(f"Request body must be a JSON object, not {type(obj).__name__}")
        return obj

    @property
    def token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None
