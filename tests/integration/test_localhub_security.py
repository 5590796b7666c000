"""Security findings of issue 9, each replayed as the attacker did it (real server, real clients)."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest

from tests._fixtures.hub import HubFactory, HubHandle


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def raw_commit(
    hub: HubHandle, repo: str, lines: list[dict[str, object]], *, token: str | None = None
) -> httpx.Response:
    """An NDJSON commit posted directly (no client-side checks such as validate-yaml)."""
    body = "\n".join(json.dumps(line) for line in [{"key": "header", "value": {"summary": "raw"}}, *lines])
    return httpx.post(
        f"{hub.url}/api/models/{repo}/commit/main",
        content=body.encode(),
        headers={**_auth(token or hub.token), "Content-Type": "application/x-ndjson"},
        timeout=30,
    )


def _file(path: str, data: bytes) -> dict[str, object]:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


# -- finding 3 --------------------------------------------------------------------------------
def test_private_and_missing_repos_answer_the_same_404(hub: HubHandle) -> None:
    hub.api().create_repo("alice/secret-plans", private=True)
    for token in (None, hub.bob_token):
        answers = []
        for repo in ("alice/secret-plans", "alice/no-such-repo"):
            r = httpx.get(f"{hub.url}/api/models/{repo}", headers=_auth(token))
            text = r.text.replace(repo, "REPO")
            answers.append(
                (r.status_code, r.headers.get("X-Error-Code"), r.headers["X-Error-Message"].replace(repo, "REPO"), text)
            )
        assert answers[0] == answers[1]
        assert answers[0][:2] == (404, "RepoNotFound")


# -- finding 7 --------------------------------------------------------------------------------
LAUGHS = "\n".join(
    ["---", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    + ["tags: *i", "---", "# boom", ""]
)


@pytest.mark.parametrize("card", [LAUGHS, "---\ntags: &x [*x]\n---\n# loop\n"], ids=["laughs", "self-alias"])
def test_alias_bombs_in_a_card_are_refused_and_break_nothing(hub: HubHandle, card: str) -> None:
    name = f"alice/bomb-{hashlib.sha256(card.encode()).hexdigest()[:8]}"
    hub.api().create_repo(name)
    hub.api().create_repo("alice/good-neighbour", exist_ok=True)
    assert raw_commit(hub, name, [_file("README.md", card.encode())]).status_code == 200
    info = httpx.get(f"{hub.url}/api/models/{name}", timeout=30)
    assert info.status_code == 200 and len(info.content) < 20_000 and "cardData" not in info.json()
    listing = httpx.get(f"{hub.url}/api/models", params={"cardData": "1"}, timeout=30)
    assert listing.status_code == 200
    assert {name, "alice/good-neighbour"} <= {row["id"] for row in listing.json()}
    # The client's own validation call is told why.
    check = httpx.post(f"{hub.url}/api/validate-yaml", json={"content": card, "repoType": "model"})
    assert check.status_code == 400 and "alias" in check.json()["errors"][0]["message"]


def test_validate_yaml_checks_license_model_index_and_warns_on_empty(hub: HubHandle) -> None:
    api = hub.api()
    with pytest.raises(ValueError, match="license"):
        api._validate_yaml("---\nlicense: asdf\n---\n")
    with pytest.raises(ValueError, match="model-index"):
        api._validate_yaml("---\nmodel-index: foo\n---\n")
    with pytest.warns(UserWarning, match="Empty or missing yaml metadata"):
        api._validate_yaml("# no metadata\n")
    api._validate_yaml("---\nlicense: cc-by-sa-4.0\nmodel-index: []\n---\n")
    # Front matter after a leading newline is front matter too.
    api.create_repo("alice/newline-card")
    api.upload_file(
        path_or_fileobj=b"\n---\nlicense: mit\ntags: [late]\n---\n# x\n",
        path_in_repo="README.md",
        repo_id="alice/newline-card",
    )
    assert "late" in api.model_info("alice/newline-card").tags
    with pytest.raises(ValueError, match="license"):
        api._validate_yaml("\n---\nlicense: asdf\n---\n")


def test_yaml_dates_in_cards_do_not_break_info(hub: HubHandle) -> None:
    hub.api().create_repo("alice/dated")
    assert (
        raw_commit(hub, "alice/dated", [_file("README.md", b"---\ndate: 2024-01-01\nlicense: mit\n---\n")]).status_code
        == 200
    )
    assert httpx.get(f"{hub.url}/api/models/alice/dated").json()["cardData"]["date"] == "2024-01-01"


# -- findings 1 and 2 -------------------------------------------------------------------------
def _lfs_upload(hub: HubHandle, repo: str, data: bytes, token: str) -> str:
    """Upload `data` through the LFS batch API of `repo`; return its sha256."""
    oid = hashlib.sha256(data).hexdigest()
    batch = httpx.post(
        f"{hub.url}/{repo}.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]},
        headers=_auth(token),
    )
    assert batch.status_code == 200, batch.text
    obj = batch.json()["objects"][0]
    if "actions" in obj:
        put = httpx.put(obj["actions"]["upload"]["href"], content=data)
        assert put.status_code == 200, put.text
    return oid


def test_an_lfs_object_of_a_private_repo_cannot_be_published_elsewhere(hub: HubHandle) -> None:
    secret = b"private weights " * 1000
    hub.api().create_repo("alice/vault", private=True)
    oid = _lfs_upload(hub, "alice/vault", secret, hub.token)
    lfs_line = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(secret)}}
    assert raw_commit(hub, "alice/vault", [lfs_line]).status_code == 200  # the owner may use it
    hub.api(hub.bob_token).create_repo("bob/loot")
    stolen = raw_commit(hub, "bob/loot", [lfs_line], token=hub.bob_token)
    missing_line = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "e" * 64, "size": 5}}
    missing = raw_commit(hub, "bob/loot", [missing_line], token=hub.bob_token)
    assert stolen.status_code == missing.status_code == 422
    assert stolen.json()["error"].replace(oid, "OID") == missing.json()["error"].replace("e" * 64, "OID")
    assert httpx.get(f"{hub.url}/bob/loot/resolve/main/w.bin").status_code == 404
    # The batch API does not skip the upload for bob either: he must prove he has the bytes.
    batch = httpx.post(
        f"{hub.url}/bob/loot.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": oid, "size": len(secret)}]},
        headers=_auth(hub.bob_token),
    ).json()
    assert "actions" in batch["objects"][0]
    # Uploading the real bytes to his own repo is proof enough.
    assert _lfs_upload(hub, "bob/loot", secret, hub.bob_token) == oid
    assert raw_commit(hub, "bob/loot", [lfs_line], token=hub.bob_token).status_code == 200


def test_verify_is_no_oracle_for_other_repos_objects(hub: HubHandle) -> None:
    data = b"only in a private repo " * 100
    hub.api().create_repo("alice/vault2", private=True)
    oid = _lfs_upload(hub, "alice/vault2", data, hub.token)
    hub.api(hub.bob_token).create_repo("bob/public")
    body = {"oid": oid, "size": len(data)}
    via_bob = httpx.post(f"{hub.url}/bob/public.git/info/lfs/objects/verify", json=body, headers=_auth(hub.bob_token))
    absent = httpx.post(
        f"{hub.url}/bob/public.git/info/lfs/objects/verify",
        json={"oid": "f" * 64, "size": len(data)},
        headers=_auth(hub.bob_token),
    )
    assert via_bob.status_code == absent.status_code == 404
    own = httpx.post(f"{hub.url}/alice/vault2.git/info/lfs/objects/verify", json=body, headers=_auth(hub.token))
    assert own.status_code == 200


def test_large_upload_folder_still_round_trips_through_lfs(hub_factory: HubFactory, tmp_path: object) -> None:
    hub = hub_factory.thread("lfs", lfs_threshold=1000)
    api = hub.api()
    api.create_repo("alice/big")
    payload = bytes(range(256)) * 40
    api.upload_file(path_or_fileobj=payload, path_in_repo="big.bin", repo_id="alice/big")
    api.upload_file(path_or_fileobj=payload, path_in_repo="copy.bin", repo_id="alice/big")  # batch says "exists"
    info = api.model_info("alice/big", files_metadata=True)
    sizes = {s.rfilename: s.lfs.size if s.lfs else None for s in info.siblings or []}
    assert sizes["big.bin"] == sizes["copy.bin"] == len(payload)


# -- finding 4 --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://192.168.0.1:8080/",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://224.0.0.1/",
        "http://0.0.0.0:22/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_webhooks_to_internal_targets_are_refused(hub: HubHandle, url: str) -> None:
    for token in (hub.token,):  # read tokens may not create webhooks at all (test_localhub_hardening)
        answer = httpx.post(
            f"{hub.url}/api/settings/webhooks",
            json={"url": url, "watched": [{"type": "user", "name": "alice"}]},
            headers=_auth(token),
        )
        assert answer.status_code == 400 and "--webhook-allow" in answer.json()["error"], answer.text


def _hook(hub: HubHandle, url: str, watch: str) -> str:
    answer = httpx.post(
        f"{hub.url}/api/settings/webhooks",
        json={"url": url, "watched": [{"type": "model", "name": watch}], "domains": ["repo"]},
        headers=_auth(hub.token),
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["webhook"]["id"])


def _deliveries(hub: HubHandle, hook_id: str, n: int, timeout: float = 10) -> list[dict[str, object]]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        log = httpx.get(f"{hub.url}/api/settings/webhooks/{hook_id}/deliveries", headers=_auth(hub.token)).json()
        if len(log) >= n or time.monotonic() > deadline:
            return list(log)
        time.sleep(0.05)


class _Target:
    """A raw TCP listener on 127.0.0.1: answers with `reply` (or hangs up at once when None)."""

    def __init__(self, reply: bytes | None) -> None:
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []

        def serve() -> None:
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                with conn:
                    if reply is not None:
                        self.requests.append(conn.recv(65536))
                        conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def test_webhook_redirects_are_not_followed_and_failures_say_nothing_about_ports(hub_factory: HubFactory) -> None:
    """The owner of a webhook reads its delivery log: an open port answering 404, one redirecting, one
    hanging up and a closed port must read the same (the probe told them apart by status vs
    "failed", and by a 404 not being retried), so the log is no port scanner."""
    import socket

    hub = hub_factory.thread("hooks", webhook_backoff_s=0.01, webhook_attempts=3)
    final = _Target(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    redirect = _Target(
        f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{final.port}/x\r\nContent-Length: 0\r\n\r\n".encode()
    )
    not_found = _Target(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
    hangup = _Target(None)
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    try:
        api = hub.api()
        api.create_repo("alice/watched")
        ports = {"redirect": redirect.port, "404": not_found.port, "hangup": hangup.port, "closed": closed_port}
        ids = {name: _hook(hub, f"http://127.0.0.1:{port}/hook", "alice/watched") for name, port in ports.items()}
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/watched")
        logs = {name: _deliveries(hub, hook_id, 3) for name, hook_id in ids.items()}
        assert len(not_found.requests) == 3 and len(redirect.requests) == 3  # the open ports really answered
        assert final.requests == []  # the Location was not followed

        def shape(log: list[dict[str, object]]) -> list[tuple[object, ...]]:
            return [tuple(sorted((k, v) for k, v in d.items() if k not in ("time", "hook_id"))) for d in log]

        expected = [
            (("attempt", n), ("delivered", False), ("event", {"action": "update", "scope": "repo.content"}),
             ("reason", "the target did not answer with a 2xx status"))
            for n in (1, 2, 3)
        ]  # fmt: skip
        assert {name: shape(log) for name, log in logs.items()} == dict.fromkeys(ids, expected)
        assert not any(str(port) in json.dumps(logs) for port in ports.values())
    finally:
        for target in (final, redirect, not_found, hangup):
            target.close()


def test_internal_targets_are_checked_again_at_delivery(hub_factory: HubFactory) -> None:
    """A webhook stored while loopback was allowed is not delivered once it is not (DNS rebinding)."""
    target = _Target(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    try:
        allowed = hub_factory.thread("rebind", webhook_loopback=False, webhook_allow=("localhost", "127.0.0.0/8"))
        allowed.api().create_repo("alice/rebind")
        hook_id = _hook(allowed, f"http://localhost:{target.port}/hook", "alice/rebind")
        allowed.stop()
        from tests._fixtures.hub import start_thread_hub

        strict = start_thread_hub(allowed.data_dir, allowed.home, webhook_loopback=False, webhook_attempts=1)
        try:
            strict.api().upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/rebind")
            log = _deliveries(strict, hook_id, 1)
            assert [(d["delivered"], d["reason"]) for d in log] == [
                (False, "the target did not answer with a 2xx status")
            ]
            assert target.requests == []
        finally:
            strict.stop()
    finally:
        target.close()
