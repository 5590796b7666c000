"""Findings of the 2026-12-07 probe (issue 17, item 1), each replayed as the attack it was."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._fixtures.hub import HubFactory, HubHandle


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _commit(hub: HubHandle, repo: str, lines: list[dict[str, object]], token: str) -> httpx.Response:
    body = "\n".join(json.dumps(x) for x in [{"key": "header", "value": {"summary": "raw"}}, *lines])
    return httpx.post(
        f"{hub.url}/api/models/{repo}/commit/main",
        content=body.encode(),
        headers={**_auth(token), "Content-Type": "application/x-ndjson"},
        timeout=30,
    )


# -- gated (and private) LFS content reused by oid ----------------------------------------------
def test_gated_lfs_oid_is_not_usable_by_others_and_reads_like_an_unknown_oid(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    hub = hub_factory.thread(lfs_threshold=1024)
    alice = hub.api()
    data = os.urandom(18000)
    oid = hashlib.sha256(data).hexdigest()
    for name, settings in (("gated", {"gated": "manual"}), ("hidden", {"private": True})):
        alice.create_repo(f"alice/{name}")
        alice.upload_file(path_or_fileobj=data, path_in_repo="weights.bin", repo_id=f"alice/{name}")
        r = httpx.put(f"{hub.url}/api/models/alice/{name}/settings", json=settings, headers=_auth(hub.token))
        assert r.status_code == 200, r.text
    assert {f.path: f for f in alice.list_repo_tree("alice/gated")}[
        "weights.bin"
    ].lfs is not None  # it really is an LFS file
    # Bob cannot download it ...
    r = httpx.get(f"{hub.url}/alice/gated/resolve/main/weights.bin", headers=_auth(hub.bob_token))
    assert r.status_code == 403 and r.headers["X-Error-Code"] == "GatedRepo"
    # ... so he cannot commit it into his own public repo either: the answer is the unknown oid's.
    hub.api(hub.bob_token).create_repo("bob/steal")
    unknown = hashlib.sha256(b"never uploaded").hexdigest()

    def attempt(o: str) -> tuple[float, tuple[int, str | None, str]]:
        line = {"key": "lfsFile", "value": {"path": "from-gated.bin", "algo": "sha256", "oid": o, "size": 18000}}
        t0 = time.perf_counter()
        r = _commit(hub, "bob/steal", [line], hub.bob_token)
        took = time.perf_counter() - t0
        return took, (r.status_code, r.headers.get("X-Error-Code"), r.text.replace(o, "OID"))

    assert attempt(oid)[1] == attempt(unknown)[1]
    assert attempt(oid)[1][:2] == (422, "LfsObjectMissing")
    # No timing difference over 100 tries each (interleaved, so load on the machine hits both alike).
    times: dict[str, list[float]] = {"stored": [], "unknown": []}
    for _ in range(100):
        times["stored"].append(attempt(oid)[0])
        times["unknown"].append(attempt(unknown)[0])
    a, b = statistics.median(times["stored"]), statistics.median(times["unknown"])
    assert abs(a - b) < max(0.1 * b, 0.0003), f"medians {a * 1e3:.2f} ms vs {b * 1e3:.2f} ms"
    # Once granted, bob may use it (the same rule as downloading).
    r = httpx.post(f"{hub.url}/api/models/alice/gated/user-access-request/grant", json={"user": "bob"},
                   headers=_auth(hub.token))  # fmt: skip
    assert r.status_code == 200, r.text
    line = {"key": "lfsFile", "value": {"path": "granted.bin", "algo": "sha256", "oid": oid, "size": 18000}}
    assert _commit(hub, "bob/steal", [line], hub.bob_token).status_code == 200


# -- token roles -------------------------------------------------------------------------------------
def test_read_tokens_cannot_open_discussions_webhooks_or_access_requests(hub: HubHandle) -> None:
    hub.api().create_repo("alice/roles")
    httpx.put(f"{hub.url}/api/models/alice/roles/settings", json={"gated": "auto"}, headers=_auth(hub.token))
    reader = _auth(hub.read_token)
    attempts = [
        ("POST", "/api/models/alice/roles/discussions", {"title": "hi", "description": "x"}),
        ("POST", "/api/settings/webhooks", {"url": "http://127.0.0.1:9/h", "watched": [], "domains": ["repo"]}),
        ("POST", "/alice/roles/ask-access", {}),
    ]
    for method, path, body in attempts:
        r = httpx.request(method, hub.url + path, json=body, headers=reader)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert "read-only token" in r.headers["X-Error-Message"]
    # Comments too, on a discussion a write token opened.
    num = httpx.post(f"{hub.url}/api/models/alice/roles/discussions", json={"title": "t"}, headers=_auth(hub.token))
    n = num.json()["num"]
    r = httpx.post(f"{hub.url}/api/models/alice/roles/discussions/{n}/comment", json={"comment": "x"}, headers=reader)
    assert r.status_code == 403
    assert httpx.get(f"{hub.url}/api/settings/webhooks", headers=reader).status_code == 200  # reading is fine


def test_author_filter_is_case_insensitive(hub: HubHandle) -> None:
    hub.api().create_repo("alice/case-author")
    for author in ("alice", "ALICE", "Alice"):
        ids = [m["id"] for m in httpx.get(f"{hub.url}/api/models", params={"author": author}).json()]
        assert "alice/case-author" in ids, author


def test_absolute_urls_never_come_from_the_host_header(hub: HubHandle) -> None:
    forged = {**_auth(hub.token), "Host": "evil.example:666"}
    r = httpx.post(f"{hub.url}/api/repos/create", json={"name": "host-header"}, headers=forged)
    assert r.status_code == 200 and r.json()["url"] == f"{hub.url}/alice/host-header"
    r = _commit(hub, "alice/host-header", [], hub.token)
    body = "\n".join(json.dumps(x) for x in [{"key": "header", "value": {"summary": "s"}}])
    r = httpx.post(f"{hub.url}/api/models/alice/host-header/commit/main", content=body,
                   headers={**forged, "Content-Type": "application/x-ndjson"})  # fmt: skip
    assert r.status_code == 200 and "evil" not in r.text and r.json()["commitUrl"].startswith(hub.url)
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": "a" * 64, "size": 5}]}
    r = httpx.post(f"{hub.url}/alice/host-header.git/info/lfs/objects/batch", json=batch,
                   headers={**forged, "Accept": "application/vnd.git-lfs+json"})  # fmt: skip
    assert r.status_code == 200 and "evil" not in r.text and hub.url in r.text


# -- request headers are bounded ---------------------------------------------------------------------
def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_200_mb_of_headers_are_refused_in_bounded_memory(hub_factory: HubFactory) -> None:
    hub = hub_factory.process()
    assert hub.process is not None
    host, port = hub.url.removeprefix("http://").split(":")
    httpx.get(f"{hub.url}/api/models")  # warm up
    before = _rss_kb(hub.process.pid)
    sent = 0
    line = b"X-Filler: " + b"a" * 8180 + b"\r\n"
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"GET /api/models HTTP/1.1\r\nHost: x\r\n")
        try:
            while sent < 200 * 1024 * 1024:
                sock.sendall(line * 16)
                sent += len(line) * 16
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(5)
        try:
            answer = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    grown = _rss_kb(hub.process.pid) - before
    print(f"headers: refused after {sent / 1e6:.1f} MB sent; server RSS +{grown / 1024:.1f} MiB")
    assert sent < 200 * 1024 * 1024, "the server read 200 MB of headers without refusing"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    assert grown < 10 * 1024, f"RSS grew by {grown} KiB"
    assert httpx.get(f"{hub.url}/api/models").status_code == 200  # still serving


def test_a_long_url_and_one_endless_header_line_are_refused(hub: HubHandle) -> None:
    host, port = hub.url.removeprefix("http://").split(":")
    for head in (b"GET /api/models?search=" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET /api/models HTTP/1.1\r\nX-Long: " + b"b" * 3_000_000):  # fmt: skip
        with socket.create_connection((host, int(port))) as sock:
            try:
                sock.sendall(head)
            except (BrokenPipeError, ConnectionResetError):
                pass
            sock.settimeout(5)
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
        assert b"send fewer or shorter headers" in answer


# -- the event loop stays free ------------------------------------------------------------------------
def test_a_slow_listing_does_not_delay_other_requests(hub_factory: HubFactory) -> None:
    hub = hub_factory.thread()
    api = hub.api()
    card = "---\ntags:\n" + "".join(f"- tag{i}\n" for i in range(8000)) + "---\n# big card\n"
    for i in range(12):
        api.create_repo(f"alice/slow-{i}")
        api.upload_file(path_or_fileobj=card.encode() + str(i).encode(), path_in_repo="README.md",
                        repo_id=f"alice/slow-{i}")  # fmt: skip
    listing_done = threading.Event()
    listing_took: list[float] = []

    def list_many() -> None:
        t0 = time.perf_counter()
        for _ in range(6):
            httpx.get(f"{hub.url}/api/models", params={"filter": "tag7", "full": "1", "cardData": "1"}, timeout=120)
        listing_took.append(time.perf_counter() - t0)
        listing_done.set()

    threads = [threading.Thread(target=list_many) for _ in range(2)]
    for t in threads:
        t.start()
    waits: list[float] = []
    with httpx.Client(headers=_auth(hub.token)) as client:
        while not listing_done.is_set():
            t0 = time.perf_counter()
            assert client.get(f"{hub.url}/api/whoami-v2").status_code == 200
            waits.append(time.perf_counter() - t0)
            time.sleep(0.01)
    for t in threads:
        t.join()
    waits.sort()
    p95 = waits[int(len(waits) * 0.95)]
    print(f"whoami under listings: n={len(waits)} median {statistics.median(waits) * 1e3:.1f} ms, "
          f"p95 {p95 * 1e3:.1f} ms, max {waits[-1] * 1e3:.1f} ms; listings {listing_took}")  # fmt: skip
    assert p95 < 0.1, f"whoami p95 {p95 * 1e3:.0f} ms behind listings taking {listing_took}"


# -- deletedFolder is not quadratic ------------------------------------------------------------------
def test_20k_adds_and_20k_deleted_folders_in_one_commit_under_2_s(hub_factory: HubFactory) -> None:
    """The quadratic scan (each deletedFolder walked every path: 20k x 40k) took 40 s of CPU under the
    repo lock, then 7 s once bisected (the old commit's 20k folder trees were each read and rebuilt).
    Now deletes cost what they remove and only changed folders are rebuilt: the commit that adds 20k
    files and deletes 20k folders costs the server < 2 s. The bound is on the server process's CPU
    time, so other jobs on a shared machine do not fail it (the wall time is printed beside it), and
    tighter than 2 s: the bisected-but-rebuild-everything version took 1.8 s of CPU here (5.4 s wall
    at load 8 on 2 cores), this one 0.8 s."""
    import psutil

    hub = hub_factory.process()
    assert hub.process is not None
    server = psutil.Process(hub.process.pid)
    hub.api().create_repo("alice/many-folders")

    def timed(lines: list[dict[str, object]]) -> tuple[float, float]:
        body = "\n".join(json.dumps(x) for x in [{"key": "header", "value": {"summary": "raw"}}, *lines]).encode()
        cpu0, t0 = sum(server.cpu_times()[:2]), time.perf_counter()
        r = httpx.post(f"{hub.url}/api/models/alice/many-folders/commit/main", content=body, timeout=60,
                       headers={**_auth(hub.token), "Content-Type": "application/x-ndjson"})  # fmt: skip
        wall, cpu = time.perf_counter() - t0, sum(server.cpu_times()[:2]) - cpu0
        assert r.status_code == 200, r.text
        return wall, cpu

    add = [{"key": "file", "value": {"path": f"old{i}/f.txt", "content": "aGk=", "encoding": "base64"}}
           for i in range(20_000)]  # fmt: skip
    adds_wall, adds_cpu = timed(add)
    lines = [{"key": "file", "value": {"path": f"new{i}/f.txt", "content": "aGk=", "encoding": "base64"}}
             for i in range(20_000)]  # fmt: skip
    lines += [{"key": "deletedFolder", "value": {"path": f"old{i}"}} for i in range(20_000)]
    both_wall, both_cpu = timed(lines)
    print(f"20k adds: {adds_wall:.2f} s wall, {adds_cpu:.2f} s server CPU; 20k adds + 20k deletedFolder: "
          f"{both_wall:.2f} s wall, {both_cpu:.2f} s server CPU")  # fmt: skip
    assert both_cpu < 1.4, f"{both_cpu:.2f} s of server CPU"
    for path, status in (("new19999/f.txt", 200), ("new0/f.txt", 200), ("old0/f.txt", 404), ("old19999/f.txt", 404)):
        assert httpx.head(f"{hub.url}/alice/many-folders/resolve/main/{path}").status_code == status, path


# -- webhook targets: only globally routable addresses ----------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://100.100.100.200/latest/meta-data/",  # carrier-grade NAT: a cloud metadata service
        "http://100.64.0.1/",
        "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "http://[::ffff:100.64.0.1]/",  # IPv4-mapped CGNAT
        "http://192.0.2.1/",  # documentation range: not global
        "http://198.18.0.1/",  # benchmarking range
    ],
)
def test_webhook_targets_must_be_globally_routable(hub: HubHandle, url: str) -> None:
    answer = httpx.post(f"{hub.url}/api/settings/webhooks",
                        json={"url": url, "watched": [{"type": "user", "name": "alice"}], "domains": ["repo"]},
                        headers=_auth(hub.token))  # fmt: skip
    assert answer.status_code == 400 and "--webhook-allow" in answer.json()["error"], answer.text


# -- NDJSON inline content goes to disk as it arrives -------------------------------------------------
def test_a_200_mb_commit_of_800_inline_files_grows_the_server_by_under_32_mb(hub_factory: HubFactory) -> None:
    import base64

    hub = hub_factory.process()
    assert hub.process is not None
    hub.api().create_repo("alice/inline-800")
    piece = base64.b64encode(os.urandom(3 * 1024)).decode()  # 4 KiB of base64
    content = piece * 62  # ~250 KB of base64 per file (~190 KB decoded)

    def body() -> Iterator[bytes]:
        yield json.dumps({"key": "header", "value": {"summary": "800 files"}}).encode() + b"\n"
        for i in range(800):
            line = {"key": "file", "value": {"path": f"f{i}.bin", "content": content, "encoding": "base64"}}
            yield json.dumps(line).encode() + b"\n"

    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        assert hub.process is not None
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_kb(hub.process.pid))
            time.sleep(0.02)

    before = _rss_kb(hub.process.pid)
    sampler = threading.Thread(target=sample)
    sampler.start()
    r = httpx.post(f"{hub.url}/api/models/alice/inline-800/commit/main", content=body(),
                   headers={**_auth(hub.token), "Content-Type": "application/x-ndjson"}, timeout=300)  # fmt: skip
    stop.set()
    sampler.join()
    assert r.status_code == 200, r.text
    grown = peak[0] - before
    print(f"800 inline files ({800 * len(content) / 1e6:.0f} MB of base64): server RSS +{grown / 1024:.1f} MiB")
    assert grown < 32 * 1024
    assert httpx.head(f"{hub.url}/alice/inline-800/resolve/main/f799.bin").status_code == 200


# -- restart after a kill: no temp file, no orphaned commit record ------------------------------------
def test_restart_removes_temp_files_and_orphaned_commit_records(hub_factory: HubFactory) -> None:
    from registry.localhub.storage import Storage

    hub = hub_factory.process("crash")
    api = hub.api()
    api.create_repo("alice/crashy")
    api.upload_file(path_or_fileobj=b"one", path_in_repo="a.txt", repo_id="alice/crashy")
    kept = api.list_repo_commits("alice/crashy")
    assert hub.process is not None
    hub.process.kill()  # SIGKILL
    hub.process.wait()
    # What a kill between "commit record written" and "ref moved" leaves, and temp files of
    # half-done writes at the data root and in the card cache.
    store = Storage(hub.data_dir).repo("model", "alice/crashy")
    time.sleep(0.01)
    orphan = store.write_commit(parents=[kept[0].commit_id], title="never acknowledged", message="", author="alice",
                                files=dict(store.commit(kept[0].commit_id).files))  # fmt: skip
    for leftover in (hub.data_dir / ".tmp-webhooks", hub.data_dir / "cards" / ".tmp-card"):
        leftover.parent.mkdir(exist_ok=True)
        leftover.write_bytes(b"half")
    again = hub_factory.process("crash2", data_dir=hub.data_dir)
    assert httpx.get(f"{again.url}/api/models/alice/crashy/revision/{orphan}").status_code == 404
    assert [c.commit_id for c in again.api().list_repo_commits("alice/crashy")] == [c.commit_id for c in kept]
    assert not list(hub.data_dir.rglob(".tmp-*"))


# -- stock clients: large files through LFS, never inline ----------------------------------------------
def test_a_stock_client_uploads_12_mb_through_lfs_with_xet_off(hub: HubHandle) -> None:
    hub.api().create_repo("alice/stock-lfs")
    code = (
        "import os; from huggingface_hub import HfApi\n"
        "HfApi().upload_file(path_or_fileobj=os.urandom(12 * 1024 * 1024), path_in_repo='ckpt.bin',"
        " repo_id='alice/stock-lfs')\n"
    )
    # Only HF_HUB_DISABLE_XET=1, as the hub's message says; no Mergeling header or user agent.
    hub.run_python(code, HF_HUB_USER_AGENT_ORIGIN="stock")
    files = {f.path: f for f in hub.api().list_repo_tree("alice/stock-lfs")}
    assert files["ckpt.bin"].lfs is not None and files["ckpt.bin"].size == 12 * 1024 * 1024


def test_a_stock_client_with_xet_on_fails_early_at_the_xet_token(hub: HubHandle) -> None:
    import subprocess
    import sys

    pytest.importorskip("hf_xet")
    hub.api().create_repo("alice/stock-xet")
    code = (
        "import os; from huggingface_hub import HfApi\n"
        "HfApi().upload_file(path_or_fileobj=os.urandom(12 * 1024 * 1024), path_in_repo='ckpt.bin',"
        " repo_id='alice/stock-xet')\n"
    )
    env = hub.env(HF_HUB_USER_AGENT_ORIGIN="stock")
    env.pop("HF_HUB_DISABLE_XET")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    # hf_xet (Rust) fetches the Xet token itself and reports only the status and the URL, not the
    # hub's message; the failure is early (before any byte is sent) and names the Xet endpoint.
    assert proc.returncode != 0 and "501" in proc.stderr and "xet-write-token" in proc.stderr, proc.stderr[-2000:]
    r = httpx.get(f"{hub.url}/api/models/alice/stock-xet/xet-write-token/main", headers=_auth(hub.token))
    assert r.status_code == 501 and "set HF_HUB_DISABLE_XET=1 and upload again" in r.json()["error"]


def test_a_large_file_sent_inline_is_refused_with_one_line(hub: HubHandle) -> None:
    import base64

    hub.api().create_repo("alice/inline-big")
    data = base64.b64encode(os.urandom(11 * 1024 * 1024)).decode()
    r = _commit(hub, "alice/inline-big", [{"key": "file", "value": {"path": "big.bin", "content": data,
                                                                   "encoding": "base64"}}], hub.token)  # fmt: skip
    assert r.status_code == 413 and r.headers["X-Error-Code"] == "LfsRequired"
    assert "\n" not in r.json()["error"] and "HF_HUB_DISABLE_XET=1" in r.json()["error"]
