"""The bot journey, then the Space: `registry demo --keep-running` pushes a CT, the real bot merges,
evaluates and publishes it (catalog state `published`), and a real browser (Playwright driving
Debian's chromium) generates with that merge from the Try tab.

This is the path a new user takes; it failed before (the Try tab listed only `merged`/`evaluated`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_line(proc: subprocess.Popen[str], pattern: str, *, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r} (exit {proc.poll()}): {''.join(seen)[-2000:]}")


@pytest.mark.slow
def test_bot_journey_then_try_tab_generates(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    import httpx
    from playwright.sync_api import expect, sync_playwright

    workdir = tmp_path / "demo"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "OAUTH_", "OPENID_"))}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HOME=str(workdir / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONUNBUFFERED="1")  # fmt: skip
    cmd = [sys.executable, "-c", "from registry.cli import main; main()", "-q", "demo", "--workdir", str(workdir),
           "--lab-steps", "4", "--eval-limit", "2", "--timeout", "300", "--keep-running", "--space-port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        merged_line = _wait_for_line(proc, r"Merged model: http", timeout=600)
        merged_repo = re.search(r"/(mergebot/[\w.-]+)", merged_line)
        assert merged_repo, merged_line
        _wait_for_line(proc, rf"Space: http://127\.0\.0\.1:{port}", timeout=60)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        errors: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url)
                # The bot's merge (state `published`) is listed and picked without a click.
                expect(page.locator("#try-merged input")).to_have_value(
                    re.compile(merged_repo.group(1)), timeout=60_000
                )
                expect(page.locator("#try-empty")).not_to_contain_text("No merged model")
                page.locator("#try-prompt textarea").fill("আমি ভাত")
                page.locator("#try-generate").click()
                expect(page.locator("#out-merged textarea")).not_to_have_value("", timeout=120_000)
                expect(page.locator("#out-ct textarea")).not_to_have_value("", timeout=120_000)
                page.screenshot(path=str(tmp_path / "journey-try.png"), full_page=True)
            finally:
                browser.close()
        assert errors == []
        # The leaderboard compares: the bot evaluated the CT and SFT for its merge and recorded their
        # numbers in the catalog, so their rows have numbers and the merge has its gain kept.
        from gradio_client import Client

        rows = Client(url, verbose=False).predict("", api_name="/leaderboard")
        by_role = {row["role"]: row for row in rows}
        for role in ("ct", "sft", "merge"):
            numbers = [v for k, v in by_role[role].items() if k.startswith(("flores_", "sib200_")) and v is not None]
            assert numbers, (role, by_role[role])
        assert by_role["merge"]["language gain kept"] is not None, by_role["merge"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
