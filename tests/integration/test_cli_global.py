"""The root CLI: global options anywhere, one Hub client per invocation, fast failures, wording."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.cli._state import hoist_global_options
from registry.errors import HubUnavailableError
from registry.hub import HubClient
from tests._fixtures.hub import HubHandle

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "recipes" / "eval" / "ben_Beng.yaml"
NO_HUB_ENV = {"HF_TOKEN": None, "HF_ENDPOINT": None, "MERGELING_REGISTRY": None}


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_hoisting_moves_only_global_options_of_builtin_commands() -> None:
    commands: dict[str, set[str]] = {"eval": set(), "add": set(), "list": set(), "push": {"--endpoint", "--token"}}
    assert hoist_global_options(["eval", "m", "-q", "--registry=a/b", "-vv", "--", "-q"], commands=commands) == [
        "-q", "--registry=a/b", "-vv", "eval", "m", "--", "-q"
    ]  # fmt: skip
    assert hoist_global_options(["-q", "add", "--endpoint", "u", "ct", "x"], commands=commands) == [
        "-q", "--endpoint", "u", "add", "ct", "x"
    ]  # fmt: skip
    assert hoist_global_options(["bot", "serve", "--token", "t", "-q"], commands=commands) == [
        "bot", "serve", "--token", "t", "-q"
    ]  # fmt: skip
    # a command that declares --endpoint/--token itself keeps them (and still gets -q hoisted)
    assert hoist_global_options(["push", "d", "r", "--endpoint", "u", "--token=t", "-q"], commands=commands) == [
        "-q", "push", "d", "r", "--endpoint", "u", "--token=t"
    ]  # fmt: skip


def test_quiet_and_verbose_after_the_subcommand(tmp_path: Path) -> None:
    # `registry eval ... -q` used to fail with "No such option: -q".
    missing = tmp_path / "none.json"
    for flag in ("-q", "-v", "-vv", "--quiet"):
        result = CliRunner().invoke(app, ["eval", "compare", str(missing), flag])
        assert result.exit_code == 2 and "does not exist" in result.output and "No such option" not in result.output


def test_quiet_silences_transformers_warnings(tmp_path: Path) -> None:
    from transformers.utils import logging as hf_logging

    CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "none.json"), "-q"])
    assert hf_logging.get_verbosity() == logging.ERROR
    assert not logging.getLogger("transformers.modeling_utils").isEnabledFor(logging.WARNING)
    CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "none.json")])
    assert hf_logging.get_verbosity() == logging.WARNING


def test_unreachable_hub_fails_within_seconds() -> None:
    # Nothing listens on port 9: list_files (a paginated call) used to retry ~25 s.
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match="cannot be reached.*HF_ENDPOINT"):
        HubClient(endpoint="http://127.0.0.1:9", token="x", fail_fast=True).list_files("a/b")
    assert time.monotonic() - start < 10


def test_silent_hub_fails_after_the_probe_timeout(silent_server: str) -> None:
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match="checked within 0.5 s"):
        HubClient(endpoint=silent_server, token="x", fail_fast=True, probe_timeout=0.5).repo_info("a/b")
    assert time.monotonic() - start < 10


def test_cli_commands_fail_fast_on_a_dead_hub(tmp_path: Path) -> None:
    env = {**NO_HUB_ENV, "HF_HUB_CACHE": str(tmp_path / "cache")}
    start = time.monotonic()
    for args in (
        ["list", "--endpoint", "http://127.0.0.1:9", "--registry", "a/b", "--token", "x"],
        ["eval", "a/model", "--suite", str(SUITE), "--data-repo", "a/data", "--endpoint", "http://127.0.0.1:9"],
    ):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 1, result.output
        assert "http://127.0.0.1:9 cannot be reached" in result.stderr and len(result.stderr.splitlines()) == 1
    assert time.monotonic() - start < 20


def test_eval_without_data_names_both_options(tmp_path: Path) -> None:
    # The default used to be a data repo that does not exist, and the error never named --data-dir.
    model = tmp_path / "model"
    model.mkdir()
    result = CliRunner().invoke(app, ["eval", str(model), "--suite", str(SUITE)], env=NO_HUB_ENV)
    assert result.exit_code == 1
    assert "--data-dir DIR" in result.stderr and "--data-repo OWNER/NAME" in result.stderr


def test_eval_missing_data_repo_names_data_dir(hub: HubHandle, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    args = ["eval", str(model), "--suite", str(SUITE), "--data-repo", "alice/nothing-here"]
    result = CliRunner().invoke(app, [*args, "--endpoint", hub.url, "--token", hub.token], env=NO_HUB_ENV)
    assert result.exit_code == 1 and "alice/nothing-here not found" in result.stderr and "--data-dir" in result.stderr


def test_bad_token_on_a_read_says_valid_token_not_write_token(hub: HubHandle) -> None:
    args = ["list", "--endpoint", hub.url, "--registry", "alice/registry", "--token", "hf_wrong"]
    result = CliRunner().invoke(app, args, env=NO_HUB_ENV)
    assert result.exit_code == 1
    assert "invalid or missing token" in result.stderr and "Pass a valid token" in result.stderr
    assert "write" not in result.stderr


def test_hub_options_build_one_client(hub: HubHandle, tmp_path: Path) -> None:
    # The same options before or after the command reach the command (ctx.obj), for every group.
    env = {**NO_HUB_ENV, "HF_HUB_CACHE": str(tmp_path / "cache")}
    before = CliRunner().invoke(
        app, ["--endpoint", hub.url, "--token", hub.token, "list", "--registry", "alice/r"], env=env
    )
    after = CliRunner().invoke(
        app, ["list", "--registry", "alice/r", "--endpoint", hub.url, "--token", hub.token], env=env
    )
    assert before.exit_code == after.exit_code == 1  # no registry yet: the same one-line error both ways
    assert before.stderr == after.stderr and "alice/r" in after.stderr


def test_xet_is_off_only_while_uploading_to_an_embedded_hub(hub_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # HubClient() used to turn Xet off for the whole process when it was built.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    small_lfs = hub_factory.thread("lfs", lfs_threshold=1024)  # so this upload takes the LFS path
    client = HubClient(endpoint=small_lfs.url, token=small_lfs.token)
    assert constants.HF_HUB_DISABLE_XET is False
    client.create_repo("alice/big")
    sha = client.commit_files("alice/big", message="big", add={"blob.bin": bytes(range(256)) * 64})
    assert client.read_file("alice/big", "blob.bin", revision=sha) == bytes(range(256)) * 64
    assert constants.HF_HUB_DISABLE_XET is False


@pytest.mark.parametrize("columns", ["40", "60", "80", "100"])
def test_errors_stay_on_one_line_at_any_width(columns: str, tmp_path: Path) -> None:
    # They used to wrap at the terminal width (80 when stderr is not a terminal): COLUMNS=2000 in tests.
    bad = tmp_path / "a-rather-long-file-name-so-the-message-passes-forty-columns.json"
    bad.write_text('{"hello": 1}')
    error = CliRunner().invoke(app, ["eval", "compare", str(bad)], env={"COLUMNS": columns})
    assert error.exit_code == 1 and len(error.stderr.splitlines()) == 1 and str(bad) in error.stderr
    usage = CliRunner().invoke(app, ["list", "--language", "xxx_Yyyy_long_enough_to_wrap"], env={"COLUMNS": columns})
    assert usage.exit_code == 2
    [line] = [line for line in usage.stderr.splitlines() if line.startswith("Error")]
    assert line.endswith("write e.g. ben_Beng or khk_Cyrl")
