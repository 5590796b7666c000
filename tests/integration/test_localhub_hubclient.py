"""registry.hub.HubClient against the embedded hub: typed results and our errors, end to end."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from registry.errors import (
    HubAuthError,
    HubConflictError,
    HubEntryNotFoundError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
)
from tests._fixtures.hub import HubHandle


def test_round_trip_of_files_and_commits(hub: HubHandle, tmp_path: Path) -> None:
    client = hub.client()
    assert client.whoami() == "alice"
    url = client.create_repo("lab/round-trip", repo_type="dataset")
    assert url == f"{hub.url}/datasets/lab/round-trip"
    assert client.create_repo("lab/round-trip", repo_type="dataset", exist_ok=True) == url
    with pytest.raises(HubConflictError):
        client.create_repo("lab/round-trip", repo_type="dataset")
    head = client.head_sha("lab/round-trip", repo_type="dataset")
    local = tmp_path / "big.bin"
    local.write_bytes(b"\1" * (11 * 1024 * 1024))  # over the LFS threshold: goes through LFS batch + PUT
    sha = client.commit_files(
        "lab/round-trip",
        repo_type="dataset",
        message="add",
        add={"a/b.json": b"{}", "big.bin": local},
        parent_commit=head,
    )
    assert client.head_sha("lab/round-trip", repo_type="dataset") == sha
    info = client.repo_info("lab/round-trip", repo_type="dataset", files_metadata=True)
    big = next(s for s in info.siblings if s.rfilename == "big.bin")
    assert big.lfs is not None and big.lfs.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    assert client.list_files("lab/round-trip", repo_type="dataset", revision=sha) == [
        ".gitattributes",
        "a/b.json",
        "big.bin",
    ]
    assert client.read_file("lab/round-trip", "a/b.json", repo_type="dataset", revision=sha) == b"{}"
    assert client.file_exists("lab/round-trip", "big.bin", repo_type="dataset")
    assert not client.file_exists("lab/round-trip", "nope", repo_type="dataset")
    with pytest.raises(HubConflictError):
        client.commit_files("lab/round-trip", repo_type="dataset", message="late", add={"c": b"c"}, parent_commit=head)
    removed = client.commit_files("lab/round-trip", repo_type="dataset", message="rm", add={}, delete=["a/b.json"])
    snap = client.snapshot("lab/round-trip", repo_type="dataset", revision=removed)
    assert snap.name == removed and sorted(p.name for p in snap.iterdir()) == [".gitattributes", "big.bin"]
    with pytest.raises(HubEntryNotFoundError):
        client.commit_files("lab/round-trip", repo_type="dataset", message="rm", add={}, delete=["a/b.json"])


def test_upload_folder_listing_and_cards(hub: HubHandle, tmp_path: Path) -> None:
    client = hub.client()
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "README.md").write_text("---\ntags: [mergeling-sft]\nbase_model: meta-llama/Llama-2-7b-hf\n---\n")
    client.create_repo("alice/sft-model")
    sha = client.upload_folder(folder, "alice/sft-model", message="upload")
    info = client.model_info("alice/sft-model")
    assert info.sha == sha and {s.rfilename for s in info.siblings} >= {"config.json", "README.md"}
    found = client.list_models(filter="mergeling-sft", card_data=True)
    assert [m.id for m in found] == ["alice/sft-model"]
    assert found[0].card_data.to_dict()["base_model"] == "meta-llama/Llama-2-7b-hf"
    assert [m.id for m in client.list_models(author="alice", search="sft")] == ["alice/sft-model"]
    assert client.download_file("alice/sft-model", "config.json", revision=sha).read_text() == '{"model_type": "llama"}'


def test_errors_are_ours_and_actionable(hub: HubHandle) -> None:
    client = hub.client()
    client.create_repo("alice/private-one", private=True)
    with pytest.raises(HubRepoNotFoundError) as exc:
        hub.client(hub.bob_token, cache="bob").model_info("alice/private-one")
    assert "alice/private-one" in str(exc.value) and "token" in str(exc.value)
    with pytest.raises(HubRevisionNotFoundError):
        client.model_info("alice/private-one", revision="v404")
    with pytest.raises(HubEntryNotFoundError) as missing:
        client.read_file("alice/private-one", "config.json")
    assert "config.json" in str(missing.value)
    with pytest.raises(HubAuthError) as denied:
        hub.client(hub.read_token, cache="reader").commit_files("alice/private-one", message="x", add={"x": b"x"})
    assert "write token" in str(denied.value)
    assert not client.repo_exists("alice/never-made")


def test_discussions_and_webhooks_through_the_client(hub: HubHandle) -> None:
    client = hub.client()
    client.create_repo("alice/talky")
    num = client.create_discussion("alice/talky", title="Merged model ready", description="ties_sv, slack 0.05")
    client.comment_discussion("alice/talky", num, "eval: SIB-200 acc 0.61")
    assert [d.title for d in client.list_discussions("alice/talky")] == ["Merged model ready"]
    hook = client.create_webhook(url="http://127.0.0.1:9/hook", watched=[{"type": "user", "name": "alice"}], secret="s")
    assert hook.url == "http://127.0.0.1:9/hook" and hook.secret == "s" and hook.domains == ["repo", "discussion"]
    assert [w.id for w in client.list_webhooks()] == [hook.id]
    client.delete_webhook(hook.id)  # nothing listens there: stop further deliveries
    assert client.list_webhooks() == []


def test_branches_and_tags_through_the_client(hub: HubHandle) -> None:
    client = hub.client()
    client.create_repo("alice/refs")
    first = client.head_sha("alice/refs")
    client.create_branch("alice/refs", "candidate")
    client.create_branch("alice/refs", "candidate", exist_ok=True)
    on_branch = client.commit_files("alice/refs", message="x", add={"x": b"x"}, revision="candidate")
    client.create_tag("alice/refs", "v1", revision=on_branch, message="first merge")
    assert client.head_sha("alice/refs", revision="v1") == on_branch
    assert client.head_sha("alice/refs") == first
    with pytest.raises(HubConflictError):
        client.create_tag("alice/refs", "v1")
    with pytest.raises(HubRevisionNotFoundError):
        client.create_branch("alice/refs", "other", revision="no-such-rev")


def test_stale_parent_with_identical_content_is_a_conflict(hub: HubHandle) -> None:
    """huggingface_hub skips a no-op commit without asking the server; the client must still refuse it."""
    client = hub.client()
    client.create_repo("lab/stale", repo_type="dataset")
    base = client.head_sha("lab/stale", repo_type="dataset")
    client.commit_files("lab/stale", repo_type="dataset", message="first", add={"n.txt": b"1"}, parent_commit=base)
    with pytest.raises(HubConflictError) as exc:
        client.commit_files("lab/stale", repo_type="dataset", message="same", add={"n.txt": b"1"}, parent_commit=base)
    assert base in str(exc.value)
    head = client.head_sha("lab/stale", repo_type="dataset")
    assert (
        client.commit_files("lab/stale", repo_type="dataset", message="noop", add={"n.txt": b"1"}, parent_commit=head)
        == head
    )
