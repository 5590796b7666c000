"""uvicorn serving the hub's ASGI app: in a background thread (tests, embedding) or in the foreground.

The socket is bound when the server is created, so its URL (and a taken port) is known before it
serves. Connections are closed after `idle_timeout_s` without a request, including connections
that never send a byte; uvicorn answers malformed requests (bad `Content-Length`, bad chunk
sizes, oversized headers) with 400 itself.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)
IDLE_TIMEOUT_S = 5
MAX_HEADER_BYTES = 64 * 1024  # request line + headers (both protocols)
MAX_HEAD_BUFFER = 1024 * 1024  # raw bytes of an unfinished head (httptools; chunks are <= 256 KiB)


def _on_connect(protocol: Any, transport: asyncio.Transport) -> None:
    """What both protocols add to uvicorn's: no Nagle, and the idle timer armed from the first byte."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        # Headers and body leave in separate writes: with Nagle on, a keep-alive client's
        # delayed ACK stalls every response by ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    protocol.timeout_keep_alive_task = protocol.loop.call_later(
        protocol.timeout_keep_alive, protocol.timeout_keep_alive_handler
    )


class _H11(H11Protocol):
    """uvicorn's pure-Python protocol (when httptools is not installed)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _on_connect(self, transport)

    def handle_events(self) -> None:
        try:
            super().handle_events()
        except UnicodeDecodeError:  # a request target with raw non-ASCII bytes
            self.send_400_response("Invalid HTTP request target: percent-encode non-ASCII characters.")


def _protocol() -> type:
    """uvicorn's httptools protocol (a C parser, ~2x the requests/s) when installed, else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return _H11

    class _HttpTools(HttpToolsProtocol):
        """httptools sets no limit on a request's head: count it. The URL and each complete header
        count against `MAX_HEADER_BYTES`; raw bytes received while the head is incomplete count
        against `MAX_HEAD_BUFFER` (llhttp buffers an unfinished header line in full before calling
        back). Either limit answers 431 and closes the connection."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            _on_connect(self, transport)
            self._head_bytes, self._raw_head_bytes, self._in_head, self._too_large = 0, 0, True, False

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                self._raw_head_bytes += len(data)
                if self._raw_head_bytes > MAX_HEAD_BUFFER:
                    self._too_large = True
                    self.send_400_response("")
                    return
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes, self._in_head = 0, True

        def _count(self, n: int) -> None:
            self._head_bytes += n
            if self._head_bytes > MAX_HEADER_BYTES:
                self._too_large = True
                raise ValueError("request head too large")  # httptools: HttpParserCallbackError -> 400 path

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head, self._raw_head_bytes = False, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head = True
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            if not self._too_large:
                super().send_400_response(msg)
                return
            if self.transport.is_closing():
                return
            text = f"Request line and headers exceed {MAX_HEADER_BYTES // 1024} KiB; send fewer or shorter headers"
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
                + f"content-length: {len(text)}\r\nconnection: close\r\n\r\n{text}".encode()
            )
            self.transport.close()

    return _HttpTools


class HttpServer:
    """A bound server: `start()` in a background thread, or `serve_forever()` in this one."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, idle_timeout_s: int = IDLE_TIMEOUT_S
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(1024)
        except OSError:
            self._sock.close()
            raise
        self.host = host
        config = uvicorn.Config(
            app,
            http=_protocol(),
            ws="none",
            lifespan="off",
            interface="asgi3",
            loop="asyncio",
            log_config=None,
            access_log=False,
            timeout_keep_alive=idle_timeout_s,
            timeout_graceful_shutdown=2,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            server_header=False,
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> HttpServer:
        """Serve from a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.serve_forever, name="localhub-http", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            threading.Event().wait(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve until `stop()` (or SIGINT/SIGTERM when run in the main thread)."""
        self._server.run(sockets=[self._sock])

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()
