"""Sign in with HF, offline: the hub as OpenID provider, driven by a real browser and a relying party.

The relying party is a small Starlette app on 127.0.0.1 doing what authlib does for Gradio's
`gr.LoginButton`: discovery, a redirect to `authorization_endpoint` with state, nonce and PKCE, the
code exchange with HTTP Basic client authentication, the ID token checked against `jwks_uri`. The
browser is Debian's chromium through Playwright. Users and apps are made with the real CLI.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from registry.cli import app as cli_app
from tests._fixtures.hub import HubHandle

PASSWORD = "correct horse battery"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_rs256(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The claims of `token` if its RS256 signature verifies against `jwks` (RFC 8017 §8.2.2)."""
    header_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(_b64url_decode(header_b64))
    assert header["alg"] == "RS256"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    n = int.from_bytes(_b64url_decode(key["n"]), "big")
    e = int.from_bytes(_b64url_decode(key["e"]), "big")
    k = (n.bit_length() + 7) // 8
    em = pow(int.from_bytes(_b64url_decode(sig_b64), "big"), e, n).to_bytes(k, "big")
    digest = hashlib.sha256(f"{header_b64}.{claims_b64}".encode()).digest()
    info = bytes.fromhex("3031300d060960864801650304020105000420") + digest
    assert em == b"\x00\x01" + b"\xff" * (k - len(info) - 3) + b"\x00" + info, "bad signature"
    return json.loads(_b64url_decode(claims_b64))  # type: ignore[no-any-return]


