"""The HTTP edge under hostile input: raw sockets against a real server (findings 5, 6 and 8)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests._fixtures.hub import HubFactory, HubHandle


def _addr(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def raw_exchange(url: str, request: bytes, *, timeout: float = 10) -> bytes:
    """Send `request` bytes on a fresh connection; return everything the server answers."""
    with socket.create_connection(_addr(url), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                piece = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not piece:
                break
            chunks.append(piece)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), f"no HTTP answer (connection dropped?): {answer[:200]!r}"
    return int(answer.split(b" ", 2)[1])


def test_malformed_framing_is_4xx_not_a_drop_or_500(hub_factory: HubFactory) -> None:
    hub = hub_factory.thread("framing", body_idle_timeout_s=1.0)
    bad = [
        b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Length: \xd9\xa3\r\n\r\n{}",  # Arabic-Indic 3
        b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
        b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",  # a chunk that never ends: 408 after 1 s
        b"GET /api/models/\xff\xfe/x HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for request in bad:
        answer = raw_exchange(hub.url, request, timeout=10)
        assert 400 <= status_of(answer) < 500, (request, answer[:300])
    assert httpx.get(f"{hub.url}/api/models").status_code == 200  # still serving


def test_deeply_nested_json_is_400(hub: HubHandle) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    headers = {"Authorization": f"Bearer {hub.token}", "Content-Type": "application/json"}
    for path in ("/api/repos/create", "/api/validate-yaml", "/api/settings/webhooks"):
        answer = httpx.post(hub.url + path, content=deep, headers=headers, timeout=30)
        assert answer.status_code == 400, (path, answer.text[:200])
    nested_object = '{"content": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert httpx.post(hub.url + "/api/validate-yaml", content=nested_object, timeout=30).status_code == 400


def test_every_response_has_a_request_id(hub: HubHandle) -> None:
    seen = set()
    for method, path in [("GET", "/api/models"), ("GET", "/api/models/nobody/nothing"), ("POST", "/no/such/route")]:
        answer = httpx.request(method, hub.url + path)
        request_id = answer.headers.get("X-Request-Id")
        assert request_id, (method, path, answer.status_code)
        seen.add(request_id)
    assert len(seen) == 3


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def _send_big_chunked(url: str, path: str, size: int, *, token: str | None = None) -> bytes:
    """One chunk of `size` bytes in a chunked body, sent 1 MiB at a time; the server's answer."""
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n".encode() + auth + b"\r\n"
    block = b"x" * (1 << 20)
    with socket.create_connection(_addr(url), timeout=30) as sock:
        try:
            sock.sendall(head + f"{size:x}\r\n".encode())
            for _ in range(size // len(block)):
                sock.sendall(block)
            sock.sendall(b"\r\n0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused the body early and closed: what we want
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""


def test_big_bodies_are_streamed_against_their_limits(hub_factory: HubFactory) -> None:
    """Finding 6: a 120 MB request must not grow the server's memory by more than 32 MB."""
    handle = hub_factory.process("mem")
    assert handle.process is not None
    pid = handle.process.pid
    httpx.get(f"{handle.url}/api/models")  # warm up
    before = _vm(pid, "VmRSS")
    size = 120 * (1 << 20)
    answers = [
        _send_big_chunked(handle.url, "/api/validate-yaml", size),  # anonymous, a 16 MiB JSON limit
        _send_big_chunked(handle.url, "/api/repos/create", size, token=handle.token),
    ]
    for answer in answers:
        assert answer == b"" or status_of(answer) == 413, answer[:300]
    # A 120 MB NDJSON commit with one 90 MB inline file: refused as soon as the file passes the LFS
    # threshold (large files go through LFS), with flat memory. (Many small inline files of 200 MB
    # in all go through: test_localhub_hardening.)
    httpx.post(f"{handle.url}/api/repos/create", json={"name": "big"}, headers=_auth(handle.token)).raise_for_status()
    data = bytes(range(256)) * (90 * (1 << 20) // 256)
    header = json.dumps({"key": "header", "value": {"summary": "big inline"}}).encode()
    line = (
        b'{"key": "file", "value": {"content": "'
        + base64.b64encode(data)
        + b'", "path": "big.bin", "encoding": "base64"}}'
    )
    del data
    try:
        answer = httpx.post(
            f"{handle.url}/api/models/alice/big/commit/main",
            content=header + b"\n" + line + b"\n",
            headers={**_auth(handle.token), "Content-Type": "application/x-ndjson"},
            timeout=120,
        )
        assert answer.status_code == 413 and answer.headers["X-Error-Code"] == "LfsRequired", answer.text[:300]
        assert "HF_HUB_DISABLE_XET=1" in answer.json()["error"]
    except httpx.WriteError:
        pass  # the server answered and closed before the client finished sending
    del line
    peak = _vm(pid, "VmHWM")
    assert peak - before < 32 * (1 << 20), f"RSS grew by {(peak - before) / 2**20:.0f} MiB"
    assert httpx.head(f"{handle.url}/alice/big/resolve/main/big.bin").status_code == 404
    assert httpx.get(f"{handle.url}/api/models").status_code == 200


def test_idle_connections_are_closed_and_cost_no_thread(hub: HubHandle) -> None:
    """Finding 8: 200 connections that never send a byte are closed after the idle timeout."""
    threads_before = threading.active_count()
    socks = [socket.create_connection(_addr(hub.url), timeout=15) for _ in range(200)]
    try:
        time.sleep(0.5)
        assert threading.active_count() - threads_before < 20
        deadline = time.monotonic() + 12
        closed = 0
        for sock in socks:
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                closed += sock.recv(1) == b""
            except (TimeoutError, ConnectionResetError):
                pass
        assert closed == len(socks)
    finally:
        for sock in socks:
            sock.close()
    assert json.loads(httpx.get(f"{hub.url}/api/models").text) is not None
