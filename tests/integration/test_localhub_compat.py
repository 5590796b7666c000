"""huggingface_hub-compatibility items of issue 9, each through the real client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from tests._fixtures.hub import HubFactory, HubHandle


def test_gated_repos_need_access_auto_and_manual(hub: HubHandle, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    alice, bob = hub.api(), hub.api(hub.bob_token)
    for mode in ("auto", "manual"):
        repo = f"alice/gated-{mode}"
        alice.create_repo(repo)
        alice.upload_file(path_or_fileobj=b"weights", path_in_repo="w.txt", repo_id=repo)
        alice.update_repo_settings(repo, gated=mode)
        assert alice.model_info(repo).gated == mode
        kwargs: dict[str, Any] = {
            "repo_id": repo,
            "filename": "w.txt",
            "endpoint": hub.url,
            "cache_dir": tmp_path / mode,
        }
        with pytest.raises(GatedRepoError):
            hf_hub_download(**kwargs, token=hub.bob_token)
        with pytest.raises(GatedRepoError):
            bob.auth_check(repo)
        alice.auth_check(repo)  # the owner always has access
        asked = httpx.post(f"{hub.url}/{repo}/ask-access", headers={"Authorization": f"Bearer {hub.bob_token}"})
        assert asked.json()["status"] == ("accepted" if mode == "auto" else "pending")
        if mode == "manual":
            assert [r.username for r in alice.list_pending_access_requests(repo)] == ["bob"]
            with pytest.raises(GatedRepoError):
                hf_hub_download(**kwargs, token=hub.bob_token)
            alice.accept_access_request(repo, "bob")
            assert [r.username for r in alice.list_accepted_access_requests(repo)] == ["bob"]
        assert Path(hf_hub_download(**kwargs, token=hub.bob_token)).read_bytes() == b"weights"
    carol = hub.make_token("carol")
    alice.grant_access("alice/gated-manual", "carol")
    hub.api(carol).auth_check("alice/gated-manual")


def test_preupload_honours_gitignore(hub: HubHandle, tmp_path: Path) -> None:
    folder = tmp_path / "up"
    (folder / "logs").mkdir(parents=True)
    (folder / ".gitignore").write_text("*.log\nlogs/\n")
    (folder / "keep.txt").write_text("keep")
    (folder / "debug.log").write_text("noise")
    (folder / "logs" / "x.txt").write_text("noise")
    api = hub.api()
    api.create_repo("alice/ignoring")
    api.upload_folder(folder_path=str(folder), repo_id="alice/ignoring")
    assert sorted(api.list_repo_files("alice/ignoring")) == [".gitattributes", ".gitignore", "keep.txt"]
    # A .gitignore already in the repo applies to later uploads too.
    api.upload_file(path_or_fileobj=b"x", path_in_repo="late.log", repo_id="alice/ignoring")
    assert "late.log" not in api.list_repo_files("alice/ignoring")


def test_gitattributes_lfs_rules_decide_lfs_for_small_files(hub: HubHandle) -> None:
    api = hub.api()  # Xet disabled, so "lfs" answers are safe for this client
    api.create_repo("alice/attrs")
    api.upload_file(path_or_fileobj=b"tiny but binary", path_in_repo="small.bin", repo_id="alice/attrs")
    api.upload_file(path_or_fileobj=b"tiny text", path_in_repo="small.txt", repo_id="alice/attrs")
    siblings = {s.rfilename: s for s in api.model_info("alice/attrs", files_metadata=True).siblings or []}
    assert siblings["small.bin"].lfs is not None and siblings["small.txt"].lfs is None


def test_one_part_repo_ids_are_repo_not_found(hub: HubHandle) -> None:
    api = hub.api()
    assert api.repo_exists("gpt2") is False
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("gpt2")
    with pytest.raises(RepositoryNotFoundError) as exc:
        api.model_info("gpt2", revision="main")
    assert "Request ID" in str(exc.value)  # the X-Request-Id the client quotes


def test_pull_request_by_a_non_owner_on_a_public_repo(hub: HubHandle) -> None:
    alice, bob = hub.api(), hub.api(hub.bob_token)
    alice.create_repo("alice/open-to-prs")
    info = bob.create_commit(
        "alice/open-to-prs",
        [CommitOperationAdd("fix.txt", b"a fix")],
        commit_message="Fix",
        create_pr=True,
    )
    assert info.pr_num == 1
    assert "fix.txt" not in alice.list_repo_files("alice/open-to-prs")
    assert "fix.txt" in alice.list_repo_files("alice/open-to-prs", revision="refs/pr/1")
    alice.merge_pull_request("alice/open-to-prs", 1)
    assert "fix.txt" in alice.list_repo_files("alice/open-to-prs")
    with pytest.raises(Exception):  # noqa: B017,PT011 (a plain commit is still refused)
        bob.create_commit("alice/open-to-prs", [CommitOperationAdd("x.txt", b"x")], commit_message="no")


def test_deleting_a_folder_by_its_path_and_super_squash(hub: HubHandle) -> None:
    api = hub.api()
    api.create_repo("alice/squashy")
    api.create_commit(
        "alice/squashy",
        [
            CommitOperationAdd("docs/a.txt", b"a"),
            CommitOperationAdd("docs/b/c.txt", b"c"),
            CommitOperationAdd("k", b"k"),
        ],
        commit_message="add",
    )
    api.create_commit("alice/squashy", [CommitOperationDelete("docs")], commit_message="drop docs")
    assert sorted(api.list_repo_files("alice/squashy")) == [".gitattributes", "k"]
    assert len(api.list_repo_commits("alice/squashy")) == 3
    api.super_squash_history("alice/squashy", commit_message="squashed")
    commits = api.list_repo_commits("alice/squashy")
    assert [c.title for c in commits] == ["squashed"]
    assert sorted(api.list_repo_files("alice/squashy")) == [".gitattributes", "k"]


def test_a_new_space_has_a_readme_with_its_sdk(hub: HubHandle) -> None:
    api = hub.api()
    api.create_repo("alice/demo", repo_type="space", space_sdk="gradio")
    info = api.space_info("alice/demo")
    assert info.sdk == "gradio"
    assert "README.md" in api.list_repo_files("alice/demo", repo_type="space")


def test_tag_on_a_missing_revision_is_revision_not_found(hub_factory: HubFactory) -> None:
    from huggingface_hub.errors import RevisionNotFoundError

    hub = hub_factory.thread("tags")
    api = hub.api()
    api.create_repo("alice/tagged")
    api.create_tag("alice/tagged", tag="v1")
    with pytest.raises(RevisionNotFoundError):
        api.create_tag("alice/tagged", tag="v1", revision="no-such-branch")


def test_repo_ids_and_user_names_are_case_insensitive(hub: HubHandle) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    api = hub.api()
    api.create_repo("alice/CasePub")
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("alice/casepub")
    assert exc.value.response.status_code == 409
    assert api.create_repo("ALICE/CASEPUB", exist_ok=True).repo_id == "alice/CasePub"
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="Alice/casePUB")
    info = api.model_info("alice/casepub")
    assert info.id == "alice/CasePub" and "x.txt" in [s.rfilename for s in info.siblings or []]
    assert len([m for m in api.list_models(author="alice") if m.id.lower() == "alice/casepub"]) == 1
    again = hub.make_token("ALICE", write=True)
    assert hub.api(again).whoami()["name"] == "alice"


def test_list_and_permanently_delete_lfs_files(hub_factory: HubFactory) -> None:
    """`rewrite_history=True` (the client's default) rewrites history; False adds deleting commits."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    hub = hub_factory.thread("lfsfiles", lfs_threshold=1000)
    api = hub.api()
    repo = "alice/lfs-files"
    api.create_repo(repo)
    payload = b"w" * 5000
    old = api.upload_file(path_or_fileobj=payload, path_in_repo="ckpt/w.bin", repo_id=repo).oid
    api.create_tag(repo, tag="v1")
    api.create_branch(repo, branch="side")
    api.upload_file(path_or_fileobj=b"notes", path_in_repo="notes.txt", repo_id=repo)
    titles = [c.title for c in api.list_repo_commits(repo)]
    files = list(api.list_lfs_files(repo))
    assert [(f.filename, f.size, f.ref) for f in files] == [("ckpt/w.bin", 5000, "refs/heads/main")]
    api.permanently_delete_lfs_files(repo, files)
    assert list(api.list_lfs_files(repo)) == []
    assert [c.title for c in api.list_repo_commits(repo)] == titles  # no deleting commit: history rewritten
    for rev in ("main", "side", "v1"):
        commits = [c.commit_id for c in api.list_repo_commits(repo, revision=rev)]
        assert old not in commits
        assert all("ckpt/w.bin" not in api.list_repo_files(repo, revision=c) for c in commits)
    assert "notes.txt" in api.list_repo_files(repo)
    assert not any(p.is_file() and p.name == files[0].file_oid for p in (hub.data_dir / "blobs").rglob("*"))
    with pytest.raises(RevisionNotFoundError):  # the old commit is gone, as on the Hub
        hf_hub_download(repo, "ckpt/w.bin", revision=old, endpoint=hub.url, token=hub.token, cache_dir=hub.home / "c")

    kept = "alice/lfs-kept-history"
    api.create_repo(kept)
    old = api.upload_file(path_or_fileobj=payload, path_in_repo="w.bin", repo_id=kept).oid
    api.permanently_delete_lfs_files(kept, list(api.list_lfs_files(kept)), rewrite_history=False)
    assert api.list_repo_commits(kept)[0].title == "Permanently delete LFS files"
    assert "w.bin" not in api.list_repo_files(kept)
    with pytest.raises(EntryNotFoundError):  # the old commit stays; its file's bytes are gone
        hf_hub_download(kept, "w.bin", revision=old, endpoint=hub.url, token=hub.token, cache_dir=hub.home / "c")


def test_a_moved_repo_redirects_from_its_old_id_until_the_id_is_taken(hub: HubHandle, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    api = hub.api()
    api.create_repo("alice/before")
    api.upload_file(path_or_fileobj=b"weights", path_in_repo="sub/w.txt", repo_id="alice/before")
    api.move_repo("alice/before", "alice/after")
    raw = httpx.get(f"{hub.url}/alice/before/resolve/main/sub/w.txt")
    assert raw.status_code == 307 and raw.headers["location"] == "/alice/after/resolve/main/sub/w.txt"
    assert api.model_info("alice/Before").id == "alice/after"  # ids are case-insensitive, redirects too
    path = hf_hub_download("alice/before", "sub/w.txt", endpoint=hub.url, cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == b"weights"
    assert [e.path for e in api.list_repo_tree("alice/before", path_in_repo="sub")] == ["sub/w.txt"]
    api.move_repo("alice/after", "alice/latest")  # a chain of moves: one hop from the first id
    assert httpx.get(f"{hub.url}/api/models/alice/before").headers["location"] == "/api/models/alice/latest"
    api.create_repo("alice/before")  # the old id is taken again: it is that repo now
    assert api.list_repo_files("alice/before") == [".gitattributes"]
    assert api.list_repo_files("alice/latest") == [".gitattributes", "sub/w.txt"]
    api.update_repo_settings("alice/latest", private=True)
    api.move_repo("alice/latest", "alice/hidden")
    assert httpx.get(f"{hub.url}/api/models/alice/latest").status_code == 404  # a private repo's new name stays hidden
    assert api.model_info("alice/latest").id == "alice/hidden"  # the owner is redirected


def test_ref_and_commit_errors_have_the_hubs_status_and_words(hub: HubHandle) -> None:
    """The statuses and messages huggingface_hub's own tests (tests/test_hf_api.py) match on the Hub's answers."""
    from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

    api = hub.api()
    repo = "alice/errors"
    api.create_repo(repo)
    parent = api.model_info(repo).sha
    api.upload_file(path_or_fileobj=b"one", path_in_repo="a.txt", repo_id=repo)
    with pytest.raises(HfHubHTTPError) as stale:  # the parent is checked before the operations
        api.create_commit(
            repo,
            operations=[CommitOperationDelete("missing.txt")],
            commit_message="late",
            parent_commit=parent,
        )
    assert stale.value.response.status_code == 412
    assert "The branch was updated since you opened this page. Please refresh and try again." in str(stale.value)
    api.create_branch(repo, branch="cool-branch")
    for branch in ("cool-branch", "main"):
        with pytest.raises(HfHubHTTPError, match=rf"Reference refs/heads/{branch} already exists") as exists:
            api.create_branch(repo, branch=branch)
        assert exists.value.response.status_code == 409
        api.create_branch(repo, branch=branch, exist_ok=True)
    with pytest.raises(HfHubHTTPError, match="Cannot delete refs/heads/main"):
        api.delete_branch(repo, branch="main")
    api.create_tag(repo, tag="cool-tag")
    for missing in ("no-such-branch", "cool-tag"):  # a tag is not a branch
        with pytest.raises(RevisionNotFoundError, match="Invalid rev id"):
            api.delete_branch(repo, branch=missing)
    api.create_repo("alice/taken")
    with pytest.raises(HfHubHTTPError, match="already exists") as taken:
        api.move_repo(repo, "alice/taken")
    assert taken.value.response.status_code == 409
    assert api.list_repo_files(repo) == [".gitattributes", "a.txt"]  # nothing moved


def test_more_of_the_hubs_answers_that_huggingface_hubs_tests_match(hub: HubHandle) -> None:
    """Found by running huggingface_hub's own tests against this hub (`bench_hub.py --upstream-tests`)."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    api = hub.api()
    api.create_repo("alice/answers")
    api.create_repo("alice/answers-2")
    with pytest.raises(HfHubHTTPError, match=r"A model repository called alice/answers-2 already exists"):
        api.move_repo("alice/answers", "alice/answers-2")
    with pytest.raises(RevisionNotFoundError):  # the missing revision first, the bad tag name after
        api.create_tag("alice/answers", tag="invalid tag", revision="foobar")
    # One-part (`gpt2`-style) ids never exist here, and say so the way the client understands.
    assert api.file_exists("repo-that-does-not-exist", "file.txt") is False
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_commits("missing_repo_id")
    # RepoCard.validate asks for text (`Accept: text/plain`) and raises ValueError(response.text); it
    # posts to HF_ENDPOINT, hence a subprocess.
    code = (
        "from huggingface_hub import ModelCard\n"
        "try:\n    ModelCard('---\\nlicense: asdf\\n---\\n# card\\n').validate()\n"
        "except ValueError as exc:\n    print('ValueError:', exc)\n"
    )
    assert 'ValueError: - Error: "license" must be one of' in hub.run_python(code).stdout
    # Handling an access request into the state it already has is refused, as on the Hub.
    httpx.put(f"{hub.url}/api/models/alice/answers/settings", json={"gated": "manual"},
              headers={"Authorization": f"Bearer {hub.token}"}).raise_for_status()  # fmt: skip
    api.grant_access("alice/answers", "bob")
    for again in (
        lambda: api.grant_access("alice/answers", "bob"),
        lambda: api.accept_access_request("alice/answers", "bob"),
    ):
        with pytest.raises(HfHubHTTPError):
            again()
    api.reject_access_request("alice/answers", "bob", rejection_reason="no")
    with pytest.raises(HfHubHTTPError):
        api.reject_access_request("alice/answers", "bob", rejection_reason="no")
