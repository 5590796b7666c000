"""The HTTP edge of the embedded hub: a Starlette app with one declarative route table.

- Routing sees the RAW path (`scope["raw_path"]`): the client percent-encodes revisions as one
  segment (`refs%2Fpr%2F3`), which a decoded path would split. Path parameters are decoded after
  matching.
- Routes are synchronous functions `(hub, request, params) -> Response`, run in a worker
  thread; request bodies stream from uvicorn to them against each route's limit.
- Errors become responses HERE only, through Starlette exception handlers (an
  `ExceptionMiddleware` around the routers) registered from one table, `STATUS_OF`: a refusal's
  status is its nearest kind there, with `X-Error-Code` and `X-Error-Message`; a renamed repo
  (`Moved`) answers 307; anything else 500. Nothing below this module knows HTTP statuses.
- Every response carries an `X-Request-Id` (the client quotes it in its error messages).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import anyio
import anyio.from_thread
import anyio.to_thread
from starlette.datastructures import Headers
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from registry.localhub.http import Body, Request, Response
from registry.localhub.names import (
    AuthRequired,
    Conflict,
    Forbidden,
    InvalidInput,
    NotAllowed,
    NotFound,
    NotSupported,
    StaleParent,
    StorageError,
    TimedOut,
    TooLarge,
    Unprocessable,
)
from registry.localhub.redirects import Moved, redirect_path
from registry.localhub.table import Handler, Params, route_table

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub

logger = logging.getLogger(__name__)

ASGIApp = Callable[..., Any]

# THE table: the status of each kind of refusal. Starlette picks the handler of a refusal's
# nearest kind (its class's MRO), so a subclass (`ClientGone`, `Moved`) answers as its kind.
STATUS_OF: dict[type[StorageError], int] = {
    InvalidInput: 400,
    AuthRequired: 401,
    Forbidden: 403,
    NotFound: 404,
    NotAllowed: 405,
    TimedOut: 408,
    Conflict: 409,
    StaleParent: 412,
    TooLarge: 413,
    Unprocessable: 422,
    NotSupported: 501,
}
FILE_CHUNK = 1 << 20
ZERO_COPY_MIN = 256 * 1024  # smaller files go through ASGI messages
RAW_SEND = "localhub.server_send"  # scope key: the server's own `send` (for `_zero_copy`)
REQUEST = "localhub.request"  # scope key: the route's `Request` (the error handlers read its body state)

ExceptionHandler = Callable[[StarletteRequest, Exception], Awaitable[StarletteResponse]]


def exception_handlers() -> dict[type[Exception], ExceptionHandler]:
    """The Starlette exception handlers of the hub, one per kind in `STATUS_OF`, plus `Moved` and the rest."""
    handlers: dict[type[Exception], ExceptionHandler] = {kind: _refusal(status) for kind, status in STATUS_OF.items()}
    handlers[Moved] = _moved
    handlers[Exception] = _internal_error
    return handlers


def _refusal(status: int) -> ExceptionHandler:
    async def handle(request: StarletteRequest, exc: Exception) -> StarletteResponse:
        assert isinstance(exc, StorageError)
        headers = {"X-Error-Message": str(exc)}
        if exc.repo_commit:
            headers["X-Repo-Commit"] = exc.repo_commit
        if exc.code:
            headers["X-Error-Code"] = exc.code
        return _starlette(request, Response.json({**exc.fields, "error": str(exc)}, status=status, headers=headers))

    return handle


async def _moved(request: StarletteRequest, exc: Exception) -> StarletteResponse:
    """A renamed repo: the same path under its new id, like the Hub (404 when the id came in a body)."""
    assert isinstance(exc, Moved)
    location = redirect_path(request.scope["path"], exc)
    if location is None:  # the id came in the body (`/api/repos/...`): nothing to redirect to
        return await _refusal(STATUS_OF[NotFound])(request, exc)
    query = request.scope.get("query_string", b"").decode("latin-1")
    headers = {"Location": location + (f"?{query}" if query else "")}
    return _starlette(request, Response.json({"error": str(exc), "url": location}, status=307, headers=headers))


async def _internal_error(request: StarletteRequest, exc: Exception) -> StarletteResponse:
    logger.error("Internal error on %s %s", request.scope["method"], request.scope.get("path", ""), exc_info=exc)
    return _starlette(request, Response.json({"error": "Internal server error; see the server log"}, status=500))


def _starlette(request: StarletteRequest, resp: Response) -> StarletteResponse:
    """`resp` as a Starlette response, its header values made legal (messages quote user input)."""
    req = request.scope.get(REQUEST)
    if isinstance(req, Request) and not req.body.consumed:
        resp.headers["Connection"] = "close"  # the rest of the body is never read
    headers = {k: _header_safe(v) for k, v in resp.headers.items()}
    return StarletteResponse(resp.body, status_code=resp.status, headers=headers)


# -- ASGI plumbing ----------------------------------------------------------------------------
class _Endpoint:
    """An ASGI app for one path: picks the method's handler, runs it in a thread, sends the result."""

    def __init__(self, hub: LocalHub, handlers: dict[str, Handler]) -> None:
        self.hub = hub
        self.handlers = dict(handlers)
        if "GET" in handlers:
            self.handlers.setdefault("HEAD", handlers["GET"])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        params = {k: unquote(v) for k, v in scope.get("path_params", {}).items()}
        req = _request(scope, receive, idle_s=self.hub.config.body_idle_timeout_s, base_url=self.hub.public_url)
        handler = self.handlers.get(scope["method"])  # HEAD: the GET handler (see __init__)
        if req.body.consumed and getattr(handler, "on_loop", False):
            # The few hot routes marked `table.on_loop` (resolve, repo info, whoami) only read small,
            # immutable, page-cached files: cheaper than the hop to a worker thread (the hop halved
            # their requests/s). Every other route (listings, trees, commits, squash, pages) runs
            # in a worker thread, so a slow one never stalls the others.
            resp = self._run(handler, req, params, scope)
        else:
            resp = await anyio.to_thread.run_sync(self._run, handler, req, params, scope)
        if not req.body.consumed:
            resp.headers["Connection"] = "close"  # the rest of the body is never read
        await send_response(resp, scope, send)

    def _run(self, handler: Handler | None, req: Request, params: Params, scope: dict[str, Any]) -> Response:
        # Refusals raised here reach the exception handlers (`exception_handlers`) unchanged.
        scope[REQUEST] = req
        # Like the Hub: a token that is sent must be valid, even for reads that need none.
        self.hub.principal(req)
        if handler is None:
            allowed = ", ".join(sorted(self.handlers))
            raise NotAllowed(f"{req.method} is not allowed on this path; use one of {allowed}")
        return handler(self.hub, req, params)


