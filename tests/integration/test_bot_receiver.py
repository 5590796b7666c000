"""The bot's HTTP API on a real uvicorn: the webhook receiver's refusals, dedupe under a burst, the job
API, and POST /jobs (token checked against the hub, rate limit, 422 with reasons)."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bot.config import BotConfig
from bot.receiver import RateLimiter
from tests._fixtures.botkit import BotServer, ct_meta, push_checkpoint, sft_meta

SECRET = "receiver-secret"


def payload(
    repo: str, sha: str, *, old: str | None = None, repo_type: str = "model", scope: str = "repo.content"
) -> dict:
    return {
        "event": {"action": "update", "scope": scope},
        "repo": {"type": repo_type, "name": repo, "id": "1", "private": False, "headSha": sha,
                 "url": {"web": "w", "api": "a"}, "owner": {"id": repo.split("/")[0]}},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": old, "newSha": sha}],
        "webhook": {"id": "hook", "version": 3},
    }  # fmt: skip


@pytest.fixture
def bot(tmp_path: Path, hub):
    config = BotConfig(data=tmp_path / "bot", registry="bob/recv-registry", namespace="bob", watch=("alice",),
                       endpoint=hub.url, token=hub.bob_token)  # fmt: skip
    server = BotServer(config, config.open_queue(), secret=SECRET, hub=hub.client(hub.bob_token)).start()
    yield server
    server.stop()


def post(server: BotServer, body: object, *, secret: str | None = SECRET, raw: bytes | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Webhook-Secret"] = secret
    data = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(server.url + "/webhooks/hub", content=data, headers=headers, timeout=30)


def test_secret_missing_is_401_and_wrong_is_403(bot: BotServer) -> None:
    assert post(bot, payload("alice/ct", "1" * 40), secret=None).status_code == 401
    assert post(bot, payload("alice/ct", "1" * 40), secret="nope").status_code == 403
    assert bot.queue.list() == []


def test_bad_deliveries_are_answered_with_the_reason_and_queue_nothing(bot: BotServer) -> None:
    bad = post(bot, None, raw=b"{not json")
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
    assert post(bot, {"hello": 1}).status_code == 400
    dataset = post(bot, payload("alice/data", "1" * 40, repo_type="dataset"))
    assert dataset.status_code == 200 and "model repos only" in dataset.json()["ignored"]
    outside = post(bot, payload("carol/ct", "1" * 40))
    assert outside.status_code == 200 and "outside the watched" in outside.json()["ignored"]
    discussion = post(bot, payload("alice/ct", "1" * 40, scope="discussion.comment"))
    assert discussion.status_code == 200 and "not a push" in discussion.json()["ignored"]
    huge = post(bot, None, raw=b"{" + b" " * (10 * 1024 * 1024) + b"}")
    assert huge.status_code == 413
    assert bot.queue.list() == []
    assert httpx.get(bot.url + "/healthz").json() == {"ok": True, "queued": 0, "running": 0}


def test_a_burst_with_duplicates_makes_exactly_one_job_per_revision(bot: BotServer) -> None:
    rng = random.Random(0)
    shas = [f"{i:040x}" for i in range(140)]
    deliveries = shas + rng.sample(shas, 60)  # 200 deliveries, 30 % duplicates
    rng.shuffle(deliveries)
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda sha: post(bot, payload(f"alice/ct-{int(sha, 16) % 7}", sha)), deliveries))
    assert all(a.status_code == 202 for a in answers)
    assert len(bot.queue.list()) == len(shas)
    ids = {}
    for sha, answer in zip(deliveries, answers, strict=True):
        assert ids.setdefault(sha, answer.json()["jobs"][0]) == answer.json()["jobs"][0]


def test_an_older_revision_delivered_after_a_newer_one_does_nothing(bot: BotServer, hub) -> None:
    hub.client().create_repo("alice/ct", exist_ok=True)  # GET /jobs shows jobs whose repos the caller can read
    new = post(bot, payload("alice/ct", "2" * 40, old="1" * 40))
    assert new.status_code == 202
    late = post(bot, payload("alice/ct", "1" * 40))
    assert late.status_code == 200 and "replaced by a newer one" in late.json()["ignored"]
    jobs = httpx.get(bot.url + "/jobs").json()
    assert [j["ct_sha"] for j in jobs] == ["2" * 40]
    one = httpx.get(bot.url + f"/jobs/{jobs[0]['id']}").json()
    assert one["state"] == "queued" and one["ct_repo"] == "alice/ct" and one["created_at"].endswith("Z")
    assert httpx.get(bot.url + "/jobs/nope").status_code == 404
    assert httpx.get(bot.url + "/jobs?state=failed").json() == []


def test_post_jobs_checks_the_token_the_repo_and_the_pairs(bot: BotServer, hub, tiny_family) -> None:
    alice = hub.client()
    url = bot.url + "/jobs"
    assert httpx.post(url, json={"ct_repo": "alice/x"}).status_code == 401
    assert httpx.post(url, json={"ct_repo": "alice/x"}, headers={"Authorization": "Bearer hf_bad"}).status_code == 401
    auth = {"Authorization": f"Bearer {hub.token}"}
    missing = httpx.post(url, json={"ct_repo": "alice/does-not-exist"}, headers=auth, timeout=30)
    assert missing.status_code == 404
    push_checkpoint(alice, tiny_family.base, "alice/recv-base", {"license": "mit"})
    push_checkpoint(alice, tiny_family.ct, "alice/recv-ct", ct_meta("bn", "alice/recv-base"))
    push_checkpoint(
        alice, tiny_family.ct, "alice/recv-nolang", {"base_model": "alice/recv-base", "tags": ["mergeling-ct"]}
    )
    nolang = httpx.post(url, json={"ct_repo": "alice/recv-nolang"}, headers=auth, timeout=30)
    assert nolang.status_code == 422 and "language" in nolang.json()["error"]
    nosft = httpx.post(url, json={"ct_repo": "alice/recv-ct"}, headers=auth, timeout=30)
    assert nosft.status_code == 422 and "no compatible SFT" in nosft.json()["error"]
    assert nosft.json()["reasons"] == ["the catalog holds no SFT checkpoint"]
    push_checkpoint(alice, tiny_family.sft, "alice/recv-sft", sft_meta("alice/recv-base"))
    from registry.catalog.store import CatalogStore
    from registry.catalog.verify import build_sft_entry

    bob = hub.client(hub.bob_token, cache="bob-recv")
    CatalogStore(hub=bob, repo_id="bob/recv-registry").add(
        build_sft_entry(bob, repo="alice/recv-sft", revision=None, base="alice/recv-base")
    )
    ok = httpx.post(url, json={"ct_repo": "alice/recv-ct"}, headers=auth, timeout=30)
    assert ok.status_code == 202
    job = ok.json()["jobs"][0]
    assert job["ct_repo"] == "alice/recv-ct" and job["language"] == "ben_Beng" and job["state"] == "queued"
    again = httpx.post(url, json={"ct_repo": "alice/recv-ct"}, headers=auth, timeout=30)
    assert again.json()["jobs"][0]["id"] == job["id"] and len(bot.queue.list()) == 1
    assert hub.token not in json.dumps(httpx.get(bot.url + "/jobs").json())


def test_post_jobs_is_rate_limited_per_user(tmp_path: Path, hub) -> None:
    config = BotConfig(data=tmp_path / "rl", registry="bob/recv-registry", namespace="bob", endpoint=hub.url,
                       token=hub.bob_token)  # fmt: skip
    limiter = RateLimiter(limit=2, window_s=60)
    server = BotServer(config, config.open_queue(), secret=SECRET, hub=hub.client(hub.bob_token), rate_limit=limiter)
    server.start()
    try:
        body = {"ct_repo": "alice/none"}
        alice = {"Authorization": f"Bearer {hub.token}"}
        codes = [httpx.post(server.url + "/jobs", json=body, headers=alice, timeout=30).status_code for _ in range(3)]
        assert codes == [404, 404, 429]
        bob = {"Authorization": f"Bearer {hub.bob_token}"}
        assert httpx.post(server.url + "/jobs", json=body, headers=bob, timeout=30).status_code == 404
    finally:
        server.stop()
