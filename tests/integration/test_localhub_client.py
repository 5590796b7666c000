"""The real huggingface_hub client against the embedded hub (one server thread for the module)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi

from tests._fixtures.hub import HubFactory, HubHandle


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A >10 MB safetensors file plus small files, as a model folder."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("model")
    gen = torch.Generator().manual_seed(0)
    save_file({"w": torch.randn(3 * 1024 * 1024, generator=gen)}, str(folder / "model.safetensors"))  # 12 MiB
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("hello\n")
    (folder / "README.md").write_text("---\nlicense: mit\ntags: [mergeling-ct, tiny]\nlanguage: [bn]\n---\n# tiny\n")
    return folder


@pytest.fixture(scope="module")
def uploaded(hub: HubHandle, model_folder: Path) -> str:
    api = hub.api()
    api.create_repo("alice/tiny")
    return api.upload_folder(folder_path=str(model_folder), repo_id="alice/tiny", commit_message="add model").oid


def test_whoami_reports_user_orgs_and_role(hub: HubHandle) -> None:
    me = hub.api().whoami()
    assert me["name"] == "alice"
    assert [o["name"] for o in me["orgs"]] == ["lab"]
    assert me["auth"]["accessToken"]["role"] == "write"
    assert hub.api(hub.read_token).whoami()["auth"]["accessToken"]["role"] == "read"


def test_create_repo_kinds_and_conflict(hub: HubHandle) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    api = hub.api()
    url = api.create_repo("lab/data", repo_type="dataset")
    assert url.repo_id == "lab/data" and url.repo_type == "dataset"
    assert api.create_repo("lab/data", repo_type="dataset", exist_ok=True).repo_id == "lab/data"
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("lab/data", repo_type="dataset")
    assert exc.value.response.status_code == 409
    info = api.dataset_info("lab/data")
    assert len(info.sha) == 40 and info.private is False
    assert info.last_modified is not None and info.created_at is not None


def test_private_repo_is_invisible_to_others(hub: HubHandle) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    api = hub.api()
    api.create_repo("alice/secret", private=True)
    api.upload_file(path_or_fileobj=b"s3cret", path_in_repo="s.txt", repo_id="alice/secret")
    assert api.model_info("alice/secret").private is True
    for other in (hub.api(hub.bob_token), _anonymous_api(hub)):
        with pytest.raises(RepositoryNotFoundError):
            other.model_info("alice/secret")
        assert "alice/secret" not in [m.id for m in other.list_models(author="alice")]
    r = httpx.get(f"{hub.url}/alice/secret/resolve/main/s.txt")
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "RepoNotFound"
    assert "alice/secret" in [m.id for m in api.list_models(author="alice")]


def _anonymous_api(hub: HubHandle) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)


def test_upload_folder_large_file_goes_through_lfs(hub: HubHandle, uploaded: str) -> None:
    info = hub.api().model_info("alice/tiny", files_metadata=True)
    assert info.sha == uploaded
    files = {s.rfilename: s for s in info.siblings}
    assert set(files) == {".gitattributes", "README.md", "config.json", "model.safetensors", "sub/notes.txt"}
    big = files["model.safetensors"]
    assert big.lfs is not None and big.lfs.size == big.size > 10 * 1024 * 1024
    assert files["config.json"].lfs is None and files["config.json"].blob_id is not None


def test_snapshot_download_into_fresh_cache_matches_bytes(
    hub: HubHandle, uploaded: str, model_folder: Path, tmp_path: Path
) -> None:
    local = Path(hub.api().snapshot_download("alice/tiny", cache_dir=tmp_path / "cache"))
    assert local.name == uploaded
    for rel in ("model.safetensors", "config.json", "sub/notes.txt", "README.md"):
        assert _sha256(local / rel) == _sha256(model_folder / rel), rel
    assert hub.api().verify_repo_checksums("alice/tiny", local_dir=local) is not None


def test_hf_hub_download_by_branch_and_by_commit(hub: HubHandle, uploaded: str, tmp_path: Path) -> None:
    api = hub.api()
    api.create_branch("alice/tiny", branch="exp", exist_ok=True)
    exp = api.upload_file(
        path_or_fileobj=b"v2\n", path_in_repo="sub/notes.txt", repo_id="alice/tiny", revision="exp"
    ).oid
    on_branch = Path(api.hf_hub_download("alice/tiny", "sub/notes.txt", revision="exp", cache_dir=tmp_path))
    at_sha = Path(api.hf_hub_download("alice/tiny", "sub/notes.txt", revision=uploaded, cache_dir=tmp_path))
    assert on_branch.read_bytes() == b"v2\n" and on_branch.parents[1].name == exp
    assert at_sha.read_bytes() == b"hello\n" and at_sha.parents[1].name == uploaded
    short = Path(api.hf_hub_download("alice/tiny", "sub/notes.txt", revision=uploaded[:10], cache_dir=tmp_path / "c2"))
    assert short.read_bytes() == b"hello\n"


def test_list_models_filter_author_search(hub: HubHandle, uploaded: str) -> None:
    api = hub.api()
    api.create_repo("lab/other-model", exist_ok=True)
    ids = lambda **kw: {m.id for m in api.list_models(**kw)}  # noqa: E731
    assert "alice/tiny" in ids(filter="mergeling-ct")
    assert ids(filter=["mergeling-ct", "license:mit"]) >= {"alice/tiny"}
    assert "alice/tiny" not in ids(filter=["mergeling-ct", "license:apache-2.0"])
    assert ids(author="lab") >= {"lab/other-model"} and "alice/tiny" not in ids(author="lab")
    assert ids(search="TINY") >= {"alice/tiny"} and "lab/other-model" not in ids(search="tiny")
    full = next(m for m in api.list_models(filter="mergeling-ct", cardData=True) if m.id == "alice/tiny")
    assert full.card_data is not None and full.card_data.license == "mit"


def test_tree_recursive_and_folders(hub: HubHandle, uploaded: str) -> None:
    from huggingface_hub.errors import EntryNotFoundError

    api = hub.api()
    top = {e.path: type(e).__name__ for e in api.list_repo_tree("alice/tiny", revision=uploaded)}
    assert top["sub"] == "RepoFolder" and top["config.json"] == "RepoFile" and "sub/notes.txt" not in top
    deep = {e.path for e in api.list_repo_tree("alice/tiny", revision=uploaded, recursive=True)}
    assert {"sub", "sub/notes.txt", "model.safetensors"} <= deep
    assert [e.path for e in api.list_repo_tree("alice/tiny", path_in_repo="sub", revision=uploaded)] == [
        "sub/notes.txt"
    ]
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("alice/tiny", path_in_repo="nope", revision=uploaded))
    expanded = list(api.list_repo_tree("alice/tiny", revision=uploaded, expand=True))
    assert all(e.last_commit is not None for e in expanded)


def test_commits_refs_tags_and_paths_info(hub: HubHandle, uploaded: str) -> None:
    api = hub.api()
    commits = api.list_repo_commits("alice/tiny")
    assert commits[0].commit_id == uploaded and commits[0].title == "add model"
    assert commits[-1].title == "initial commit"
    api.create_tag("alice/tiny", tag="v1", revision=uploaded)
    refs = api.list_repo_refs("alice/tiny")
    assert {b.name for b in refs.branches} >= {"main"} and refs.tags[0].target_commit == uploaded
    assert api.model_info("alice/tiny", revision="v1").sha == uploaded
    infos = api.get_paths_info("alice/tiny", ["config.json", "sub", "missing.bin"], revision=uploaded)
    assert sorted(i.path for i in infos) == ["config.json", "sub"]


def test_parent_commit_mismatch_is_412_and_changes_nothing(hub: HubHandle) -> None:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    api = hub.api()
    api.create_repo("alice/race", exist_ok=True)
    first = api.model_info("alice/race").sha
    api.create_commit("alice/race", [CommitOperationAdd("a.txt", b"a")], commit_message="a", parent_commit=first)
    head = api.model_info("alice/race").sha
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit("alice/race", [CommitOperationAdd("b.txt", b"b")], commit_message="b", parent_commit=first)
    assert exc.value.response.status_code == 412
    assert api.model_info("alice/race").sha == head
    assert "b.txt" not in api.list_repo_files("alice/race")


def test_unauthorized_writes_are_refused_and_change_nothing(hub: HubHandle, uploaded: str) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    before = hub.api().model_info("alice/tiny").sha
    cases = [
        (_anonymous_api(hub), 401),
        (hub.api(hub.read_token), 403),
        (hub.api(hub.bob_token), 403),
        (hub.api("hf_not_a_token"), 401),
    ]
    for api, status in cases:
        with pytest.raises(HfHubHTTPError) as exc:
            api.upload_file(path_or_fileobj=b"evil", path_in_repo="evil.txt", repo_id="alice/tiny")
        assert exc.value.response.status_code == status
        with pytest.raises(HfHubHTTPError):
            api.delete_repo("alice/tiny")
    assert hub.api().model_info("alice/tiny").sha == before
    assert "evil.txt" not in hub.api().list_repo_files("alice/tiny")
    with pytest.raises(HfHubHTTPError) as exc:  # like the Hub: a sent token must be valid, even to read
        hub.api("hf_not_a_token").model_info("alice/tiny")
    assert exc.value.response.status_code == 401 and "Invalid credentials" in str(exc.value)


def test_resolve_headers_and_ranges(hub: HubHandle, uploaded: str, model_folder: Path) -> None:
    base = f"{hub.url}/alice/tiny/resolve/{uploaded}"
    data = (model_folder / "config.json").read_bytes()
    head = httpx.head(f"{base}/config.json")
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == uploaded
    assert int(head.headers["Content-Length"]) == len(data) and head.content == b""
    big = httpx.head(f"{base}/model.safetensors")
    assert big.headers["X-Linked-Etag"].strip('"') == _sha256(model_folder / "model.safetensors")
    assert not [h for h in big.headers if h.lower().startswith("x-xet")]
    assert httpx.get(f"{base}/config.json", headers={"Range": "bytes=2-5"}).content == data[2:6]
    assert httpx.get(f"{base}/config.json", headers={"Range": "bytes=3-"}).content == data[3:]
    tail = httpx.get(f"{base}/config.json", headers={"Range": "bytes=-4"})
    assert tail.status_code == 206 and tail.content == data[-4:]
    past = httpx.get(f"{base}/config.json", headers={"Range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{len(data)}"
    missing = httpx.head(f"{base}/nope.txt")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert missing.headers["X-Repo-Commit"] == uploaded
    assert (
        httpx.head(f"{hub.url}/alice/tiny/resolve/no-such-branch/config.json").headers["X-Error-Code"]
        == "RevisionNotFound"
    )
    encoded = httpx.get(f"{hub.url}/api/models/alice/tiny/revision/refs%2Fheads%2Fmain")
    assert encoded.status_code == 200 and encoded.json()["id"] == "alice/tiny"


@pytest.mark.parametrize(
    ("lines", "status", "code"),
    [
        (
            ['{"key":"header","value":{"summary":"x"}}', '{"key":"file","value":{"path":"../x","content":"YQ=="}}'],
            400,
            "BadRequest",
        ),
        (
            [
                '{"key":"header","value":{"summary":"x"}}',
                '{"key":"file","value":{"path":".git/config","content":"YQ=="}}',
            ],
            400,
            "BadRequest",
        ),
        (['{"key":"header","value":{"summary":"x"}}', "not json"], 400, "BadRequest"),
        (['{"key":"file","value":{"path":"a","content":"YQ=="}}'], 400, "BadRequest"),
        (
            ['{"key":"header","value":{"summary":"x"}}', '{"key":"file","value":{"path":"a","content":"%%%"}}'],
            400,
            "BadRequest",
        ),
        (
            ['{"key":"header","value":{"summary":"x"}}', '{"key":"deletedFile","value":{"path":"nope"}}'],
            404,
            "EntryNotFound",
        ),
        (
            [
                '{"key":"header","value":{"summary":"x"}}',
                '{"key":"lfsFile","value":{"path":"a","algo":"sha256","oid":"' + "0" * 64 + '"}}',
            ],
            422,
            "LfsObjectMissing",
        ),
    ],
)
def test_bad_commit_payloads_are_refused_and_write_nothing(
    hub: HubHandle, lines: list[str], status: int, code: str
) -> None:
    api = hub.api()
    api.create_repo("alice/bad-input", exist_ok=True)
    before = api.model_info("alice/bad-input").sha
    r = httpx.post(
        f"{hub.url}/api/models/alice/bad-input/commit/main",
        content="\n".join(lines).encode(),
        headers={"Authorization": f"Bearer {hub.token}", "Content-Type": "application/x-ndjson"},
    )
    assert (r.status_code, r.headers.get("X-Error-Code")) == (status, code), r.text
    assert r.json()["error"]
    assert api.model_info("alice/bad-input").sha == before


def test_bad_repo_names_unknown_revisions_and_oversized_bodies(hub: HubHandle) -> None:
    auth = {"Authorization": f"Bearer {hub.token}"}
    for name in ("..", "a/b", "x.git", "-x"):
        r = httpx.post(f"{hub.url}/api/repos/create", json={"name": name}, headers=auth)
        assert r.status_code == 400, name
    assert not (hub.data_dir / "repos" / "models" / "alice" / "..").resolve().joinpath("x").exists()
    for body in ([1, 2], {"name": 5}, {"name": "ok", "organization": ["lab"]}):
        r = httpx.post(f"{hub.url}/api/repos/create", json=body, headers=auth)
        assert (r.status_code, r.headers["X-Error-Code"]) == (400, "BadRequest"), body
    assert not (hub.data_dir / "repos" / "models" / "alice" / "5").exists()
    hub.api().create_repo("alice/paged", exist_ok=True)
    for method, path, body in (
        ("POST", "/api/models/alice/paged/preupload/main", {"files": [{"path": "a", "size": "big"}]}),
        ("POST", "/alice/paged.git/info/lfs/objects/batch", {"operation": "upload", "objects": [1]}),
        ("GET", "/api/models/alice/paged/discussions?p=x", None),
    ):
        r = httpx.request(method, f"{hub.url}{path}", json=body, headers=auth)
        assert (r.status_code, r.headers["X-Error-Code"]) == (400, "BadRequest"), path
    r = httpx.get(f"{hub.url}/api/models/alice/paged/tree/main", params={"cursor": "zzz"})
    assert r.status_code == 400 and "cursor" in r.json()["error"]
    r = httpx.get(f"{hub.url}/api/models/alice/tiny/tree/deadbeef00")
    assert r.status_code == 404 and r.headers["X-Error-Code"] in ("RevisionNotFound", "RepoNotFound")
    r = httpx.get(f"{hub.url}/api/models/..%2F..%2Fetc/passwd")
    assert r.status_code in (400, 404)
    import socket

    with socket.create_connection(("127.0.0.1", int(hub.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 400")
    huge = b"x" * (17 * 1024 * 1024)
    r = httpx.post(f"{hub.url}/api/validate-yaml", content=huge, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.headers["X-Error-Code"] == "PayloadTooLarge"


def test_delete_repo_and_validate_yaml(hub: HubHandle) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    api = hub.api()
    api.create_repo("alice/doomed")
    api.delete_repo("alice/doomed")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/doomed")
    api.delete_repo("alice/doomed", missing_ok=True)
    ok = httpx.post(f"{hub.url}/api/validate-yaml", json={"content": "---\na: 1\n---\n", "repoType": "model"})
    assert ok.status_code == 200 and ok.json() == {"errors": [], "warnings": []}
    bad = httpx.post(f"{hub.url}/api/validate-yaml", json={"content": "---\na: [\n---\n", "repoType": "model"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["message"]


def test_settings_move_and_ref_deletion(hub: HubHandle) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    api = hub.api()
    api.create_repo("alice/movable")
    api.update_repo_settings("alice/movable", private=True)
    with pytest.raises(RepositoryNotFoundError):
        hub.api(hub.bob_token).model_info("alice/movable")
    api.move_repo("alice/movable", "lab/moved")
    assert api.model_info("lab/moved").private is True
    assert api.model_info("alice/movable").id == "lab/moved"  # the old id redirects (issue 9), for those who may see it
    with pytest.raises(RepositoryNotFoundError):
        hub.api(hub.bob_token).model_info("alice/movable")
    api.create_branch("lab/moved", branch="feature/x")
    api.create_tag("lab/moved", tag="v0")
    assert api.model_info("lab/moved", revision="feature/x").sha == api.model_info("lab/moved").sha
    api.delete_branch("lab/moved", branch="feature/x")
    api.delete_tag("lab/moved", tag="v0")
    refs = api.list_repo_refs("lab/moved")
    assert [b.name for b in refs.branches] == ["main"] and refs.tags == []


def test_oversized_commit_says_how_to_use_lfs(hub_factory: HubFactory) -> None:
    small = hub_factory.thread("small", max_commit_bytes=1024)
    api = small.api()
    api.create_repo("alice/limited")
    r = httpx.post(
        f"{small.url}/api/models/alice/limited/commit/main",
        content=b'{"key":"header","value":{"summary":"x"}}\n' + b"x" * 2048,
        headers={"Authorization": f"Bearer {small.token}", "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 413 and "HF_HUB_DISABLE_XET=1" in r.json()["error"]
    assert len(api.list_repo_commits("alice/limited")) == 1


def test_tokens_are_neither_logged_nor_stored_in_clear(hub: HubHandle, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from huggingface_hub.errors import HfHubHTTPError

    caplog.set_level(logging.DEBUG, logger="registry.localhub")
    api = hub.api()
    assert api.whoami()["name"] == "alice"
    api.create_repo("alice/logged", exist_ok=True)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/logged")
    with pytest.raises(HfHubHTTPError):
        hub.api("hf_wrong_secret_token").whoami()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/api/whoami-v2" in logged  # requests are logged at DEBUG...
    secrets_ = (hub.token, hub.read_token, hub.bob_token, "hf_wrong_secret_token")
    assert not [s for s in secrets_ if s in logged]  # ...but never a token
    stored = [p for p in hub.data_dir.rglob("*") if p.is_file() and any(s.encode() in p.read_bytes() for s in secrets_)]
    assert stored == []


def test_non_ascii_paths_round_trip_and_missing_ones_are_clean_404s(hub: HubHandle, tmp_path: Path) -> None:
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    api = hub.api()
    api.create_repo("alice/unicode", exist_ok=True)
    api.upload_file(path_or_fileobj="বাংলা".encode(), path_in_repo="données/বাংলা.txt", repo_id="alice/unicode")
    assert Path(api.hf_hub_download("alice/unicode", "données/বাংলা.txt", cache_dir=tmp_path)).read_text() == "বাংলা"
    # Error messages quote the path or revision; non-ASCII must not break the response headers.
    with pytest.raises(EntryNotFoundError):
        api.hf_hub_download("alice/unicode", "日本.txt", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/unicode", revision="ветка")
