"""Accounts (users, orgs, hashed tokens) and the Xet signal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from registry.localhub.app import client_disabled_xet
from registry.localhub.auth import Accounts, hash_token
from registry.localhub.http import Body, Request


def test_tokens_are_hashed_and_roles_enforced(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path)
    write = accounts.create_token("alice", org="lab", write=True)
    read = accounts.create_token("alice", write=False)
    stored = (tmp_path / "accounts.json").read_text()
    assert write not in stored and read not in stored and hash_token(write) in stored
    alice = accounts.authenticate(write)
    assert alice is not None and alice.name == "alice" and alice.orgs == ("lab",)
    assert alice.can_write("alice") and alice.can_write("lab") and not alice.can_write("bob")
    reader = accounts.authenticate(read)
    assert reader is not None and not reader.can_write("alice") and reader.can_read_private("lab")
    assert accounts.authenticate("hf_unknown") is None


def test_a_second_process_sees_new_tokens(tmp_path: Path) -> None:
    server_view = Accounts(tmp_path)
    assert server_view.authenticate("hf_x") is None
    token = Accounts(tmp_path).create_token("bob", write=True)  # as `registry hub token create` does
    who = server_view.authenticate(token)
    assert who is not None and who.name == "bob"


@pytest.mark.parametrize(("user", "org"), [("../x", None), ("api", None), ("ok", "bad/org"), ("ok", "datasets")])
def test_bad_names_are_refused(tmp_path: Path, user: str, org: str | None) -> None:
    with pytest.raises(ValueError):
        Accounts(tmp_path).create_token(user, org=org)
    assert (
        not (tmp_path / "accounts.json").exists()
        or json.loads((tmp_path / "accounts.json").read_text())["tokens"] == {}
    )


def test_users_and_orgs_cannot_share_a_name(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path)
    accounts.create_token("alice", org="lab")
    with pytest.raises(ValueError):
        accounts.create_token("lab")


def _request(headers: dict[str, str]) -> Request:
    return Request("POST", ["api"], {}, Headers(headers), "http://127.0.0.1", Body(None, 0))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Mergeling-Xet": "disabled"}, True),
        ({"User-Agent": "unknown/None; hf_hub/2.4.0; python/3.11; origin/mergeling-no-xet"}, True),
        ({"User-Agent": "unknown/None; hf_hub/1.19.3; python/3.11"}, True),
        ({"User-Agent": "unknown/None; hf_hub/0.36.0; python/3.11"}, True),
        ({"User-Agent": "unknown/None; hf_hub/1.20.0; python/3.11"}, False),
        ({"User-Agent": "unknown/None; hf_hub/2.4.0; python/3.11"}, False),
        ({}, False),
    ],
)
def test_client_disabled_xet(headers: dict[str, str], expected: bool) -> None:
    assert client_disabled_xet(_request(headers)) is expected
