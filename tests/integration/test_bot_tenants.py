"""Two users and one bot on the embedded hub: the attacks of issue 16, each shown failing.

The bot runs as `mergebot` (a member of org `lab` with alice), publishing to its own namespace.
- bob cannot move alice's merged repo: not with a look-alike CT through POST /jobs, and not through
  the webhook even when the operator keeps the old colliding name template.
- POST /jobs takes a CT only from someone who can write to it.
- A private CT gives a private merge that its org reads, and no public trace: no public repo, no
  catalog entry, nothing in anonymous (or bob's) GET /jobs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load_file, save_file

from bot.config import BotConfig
from bot.queue import trigger_key
from bot.worker import Worker
from registry.catalog.store import CatalogStore
from registry.catalog.verify import build_sft_entry
from tests._fixtures.botkit import BotServer, ct_meta, eval_fixture, push_checkpoint, sft_meta

SECRET = "tenant-secret"
REGISTRY = "mergebot/tenant-registry"


@pytest.fixture(scope="module")
def world(hub, tiny_family, tmp_path_factory):
    root = tmp_path_factory.mktemp("bot-tenants")
    bot_token = hub.make_token("mergebot", org="lab", write=True)
    alice, bob = hub.client(), hub.client(hub.bob_token, cache="bob-tenants")
    mergebot = hub.client(bot_token, cache="bot-tenants")
    push_checkpoint(alice, tiny_family.base, "alice/tn-base", {"license": "mit"})
    push_checkpoint(alice, tiny_family.sft, "alice/tn-sft", sft_meta("alice/tn-base"))
    CatalogStore(hub=mergebot, repo_id=REGISTRY).add(
        build_sft_entry(mergebot, repo="alice/tn-sft", revision=None, base="alice/tn-base")
    )
    suites, data = eval_fixture(root / "eval")
    config = BotConfig(data=root / "bot", registry=REGISTRY, namespace="mergebot", watch=("alice", "bob"),
                       endpoint=hub.url, token=bot_token, suites_dir=suites, data_dir=data, eval_limit=2,
                       max_attempts=1)  # fmt: skip
    queue = config.open_queue()
    server = BotServer(config, queue, secret=SECRET, hub=mergebot).start()
    yield {"alice": alice, "bob": bob, "bot": mergebot, "config": config, "queue": queue, "server": server,
           "root": root, "bot_token": bot_token}  # fmt: skip
    server.stop()


def _lookalike(tiny_family, root: Path, name: str) -> Path:
    """alice's CT plus a little noise: what bob would push to pass his copy off as hers."""
    folder = root / name
    shutil.copytree(tiny_family.ct, folder)
    state = load_file(folder / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"
    state[key] = state[key] + 1e-3
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _submit(world, repo: str, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(world["server"].url + "/jobs", json={"ct_repo": repo}, headers=headers, timeout=60)


def _deliver(world, repo: str, sha: str) -> httpx.Response:
    body = {
        "event": {"action": "update", "scope": "repo.content"},
        "repo": {"type": "model", "name": repo, "id": "1", "private": False, "headSha": sha,
                 "url": {"web": "w", "api": "a"}, "owner": {"id": repo.split("/")[0]}},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": None, "newSha": sha}],
        "webhook": {"id": "hook", "version": 3},
    }  # fmt: skip
    headers = {"X-Webhook-Secret": SECRET}
    return httpx.post(world["server"].url + "/webhooks/hub", json=body, headers=headers, timeout=30)


def _run(world, config: BotConfig | None = None) -> None:
    Worker(config or world["config"], world["queue"], hub=world["bot"]).run_until_idle()


def _jobs_of(world, repo: str) -> list:
    return [j for j in world["queue"].list() if j.ct_repo == repo and not j.is_trigger]


def _head(world, repo: str) -> tuple[str, str]:
    commits = world["bot"].api.list_repo_commits(repo)
    return commits[0].commit_id, commits[0].title


def test_bobs_lookalike_ct_cannot_move_alices_merged_repo_through_post_jobs(world, hub, tiny_family) -> None:
    push_checkpoint(world["alice"], tiny_family.ct, "alice/tn-ct", ct_meta("bn", "alice/tn-base"))
    assert _submit(world, "alice/tn-ct", hub.token).status_code == 202
    _run(world)
    [alice_job] = _jobs_of(world, "alice/tn-ct")
    assert alice_job.state == "published", alice_job.error
    assert alice_job.output_repo == "mergebot/alice__tn-ct-tn-sft-ties-sv"
    before = _head(world, alice_job.output_repo)
    assert before[1].startswith("Merge alice/tn-ct@")

    # bob may not submit alice's CT, and alice may not submit with a read-only token
    refused = _submit(world, "alice/tn-ct", hub.bob_token)
    assert refused.status_code == 403 and "bob cannot write to alice/tn-ct" in refused.json()["error"]
    readonly = _submit(world, "alice/tn-ct", hub.read_token)
    assert readonly.status_code == 403 and "read-only token" in readonly.json()["error"]

    # bob's own look-alike of the same name is merged, but under his name
    push_checkpoint(world["bob"], _lookalike(tiny_family, world["root"], "bob-ct"), "bob/tn-ct",
                    ct_meta("bn", "alice/tn-base"))  # fmt: skip
    assert _submit(world, "bob/tn-ct", hub.bob_token).status_code == 202
    _run(world)
    [bob_job] = _jobs_of(world, "bob/tn-ct")
    assert bob_job.state == "published", bob_job.error
    assert bob_job.output_repo == "mergebot/bob__tn-ct-tn-sft-ties-sv"
    assert _head(world, alice_job.output_repo) == before
    readme = world["bot"].read_file(alice_job.output_repo, "README.md").decode()
    assert '<!-- mergeling-provenance: {"ct": ["alice/tn-ct"]} -->' in readme and "bob/tn-ct" not in readme


def test_with_the_old_colliding_template_bobs_webhook_push_is_refused_with_the_reason(world, tiny_family) -> None:
    import dataclasses

    config = dataclasses.replace(world["config"], name_template="{ct}-{sft}-{method}")
    sha = push_checkpoint(world["alice"], tiny_family.ct, "alice/tw-ct", ct_meta("bn", "alice/tn-base"))
    assert _deliver(world, "alice/tw-ct", sha).status_code == 202
    _run(world, config)
    [alice_job] = _jobs_of(world, "alice/tw-ct")
    assert alice_job.state == "published" and alice_job.output_repo == "mergebot/tw-ct-tn-sft-ties-sv"
    before = _head(world, alice_job.output_repo)

    bob_sha = push_checkpoint(world["bob"], _lookalike(tiny_family, world["root"], "bob-tw"), "bob/tw-ct",
                              ct_meta("bn", "alice/tn-base"))  # fmt: skip
    assert _deliver(world, "bob/tw-ct", bob_sha).status_code == 202
    _run(world, config)
    bob_job = world["queue"].by_key(trigger_key("bob/tw-ct", bob_sha))
    assert bob_job.state == "failed"
    assert bob_job.error.startswith("refusing to publish into mergebot/tw-ct-tn-sft-ties-sv: its card records CT "
                                    "alice/tw-ct, this merge is of bob/tw-ct")  # fmt: skip
    assert "{ct_owner}" in bob_job.error
    assert _head(world, alice_job.output_repo) == before


def test_a_repo_without_bot_provenance_is_never_taken_over(world, tiny_family) -> None:
    """A repo of that name made by someone else (here: by hand, in the bot's namespace) is not accepted."""
    import dataclasses

    config = dataclasses.replace(world["config"], name_template="squat-{ct}")
    world["bot"].create_repo("mergebot/squat-tq-ct")
    world["bot"].commit_files(
        "mergebot/squat-tq-ct", message="mine", add={"README.md": b"---\nlicense: mit\n---\n# x\n"}
    )
    sha = push_checkpoint(world["alice"], tiny_family.ct, "alice/tq-ct", ct_meta("bn", "alice/tn-base"))
    assert _deliver(world, "alice/tq-ct", sha).status_code == 202
    _run(world, config)
    job = world["queue"].by_key(trigger_key("alice/tq-ct", sha))
    assert job.state == "failed" and "records no Mergeling merge provenance" in job.error
    assert _head(world, "mergebot/squat-tq-ct")[1] == "mine"


def test_a_private_ct_gives_a_private_merge_and_no_public_trace(world, hub, tiny_family) -> None:
    from huggingface_hub import HfApi

    alice = world["alice"]
    alice.create_repo("lab/tp-secret-ct", private=True)
    push_checkpoint(alice, tiny_family.ct, "lab/tp-secret-ct", ct_meta("bn", "alice/tn-base"))
    answer = _submit(world, "lab/tp-secret-ct", hub.token)  # alice, a member of lab; not in --watch
    assert answer.status_code == 202, answer.text
    _run(world)
    [job] = _jobs_of(world, "lab/tp-secret-ct")
    assert job.state == "published", job.error
    assert job.output_repo == "lab/lab__tp-secret-ct-tn-sft-ties-sv"

    # private, readable by alice (the CT's org), absent for anyone else
    assert alice.repo_info(job.output_repo).private is True
    assert alice.read_file(job.output_repo, "README.md")
    anonymous = HfApi(endpoint=hub.url, token=False)
    assert not anonymous.repo_exists(job.output_repo)
    assert not hub.client(hub.bob_token, cache="bob-tp").repo_exists(job.output_repo)
    public_names = [m.id for m in anonymous.list_models()]
    assert not [name for name in public_names if "secret" in name]

    # no trace in the public catalog or the job API for anonymous callers and bob
    entries = CatalogStore(hub=world["bot"], repo_id=REGISTRY).list_entries()
    assert not [e for e in entries if "secret" in json.dumps(e.model_dump(mode="json"))]
    url = world["server"].url
    for headers in ({}, {"Authorization": f"Bearer {hub.bob_token}"}):
        listed = httpx.get(url + "/jobs", headers=headers, timeout=30)
        assert listed.status_code == 200 and "secret" not in listed.text
        assert "alice/tn-ct" in listed.text  # public jobs are still listed
        one = httpx.get(f"{url}/jobs/{job.id}", headers=headers, timeout=30)
        assert one.status_code == 404 and "secret" not in one.text
    mine = httpx.get(url + "/jobs", headers={"Authorization": f"Bearer {hub.token}"}, timeout=30)
    assert "lab/tp-secret-ct" in mine.text
    assert httpx.get(f"{url}/jobs/{job.id}", headers={"Authorization": f"Bearer {hub.token}"}).status_code == 200


def test_a_private_input_with_no_private_place_its_owner_reads_is_refused_with_the_reason(world, hub, tiny_family):
    """A public CT of alice (a user: the bot cannot write there) on a private base of org lab."""
    alice = world["alice"]
    alice.create_repo("lab/tp-base", private=True)
    push_checkpoint(alice, tiny_family.base, "lab/tp-base", {"license": "mit"})
    push_checkpoint(alice, tiny_family.sft, "alice/tp-sft", sft_meta("lab/tp-base"))
    CatalogStore(hub=world["bot"], repo_id=REGISTRY).add(
        build_sft_entry(world["bot"], repo="alice/tp-sft", revision=None, base="lab/tp-base")
    )
    push_checkpoint(alice, tiny_family.ct, "alice/tp-pub-ct", ct_meta("bn", "lab/tp-base"))
    answer = _submit(world, "alice/tp-pub-ct", hub.token)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error.startswith("lab/tp-base is private or gated, so its merge may only be published privately")
    assert "the bot (mergebot) cannot write to alice" in error and "organisation" in error
    assert not world["bot"].repo_exists("mergebot/alice__tp-pub-ct-tp-sft-ties-sv")
