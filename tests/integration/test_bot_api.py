"""The bot's HTTP API for the Space, through the real server on the embedded hub.

- `POST /jobs` with a recipe (parts, or a full recipe text): validated by the engine's `Recipe`,
  400 with one line when it does not validate (nothing queued), merged into its own output repo so
  it never moves the default recipe's merge; the job, its card and its catalog entry say so.
- Every job records `submitted_by`; `GET /jobs?mine=true` lists the token's user's jobs only.
- The job JSON carries links (output repo, discussion, the job itself).
- The CT's and SFT's evaluation numbers land in their catalog entries, as the merge's do.
"""

from __future__ import annotations

import httpx
import pytest
import yaml

from bot.config import BotConfig
from bot.receiver import RateLimiter
from bot.worker import Worker
from registry.catalog.entries import CtEntry, MergeEntry, SftEntry
from registry.catalog.store import CatalogStore
from registry.catalog.verify import build_sft_entry
from tests._fixtures.botkit import BotServer, ct_meta, eval_fixture, push_checkpoint, sft_meta

SECRET = "api-secret"
REGISTRY = "mergebot/api-registry"


@pytest.fixture(scope="module")
def world(hub, tiny_family, tmp_path_factory):
    root = tmp_path_factory.mktemp("bot-api")
    bot_token = hub.make_token("mergebot", write=True)
    alice, bob = hub.client(), hub.client(hub.bob_token, cache="bob-api")
    mergebot = hub.client(bot_token, cache="bot-api")
    push_checkpoint(alice, tiny_family.base, "alice/ap-base", {"license": "mit"})
    push_checkpoint(alice, tiny_family.sft, "alice/ap-sft", sft_meta("alice/ap-base"))
    CatalogStore(hub=mergebot, repo_id=REGISTRY).add(
        build_sft_entry(mergebot, repo="alice/ap-sft", revision=None, base="alice/ap-base")
    )
    ct_sha = push_checkpoint(alice, tiny_family.ct, "alice/ap-ct", ct_meta("bn", "alice/ap-base"))
    push_checkpoint(bob, tiny_family.ct, "bob/ap-ct", ct_meta("bn", "alice/ap-base"))
    suites, data = eval_fixture(root / "eval")
    config = BotConfig(data=root / "bot", registry=REGISTRY, namespace="mergebot", watch=("alice", "bob"),
                       endpoint=hub.url, token=bot_token, suites_dir=suites, data_dir=data, eval_limit=2,
                       max_attempts=1)  # fmt: skip
    queue = config.open_queue()
    limiter = RateLimiter(limit=1000)  # this module sends more than the 10 a minute a user gets
    server = BotServer(config, queue, secret=SECRET, hub=mergebot, rate_limit=limiter).start()
    yield {"alice": alice, "bob": bob, "bot": mergebot, "config": config, "queue": queue, "server": server,
           "ct_sha": ct_sha}  # fmt: skip
    server.stop()


