"""The bot end to end on the embedded hub: alice pushes a CT, the hub delivers the webhook to the bot
(running as bob), and the merged, evaluated model comes back with its card, catalog entry and comment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.queue import trigger_key
from bot.server import register_webhooks
from bot.worker import Worker
from registry.catalog.entries import MergeEntry
from registry.catalog.store import CatalogStore
from registry.catalog.verify import build_sft_entry
from tests._fixtures.botkit import BotServer, ct_meta, eval_fixture, push_checkpoint, sft_meta, wait_for

SECRET = "webhook-secret-e2e"
OUTPUT = "bob/alice__tiny-ct-ben-tiny-sft-ties-sv"


@pytest.fixture(scope="module")
def world(hub, tiny_family, tmp_path_factory):
    """base + SFT pushed by alice, the SFT in bob's registry, the bot (bob) receiving alice's webhooks."""
    root = tmp_path_factory.mktemp("bot-e2e")
    alice, bob = hub.client(), hub.client(hub.bob_token, cache="bob-cache")
    push_checkpoint(alice, tiny_family.base, "alice/tiny-base", {"license": "mit", "language": ["en"]})
    push_checkpoint(alice, tiny_family.sft, "alice/tiny-sft", sft_meta("alice/tiny-base"))
    store = CatalogStore(hub=bob, repo_id="bob/mergeling-registry")
    store.add(build_sft_entry(bob, repo="alice/tiny-sft", revision=None, base="alice/tiny-base"))
    suites, data = eval_fixture(root / "eval")
    config = BotConfig(
        data=root / "bot", registry="bob/mergeling-registry", namespace="bob", watch=("alice",), endpoint=hub.url,
        token=hub.bob_token, suites_dir=suites, data_dir=data, eval_limit=3, lease_s=5,
    )  # fmt: skip
    queue = config.open_queue()
    server = BotServer(config, queue, secret=SECRET, hub=bob).start()
    register_webhooks(bob, url=server.url + "/webhooks/hub", watch=("alice",), secret=SECRET)
    yield {"alice": alice, "bob": bob, "config": config, "queue": queue, "server": server, "store": store}
    server.stop()


def test_a_pushed_ct_is_merged_evaluated_published_and_announced(world, hub, tiny_family) -> None:
    alice, bob, config, queue = world["alice"], world["bob"], world["config"], world["queue"]
    sha = push_checkpoint(alice, tiny_family.ct, "alice/tiny-ct-ben", ct_meta("bn", "alice/tiny-base"))
    trigger = wait_for(lambda: queue.by_key(trigger_key("alice/tiny-ct-ben", sha)), timeout=20)
    assert trigger.state == "queued"

    done = Worker(config, queue, hub=bob).run_until_idle()
    job = queue.get(trigger.id)
    assert [j.id for j in done] == [trigger.id]
    assert job.state == "published", job.error
    assert (job.ct_sha, job.sft_repo, job.output_repo, job.language) == (sha, "alice/tiny-sft", OUTPUT, "ben_Beng")
    sft_sha = bob.head_sha("alice/tiny-sft")
    assert job.sft_sha == sft_sha

    # one commit holding weights + card; the card has model-index, input shas, the CT link
    commits = hub.api(hub.bob_token).list_repo_commits(OUTPUT)
    assert [c.title for c in commits][1:] == ["initial commit"]  # what create_repo writes
    assert commits[0].commit_id == job.data.commit
    files = set(bob.list_files(OUTPUT))
    assert {"model.safetensors", "config.json", "README.md", "merge_report.json", "mergeling_recipe.yaml"} <= files
    readme = bob.read_file(OUTPUT, "README.md", revision=job.data.commit).decode()
    assert "model-index:" in readme and "flores_ben_Beng" in readme and "bits_per_byte" in readme
    assert sha in readme and sft_sha in readme
    assert f"{hub.url}/alice/tiny-ct-ben" in readme
    assert "## Evaluation: comparison" in readme and "| metric | CT" in readme and "| merged" in readme

    # the catalog: the CT (recorded automatically) and the merge, published at that commit with results
    entries = world["store"].list_entries()
    assert any(e.kind == "ct" and e.repo == "alice/tiny-ct-ben" and e.revision == sha for e in entries)
    merges = [e for e in entries if isinstance(e, MergeEntry)]
    assert len(merges) == 1
    merge = merges[0]
    assert (merge.status, merge.output_repo, merge.output_revision) == ("published", OUTPUT, job.data.commit)
    assert {(i.role, i.repo, i.revision) for i in merge.inputs} >= {("ct", "alice/tiny-ct-ben", sha)}
    assert any(r.task == "flores_ben_Beng" and r.metric == "bits_per_byte" for r in merge.results)

    # one discussion on the CT repo, opened by the bot, with a comment naming the merged repo and a table
    api = hub.api()
    discussions = [d for d in api.get_repo_discussions("alice/tiny-ct-ben") if d.author == "bob"]
    assert len(discussions) == 1
    details = api.get_discussion_details("alice/tiny-ct-ben", discussions[0].num)
    texts = [e.content for e in details.events if getattr(e, "type", "") == "comment"]
    comment = texts[-1]
    assert OUTPUT in comment and "| metric | CT" in comment and "bits_per_byte" in comment and sha[:7] in comment

    # staging removed; the bot's token appears nowhere it wrote
    assert not any((config.data / "staging").glob("*"))
    assert hub.bob_token.encode() not in (config.data / "bot.sqlite3").read_bytes()
    assert hub.bob_token not in readme and all(hub.bob_token not in t for t in texts)
    assert hub.bob_token not in json.dumps([j.public() for j in queue.list()])


def test_a_second_delivery_of_the_same_revision_makes_no_new_job(world, hub) -> None:
    import urllib.request

    queue, server = world["queue"], world["server"]
    before = len(queue.list())
    sha = world["bob"].head_sha("alice/tiny-ct-ben")
    body = {
        "event": {"action": "update", "scope": "repo.content"},
        "repo": {"type": "model", "name": "alice/tiny-ct-ben", "id": "x", "private": False, "headSha": sha,
                 "url": {"web": "w", "api": "a"}, "owner": {"id": "alice"}},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": None, "newSha": sha}],
        "webhook": {"id": "w", "version": 3},
    }  # fmt: skip
    request = urllib.request.Request(
        server.url + "/webhooks/hub", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Webhook-Secret": SECRET},
    )  # fmt: skip
    with urllib.request.urlopen(request) as response:
        assert response.status == 202
        ids = json.loads(response.read())["jobs"]
    assert len(queue.list()) == before
    assert queue.get(ids[0]).state == "published"


def test_bot_status_lists_the_published_job(world, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    result = CliRunner().invoke(app, ["status", "--data", str(world["config"].data), "--json"])
    assert result.exit_code == 0, result.output
    jobs = json.loads(result.output)
    published = [j for j in jobs if j["state"] == "published"]
    assert published and published[0]["output_repo"] == OUTPUT and published[0]["output_revision"]


def test_webhook_registration_is_reused_and_poll_queues_only_unseen_revisions(world, hub, tiny_family) -> None:
    from bot.server import poll_once

    bob, config, queue, server = world["bob"], world["config"], world["queue"], world["server"]
    hooks = [h for h in bob.list_webhooks() if h.url == server.url + "/webhooks/hub"]
    assert len(hooks) == 1
    again = register_webhooks(bob, url=server.url + "/webhooks/hub", watch=("alice",), secret=SECRET)
    assert again == [hooks[0].id] and len(bob.list_webhooks()) == len(hooks)
    assert poll_once(config, queue, bob) == 0  # every head revision of alice's CTs is known


def test_a_newer_revision_supersedes_the_queued_older_one(world, hub, tiny_family, tmp_path: Path) -> None:
    import shutil

    alice, bob, config, queue = world["alice"], world["bob"], world["config"], world["queue"]
    folder = tmp_path / "ct"
    shutil.copytree(tiny_family.ct, folder)
    first = push_checkpoint(alice, folder, "alice/tiny-ct-sup", ct_meta("bn", "alice/tiny-base"))
    (folder / "notes.txt").write_text("second revision")
    second = push_checkpoint(alice, folder, "alice/tiny-ct-sup", ct_meta("bn", "alice/tiny-base"))
    old = wait_for(lambda: queue.by_key(trigger_key("alice/tiny-ct-sup", first)), timeout=20)
    new = wait_for(lambda: queue.by_key(trigger_key("alice/tiny-ct-sup", second)), timeout=20)
    assert queue.get(old.id).state == "superseded" and second in (queue.get(old.id).error or "")
    Worker(config, queue, hub=bob).run_until_idle()
    assert queue.get(new.id).state == "published" and queue.get(old.id).state == "superseded"


def test_operators_retry_and_cancel_from_the_cli(world) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    queue, data = world["queue"], str(world["config"].data)
    job, _ = queue.enqueue(key="ct:alice/none@" + "0" * 40, kind="pair", ct_repo="alice/none", ct_sha="0" * 40)
    runner = CliRunner()
    cancelled = runner.invoke(app, ["cancel", job.id, "--data", data])
    assert cancelled.exit_code == 0 and cancelled.stdout.split() == [job.id, "cancelled"]
    retried = runner.invoke(app, ["retry", job.id, "--data", data])
    assert retried.exit_code == 0 and retried.stdout.split() == [job.id, "queued"]
    queue.cancel(job.id)
    from registry.cli import app as root

    missing = runner.invoke(root, ["bot", "retry", "nope", "--data", data])
    assert missing.exit_code == 1 and "no job 'nope'" in missing.stderr


def test_a_comment_is_posted_once_per_job_even_when_the_step_reruns(world, hub) -> None:
    from bot import comments

    bob = world["bob"]
    for _ in range(2):  # the second call is a job resumed after a crash between comment and row update
        comments.post(bob, "alice/tiny-ct-ben", "### a result\n", bot_user="bob", marker="job-once")
    api = hub.api()
    num = next(d.num for d in api.get_repo_discussions("alice/tiny-ct-ben") if d.author == "bob")
    texts = [e.content for e in api.get_discussion_details("alice/tiny-ct-ben", num).events if e.type == "comment"]
    assert sum("mergeling-job: job-once" in t for t in texts) == 1
