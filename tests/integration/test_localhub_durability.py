"""Durability: concurrent commits, restarts, and a server SIGKILLed in the middle of commits."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests._fixtures.hub import HubFactory, HubHandle

# The writer runs in its own process: after the kill, huggingface_hub retries with backoff and
# resets its shared HTTP session, which would break this process's own downloads.
_WRITER = """
import hashlib, json, sys
from huggingface_hub import CommitOperationAdd, HfApi
api = HfApi()
first = int(sys.argv[1])
for i in range(first, first + 100):
    data = hashlib.sha256(str(i).encode()).digest() * (48 * 1024)
    state = json.dumps({"step": i, "sha256": hashlib.sha256(data).hexdigest()}).encode()
    ops = [CommitOperationAdd(f"step-{i % 3}.bin", data), CommitOperationAdd("state.json", state)]
    api.create_commit("alice/crashy", ops, commit_message=f"step {i}")
    print(i, flush=True)
"""


def test_concurrent_commits_are_serialised_and_none_is_lost(hub: HubHandle) -> None:
    from huggingface_hub import CommitOperationAdd

    hub.api().create_repo("alice/busy")
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        api = hub.api()
        try:
            for i in range(5):
                api.create_commit(
                    "alice/busy", [CommitOperationAdd(f"w{w}/{i}.txt", f"{w}-{i}".encode())], commit_message=f"{w}.{i}"
                )
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    files = set(hub.api().list_repo_files("alice/busy"))
    assert {f"w{w}/{i}.txt" for w in range(4) for i in range(5)} <= files
    assert len(hub.api().list_repo_commits("alice/busy")) == 21  # 20 + the initial commit


def test_parent_commit_retry_loop_loses_no_update(hub: HubHandle) -> None:
    """Read-modify-write of one file by several writers with parentCommit and retry on 412."""
    from registry.errors import HubConflictError

    hub.client().create_repo("lab/counter", repo_type="dataset")

    def bump(n: int) -> None:
        client = hub.client(cache=f"cache-{threading.get_ident()}")
        for _ in range(n):
            while True:
                head = client.head_sha("lab/counter", repo_type="dataset")
                files = client.list_files("lab/counter", repo_type="dataset", revision=head)
                value = (
                    int(client.read_file("lab/counter", "n.txt", repo_type="dataset", revision=head))
                    if "n.txt" in files
                    else 0
                )
                try:
                    client.commit_files(
                        "lab/counter",
                        repo_type="dataset",
                        message="bump",
                        add={"n.txt": str(value + 1).encode()},
                        parent_commit=head,
                    )
                    break
                except HubConflictError:
                    continue

    threads = [threading.Thread(target=bump, args=(4,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert hub.client().read_file("lab/counter", "n.txt", repo_type="dataset") == b"12"


def test_sigkill_mid_commit_leaves_old_or_new_commit(hub_factory: HubFactory) -> None:
    """Kill the server while a client streams commits; after restart every repo reads cleanly."""
    first = hub_factory.process("crash")
    data_dir = first.data_dir
    first.api().create_repo("alice/crashy")
    first.api().create_repo("lab/bystander")
    first.api().upload_file(path_or_fileobj=b"still here", path_in_repo="keep.txt", repo_id="lab/bystander")
    current = first
    for round_ in range(2):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(round_ * 100)],
            env=current.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        done: list[int] = []
        reader = threading.Thread(target=lambda w=writer, d=done: d.extend(int(line) for line in w.stdout), daemon=True)  # type: ignore[union-attr]
        reader.start()
        deadline = time.monotonic() + 60
        while len(done) < 2 and time.monotonic() < deadline:  # a loaded machine may be slow to start
            time.sleep(0.01)
        time.sleep(0.05 + 0.13 * round_)  # land the kill at a different point of a commit each round
        assert current.process is not None
        current.process.send_signal(signal.SIGKILL)
        current.process.wait()
        time.sleep(0.2)  # let an acknowledged commit's line reach us
        writer.kill()
        writer.wait()
        reader.join(timeout=5)
        assert done, "no commit finished before the kill; the test proves nothing"
        current = hub_factory.process(f"restart{round_}", data_dir=data_dir)
        api = current.api(first.token)  # accounts persisted: the old token still works
        state = json.loads(
            Path(api.hf_hub_download("alice/crashy", "state.json", cache_dir=current.home / f"c{round_}")).read_text()
        )
        # The head is a whole commit: the last acknowledged one, or the one the kill interrupted.
        assert state["step"] in (done[-1], done[-1] + 1), (state, done[-3:])
        step_file = api.hf_hub_download(
            "alice/crashy", f"step-{state['step'] % 3}.bin", cache_dir=current.home / f"c{round_}"
        )
        with open(step_file, "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == state["sha256"]
        for repo in ("alice/crashy", "lab/bystander"):
            for path in api.list_repo_files(repo):
                api.hf_hub_download(repo, path, cache_dir=current.home / f"all{round_}")
        assert api.list_repo_commits("alice/crashy")[0].title == f"step {state['step']}"


def test_temp_files_left_by_a_kill_are_removed_at_startup(hub_factory: HubFactory) -> None:
    """Finding 9: `.tmp-*` copies of refs.json / commit records do not survive a restart."""
    from tests._fixtures.hub import start_thread_hub

    first = hub_factory.thread("tmp")
    first.api().create_repo("alice/tmpfiles")
    root = first.data_dir / "repos" / "models" / "alice" / "tmpfiles"
    first.stop()
    leftovers = [root / ".tmp-refs123", root / "commits" / ".tmp-commit456", first.data_dir / "blobs" / ".tmp" / "up-1"]
    for path in leftovers:
        path.write_bytes(b"half written")
    again = start_thread_hub(first.data_dir, first.home)
    try:
        assert not any(p.exists() for p in leftovers)
        assert again.api().model_info("alice/tmpfiles").sha
    finally:
        again.stop()


def test_delete_during_commits_is_atomic_and_never_500(hub: HubHandle) -> None:
    """Finding 10: commits racing a delete get 200 or 404, and the repo is gone for good."""
    import base64

    import httpx

    hub.api().create_repo("alice/doomed")
    statuses: list[int] = []

    def commit(i: int) -> None:
        lines = [
            {"key": "header", "value": {"summary": f"c{i}"}},
            {"key": "file", "value": {"path": f"f{i}.txt", "content": base64.b64encode(b"%d" % i).decode()}},
        ]
        body = "\n".join(json.dumps(line) for line in lines)
        for _ in range(10):
            r = httpx.post(
                f"{hub.url}/api/models/alice/doomed/commit/main",
                content=body,
                headers={"Authorization": f"Bearer {hub.token}", "Content-Type": "application/x-ndjson"},
                timeout=30,
            )
            statuses.append(r.status_code)

    workers = [threading.Thread(target=commit, args=(i,)) for i in range(6)]
    for w in workers:
        w.start()
    time.sleep(0.2)
    hub.api().delete_repo("alice/doomed")
    for w in workers:
        w.join()
    assert set(statuses) <= {200, 404}, statuses
    assert not (hub.data_dir / "repos" / "models" / "alice" / "doomed").exists()
    assert httpx.get(f"{hub.url}/api/models").status_code == 200
    # A half-deleted repo (a folder with refs.json only) does not break listings either.
    half = hub.data_dir / "repos" / "models" / "alice" / "half"
    half.mkdir(parents=True)
    (half / "refs.json").write_text(
        '{"heads": {"main": "0000000000000000000000000000000000000000"}, "tags": {}, "prs": {}}'
    )
    listing = httpx.get(f"{hub.url}/api/models", params={"full": "1"})
    assert listing.status_code == 200 and "alice/half" not in {row["id"] for row in listing.json()}
    assert httpx.get(f"{hub.url}/api/models/alice/half").status_code == 404
    shutil.rmtree(half)


def test_trees_are_content_addressed_and_last_commits_need_no_history(hub: HubHandle) -> None:
    """Finding 11: a commit writes the trees it changed, and lastCommit comes from the trees."""
    import httpx

    api = hub.api()
    api.create_repo("alice/trees")
    root = hub.data_dir / "repos" / "models" / "alice" / "trees"
    from huggingface_hub import CommitOperationAdd

    ops = [CommitOperationAdd(f"a/deep/f{i}.txt", b"%d" % i) for i in range(40)]
    first = api.create_commit(
        "alice/trees", [*ops, CommitOperationAdd("a/deep/x.txt", b"1")], commit_message="many"
    ).oid
    trees_after_first = len(list((root / "trees").rglob("*.json")))
    assert trees_after_first >= 3  # root, a/, a/deep/
    for i in range(20):
        api.upload_file(path_or_fileobj=b"%d" % i, path_in_repo="b/y.txt", repo_id="alice/trees")
    # Each later commit rewrote only the root and b/ (2 objects), never a/ or a/deep/.
    assert len(list((root / "trees").rglob("*.json"))) <= trees_after_first + 2 * 20
    sizes = [p.stat().st_size for p in (root / "commits").rglob("*.json")]
    assert max(sizes) < 1000  # a commit record holds a tree id, not the 42-file map
    listing = httpx.get(f"{hub.url}/api/models/alice/trees/tree/main?recursive=true&expand=true").json()
    last = {e["path"]: e["lastCommit"]["id"] for e in listing}
    head = api.model_info("alice/trees").sha
    assert last["a"] == last["a/deep"] == last["a/deep/x.txt"] == first
    assert last["b"] == last["b/y.txt"] == head
    infos = api.get_paths_info("alice/trees", ["a", "b/y.txt"], expand=True)
    assert {i.path: i.last_commit.oid for i in infos} == {"a": first, "b/y.txt": head}  # type: ignore[union-attr]
    assert api.model_info("alice/trees", revision=first[:7]).sha == first


def test_commit_records_written_before_trees_are_still_served(hub: HubHandle) -> None:
    import hashlib as _hashlib

    import httpx

    api = hub.api()
    api.create_repo("alice/legacy")
    root = hub.data_dir / "repos" / "models" / "alice" / "legacy"
    data = b"old format\n"
    blob = hub.data_dir / "blobs" / _hashlib.sha256(data).hexdigest()[:2] / _hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    entry = {"sha256": _hashlib.sha256(data).hexdigest(), "size": len(data), "git": "0" * 40, "lfs": False}
    record = {"parents": [], "title": "legacy", "message": "", "author": "alice", "date": "2024-01-01T00:00:00.000Z",
              "files": {"docs/old.txt": entry}, "nonce": "00"}  # fmt: skip
    legacy_id = "ab" * 20
    (root / "commits" / f"{legacy_id}.json").write_text(json.dumps(record))
    refs = json.loads((root / "refs.json").read_text())
    refs["heads"]["main"] = legacy_id
    (root / "refs.json").write_text(json.dumps(refs))
    assert httpx.get(f"{hub.url}/alice/legacy/resolve/main/docs/old.txt").content == data
    assert [e["path"] for e in httpx.get(f"{hub.url}/api/models/alice/legacy/tree/main/docs").json()] == [
        "docs/old.txt"
    ]
    api.upload_file(path_or_fileobj=b"new", path_in_repo="new.txt", repo_id="alice/legacy")
    assert sorted(api.list_repo_files("alice/legacy")) == ["docs/old.txt", "new.txt"]
