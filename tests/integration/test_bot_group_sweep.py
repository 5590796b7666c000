"""Group merges (re-merged when any member CT gets a new revision, with the latest of the others) and a
2x2 sweep (each point on a branch `sweep/<point>`, the best promoted to main, the table in the card)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from bot.config import BotConfig
from bot.evaluation import load_records, metric_value
from bot.queue import trigger_key
from bot.worker import Worker
from registry.catalog.store import CatalogStore
from registry.catalog.verify import build_sft_entry
from tests._fixtures.botkit import ct_meta, eval_fixture, push_checkpoint, sft_meta

REPO_ROOT = Path(__file__).resolve().parents[2]


def _world(hub, tiny_family, root: Path, tag: str, recipes: dict[str, dict]) -> tuple[BotConfig, object, object]:
    alice, bob = hub.client(), hub.client(hub.bob_token, cache=f"bob-{tag}")
    push_checkpoint(alice, tiny_family.base, f"alice/{tag}-base", {"license": "mit"})
    push_checkpoint(alice, tiny_family.sft, f"alice/{tag}-sft", sft_meta(f"alice/{tag}-base"))
    CatalogStore(hub=bob, repo_id=f"bob/{tag}-registry").add(
        build_sft_entry(bob, repo=f"alice/{tag}-sft", revision=None, base=f"alice/{tag}-base")
    )
    recipes_dir = root / "recipes"
    recipes_dir.mkdir()
    for name, raw in recipes.items():
        (recipes_dir / name).write_text(yaml.safe_dump(raw))
    suites, data = eval_fixture(root / "eval")
    config = BotConfig(data=root / "bot", registry=f"bob/{tag}-registry", namespace="bob", endpoint=hub.url,
                       token=hub.bob_token, suites_dir=suites, data_dir=data, eval_limit=2,
                       recipes_dir=recipes_dir)  # fmt: skip
    return config, alice, bob


def _push(config: BotConfig, alice, folder: Path, repo: str, language: str, base: str) -> str:
    sha = push_checkpoint(alice, folder, repo, ct_meta(language, base))
    config.open_queue().enqueue(key=trigger_key(repo, sha), kind="pair", ct_repo=repo, ct_sha=sha)
    return sha


def test_group_recipe_is_remerged_on_a_new_revision_of_any_member(hub, tiny_family, tmp_path: Path) -> None:
    group = yaml.safe_load((REPO_ROOT / "recipes" / "multi-mon_Mong-uig_Arab-ties-sv.yaml").read_text())
    group["models"][0]["language"], group["models"][1]["language"] = "ben_Beng", "tam_Taml"
    config, alice, bob = _world(hub, tiny_family, tmp_path, "grp", {"multi-ben-tam.yaml": group})
    eval_fixture(tmp_path / "eval", "tam_Taml")  # both member languages have a suite
    tam = tmp_path / "tam"
    shutil.copytree(tiny_family.ct, tam)
    tam1 = _push(config, alice, tam, "alice/grp-ct-tam", "ta", "alice/grp-base")
    worker = Worker(config, hub=bob)
    first = worker.run_until_idle()
    assert [j.kind for j in first] == ["pair"]  # no Bengali CT yet: no group merge
    ben = _push(config, alice, tiny_family.ct, "alice/grp-ct-ben", "bn", "alice/grp-base")
    second = worker.run_until_idle()
    assert sorted(j.kind for j in second) == ["group", "pair"] and all(j.state == "published" for j in second)
    group_job = next(j for j in second if j.kind == "group")
    assert [(m.repo, m.sha) for m in group_job.spec.members] == [
        ("alice/grp-ct-ben", ben), ("alice/grp-ct-tam", tam1)
    ]  # fmt: skip
    assert group_job.output_repo == "bob/alice__grp-ct-ben-grp-ct-tam-grp-sft-ties-sv"
    (tam / "extra.txt").write_text("a new revision")
    tam2 = _push(config, alice, tam, "alice/grp-ct-tam", "ta", "alice/grp-base")
    third = worker.run_until_idle()
    regroup = next(j for j in third if j.kind == "group")
    assert regroup.state == "published", regroup.error
    assert [(m.repo, m.sha) for m in regroup.spec.members] == [
        ("alice/grp-ct-ben", ben), ("alice/grp-ct-tam", tam2)
    ]  # fmt: skip
    commits = hub.api(hub.bob_token).list_repo_commits(group_job.output_repo)
    assert [c.commit_id for c in commits[:2]] == [regroup.data.commit, group_job.data.commit]
    readme = bob.read_file(group_job.output_repo, "README.md").decode()
    assert tam2 in readme and ben in readme and "ta" in readme

    # evaluated on every member language: one table per language in the card, the comment and the catalog
    assert set(regroup.data.eval_by_language) == {"ben_Beng", "tam_Taml"}
    for language in ("ben_Beng", "tam_Taml"):
        section = readme.split(f"## Evaluation: {language}", 1)[1].split("\n## ", 1)[0]
        assert f"flores_{language}" in section and "| metric | CT" in section and "merged" in section
        assert f"flores_{language}" in readme.split("model-index:", 1)[1].split("---", 1)[0]
    api = hub.api()
    discussion = next(d for d in api.get_repo_discussions("alice/grp-ct-tam") if d.author == "bob")
    events = api.get_discussion_details("alice/grp-ct-tam", discussion.num).events
    comment = [e.content for e in events if getattr(e, "type", "") == "comment" and regroup.id in e.content][-1]
    assert "#### ben_Beng" in comment and "#### tam_Taml" in comment and "flores_tam_Taml" in comment
    merge = next(e for e in CatalogStore(hub=bob, repo_id=config.registry).list_entries()
                 if getattr(e, "output_repo", None) == regroup.output_repo)  # fmt: skip
    assert {r.language for r in merge.results} == {"ben_Beng", "tam_Taml"}


def test_a_2x2_sweep_pushes_each_point_to_a_branch_and_promotes_the_best(hub, tiny_family, tmp_path: Path) -> None:
    recipe = {
        "merge_method": "ties_sv", "tokenizer_source": "ct",
        "models": [{"model": "ct", "role": "ct", "parameters": {"density": 0.5}},
                   {"model": "sft", "role": "sft", "parameters": {"density": 0.5}}],
        "parameters": {"slack": 0.05},
        "mergeling": {"sweep": {"density": [0.3, 0.7], "slack": [0.0, 0.2],
                                "metric": "flores_ben_Beng/bits_per_byte", "higher_is_better": False}},
    }  # fmt: skip
    config, alice, bob = _world(hub, tiny_family, tmp_path, "swp", {"ben_Beng.yaml": recipe})
    _push(config, alice, tiny_family.ct, "alice/swp-ct", "bn", "alice/swp-base")
    (job,) = Worker(config, hub=bob).run_until_idle()
    assert job.kind == "sweep" and job.state == "published", job.error
    points = sorted(job.data.points)
    assert points == ["density0.3-slack0", "density0.3-slack0.2", "density0.7-slack0", "density0.7-slack0.2"]
    refs = hub.api(hub.bob_token).list_repo_refs(job.output_repo)
    assert sorted(b.name for b in refs.branches) == ["main", *(f"sweep/{p}" for p in points)]
    best = job.data.best_point
    main_recipe = yaml.safe_load(bob.read_file(job.output_repo, "mergeling_recipe.yaml"))
    density, slack = best.removeprefix("density").split("-slack")
    assert main_recipe["parameters"].get("slack", 0) == float(slack)
    assert {m["parameters"]["density"] for m in main_recipe["models"]} == {float(density)}
    readme = bob.read_file(job.output_repo, "README.md").decode()
    assert "## Sweep" in readme and "**best**" in readme and all(p in readme for p in points)
    assert "on the dev split" in readme and "model-index:" in readme
    dev = load_records(job.data.sweep_dev)
    assert sorted(dev) == [f"point-{p}" for p in points]
    values = {p: metric_value(dev[f"point-{p}"], "flores_ben_Beng/bits_per_byte") for p in points}
    assert best == min(values, key=lambda p: values[p])  # lower bits per byte is better
    test = load_records(job.data.eval_records)
    assert sorted(test) == ["ct", "merge", "sft"]
    assert test["merge"].tasks[0].task_hash != dev[f"point-{best}"].tasks[0].task_hash  # another split
    for point in points:
        point_recipe = yaml.safe_load(
            bob.read_file(job.output_repo, "mergeling_recipe.yaml", revision=f"sweep/{point}")
        )
        assert point_recipe["models"][0]["parameters"]["density"] == float(point.removeprefix("density").split("-")[0])


def test_a_language_recipe_stored_in_the_catalog_is_used_when_recipes_has_none(hub, tiny_family, tmp_path) -> None:
    config, alice, bob = _world(hub, tiny_family, tmp_path, "catrec", {})  # an empty recipes/ folder
    recipe = {
        "merge_method": "ties", "dtype": "float32", "tokenizer_source": "ct",
        "models": [{"model": "ct", "role": "ct", "parameters": {"weight": 1.0, "density": 0.5}},
                   {"model": "sft", "role": "sft", "parameters": {"weight": 1.0, "density": 0.5}}],
        "parameters": {"normalize": True},
    }  # fmt: skip
    bob.commit_files(config.registry, repo_type="dataset", message="recipe",
                     add={"recipes/ben_Beng.yaml": yaml.safe_dump(recipe).encode()})  # fmt: skip
    _push(config, alice, tiny_family.ct, "alice/catrec-ct", "bn", "alice/catrec-base")
    [job] = Worker(config, hub=bob).run_until_idle()
    assert job.state == "published", job.error
    assert job.spec.recipe_source == "catalog:recipes/ben_Beng.yaml"
    assert job.output_repo == "bob/alice__catrec-ct-catrec-sft-ties"
    published = yaml.safe_load(bob.read_file(job.output_repo, "mergeling_recipe.yaml"))
    assert published["merge_method"] == "ties"
    assert [m["parameters"]["density"] for m in published["models"]] == [0.5, 0.5]
