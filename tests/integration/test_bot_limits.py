"""Bounded memory for what anyone can send to `registry bot serve` (a real process, RSS read from /proc):
200 MB of request headers, deeply nested JSON; and the Hub download cache bound (`--cache-max-gb`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests._fixtures.botkit import eval_fixture

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "limits-secret"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def served(hub, tmp_path: Path):
    suites, data = eval_fixture(tmp_path / "eval")
    cmd = [
        sys.executable, "-c", "from registry.cli import main; main()", "bot", "serve", "--registry", "bob/lim-registry",
        "--namespace", "bob", "--data", str(tmp_path / "bot"), "--port", "0", "--workers", "0", "--no-register",
        "--eval-data-dir", str(data), "--eval-suites", str(suites), "--device", "cpu",
    ]  # fmt: skip
    env = hub.env(token=hub.bob_token, MERGELING_WEBHOOK_SECRET=SECRET)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("http://"):
        proc.kill()
        pytest.fail(f"bot serve did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    url = line.strip()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield proc, url
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _send_headers(url: str, total: int) -> tuple[int, bytes]:
    """Send a request line and up to `total` bytes of headers; return (bytes sent, what came back)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    chunk = b"".join(b"X-Pad-%06d: %s\r\n" % (i, b"a" * 1000) for i in range(64))  # ~64 KB of header lines
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bot\r\n")
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        try:
            answer = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    return sent, answer


def test_200_mb_of_headers_are_refused_and_rss_grows_under_10_mb(served, capsys) -> None:
    proc, url = served
    _send_headers(url, 1 << 20)  # warm up the refusal path once
    before = _rss_kib(proc.pid)
    sent, answer = _send_headers(url, 200 * 1024 * 1024)
    after = _rss_kib(proc.pid)
    growth_mb = (after - before) / 1024
    status = answer.split(b"\r\n")[0]
    with capsys.disabled():
        print(f"\n[limits] 200 MB of headers: {sent / 1e6:.1f} MB sent before refusal, answer {status!r}, "
              f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MB ({growth_mb:+.2f} MB)")  # fmt: skip
    assert sent < 200 * 1024 * 1024  # the server closed the connection long before
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400")
    assert growth_mb < 10
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200  # and it still serves


def test_deeply_nested_json_is_400_not_500(served, hub, capsys) -> None:
    proc, url = served
    before = _rss_kib(proc.pid)
    deep = b"[" * 100_000 + b"]" * 100_000
    hook = httpx.post(url + "/webhooks/hub", content=deep, headers={"X-Webhook-Secret": SECRET}, timeout=30)
    assert hook.status_code == 400 and "nested too deeply" in hook.json()["error"]
    body = b'{"event": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}"
    hook = httpx.post(url + "/webhooks/hub", content=body, headers={"X-Webhook-Secret": SECRET}, timeout=30)
    assert hook.status_code == 400 and "nested too deeply" in hook.json()["error"]
    jobs = httpx.post(url + "/jobs", content=body, headers={"Authorization": f"Bearer {hub.bob_token}"}, timeout=30)
    assert jobs.status_code == 400 and "nested too deeply" in jobs.json()["error"]
    growth_mb = (_rss_kib(proc.pid) - before) / 1024
    with capsys.disabled():
        print(f"\n[limits] 100,000-deep JSON x3: 400 each, RSS {growth_mb:+.2f} MB")
    assert growth_mb < 10


def test_the_hf_cache_is_evicted_least_recently_used_first(hub, tiny_family, tmp_path: Path) -> None:
    from bot.cache import enforce_cache_bound, mark_used
    from tests._fixtures.botkit import push_checkpoint

    alice = hub.client()
    for name in ("lru-a", "lru-b", "lru-c"):
        push_checkpoint(alice, tiny_family.ct, f"alice/{name}", {"license": "mit"})
    cache = tmp_path / "hf-cache"
    reader = hub.client(cache="unused")
    reader.cache_dir = cache
    for name in ("lru-a", "lru-b", "lru-c"):
        reader.snapshot(f"alice/{name}")
        time.sleep(1.1)  # last-access times one second apart
    mark_used(cache, ["alice/lru-a"])  # a job used a again: b is now the least recently used
    from huggingface_hub import scan_cache_dir

    one = scan_cache_dir(cache).size_on_disk // 3  # three copies of the same model
    removed = enforce_cache_bound(cache, max_bytes=int(one * 2.5))
    assert removed == ["alice/lru-b"]
    left = sorted(p.name for p in cache.iterdir() if p.name.startswith("models--"))
    assert left == ["models--alice--lru-a", "models--alice--lru-c"]
    assert enforce_cache_bound(cache, max_bytes=10**12) == []
    assert os.path.isdir(cache)