def _post(world, body: dict, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(world["server"].url + "/jobs", json=body, headers=headers, timeout=60)


def _run(world) -> None:
    Worker(world["config"], world["queue"], hub=world["bot"]).run_until_idle()


CUSTOM = {"method": "ties_sv", "density": 0.3, "slack": 0.1, "weights": {"ct": 1.0, "sft": 0.8}}


def test_a_custom_recipe_is_merged_into_its_own_repo_and_recorded_as_custom(world, hub) -> None:
    default = _post(world, {"ct_repo": "alice/ap-ct"}, hub.token)
    assert default.status_code == 202, default.text
    custom = _post(world, {"ct_repo": "alice/ap-ct", "recipe": CUSTOM}, hub.token)
    assert custom.status_code == 202, custom.text
    [shown] = custom.json()["jobs"]
    assert shown["id"] != default.json()["jobs"][0]["id"]  # its own trigger, not the default's
    assert shown["submitted_by"] == "alice" and shown["recipe"]["custom"] is True
    assert shown["links"]["job"] == f"{world['server'].url}/jobs/{shown['id']}"
    _run(world)

    jobs = {j.id: j for j in world["queue"].list() if j.ct_repo == "alice/ap-ct"}
    plain, mine = jobs[default.json()["jobs"][0]["id"]], jobs[shown["id"]]
    assert plain.state == "published" and mine.state == "published", (plain.error, mine.error)
    assert plain.output_repo == "mergebot/alice__ap-ct-ap-sft-ties-sv"
    assert (
        mine.output_repo.startswith("mergebot/alice__ap-ct-ap-sft-ties-sv-") and mine.output_repo != plain.output_repo
    )
    assert mine.spec.recipe_source.startswith("custom recipe ") and mine.spec.recipe_hash != plain.spec.recipe_hash

    # the merge used the sent parameters; the default's repo has one commit, the default recipe's
    recipe = yaml.safe_load(world["bot"].read_file(mine.output_repo, "mergeling_recipe.yaml"))
    assert recipe["parameters"]["slack"] == 0.1
    assert [m["parameters"] for m in recipe["models"]] == [{"weight": 1.0, "density": 0.3},
                                                          {"weight": 0.8, "density": 0.3}]  # fmt: skip
    default_recipe = yaml.safe_load(world["bot"].read_file(plain.output_repo, "mergeling_recipe.yaml"))
    assert default_recipe["parameters"]["slack"] == 0.05
    assert len(world["bot"].api.list_repo_commits(plain.output_repo)) == 2  # "initial commit" + the merge
    card = world["bot"].read_file(mine.output_repo, "README.md").decode()
    assert "- recipe: `custom recipe " in card and "- requested by `alice`" in card

    # the catalog: two merge entries (one per recipe), the custom one with its own recipe hash
    merges = [e for e in CatalogStore(hub=world["bot"], repo_id=REGISTRY).list_entries() if isinstance(e, MergeEntry)]
    by_repo = {e.output_repo: e for e in merges}
    assert by_repo[mine.output_repo].recipe_hash == mine.spec.recipe_hash
    assert by_repo[plain.output_repo].recipe_hash == plain.spec.recipe_hash

    # the job JSON links the output repo, the discussion and the job
    got = httpx.get(f"{world['server'].url}/jobs/{mine.id}", timeout=30).json()
    assert got["links"]["output"] == f"{hub.url}/{mine.output_repo}"
    assert got["links"]["discussion"] and got["links"]["discussion"] == got["discussion"]
    assert got["recipe"] == {"source": mine.spec.recipe_source, "hash": mine.spec.recipe_hash, "custom": True}


def test_a_full_recipe_text_is_placed_on_the_jobs_inputs(world, hub) -> None:
    text = yaml.safe_dump({
        "merge_method": "ties", "base_model": "my/base",
        "models": [{"model": "my/ct", "role": "ct", "parameters": {"density": 0.5, "weight": 1.0}},
                   {"model": "my/sft", "role": "sft", "parameters": {"density": 0.5, "weight": 0.5}}],
    })  # fmt: skip
    answer = _post(world, {"ct_repo": "alice/ap-ct", "recipe": text}, hub.token)
    assert answer.status_code == 202, answer.text
    _run(world)
    job = world["queue"].get(answer.json()["jobs"][0]["id"])
    assert job.state == "published", job.error
    assert "-ties-" in job.output_repo
    models = [m["model"] for m in job.spec.recipe["models"]]
    assert models == [f"alice/ap-ct@{world['ct_sha']}", f"alice/ap-sft@{job.sft_sha}"]
    assert job.spec.recipe["base_model"].startswith("alice/ap-base")


EXTRA_MODEL = (
    "merge_method: ties\nbase_model: my/base\nmodels:\n"
    "  - {model: my/ct, role: ct, parameters: {weight: 1, density: 0.5}}\n"
    "  - {model: my/sft, role: sft, parameters: {weight: 1, density: 0.5}}\n"
    "  - {model: victim/private-model, parameters: {weight: 1}}\n"
)
BAD = [
    ({"method": "frobnicate"}, "merge_method 'frobnicate' is unknown"),
    ({"method": "ties", "slack": 0.1}, "slack is a ties_sv"),
    ({"method": "ties_sv", "density": 7}, "density is the kept fraction"),
    ({"method": "ties_sv", "density": "lots"}, "recipe.density:"),
    ({"method": "ties_sv", "colour": "red"}, "recipe.colour:"),
    ({"text": "merge_method: ties", "method": "ties"}, "either `text`"),
    ("a: &x [1, 2]\nb: [*x, *x, *x]\n", "anchors and aliases"),
    ("[" * 200 + "]" * 200, "nested deeper than"),
    ("merge_method: ties\nbase_model: b\nmodels: [{model: a, role: ct}]\n", "one `role: sft`"),
    ("x" * (64 * 1024 + 1), "recipe.text:"),
    # a recipe may read nothing but the job's inputs (the bot's token must not fetch others' models)
    (EXTRA_MODEL, "it also names victim/private-model"),
    (
        EXTRA_MODEL.replace("  - {model: victim/private-model, parameters: {weight: 1}}\n", "")
        + "tokenizer_source: victim/private-model\n",
        "tokenizer_source must be",
    ),
    (
        EXTRA_MODEL.replace("  - {model: victim/private-model, parameters: {weight: 1}}\n", "")
        + "tokenizer: {source: base, tokens: {x: {source: victim/private-model}}}\n",
        "it also names victim/private-model",
    ),
    ([1, 2], "recipe: send an object"),
]


@pytest.mark.parametrize(("recipe", "said"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_an_invalid_recipe_is_400_with_one_line_and_queues_nothing(world, hub, recipe, said) -> None:
    before = len(world["queue"].list())
    answer = _post(world, {"ct_repo": "alice/ap-ct", "recipe": recipe}, hub.token)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert said in error and "\n" not in error and len(error) < 600
    assert len(world["queue"].list()) == before


def test_an_alias_bomb_is_refused_before_it_expands(world, hub) -> None:
    """Nine levels of nine aliases: ~4e8 leaves if the recipe were ever copied."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    answer = _post(world, {"ct_repo": "alice/ap-ct", "recipe": "\n".join(lines)}, hub.token)
    assert answer.status_code == 400 and "anchors and aliases" in answer.json()["error"]


def test_mine_lists_the_token_users_jobs_only(world, hub) -> None:
    assert _post(world, {"ct_repo": "bob/ap-ct"}, hub.bob_token).status_code == 202
    url = world["server"].url + "/jobs"
    alice = httpx.get(url, params={"mine": "true"}, headers={"Authorization": f"Bearer {hub.token}"}, timeout=30)
    bob = httpx.get(url, params={"mine": "true"}, headers={"Authorization": f"Bearer {hub.bob_token}"}, timeout=30)
    assert alice.status_code == 200 and bob.status_code == 200
    assert alice.json() and {j["submitted_by"] for j in alice.json()} == {"alice"}
    assert {j["ct_repo"] for j in alice.json()} == {"alice/ap-ct"}
    assert [j["ct_repo"] for j in bob.json()] == ["bob/ap-ct"] and bob.json()[0]["submitted_by"] == "bob"
    everyone = httpx.get(url, timeout=30).json()
    assert {"alice", "bob"} <= {j["submitted_by"] for j in everyone}
    anonymous = httpx.get(url, params={"mine": "true"}, timeout=30)
    assert anonymous.status_code == 401 and "Authorization: Bearer" in anonymous.json()["error"]
    stranger = httpx.get(url, params={"mine": "true"}, headers={"Authorization": "Bearer hf_nobody"}, timeout=30)
    assert stranger.status_code == 401


def test_a_webhook_job_is_submitted_by_the_ct_owner(world) -> None:
    sha = world["bot"].head_sha("bob/ap-ct")
    body = {
        "event": {"action": "update", "scope": "repo.content"},
        "repo": {"type": "model", "name": "bob/ap-ct", "id": "1", "private": False, "headSha": sha,
                 "url": {"web": "w", "api": "a"}, "owner": {"id": "1"}},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": None, "newSha": sha}],
        "webhook": {"id": "hook", "version": 3},
    }  # fmt: skip
    answer = httpx.post(world["server"].url + "/webhooks/hub", json=body, headers={"X-Webhook-Secret": SECRET})
    assert answer.status_code == 202
    assert world["queue"].get(answer.json()["jobs"][0]).submitted_by == "bob"


def test_ct_and_sft_results_are_recorded_in_their_catalog_entries(world) -> None:
    """After the first test's jobs: the numbers the bot computed for the CT and the SFT, as the merge's."""
    entries = CatalogStore(hub=world["bot"], repo_id=REGISTRY).list_entries()
    ct = next(e for e in entries if isinstance(e, CtEntry) and e.repo == "alice/ap-ct")
    sft = next(e for e in entries if isinstance(e, SftEntry) and e.repo == "alice/ap-sft")
    merge = next(
        e for e in entries if isinstance(e, MergeEntry) and e.output_repo.endswith("alice__ap-ct-ap-sft-ties-sv")
    )
    for entry in (ct, sft, merge):
        assert any(r.task == "flores_ben_Beng" and r.metric == "bits_per_byte" for r in entry.results), entry.id
    assert [type(r) for r in ct.results] == [type(merge.results[0])] * len(ct.results)
    assert {r.value for r in ct.results} != {r.value for r in merge.results}  # the CT's own numbers
    keys = [(r.task, r.metric, r.language) for r in sft.results]
    assert len(keys) == len(set(keys))  # three jobs evaluated this SFT: one number per metric, the newest


def test_a_bot_merge_and_registry_push_of_it_get_their_cards_from_one_renderer(world, hub, tmp_path) -> None:
    """The bot's published README is exactly `render_merge_card` of the job's data; `registry push` of the
    same merge renders through it too: the same sections, less the two only the bot has data for."""
    from typer.testing import CliRunner

    from bot.pipeline import card_data
    from registry.card import MergeCardContext, render_merge_card
    from registry.cli import app

    job = next(j for j in world["queue"].list() if j.output_repo == "mergebot/alice__ap-ct-ap-sft-ties-sv")
    folder = world["alice"].snapshot(job.output_repo, revision=job.data.commit, local_dir=tmp_path / "merged")
    published = (folder / "README.md").read_text()
    data = card_data(job, hub_endpoint=hub.url)
    bot_card = MergeCardContext(folder=folder, repo_id=job.output_repo, records=data.records, tables=data.tables,
                                provenance=data.provenance, sweep=data.sweep, marker=job.id)  # fmt: skip
    assert render_merge_card(bot_card) == published

    record = tmp_path / "merge.json"
    record.write_text(job.data.eval_records["merge"])
    args = ["push", str(folder), "alice/ap-pushed", "--eval", str(record), "--endpoint", hub.url, "--token",
            hub.token, "--force"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    pushed = world["alice"].read_file("alice/ap-pushed", "README.md").decode()
    push_card = MergeCardContext(folder=folder, repo_id="alice/ap-pushed", records=data.records,
                                 unverified=tuple(_unverified_lines(pushed)))  # fmt: skip
    assert render_merge_card(push_card) == pushed
    bot_sections, push_sections = bot_card.section_titles(), push_card.section_titles()
    shared = [title for title in push_sections if title != "Evaluation: unverified"]
    assert [title for title in bot_sections if title in shared] == shared  # same sections, same order
    assert set(bot_sections) - set(push_sections) == {"Evaluation: comparison", "Provenance"}
    assert {"Inputs", "Recipe", "Merge diagnostics", "Evaluation", "Usage", "Citation"} <= set(shared)


def _unverified_lines(readme: str) -> list[str]:
    """The reasons `registry push --force` gave (the bot's staging folder was evaluated, not this copy)."""
    if "## Evaluation: unverified" not in readme:
        return []
    block = readme.split("## Evaluation: unverified", 1)[1].split("\n## ", 1)[0].split("\n\n<!--", 1)[0]
    return [line[2:] for line in block.splitlines() if line.startswith("- ")]
