"""Pages a person can open: repo, discussion and commit pages, sign-in, and the API's access rules."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests._fixtures.hub import HubHandle, start_thread_hub

PASSWORD = "pages password 1"
CARD = (
    b"---\nlicense: mit\ntags: [merge, ben]\nbase_model: lab/ct-ben\n---\n# Merged model\n\n"
    b"Some **bold** text.<script>window.pwned = 1</script><img src=x onerror='window.pwned=2'>\n\n"
    b"[click](javascript:window.pwned=3)\n\n| lang | score |\n|---|---|\n| ben | 0.61 |\n"
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubHandle]:
    from registry.localhub.auth import Accounts

    root = tmp_path_factory.mktemp("pages")
    handle = start_thread_hub(root / "data", root / "home")
    accounts = Accounts(handle.data_dir)
    accounts.set_password("alice", PASSWORD)
    accounts.set_password("bob", PASSWORD)
    api = handle.api()
    api.create_repo("alice/merged")
    api.upload_file(path_or_fileobj=CARD, path_in_repo="README.md", repo_id="alice/merged")
    api.upload_file(path_or_fileobj=b"weights", path_in_repo="model.safetensors", repo_id="alice/merged")
    api.create_repo("alice/hidden", private=True)
    api.upload_file(path_or_fileobj=b"secret bytes", path_in_repo="secret.txt", repo_id="alice/hidden")
    api.create_repo("alice/gated-m")
    api.upload_file(path_or_fileobj=b"gated bytes", path_in_repo="g.bin", repo_id="alice/gated-m")
    httpx.put(f"{handle.url}/api/models/alice/gated-m/settings", json={"gated": "manual"},
              headers={"Authorization": f"Bearer {handle.token}"})  # fmt: skip
    api.create_repo("alice/evals", repo_type="dataset")
    yield handle
    handle.stop()


@contextmanager
def _signed_in(hub: HubHandle, user: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hub.url) as client:
        r = client.post("/oauth/login", data={"username": user, "password": PASSWORD, "return_to": "/alice/hidden"})
        assert r.status_code == 303 and r.headers["location"] == "/alice/hidden"
        yield client


def test_the_links_the_bot_and_the_api_write_open_as_pages(hub: HubHandle) -> None:
    api = hub.api()
    discussion = api.create_discussion("alice/merged", title="Merge report", description="TIES **merge** done")
    # bot/comments.py and bot/pipeline.py: {endpoint}/{repo} and {endpoint}/{repo}/discussions/{num}
    repo_page = httpx.get(f"{hub.url}/alice/merged")
    assert repo_page.status_code == 200 and "text/html" in repo_page.headers["content-type"]
    for needle in ("<h1>Merged model</h1>", "<strong>bold</strong>", "license:mit", "base_model",
                   "/alice/merged/resolve/main/model.safetensors", "Merge report", "<td>0.61</td>"):  # fmt: skip
        assert needle in repo_page.text, needle
    page = httpx.get(f"{hub.url}/alice/merged/discussions/{discussion.num}")
    assert page.status_code == 200 and "<strong>merge</strong>" in page.text and "Merge report" in page.text
    commit = api.upload_file(path_or_fileobj=b"v2", path_in_repo="notes.txt", repo_id="alice/merged")
    page = httpx.get(commit.commit_url)
    assert page.status_code == 200 and "added: notes.txt" in page.text
    assert httpx.get(f"{hub.url}/datasets/alice/evals").status_code == 200
    assert httpx.get(f"{hub.url}/alice/evals").status_code == 404  # a dataset is not a model
    # Every link on the repo page resolves.
    import re

    for href in sorted(set(re.findall(r"href='([^']+)'", repo_page.text))):
        assert httpx.get(hub.url + href).status_code == 200, href


def test_card_markup_is_escaped_not_run(hub: HubHandle) -> None:
    text = httpx.get(f"{hub.url}/alice/merged").text
    card = text.split("id='card'>")[1].split("</div>")[0]
    assert "<script" not in card and "<img" not in card and "href" not in card
    assert "&lt;script&gt;" in card


def test_private_repo_pages_follow_the_api_rules(hub: HubHandle) -> None:
    missing = httpx.get(f"{hub.url}/alice/no-such-repo")
    hidden = httpx.get(f"{hub.url}/alice/hidden")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text.replace("hidden", "X") == missing.text.replace("no-such-repo", "X")
    with _signed_in(hub, "bob") as bob:
        assert bob.get("/alice/hidden").status_code == 404
        assert bob.get("/alice/hidden/resolve/main/secret.txt").status_code == 404
    with _signed_in(hub, "alice") as alice:
        page = alice.get("/alice/hidden")
        assert page.status_code == 200 and "secret.txt" in page.text and "signed in as <b>alice</b>" in page.text
        assert alice.get("/alice/hidden/resolve/main/secret.txt").content == b"secret bytes"
        # The cookie reads; it never writes (a forged cross-site POST carries it too).
        r = alice.post("/api/repos/create", json={"name": "by-cookie"})
        assert r.status_code == 401


def test_gated_repo_page_is_visible_but_its_files_are_not(hub: HubHandle) -> None:
    with _signed_in(hub, "bob") as bob:
        page = bob.get("/alice/gated-m")
        assert page.status_code == 200 and "gated (manual)" in page.text and "g.bin" in page.text
        r = bob.get("/alice/gated-m/resolve/main/g.bin")
        assert r.status_code == 403 and r.headers["X-Error-Code"] == "GatedRepo"


def test_login_return_to_is_a_path_on_this_hub_only(hub: HubHandle) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        r = httpx.post(f"{hub.url}/oauth/login", data={"username": "alice", "password": PASSWORD, "return_to": target})
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_sign_in_from_a_page_in_a_browser(hub: HubHandle) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page: Any = browser.new_page()
            page.goto(f"{hub.url}/alice/merged")
            expect(page.locator("#card h1")).to_have_text("Merged model")
            assert page.evaluate("window.pwned") is None  # nothing in the card ran
            assert page.locator("#card a").count() == 0  # the javascript: link is not a link
            page.goto(f"{hub.url}/alice/hidden")
            expect(page.locator("h1")).to_have_text("Not found")
            page.click("#signin-link")
            page.fill("#username", "alice")
            page.fill("#password", PASSWORD)
            page.click("#signin")
            expect(page.locator("h1")).to_have_text("alice/hidden")
            href = page.get_attribute("text=secret.txt", "href")
            assert page.context.request.get(hub.url + href).body() == b"secret bytes"  # with the browser's cookie
        finally:
            browser.close()