def _request(scope: dict[str, Any], receive: Any, *, idle_s: float, base_url: str) -> Request:
    headers = Headers(scope=scope)
    raw = headers.get("content-length")
    length = int(raw) if raw is not None and raw.isdigit() else None
    has_body = "chunked" in headers.get("transfer-encoding", "").lower() or bool(length)

    async def receive_or_time_out() -> dict[str, Any]:
        with anyio.move_on_after(idle_s):
            return await receive()  # type: ignore[no-any-return]
        raise TimedOut(f"No request body bytes for {idle_s:g} s; send the body without pauses")

    def pull() -> dict[str, Any]:
        return anyio.from_thread.run(receive_or_time_out)

    segments = [unquote(s) for s in scope["path"].split("/")[1:]]
    query = parse_qs(scope.get("query_string", b"").decode("utf-8", errors="replace"), keep_blank_values=True)
    body = Body(pull if has_body else None, length)
    method = "GET" if scope["method"] == "HEAD" else scope["method"]  # routes answer HEAD as GET; no body is sent
    # Absolute URLs come from the configured public URL, never from the Host header (which a
    # client or a proxy's caller chooses: it would end up in commit and LFS upload URLs).
    return Request(method, segments, query, headers, base_url, body)


def _header_safe(value: str) -> str:
    """`value` as a legal header value: printable ASCII (others backslash-escaped), no outer spaces."""
    return value.encode("unicode_escape").decode("ascii").strip() or "-"


