"""A new user's first hour: --help that teaches, Hub options anywhere, one-line errors, no false successes.

Each bad input runs the real CLI (in a subprocess where a server or a port is involved) and checks
the one line on stderr, the exit code (1, or 2 for usage) and that nothing was written.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from registry.cli import app
from registry.cli._help import humanize

REPO_ROOT = Path(__file__).resolve().parents[2]


def _commands(command, path=("registry",)):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MERGELING_"))}
    cmd = [sys.executable, "-c", "from registry.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**base, **(env or {})})


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


# -- --help ----------------------------------------------------------------------------------------
def test_every_command_and_group_has_a_purpose_and_an_example() -> None:
    root = typer.main.get_command(app)
    missing = [" ".join(path) for path, command in _commands(root) if "Examples:" not in (command.help or "")]
    no_purpose = [" ".join(path) for path, command in _commands(root) if not (command.help or "").strip()]
    assert not missing, f"commands without examples in --help: {missing}"
    assert not no_purpose
    assert len(list(_commands(root))) >= 30  # the bot's and the Space's groups are mounted too


def test_help_shows_values_as_a_person_writes_them() -> None:
    root = typer.main.get_command(app)
    humanize(root)
    for path, _ in _commands(root):
        result = CliRunner().invoke(app, [*path[1:], "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        assert not re.search(r"<(str|int|bool|float|path|file|dir|list\[[^]]*\])>", text), (path, text)
        assert "{" not in text.split("\n", 3)[1], (path, text)  # the usage line: RECIPE, not {recipe}
    merge_help = CliRunner().invoke(app, ["merge", "--help"], env={"COLUMNS": "200"}).output
    assert "Usage: registry merge [OPTIONS] RECIPE" in merge_help
    assert re.search(r"--dry-run\s{2,}Plan", merge_help)  # a flag takes no value
    assert re.search(r"--set\s+TEXT…", merge_help) and re.search(r"--out\s+-o\s+PATH", merge_help)


# -- Hub options before or after any command ---------------------------------------------------------
def test_hub_options_are_accepted_after_bot_and_space_commands(tmp_path: Path, busy_port: int) -> None:
    # Parsed (not a usage error): the command then reports its own, later problem.
    bot = _cli("bot", "status", "--data", str(tmp_path), "--endpoint", "http://127.0.0.1:9", "--token", "hf_x")
    assert bot.returncode == 2 and "no bot queue in" in bot.stderr
    serve = _cli("bot", "serve", "--token", "hf_x", "--endpoint", "http://127.0.0.1:9", "--no-eval",
                 "--registry", "a/b", "--namespace", "a", "--port", str(busy_port),
                 env={"MERGELING_WEBHOOK_SECRET": "s"})  # fmt: skip
    assert serve.returncode == 1 and f"port {busy_port} is in use" in _error_line(serve.stderr)
    space = _cli("space", "--token", "hf_x", "--endpoint", "http://127.0.0.1:9", "--port", str(busy_port))
    assert space.returncode == 1 and f"port {busy_port} is in use" in _error_line(space.stderr), space.stderr


# -- one-line errors -------------------------------------------------------------------------------
def test_busy_ports_are_one_line_for_the_hub_the_bot_and_the_space(tmp_path: Path, busy_port: int) -> None:
    hub = _cli("hub", "serve", "--data", str(tmp_path / "hub"), "--port", str(busy_port))
    assert hub.returncode == 1 and "Traceback" not in hub.stderr
    line = _error_line(hub.stderr)
    assert f"port {busy_port} is in use" in line and "pass --port" in line
    space = _cli("space", "--registry", "a/b", "--port", str(busy_port))
    assert space.returncode == 1 and "Traceback" not in space.stderr and "GRADIO_SERVER_PORT" not in space.stderr
    assert "pass --port" in _error_line(space.stderr)


def test_an_endpoint_that_is_not_a_hub_says_so(tmp_path: Path) -> None:
    class NotAHub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotAHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        result = CliRunner().invoke(app, ["list", "--endpoint", url, "--token", "hf_x"])
        assert result.exit_code == 1
        assert "is not a Hugging Face Hub" in result.stderr and url in result.stderr
        assert result.stderr.count("\n") == 1
    finally:
        server.shutdown()


def test_bad_languages_for_the_lab_is_one_usage_line_and_writes_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["lab", "build", "--out", str(tmp_path / "lab"), "--languages", "xyz"])
    assert result.exit_code == 2
    assert "Invalid value for --languages: language 'xyz' is not a FLORES-200 code" in result.stderr
    assert "pydantic" not in result.stderr and "validation error" not in result.stderr
    assert not (tmp_path / "lab").exists()


def test_out_of_range_densities_name_only_the_real_problem() -> None:
    result = CliRunner().invoke(
        app,
        ["merge", "recipes/demo-tiny.yaml", "--dry-run", "--set", "models.0.parameters.density=1.5",
         "--set", "models.1.parameters.density=0"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "density = 1.5" in result.stderr and "density = 0" in result.stderr
    assert "no input models" not in result.stderr


# -- no false successes ----------------------------------------------------------------------------
def test_token_create_refuses_a_folder_without_a_hub_unless_init(tmp_path: Path) -> None:
    typo = tmp_path / "hubdta"
    result = CliRunner().invoke(app, ["hub", "token", "create", "alice", "--data", str(typo), "--write"])
    assert result.exit_code == 1 and "holds no hub" in result.stderr and "--init" in result.stderr
    assert not typo.exists()
    created = CliRunner().invoke(app, ["hub", "token", "create", "alice", "--data", str(typo), "--init", "--write"])
    assert created.exit_code == 0 and (typo / "accounts.json").is_file()
    again = CliRunner().invoke(app, ["hub", "token", "create", "bob", "--data", str(typo)])  # a hub now
    assert again.exit_code == 0, again.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(app, ["hub", "token", "create", "x", "--data", str(tmp_path / "other"), "--init"])
    assert refused.exit_code == 1 and "not empty" in refused.stderr


def test_bot_serve_without_evaluation_data_refuses_to_start_unless_no_eval(tmp_path: Path) -> None:
    result = _cli("bot", "serve", "--registry", "a/b", "--namespace", "a", "--data", str(tmp_path / "bot"),
                  "--port", "0", env={"MERGELING_WEBHOOK_SECRET": "s"})  # fmt: skip
    assert result.returncode == 2 and "--no-eval" in result.stderr and "--eval-data-dir" in result.stderr
    assert not (tmp_path / "bot").exists()


def test_a_missing_registry_is_one_warning_line_and_the_space_still_starts(hub, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from registry.cli import main; main()", "space", "--registry", "alice/no-such-registry",
         "--port", "0"],
        env={**hub.env(), "GRADIO_ANALYTICS_ENABLED": "False"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        url = (proc.stdout.readline() if proc.stdout else "").strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    warnings = [line for line in err.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1 and "alice/no-such-registry does not exist" in warnings[0]


def test_progress_bars_never_reach_a_log_file(tiny_family, tmp_path: Path) -> None:
    # stderr is a pipe here, as in the demo's log files: no carriage-return bars, one line per stage.
    import yaml

    recipe = {
        "merge_method": "ties_sv", "base_model": str(tiny_family.base),
        "models": [
            {"model": str(tiny_family.ct), "role": "ct", "language": "ben_Beng", "parameters": {"density": 0.3}},
            {"model": str(tiny_family.sft), "role": "sft", "parameters": {"density": 0.3}},
        ],
    }  # fmt: skip
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    merged = _cli("merge", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--device", "cpu")
    assert merged.returncode == 0, merged.stderr
    assert "\r" not in merged.stderr and "|" not in merged.stderr  # no bar drawn
    assert re.search(r"merge \(\d", merged.stderr), merged.stderr  # the stage, as one line
    quiet = _cli("-q", "merge", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out2"), "--device", "cpu")
    assert quiet.returncode == 0 and not re.search(r"merge \(", quiet.stderr), quiet.stderr
