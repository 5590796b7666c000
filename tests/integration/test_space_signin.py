"""Sign-in wiring: with the OAuth variables a Space gets (`hf_oauth: true`), the page shows
"Sign in with Hugging Face" and `/login/huggingface` sends the browser to the provider's authorize
endpoint with this Space's client id; without them there is no button and no mocked login (which
would sign every visitor in as the owner of the Space's token).

The provider here is a stand-in serving only `/.well-known/openid-configuration` (the embedded hub's
own provider is not on main yet); the full browser flow is left for when it is.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests._fixtures.hub import REPO_ROOT, HubHandle


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class StandInProvider:
    """The discovery document of an OpenID provider, on 127.0.0.1."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

        async def discovery(request: Any) -> JSONResponse:
            return JSONResponse(
                {
                    "issuer": self.url,
                    "authorization_endpoint": f"{self.url}/oauth/authorize",
                    "token_endpoint": f"{self.url}/oauth/token",
                    "userinfo_endpoint": f"{self.url}/oauth/userinfo",
                    "jwks_uri": f"{self.url}/oauth/jwks",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )

        self.app = Starlette(routes=[Route("/.well-known/openid-configuration", discovery)])
        self.server: Any = None

    def __enter__(self) -> StandInProvider:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        threading.Thread(target=self.server.run, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True


def _space(hub: HubHandle, *, port: int | None = None, **extra: str) -> Iterator[str]:
    port = port or _free_port()
    env = hub.env(MERGELING_REGISTRY="alice/mergeling-registry", GRADIO_SERVER_PORT=str(port),
                  GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False", **extra)  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "space" / "app.py")], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/config", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise AssertionError("the Space did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _has_login_button(url: str) -> bool:
    components = httpx.get(f"{url}/config", timeout=30).json()["components"]
    # LoginButton is a template of Button: found by its elem_id and its label.
    return any(
        (c.get("props") or {}).get("elem_id") == "login" and "Sign in" in str((c.get("props") or {}).get("value"))
        for c in components
    )


@pytest.mark.slow
def test_oauth_variables_give_a_sign_in_that_goes_to_the_provider(hub: HubHandle, tmp_path: Path) -> None:
    for module in ("authlib", "itsdangerous"):
        pytest.importorskip(module, reason="gradio[oauth] is not installed (not in requirements/lock.txt yet)")
    with StandInProvider() as provider:
        oauth = {
            "SYSTEM": "spaces", "SPACE_ID": "alice/mergeling", "OPENID_PROVIDER_URL": provider.url,
            "OAUTH_CLIENT_ID": "space-client-id", "OAUTH_CLIENT_SECRET": "space-secret",
            "OAUTH_SCOPES": "openid profile read-repos",
        }  # fmt: skip
        for url in _space(hub, **oauth):
            assert _has_login_button(url)
            answer = httpx.get(f"{url}/login/huggingface", timeout=30, follow_redirects=False)
            assert answer.status_code in (302, 307), answer.text[:300]
            target = urlparse(answer.headers["location"])
            assert f"{target.scheme}://{target.netloc}{target.path}" == f"{provider.url}/oauth/authorize"
            query = parse_qs(target.query)
            assert query["client_id"] == ["space-client-id"] and query["response_type"] == ["code"]
            assert query["scope"] == ["openid profile read-repos"]
            assert query["redirect_uri"][0].startswith(f"{url}/login/callback")


@pytest.mark.slow
def test_without_oauth_variables_no_button_and_no_mocked_login(hub: HubHandle) -> None:
    for url in _space(hub):
        assert not _has_login_button(url)
        # Gradio's mocked login (which would sign in as the token's owner) is not installed.
        assert httpx.get(f"{url}/login/huggingface", timeout=30, follow_redirects=False).status_code == 404


PASSWORD = "correct horse battery"


@pytest.mark.slow
def test_signing_in_through_the_embedded_hub_makes_the_space_act_as_the_visitor(hub: HubHandle, tmp_path: Path) -> None:
    """The whole flow in chromium: the Space's "Sign in with Hugging Face" -> the embedded hub's sign-in
    and consent pages -> back on the Space, whose handlers now get the visitor's OAuth token."""
    import shutil

    from typer.testing import CliRunner

    from registry.cli import app as cli_app

    for module in ("authlib", "itsdangerous"):
        pytest.importorskip(module, reason="gradio[oauth] is not installed (not in requirements/lock.txt yet)")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    runner = CliRunner()
    made = runner.invoke(cli_app, ["hub", "user", "create", "alice", "--data", str(hub.data_dir)],
                         input=f"{PASSWORD}\n{PASSWORD}\n")  # fmt: skip
    assert made.exit_code == 0, made.output
    port = _free_port()
    app = runner.invoke(cli_app, ["hub", "oauth-app", "create", "Mergeling Space", "--data", str(hub.data_dir),
                                  "--redirect-uri", f"http://127.0.0.1:{port}/login/callback"])  # fmt: skip
    assert app.exit_code == 0, app.output
    oauth = dict(line.split("=", 1) for line in app.stdout.splitlines() if line.startswith("OAUTH_"))
    oauth.update(SYSTEM="spaces", SPACE_ID="alice/mergeling", OPENID_PROVIDER_URL=hub.url,
                 OAUTH_SCOPES="openid profile read-repos")  # fmt: skip
    for url in _space(hub, port=port, **oauth):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page()
                page.goto(url)
                expect(page.locator("#status")).to_contain_text("signed out", timeout=30_000)
                page.get_by_role("tab", name="Submit", exact=True).click()
                expect(page.locator("#jobs-note")).to_contain_text("Sign in to see your jobs", timeout=30_000)
                page.get_by_role("button", name="Sign in with Hugging Face").click()
                page.fill("#username", "alice")
                page.fill("#password", PASSWORD)
                page.click("#signin")
                page.click("#allow")
                expect(page.locator("#status")).not_to_contain_text("signed out", timeout=30_000)
                expect(page.get_by_role("button", name=re.compile("Logout"))).to_be_visible()
                # Signed in: My jobs is asked for (no bot here: it says so, instead of "sign in").
                page.get_by_role("tab", name="Submit", exact=True).click()
                expect(page.locator("#jobs-note")).to_contain_text("no bot is configured", timeout=30_000)
                # Submit now runs as alice: her check of a repo that does not exist, named, one line.
                page.locator("#submit-repo textarea, #submit-repo input").first.fill("alice/not-there")
                page.locator("#submit-go").click()
                expect(page.locator("#submit-result")).to_contain_text("alice/not-there", timeout=30_000)
                expect(page.locator("#submit-result")).not_to_contain_text("sign in")
            finally:
                browser.close()