async def send_response(resp: Response, scope: dict[str, Any], send: Any) -> None:
    length = resp.file[2] if resp.file else len(resp.body)
    headers = [
        (k.lower().encode("latin-1"), _header_safe(v).encode("latin-1"))
        for k, v in resp.headers.items()
        if k.lower() != "content-length"
    ]
    headers.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    if scope["method"] == "HEAD" or resp.file is None:
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else resp.body})
        return
    path, start, count = resp.file
    if count >= ZERO_COPY_MIN and await _zero_copy(scope, send, path, start, count):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        offset, end = start, start + count
        while offset < end:
            # Blobs are immutable files, nearly always in the page cache: a direct pread costs less
            # than a hop to a worker thread, and keeps one chunk per connection in memory.
            piece = os.pread(fd, min(FILE_CHUNK, end - offset), offset)
            if not piece:  # the blob shrank under us (cannot happen to content-addressed files)
                raise OSError(f"{path} ended {end - offset} bytes early")
            offset += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": offset < end})
    finally:
        os.close(fd)


async def _zero_copy(scope: dict[str, Any], send: Any, path: Path, start: int, count: int) -> bool:
    """Send a file body with `os.sendfile` through uvicorn's transport; False when not possible.

    ASGI has no zero-copy send in uvicorn, so this reaches for the response cycle behind the
    server's `send` (httptools protocol only; it counts the bytes against `Content-Length`).
    Copying 10 MB through Python halved the resolve rate compared with the old server's sendfile.
    """
    cycle = getattr(scope.get(RAW_SEND), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if cycle is None or transport is None or not isinstance(getattr(cycle, "expected_content_length", None), int):
        return False
    if cycle.expected_content_length != count or transport.is_closing():
        return False
    sock = transport.get_extra_info("socket")
    with path.open("rb") as fh:
        try:
            if sock is not None and transport.get_write_buffer_size() == 0:
                # In a worker thread: the kernel copies for many downloads then run on every core.
                await anyio.to_thread.run_sync(_sendfile_all, sock.fileno(), fh.fileno(), start, count)
            else:
                await asyncio.get_running_loop().sendfile(transport, fh, start, count)
        except (ConnectionError, OSError, RuntimeError):
            transport.close()  # the client went away mid-file; nothing more can be sent
            return True
    cycle.expected_content_length = 0
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return True


def _sendfile_all(sock_fd: int, file_fd: int, offset: int, count: int) -> None:
    """`os.sendfile` all `count` bytes to a non-blocking socket, waiting (30 s at most) when it is full.

    Raises:
        ConnectionError: the client stopped reading or went away.
    """
    import select

    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    end = offset + count
    while offset < end:
        try:
            sent = os.sendfile(sock_fd, file_fd, offset, end - offset)
        except BlockingIOError:
            if not poller.poll(30_000):
                raise ConnectionError("the client stopped reading for 30 s") from None
            continue
        if sent == 0:
            raise ConnectionError("the client went away")
        offset += sent


def _no_route(hub: LocalHub) -> _Endpoint:
    def handler(h: LocalHub, req: Request, p: Params) -> Response:
        raise NotFound(f"No route for {req.method} /{'/'.join(req.segments)}", code="NotFound")

    return _Endpoint(hub, {m: handler for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")})


def build_app(hub: LocalHub) -> ASGIApp:
    """The ASGI app of `hub`: raw-path routing, request ids, errors mapped by `exception_handlers`."""
    # The table, split by its literal first segment (`api`, `datasets`, ...; "" for `/{ns}/...`)
    # only so that a request is matched against its part of the table; the order is kept.
    no_route = Route("/{rest:path}", endpoint=_no_route(hub))
    groups: dict[str, list[Route]] = {}
    for path, handlers in route_table():
        first = path.split("/")[1]
        groups.setdefault("" if first.startswith("{") else first, []).append(
            Route(path, endpoint=_Endpoint(hub, handlers))
        )
    routers = {key: Router(routes=[*group, no_route]) for key, group in groups.items()}
    routers.setdefault("", Router(routes=[no_route]))

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        await (routers.get(scope["path"].split("/", 2)[1]) or routers[""])(scope, receive, send)

    handled = ExceptionMiddleware(dispatch, handlers=exception_handlers())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["type"] != "http":
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/") or "/"
        request_id = uuid.uuid4().hex
        status = [0]

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        await handled({**scope, "path": path, "root_path": "", RAW_SEND: send}, receive, send_with_id)
        # Tokens travel in headers, never in the path; query strings (signed LFS URLs) are left out.
        client = scope.get("client") or ("-", 0)
        logger.debug("%s %s %s %s %s", client[0], scope["method"], path, status[0], request_id)

    return app
