"""The HTTP edge of the embedded hub: a threading HTTP/1.1 server on the standard library.

Why the standard library: routing must see the RAW path (revisions arrive percent-encoded as
one segment, e.g. `refs%2Fpr%2F3`, and frameworks decode `%2F` before routing), HEAD must carry
the real `Content-Length` with no body, and the server must run embedded in a thread in tests.
`http.server` gives all three with no framework in the way.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

from registry.localhub.names import StorageError

logger = logging.getLogger(__name__)

HttpError = StorageError  # one error type carries status + X-Error-Code from storage to the wire


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


class Body:
    """The request body, read lazily, with a size limit; supports `Transfer-Encoding: chunked`."""

    def __init__(self, rfile: BinaryIO, headers: Message) -> None:
        self._rfile = rfile
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.malformed = False
        self.length: int | None = None
        if not self.chunked:
            raw = headers.get("Content-Length", "0")
            self.malformed = not raw.strip().isdigit()
            self.length = 0 if self.malformed else int(raw)
        self.consumed = self.length == 0 and not self.malformed
        self._chunk_left = 0

    def iter_chunks(self, *, limit: int, size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the body in pieces.

        Raises:
            HttpError: 413 when the body exceeds `limit` bytes.
        """
        if self.length is not None and self.length > limit:
            raise HttpError(
                f"Request body of {self.length} bytes exceeds the limit of {limit}", status=413, code="PayloadTooLarge"
            )
        total = 0
        source = self._chunked() if self.chunked else self._sized(size)
        for piece in source:
            total += len(piece)
            if total > limit:
                raise HttpError(f"Request body exceeds the limit of {limit} bytes", status=413, code="PayloadTooLarge")
            yield piece
        self.consumed = True

    def read(self, *, limit: int) -> bytes:
        return b"".join(self.iter_chunks(limit=limit))

    def _sized(self, size: int) -> Iterator[bytes]:
        left = self.length or 0
        while left > 0:
            piece = self._rfile.read(min(size, left))
            if not piece:
                raise HttpError("Request body ended early", status=400, code="BadRequest")
            left -= len(piece)
            yield piece

    def _chunked(self) -> Iterator[bytes]:
        while True:
            line = self._rfile.readline(1024)
            try:
                n = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HttpError("Malformed chunked body", status=400, code="BadRequest") from None
            if n == 0:
                while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            data = self._rfile.read(n)
            self._rfile.readline(8)
            yield data


@dataclass
class Request:
    method: str
    segments: list[str]  # raw path split on "/", then each segment percent-decoded
    query: dict[str, list[str]]
    headers: Message
    base_url: str  # scheme://host[:port] from the Host header
    body: Body

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def qint(self, name: str, default: int = 0) -> int:
        """A non-negative integer query parameter (`default` when absent or empty).

        Raises:
            HttpError: 400 when the value is not a non-negative integer.
        """
        raw = self.q(name)
        if not raw:
            return default
        if not raw.isdigit():
            raise HttpError(
                f"Query parameter {name}={raw!r} must be a non-negative integer", status=400, code="BadRequest"
            )
        return int(raw)

    def qbool(self, name: str) -> bool:
        return (self.q(name) or "").lower() in ("1", "true", "yes")

    def json(self, *, limit: int = 16 << 20) -> dict[str, Any]:
        """The body as a JSON object (`{}` when empty); every JSON API body of the Hub is one.

        Raises:
            HttpError: 400 when the body is not a JSON object, 413 when it exceeds `limit`.
        """
        raw = self.body.read(limit=limit)
        if not raw:
            return {}
        try:
            obj = json.loads(raw)
        except ValueError:
            raise HttpError("Request body is not valid JSON", status=400, code="BadRequest") from None
        if not isinstance(obj, dict):
            raise HttpError(
                f"Request body must be a JSON object, not {type(obj).__name__}", status=400, code="BadRequest"
            )
        return obj

    @property
    def token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None


Handler = Callable[[Request], Response]


def parse_target(target: str) -> tuple[list[str], dict[str, list[str]]]:
    """Split a request target into decoded path segments and the query."""
    parts = urlsplit(target)
    segments = [unquote(s) for s in parts.path.split("/")[1:]]
    while segments and segments[-1] == "" and len(segments) > 1:
        segments.pop()
    return segments, parse_qs(parts.query, keep_blank_values=True)


def error_response(exc: HttpError) -> Response:
    headers = {"X-Error-Message": str(exc)}
    if exc.code:
        headers["X-Error-Code"] = exc.code
    return Response.json({"error": str(exc)}, status=exc.status, headers=headers)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, a keep-alive client's
    # delayed ACK then stalls every response by ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _handle(self) -> None:
        body = Body(self.rfile, self.headers)
        try:
            if body.malformed:
                raise HttpError("Malformed Content-Length header", status=400, code="BadRequest")
            segments, query = parse_target(self.path)
            host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            req = Request(self.command, segments, query, self.headers, f"http://{host}", body)
            resp = self.server.app(req)
        except HttpError as exc:
            resp = error_response(exc)
        except Exception:
            logger.exception("Internal error on %s %s", self.command, urlsplit(self.path).path)
            resp = Response.json({"error": "Internal server error; see the server log"}, status=500)
        if not body.consumed:
            # The route answered without reading the body: the connection cannot be reused.
            self.close_connection = True
            resp.headers["Connection"] = "close"
        self._send(resp)

    def _send(self, resp: Response) -> None:
        length = resp.file[2] if resp.file else len(resp.body)
        self.send_response(resp.status)
        for key, value in resp.headers.items():
            if key.lower() != "content-length":
                # http.server encodes header values as strict latin-1, and messages may quote
                # non-ASCII paths or revisions: escape them rather than drop the connection.
                self.send_header(key, _header_safe(value))
        self.send_header("Content-Length", resp.headers.get("Content-Length", str(length)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if resp.file:
            path, start, count = resp.file
            with path.open("rb") as fh:
                self.wfile.flush()
                self.connection.sendfile(fh, offset=start, count=count)  # zero-copy where the OS can
        elif resp.body:
            self.wfile.write(resp.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server signature)
        # Tokens travel in headers, never in the path; query strings (signed LFS URLs) are dropped.
        logger.debug("%s %s", self.address_string(), re.sub(r"\?\S*", "", format % args))


def _header_safe(value: str) -> str:
    """`value` as one line of ASCII (non-ASCII characters as backslash escapes)."""
    return value.replace("\r", " ").replace("\n", " ").encode("ascii", "backslashreplace").decode("ascii")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: Handler) -> None:
        self.app = app
        super().__init__(address, _RequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response (cancelled download, killed process) is routine.
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            logger.debug("Client %s went away: %s", client_address, type(exc).__name__)
            return
        logger.error("Unhandled error while serving %s", client_address, exc_info=exc)


class HttpServer:
    """A running server: `start()` in a background thread, or `serve_forever()` in this one."""

    def __init__(self, app: Handler, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), app)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="localhub-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
