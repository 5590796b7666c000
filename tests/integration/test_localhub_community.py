"""Discussions, pull requests and webhooks on the embedded hub, with real HTTP receivers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests._fixtures.hub import HubFactory, HubHandle


class Receiver:
    """A webhook receiver on 127.0.0.1 that records deliveries; answers `fail_first` with 500s."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.fail_left = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(500)
                else:
                    outer.received.append((dict(self.headers), json.loads(body)))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/mergeling"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(
        self, n: int, *, timeout: float = 10, scope: str | None = None
    ) -> list[tuple[dict[str, str], dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.received if scope is None or r[1]["event"]["scope"] == scope]
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"expected {n} deliveries (scope {scope}), got {self.received}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_webhook_delivers_commit_events_parsed_by_webhook_payload(hub: HubHandle, receiver: Receiver) -> None:
    from huggingface_hub import WebhookPayload, WebhookWatchedItem
    from huggingface_hub.errors import HfHubHTTPError

    api = hub.api()
    hook = api.create_webhook(
        url=receiver.url, watched=[WebhookWatchedItem(type="user", name="alice")], secret="s3cret"
    )
    assert hook.id in [w.id for w in api.list_webhooks()] and not hook.disabled
    api.create_repo("alice/hooked")
    sha = api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/hooked").oid
    headers, body = receiver.wait(1, scope="repo.content")[-1]
    assert headers["X-Webhook-Secret"] == "s3cret"
    payload = WebhookPayload.model_validate(body)
    assert payload.event.action == "update" and payload.repo.name == "alice/hooked"
    assert payload.repo.type == "model" and payload.repo.owner.id == "alice" and payload.webhook.version == 3
    assert payload.repo.head_sha == sha and body["repo"]["headSha"] == sha
    assert payload.updatedRefs is not None and payload.updatedRefs[0].newSha == sha
    assert payload.repo.url.web.startswith(hub.url)
    created = receiver.wait(1, scope="repo")[0][1]
    assert created["event"]["action"] == "create" and created["repo"]["name"] == "alice/hooked"
    # Another namespace is not watched; a disabled webhook delivers nothing.
    api.create_repo("lab/unwatched")
    api.disable_webhook(hook.id)
    api.upload_file(path_or_fileobj=b"y", path_in_repo="y.txt", repo_id="alice/hooked")
    time.sleep(0.3)
    assert all(b["repo"]["name"] == "alice/hooked" for _, b in receiver.received)
    assert len(receiver.wait(0, scope="repo.content")) == 1
    api.enable_webhook(hook.id)
    api.move_repo("alice/hooked", "alice/renamed")
    moved = WebhookPayload.model_validate(
        next(b for _, b in receiver.wait(2, scope="repo") if b["event"]["action"] == "move")
    )
    assert moved.repo.name == "alice/hooked" and moved.movedTo is not None and moved.movedTo.name == "alice/renamed"
    # An update that fails validation changes nothing; a valid one is stored. huggingface_hub >= 2.5
    # sends the whole webhook on update (destination, watched and domains, changed or not).
    with pytest.raises(HfHubHTTPError) as exc:
        api.update_webhook(
            hook.id, url="ftp://elsewhere", watched=[WebhookWatchedItem(type="user", name="alice")], domains=["repo"]
        )
    assert exc.value.response.status_code == 400 and api.get_webhook(hook.id).url == receiver.url
    api.update_webhook(
        hook.id, url=receiver.url, watched=[WebhookWatchedItem(type="org", name="lab")], domains=["repo"]
    )
    updated = api.get_webhook(hook.id)
    assert [(w.type, w.name) for w in updated.watched] == [("org", "lab")] and updated.domains == ["repo"]
    api.delete_webhook(hook.id)
    assert hook.id not in [w.id for w in api.list_webhooks()]
    assert hub.api(hub.bob_token).list_webhooks() == []


def test_webhook_retries_with_backoff_and_logs_every_attempt(hub_factory: HubFactory) -> None:
    import httpx
    from huggingface_hub import WebhookWatchedItem

    hub = hub_factory.thread(webhook_backoff_s=0.05, webhook_attempts=4)
    flaky = Receiver(fail_first=2)
    try:
        api = hub.api()
        api.create_repo("alice/flaky")
        hook = api.create_webhook(
            url=flaky.url, watched=[WebhookWatchedItem(type="model", name="alice/flaky")], domains=["repo"]
        )
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/flaky")
        flaky.wait(1, scope="repo.content")
        log = httpx.get(
            f"{hub.url}/api/settings/webhooks/{hook.id}/deliveries", headers={"Authorization": f"Bearer {hub.token}"}
        ).json()
        assert [(d["attempt"], d["delivered"]) for d in log] == [(1, False), (2, False), (3, True)]
        lines = (hub.data_dir / "webhook-deliveries.jsonl").read_text().splitlines()
        assert len(lines) == 3 and hub.token not in "".join(lines)
    finally:
        flaky.close()


def test_discussions_and_comments_with_webhook_events(hub: HubHandle, receiver: Receiver) -> None:
    from huggingface_hub import WebhookPayload, WebhookWatchedItem

    api = hub.api()
    api.create_repo("lab/talk")
    api.create_webhook(url=receiver.url, watched=[WebhookWatchedItem(type="org", name="lab")], domains=["discussion"])
    bob = hub.api(hub.bob_token)
    d = bob.create_discussion("lab/talk", title="Merge me with FLAN?", description="CT-ben is ready")
    assert d.num == 1 and d.status == "open" and d.author == "bob" and not d.is_pull_request
    api.comment_discussion("lab/talk", d.num, "Queued a TIES-SV merge.")
    details = api.get_discussion_details("lab/talk", d.num)
    comments = [e.content for e in details.events if e.type == "comment"]
    assert comments == ["CT-ben is ready", "Queued a TIES-SV merge."]
    listed = list(api.get_repo_discussions("lab/talk", author="bob"))
    assert [x.title for x in listed] == ["Merge me with FLAN?"]
    api.change_discussion_status("lab/talk", d.num, new_status="closed")
    assert api.get_discussion_details("lab/talk", d.num).status == "closed"
    created = WebhookPayload.model_validate(receiver.wait(1, scope="discussion")[0][1])
    assert created.event.action == "create" and created.discussion is not None and created.discussion.num == 1
    comment = WebhookPayload.model_validate(receiver.wait(1, scope="discussion.comment")[0][1])
    assert comment.comment is not None and comment.comment.content == "Queued a TIES-SV merge."
    assert all(b["event"]["scope"].startswith("discussion") for _, b in receiver.received)
    # The web URL of a dataset discussion carries the /datasets prefix, as on the Hub.
    api.create_repo("lab/talk-data", repo_type="dataset")
    r = httpx.post(
        f"{hub.url}/api/datasets/lab/talk-data/discussions",
        json={"title": "Which split?"},
        headers={"Authorization": f"Bearer {hub.bob_token}"},
    )
    assert r.status_code == 200 and r.json()["url"] == f"{hub.url}/datasets/lab/talk-data/discussions/1"


def test_pull_request_commit_and_merge(hub: HubHandle) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import EntryNotFoundError

    api = hub.api()
    api.create_repo("alice/pr-repo")
    api.upload_file(path_or_fileobj=b"base", path_in_repo="base.txt", repo_id="alice/pr-repo")
    # A refused PR commit leaves no PR behind (nor its ref).
    with pytest.raises(EntryNotFoundError):
        api.create_commit(
            "alice/pr-repo", [CommitOperationDelete("nope.txt")], commit_message="Drop nope", create_pr=True
        )
    assert list(api.get_repo_discussions("alice/pr-repo")) == []
    assert api.list_repo_refs("alice/pr-repo", include_pull_requests=True).pull_requests == []
    info = api.create_commit(
        "alice/pr-repo",
        [CommitOperationAdd("merged.safetensors", b"weights")],
        commit_message="Add merge",
        create_pr=True,
    )
    assert info.pr_num == 1 and info.pr_revision == "refs/pr/1"
    assert "merged.safetensors" not in api.list_repo_files("alice/pr-repo")
    assert "merged.safetensors" in api.list_repo_files("alice/pr-repo", revision="refs/pr/1")
    refs = api.list_repo_refs("alice/pr-repo", include_pull_requests=True)
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1"]
    pr = api.get_discussion_details("alice/pr-repo", 1)
    assert pr.is_pull_request and pr.status == "draft" and pr.target_branch == "refs/heads/main"
    api.merge_pull_request("alice/pr-repo", 1)
    assert api.get_discussion_details("alice/pr-repo", 1).status == "merged"
    assert set(api.list_repo_files("alice/pr-repo")) == {".gitattributes", "base.txt", "merged.safetensors"}
