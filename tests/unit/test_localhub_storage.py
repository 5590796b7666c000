"""Pure pieces of the embedded hub: validators, ids, storage, commit parsing, ranges, cards."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
from pathlib import Path

import pytest

from registry.localhub.cards import parse_front_matter, tags_from_card
from registry.localhub.commits import (
    AddBytes,
    AddLfs,
    CommitHeader,
    Delete,
    RepoLocks,
    apply_commit,
    branch_ref,
    parse_ndjson,
)
from registry.localhub.names import (
    Conflict,
    InvalidInput,
    NotFound,
    StaleParent,
    StorageError,
    Unprocessable,
    validate_path,
    validate_repo_id,
)
from registry.localhub.routes_files import _parse_range
from registry.localhub.storage import Storage, git_blob_oid, lfs_pointer
from registry.localhub.trees import folder


def test_git_blob_oid_matches_git(tmp_path: Path) -> None:
    data = b"hello world\n"
    (tmp_path / "f").write_bytes(data)
    try:
        expected = subprocess.run(
            ["git", "hash-object", str(tmp_path / "f")], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        expected = "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"
    assert git_blob_oid(data) == expected


def test_lfs_pointer_is_the_git_lfs_format() -> None:
    sha = "a" * 64
    assert lfs_pointer(sha, 12) == f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize 12\n".encode()


@pytest.mark.parametrize(
    "path", ["../x", "a/../b", "/abs", "a//b", "a/./b", ".git/config", "a/.git/x", "a\\b", "", "x\0y", "a/"]
)
def test_validate_path_refuses_unsafe_paths(path: str) -> None:
    with pytest.raises(StorageError) as exc:
        validate_path(path)
    assert isinstance(exc.value, InvalidInput) and exc.value.code == "BadRequest"
    assert repr(path) in str(exc.value)


@pytest.mark.parametrize(
    "path", ["a", "a/b.json", "data/train-00000-of-00001.parquet", ".gitattributes", "sub/.hidden"]
)
def test_validate_path_accepts_normal_paths(path: str) -> None:
    assert validate_path(path) == path


@pytest.mark.parametrize(
    "repo_id", ["a", "a/b/c", "../b", "a/..", "a/b.git", "-a/b", "api/x", "datasets/x", "a/b c", "a/" + "x" * 97]
)
def test_validate_repo_id_refuses_bad_ids(repo_id: str) -> None:
    with pytest.raises(StorageError):
        validate_repo_id(repo_id)


def test_validate_repo_id_accepts_hub_style_ids() -> None:
    assert validate_repo_id("pkupie/Llama-2-7b-ben") == ("pkupie", "Llama-2-7b-ben")
    assert validate_repo_id("a_b/c.d-e") == ("a_b", "c.d-e")


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-3", 10, (0, 3)),
        ("bytes=4-", 10, (4, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=5-100", 10, (5, 9)),
        ("bytes=10-", 10, (10, 9)),
        ("bytes=0-1,3-4", 10, None),
        ("items=0-1", 10, None),
        ("bytes=5-2", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert _parse_range(header, size) == expected


def _ndjson(*items: dict) -> bytes:
    return "\n".join(json.dumps(i) for i in items).encode()


def test_parse_ndjson_reads_every_line_kind() -> None:
    sha = "b" * 64
    header, ops = parse_ndjson(
        _ndjson(
            {"key": "header", "value": {"summary": "s", "description": "d", "parentCommit": "abc123"}},
            {
                "key": "file",
                "value": {"path": "a.txt", "content": base64.b64encode(b"hi").decode(), "encoding": "base64"},
            },
            {"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": sha, "size": 5}},
            {"key": "deletedFile", "value": {"path": "old.txt"}},
            {"key": "deletedFolder", "value": {"path": "logs/"}},
        )
    )
    assert header == CommitHeader("s", "d", "abc123")
    assert ops == [
        AddBytes("a.txt", b"hi"),
        AddLfs("w.safetensors", sha, 5),
        Delete("old.txt", folder=False),
        Delete("logs", folder=True),
    ]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"", "no header"),
        (b"{]", "line 1"),
        (_ndjson({"key": "file", "value": {"path": "a", "content": ""}}), "first line must be the header"),
        (_ndjson({"key": "header", "value": {}}, {"key": "copy", "value": {"path": "a"}}), "unknown key 'copy'"),
        (_ndjson({"key": "header", "value": {"parentCommit": "zz"}}), "parentCommit"),
        (_ndjson({"key": "header", "value": {}}, {"key": "header", "value": {}}), "once"),
    ],
)
def test_parse_ndjson_refuses_malformed_payloads(payload: bytes, fragment: str) -> None:
    with pytest.raises(StorageError) as exc:
        parse_ndjson(payload)
    assert isinstance(exc.value, InvalidInput) and fragment in str(exc.value)


def _commit(storage: Storage, store, ops, *, parent=None, lock=None):  # type: ignore[no-untyped-def]
    kind, name = branch_ref(store, "main")
    return apply_commit(
        storage,
        store,
        lock=lock or threading.Lock(),
        kind=kind,
        name=name,
        header=CommitHeader("t", "", parent),
        ops=ops,
        author="u",
    )


def test_storage_commits_resolve_and_history(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    store = storage.create_repo("model", "u/r", private=False, author="u", extra={})
    first = store.resolve("main")
    one = _commit(storage, store, [AddBytes("a/b.txt", b"1")])
    two = _commit(storage, store, [AddBytes("c.txt", b"2"), Delete("a", folder=True)], parent=one.commit_id[:7])
    assert store.resolve("main") == two.commit_id == store.resolve("refs/heads/main")
    assert store.resolve(one.commit_id) == one.commit_id and store.resolve(one.commit_id[:8]) == one.commit_id
    assert [c.id for c in store.history(two.commit_id)] == [two.commit_id, one.commit_id, first]
    assert set(store.commit(two.commit_id).files) == {".gitattributes", "c.txt"}
    entry = store.commit(two.commit_id).files["c.txt"]
    assert entry.sha256 == hashlib.sha256(b"2").hexdigest() and storage.blobs.path(entry.sha256).read_bytes() == b"2"
    with pytest.raises(StorageError) as exc:
        store.resolve("nope")
    assert exc.value.code == "RevisionNotFound"


def test_deleted_folders_take_exactly_their_contents(tmp_path: Path) -> None:
    """Folder deletes (indexed by folder, not scanned) see earlier adds of the same commit, never touch
    a sibling sharing the prefix, and leave untouched folders' trees (and their last commit) as they were."""
    storage = Storage(tmp_path)
    store = storage.create_repo("model", "u/r", private=False, author="u", extra={})
    paths = ["a/x.txt", "a/deep/er/y.txt", "ab/x.txt", "a.txt", "a-b/x.txt", "keep/z.txt", "keep/sub/w.txt"]
    one = _commit(storage, store, [AddBytes(p, p.encode()) for p in paths])
    two = _commit(
        storage,
        store,
        [
            AddBytes("a/new.txt", b"n"),  # added, then gone with its folder in the same commit
            Delete("a", folder=True),
            AddBytes("tmp/t.txt", b"t"),
            Delete("tmp/t.txt", folder=False),  # `tmp` is now empty, so it no longer exists...
            AddBytes("a/again.txt", b"g"),  # ... while `a` exists again
        ],
    )
    after = store.commit(two.commit_id)
    assert set(after.files) == {".gitattributes", "a/again.txt", "ab/x.txt", "a.txt", "a-b/x.txt", "keep/z.txt",
                                "keep/sub/w.txt"}  # fmt: skip
    with pytest.raises(NotFound) as exc:
        _commit(storage, store, [Delete("tmp", folder=True)])
    assert exc.value.code == "EntryNotFound"
    with pytest.raises(NotFound):
        _commit(storage, store, [Delete("a/deep", folder=True)])  # deleted with `a` above
    three = _commit(storage, store, [Delete("ab", folder=False)])  # deletedFile naming a folder: the folder
    assert "ab/x.txt" not in store.commit(three.commit_id).files
    # `keep/` was not touched by commits two and three: same tree object, same last commit (one).
    kept = [folder(store, store.commit(c).tree, "keep") for c in (one.commit_id, two.commit_id, three.commit_id)]
    assert kept[0] is not None and kept[0][1] is not None and kept[0][1]["id"] == one.commit_id
    assert kept[0] == kept[1] == kept[2]