# -- a relying party ------------------------------------------------------------------------------
@dataclass
class RelyingParty:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str
    url: str = ""
    pending: dict[str, dict[str, str]] = field(default_factory=dict)  # state -> nonce, verifier
    results: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, RedirectResponse
        from starlette.routing import Route

        def login(request: Request) -> RedirectResponse:
            meta = httpx.get(f"{self.issuer}/.well-known/openid-configuration").json()
            state, nonce, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(16), secrets.token_urlsafe(48)
            self.pending[state] = {"nonce": nonce, "verifier": verifier}
            query = {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": f"{self.url}/login/callback?_target_url=%2F",
                "scope": self.scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
                "code_challenge_method": "S256",
            }
            return RedirectResponse(f"{meta['authorization_endpoint']}?{urlencode(query)}", status_code=302)

        def callback(request: Request) -> HTMLResponse:
            q = request.query_params
            pending = self.pending.pop(q.get("state", ""), None)
            if pending is None:
                return HTMLResponse("<p id='result'>bad state</p>", status_code=400)
            if "error" in q:
                self.results.append({"error": q["error"]})
                return HTMLResponse(f"<p id='result'>refused: {q['error']}</p>")
            meta = httpx.get(f"{self.issuer}/.well-known/openid-configuration").json()
            answer = httpx.post(
                meta["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": q["code"],
                    "redirect_uri": f"{self.url}/login/callback?_target_url=%2F",
                    "code_verifier": pending["verifier"],
                },
                auth=(self.client_id, self.client_secret),
            )
            tokens = answer.json()
            claims = verify_rs256(tokens["id_token"], httpx.get(meta["jwks_uri"]).json())
            self.results.append({"code": q["code"], "tokens": tokens, "claims": claims, **pending})
            return HTMLResponse(f"<p id='result'>signed in as {claims['preferred_username']}</p>")

        return Starlette(routes=[Route("/login/huggingface", login), Route("/login/callback", callback)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubHandle]:
    from tests._fixtures.hub import start_thread_hub

    root = tmp_path_factory.mktemp("oauth")
    handle = start_thread_hub(root / "data", root / "home")
    yield handle
    handle.stop()


def _cli(*args: str, input: str | None = None) -> Any:
    result = CliRunner().invoke(cli_app, list(args), input=input)
    return result


def _make_rp(hub: HubHandle, scopes: str, *, name: str = "Mergeling Space") -> Iterator[RelyingParty]:
    import uvicorn

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    made = _cli(
        "hub", "oauth-app", "create", name, "--data", str(hub.data_dir), "--redirect-uri", f"{url}/login/callback"
    )
    assert made.exit_code == 0, made.output
    env = dict(line.split("=", 1) for line in made.stdout.splitlines() if line.startswith("OAUTH_"))
    rp = RelyingParty(hub.url, env["OAUTH_CLIENT_ID"], env["OAUTH_CLIENT_SECRET"], scopes, url=url)
    server = uvicorn.Server(uvicorn.Config(rp.app(), host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield rp
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def users(hub: HubHandle) -> None:
    made = _cli("hub", "user", "create", "alice", "--data", str(hub.data_dir), input=f"{PASSWORD}\n{PASSWORD}\n")
    assert made.exit_code == 0, made.output
    assert made.stdout.strip().splitlines()[-1] == "alice"
    short = _cli("hub", "user", "create", "carol", "--data", str(hub.data_dir), "--password", "short")
    assert short.exit_code == 1 and "at least 8 characters" in short.output


@pytest.fixture(scope="module")
def rp(hub: HubHandle, users: None) -> Iterator[RelyingParty]:
    yield from _make_rp(hub, "openid profile")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        yield b
        b.close()


def _sign_in(page: Any, rp: RelyingParty, *, password: str = PASSWORD) -> None:
    page.goto(f"{rp.url}/login/huggingface")
    page.fill("#username", "alice")
    page.fill("#password", password)
    page.click("#signin")


# -- the tests ------------------------------------------------------------------------------------
def test_discovery_document_names_the_endpoints(hub: HubHandle) -> None:
    meta = httpx.get(f"{hub.url}/.well-known/openid-configuration").json()
    assert meta["issuer"] == hub.url
    for key, path in [("authorization_endpoint", "/oauth/authorize"), ("token_endpoint", "/oauth/token"),
                      ("userinfo_endpoint", "/oauth/userinfo"), ("jwks_uri", "/oauth/jwks")]:  # fmt: skip
        assert meta[key] == hub.url + path
    # The issuer is the configured URL, never the Host header a client sends.
    forged = httpx.get(f"{hub.url}/.well-known/openid-configuration", headers={"Host": "evil.example"}).json()
    assert forged["issuer"] == hub.url


def test_code_flow_in_a_browser_then_replay_and_refusals(hub: HubHandle, rp: RelyingParty, browser: Any) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    # A wrong password: the sign-in page again, with one line saying so; no redirect to the app.
    _sign_in(page, rp, password="wrong password!")
    expect(page.locator("#error")).to_have_text("Wrong user name or password.")
    assert page.url.startswith(hub.url) and not rp.results
    # The right one: consent, then back to the app, signed in.
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#signin")
    expect(page.locator("h1")).to_have_text("Authorize Mergeling Space")
    expect(page.locator("li")).to_have_count(2)  # openid, profile: exactly what was asked
    page.click("#allow")
    expect(page.locator("#result")).to_have_text("signed in as alice")
    result = rp.results[-1]
    claims, tokens = result["claims"], result["tokens"]
    assert claims["iss"] == hub.url and claims["aud"] == rp.client_id and claims["nonce"] == result["nonce"]
    assert claims["preferred_username"] == "alice" and claims["exp"] > time.time()
    assert "orgs" not in claims  # a list there breaks Gradio's gr.Request; userinfo has it
    assert tokens["scope"] == "openid profile" and tokens["token_type"].lower() == "bearer"
    access = {"Authorization": f"Bearer {tokens['access_token']}"}
    info = httpx.get(f"{hub.url}/oauth/userinfo", headers=access).json()
    assert info["preferred_username"] == "alice" and info["sub"] == claims["sub"]
    assert [o["name"] for o in info["orgs"]] == ["lab"]
    me = httpx.get(f"{hub.url}/api/whoami-v2", headers=access).json()
    assert me["name"] == "alice" and me["auth"]["type"] == "oauth"

    # The code again (an attacker who read it from a log): refused, and the token it gave is revoked.
    replay = httpx.post(
        f"{hub.url}/oauth/token",
        data={"grant_type": "authorization_code", "code": result["code"],
              "redirect_uri": f"{rp.url}/login/callback?_target_url=%2F", "code_verifier": result["verifier"]},
        auth=(rp.client_id, rp.client_secret),
    )  # fmt: skip
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert httpx.get(f"{hub.url}/api/whoami-v2", headers=access).status_code == 401

    # Denied consent: the app learns access_denied and gets no code.
    page.goto(f"{rp.url}/login/huggingface")  # signed in on the hub: straight to consent
    page.click("#deny")
    expect(page.locator("#result")).to_have_text("refused: access_denied")
    assert rp.results[-1] == {"error": "access_denied"}

    # A redirect URI that is not registered: refused on the hub's page, nothing sent there.
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    query = {"response_type": "code", "client_id": rp.client_id, "scope": "openid",
             "redirect_uri": "http://127.0.0.1:9/steal", "state": "s"}  # fmt: skip
    answer = page.goto(f"{hub.url}/oauth/authorize?{urlencode(query)}")
    assert answer is not None and answer.status == 400
    expect(page.locator(".err")).to_contain_text("redirect_uri is not registered")
    assert not any(u.startswith("http://127.0.0.1:9/") for u in seen)
    context.close()


# -- the same flow over plain HTTP, for the token endpoint's refusals and the scopes' limits -------
def _code(hub: HubHandle, client_id: str, redirect_uri: str, scope: str, **extra: str) -> str:
    with httpx.Client(base_url=hub.url) as c:
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            **extra,
        }
        signed = c.post("/oauth/login", data={"username": "alice", "password": PASSWORD, "next": urlencode(params)})
        assert signed.status_code == 303
        consent = c.get(signed.headers["location"])
        csrf = consent.text.split("name='csrf' value='")[1].split("'")[0]
        done = c.post("/oauth/authorize", data={**params, "csrf": csrf, "decision": "allow"})
        assert done.status_code == 303, done.text
        return parse_qs(urlsplit(done.headers["location"]).query)["code"][0]


def _exchange(hub: HubHandle, rp: RelyingParty, code: str, redirect_uri: str, **form: str) -> httpx.Response:
    return httpx.post(
        f"{hub.url}/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, **form},
        auth=(rp.client_id, form.pop("secret", rp.client_secret)),
    )


def test_token_endpoint_refuses_wrong_uri_secret_verifier(hub: HubHandle, rp: RelyingParty) -> None:
    uri = f"{rp.url}/login/callback"
    wrong_uri = _exchange(hub, rp, _code(hub, rp.client_id, uri, "openid"), f"{rp.url}/other")
    assert wrong_uri.status_code == 400 and wrong_uri.json()["error"] == "invalid_grant"
    code = _code(hub, rp.client_id, uri, "openid")
    wrong_secret = httpx.post(
        f"{hub.url}/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": uri},
        auth=(rp.client_id, "not-the-secret"),
    )
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    verifier = secrets.token_urlsafe(48)
    challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
    pkce = _code(hub, rp.client_id, uri, "openid", code_challenge=challenge, code_challenge_method="S256")
    bad = _exchange(hub, rp, pkce, uri, code_verifier="x" * 48)
    assert bad.status_code == 400 and "PKCE" in bad.json()["error_description"]
    unknown_scope = httpx.get(
        f"{hub.url}/oauth/authorize",
        params={"response_type": "code", "client_id": rp.client_id, "redirect_uri": uri, "scope": "openid admin"},
    )
    assert unknown_scope.status_code == 303 and "error=invalid_scope" in unknown_scope.headers["location"]


def test_tokens_carry_the_scopes_asked_for_and_no_more(hub: HubHandle, rp: RelyingParty) -> None:
    alice = hub.api()
    alice.create_repo("alice/oauth-private", private=True)
    alice.create_repo("bob-stays-bob", exist_ok=True)
    uri = f"{rp.url}/login/callback"

    def token_for(scope: str) -> dict[str, str]:
        answer = _exchange(hub, rp, _code(hub, rp.client_id, uri, scope), uri)
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def commit(headers: dict[str, str], repo: str) -> int:
        body = (
            json.dumps({"key": "header", "value": {"summary": "s"}})
            + "\n"
            + json.dumps({"key": "file", "value": {"path": "a.txt", "content": "aGk=", "encoding": "base64"}})
        )
        r = httpx.post(f"{hub.url}/api/models/{repo}/commit/main", content=body,
                       headers={**headers, "Content-Type": "application/x-ndjson"})  # fmt: skip
        return r.status_code

    def create(headers: dict[str, str], name: str) -> int:
        return httpx.post(f"{hub.url}/api/repos/create", json={"name": name}, headers=headers).status_code

    profile = token_for("openid profile")
    assert httpx.get(f"{hub.url}/api/models/alice/oauth-private", headers=profile).status_code == 404
    assert commit(profile, "alice/bob-stays-bob") == 403
    read = token_for("openid read-repos")
    assert httpx.get(f"{hub.url}/api/models/alice/oauth-private", headers=read).status_code == 200
    assert commit(read, "alice/bob-stays-bob") == 403
    write = token_for("openid write-repos")
    assert commit(write, "alice/bob-stays-bob") == 200
    assert create(write, "made-by-oauth") == 403  # creating repos needs manage-repos
    assert commit(write, "bob/anything") in (403, 404)  # never more than alice's own rights
    manage = token_for("openid manage-repos")
    assert create(manage, "made-by-oauth") == 200
    # userinfo wants an OAuth token with openid; a plain access token is refused.
    assert httpx.get(f"{hub.url}/oauth/userinfo", headers={"Authorization": f"Bearer {hub.token}"}).status_code == 401


# -- Gradio's own LoginButton, unchanged, on the Space's environment variables -------------------
GRADIO_APP = """
import gradio as gr

def hello(profile: gr.OAuthProfile | None) -> str:
    return f"Hello {profile.username}" if profile else "Not signed in"

with gr.Blocks() as demo:
    gr.LoginButton()
    who = gr.Markdown(elem_id="who")
    demo.load(hello, None, who)
demo.launch(server_name="127.0.0.1", server_port=int(__import__("os").environ["PORT"]))
"""


def test_gradio_login_button_signs_in_against_the_hub(hub: HubHandle, users: None, browser: Any, tmp_path: Any) -> None:
    pytest.importorskip("authlib", reason="gradio[oauth] needs authlib and itsdangerous (not in the lock)")
    pytest.importorskip("itsdangerous", reason="gradio[oauth] needs authlib and itsdangerous (not in the lock)")
    import os
    import subprocess
    import sys

    from playwright.sync_api import expect

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    made = _cli("hub", "oauth-app", "create", "Gradio Space", "--data", str(hub.data_dir),
                "--redirect-uri", f"{url}/login/callback")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "GRADIO_", "SPACE_", "OAUTH_"))}
    env.update(line.split("=", 1) for line in made.stdout.splitlines() if line.startswith("OAUTH_"))
    env.update(OPENID_PROVIDER_URL=hub.url, OAUTH_SCOPES="openid profile", SPACE_ID="alice/space", SYSTEM="spaces", PORT=str(port),
               HF_ENDPOINT=hub.url, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="0")  # fmt: skip
    log = (tmp_path / "gradio.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", GRADIO_APP], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        expect(page.locator("#who")).to_contain_text("Not signed in", timeout=30_000)
        page.get_by_role("button", name="Sign in with Hugging Face").click()
        page.fill("#username", "alice")
        page.fill("#password", PASSWORD)
        page.click("#signin")
        page.click("#allow")
        expect(page.locator("#who")).to_contain_text("Hello alice", timeout=30_000)
        context.close()
        assert "Traceback" not in (tmp_path / "gradio.log").read_text().split("hot-reloading in Spaces")[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