def test_failed_commits_write_nothing(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    store = storage.create_repo("dataset", "u/r", private=False, author="u", extra={})
    head = store.resolve("main")
    blobs_before = sorted(p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file())
    cases = [
        ([AddBytes("new.txt", b"fresh bytes"), Delete("missing.txt", folder=False)], NotFound),
        ([AddBytes("x", b"1"), AddBytes("x/y", b"2")], InvalidInput),
        ([AddLfs("w.bin", "c" * 64, None)], Unprocessable),
    ]
    for ops, status in cases:
        with pytest.raises(StorageError) as exc:
            _commit(storage, store, ops)
        assert isinstance(exc.value, status)
    with pytest.raises(StorageError) as exc:
        _commit(storage, store, [AddBytes("a", b"a")], parent="0" * 40)
    assert isinstance(exc.value, StaleParent)
    assert store.resolve("main") == head
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()) == blobs_before


def test_create_repo_twice_is_409_and_delete_removes_it(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.create_repo("model", "u/r", private=True, author="u", extra={})
    with pytest.raises(StorageError) as exc:
        storage.create_repo("model", "u/r", private=True, author="u", extra={})
    assert isinstance(exc.value, Conflict)
    assert [s.repo_id for s in storage.iter_repos("model")] == ["u/r"]
    storage.delete_repo("model", "u/r")
    with pytest.raises(StorageError) as exc:
        storage.repo("model", "u/r")
    assert exc.value.code == "RepoNotFound"


def test_blob_stream_checks_the_announced_hash(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    data = b"x" * 1000
    sha = hashlib.sha256(data).hexdigest()
    assert storage.blobs.put_stream(iter([data[:10], data[10:]]), expected_sha256=sha) == (sha, 1000)
    with pytest.raises(StorageError) as exc:
        storage.blobs.put_stream(iter([b"other"]), expected_sha256="d" * 64)
    assert isinstance(exc.value, Unprocessable)
    assert not storage.blobs.exists("d" * 64) and list((tmp_path / "blobs" / ".tmp").iterdir()) == []


def test_repo_locks_are_per_repo() -> None:
    locks = RepoLocks()
    assert locks.get("model/a/b") is locks.get("model/a/b")
    assert locks.get("model/a/b") is not locks.get("model/a/c")


def test_front_matter_and_tags() -> None:
    card = parse_front_matter(
        "---\nlicense: mit\nlanguage: [bn, en]\ntags: [mergeling-ct]\nbase_model: meta-llama/Llama-2-7b-hf\n---\n# x\n"
    )
    assert card["license"] == "mit"
    assert tags_from_card(card, repo_type="model") == [
        "mergeling-ct",
        "bn",
        "en",
        "license:mit",
        "base_model:meta-llama/Llama-2-7b-hf",
    ]
    assert parse_front_matter("# no front matter") == {}
    assert parse_front_matter("---\na: [\n---\n") == {}
    assert parse_front_matter("---\n- a list\n---\n") == {}


@pytest.mark.parametrize("chunk", [1000, 7777, 65536, 10**9])
def test_streamed_ndjson_spools_long_lines_at_any_chunking(tmp_path: Path, chunk: int) -> None:
    import base64
    import json as _json

    from registry.localhub.commits import AddBytes, AddSpooled, parse_items
    from registry.localhub.ndjson import LINE_LIMIT, iter_items

    big = bytes(range(256)) * (LINE_LIMIT // 128)  # ~2x the line limit once base64-encoded
    content = base64.b64encode(big).decode().replace("/", "\\/")  # a JSON encoder may escape "/"
    payload = (
        _json.dumps({"key": "header", "value": {"summary": "s"}})
        + "\n"
        + '{"key": "file", "value": {"content": "' + content + '", "path": "big.bin", "encoding": "base64"}}\n'
        + _json.dumps({"key": "file", "value": {"path": "small.txt", "content": base64.b64encode(b"hi").decode()}})
    ).encode()  # fmt: skip
    chunks = [payload[i : i + chunk] for i in range(0, len(payload), chunk)]
    created: list[Path] = []
    header, ops = parse_items(iter_items(chunks, tmp_path, created=created))
    assert header.summary == "s" and [type(op) for op in ops] == [AddSpooled, AddBytes]
    spooled = ops[0]
    assert isinstance(spooled, AddSpooled) and spooled.path == "big.bin"
    assert spooled.spooled.path.read_bytes() == big and spooled.spooled.sha256 == hashlib.sha256(big).hexdigest()
    assert created == [spooled.spooled.path]
    bad = payload.replace(b"AAEC", b"AA!C", 1)
    created = []
    with pytest.raises(InvalidInput, match="base64"):
        parse_items(iter_items([bad], tmp_path, created=created))
    assert all(not p.exists() for p in created)
