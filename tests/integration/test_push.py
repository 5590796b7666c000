"""`registry push`: a merged folder published in one commit, eval results in the card's model-index,
the merge recorded in the catalog; refusals leave nothing on the Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.testing import push_checkpoint, sft_meta
from registry.catalog.entries import MergeEntry
from registry.catalog.store import CatalogStore
from registry.cli import app
from registry.evaluate.records import EvalRecord, MetricValue, ModelIdentity, TaskResult
from registry.evaluate.sources import hash_model_files


@pytest.fixture(scope="module")
def merged(hub, tiny_family, tmp_path_factory) -> Path:
    """A ties_sv merge of alice's tiny CT and SFT, pulled from the hub (so its inputs are pinned)."""
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge
    from registry.recipe import parse_recipe

    client = hub.client()
    push_checkpoint(client, tiny_family.base, "alice/push-base", {"license": "mit"})
    push_checkpoint(client, tiny_family.ct, "alice/push-ct", {"license": "mit", "language": ["bn"]})
    push_checkpoint(client, tiny_family.sft, "alice/push-sft", sft_meta("alice/push-base"))
    recipe = parse_recipe(
        {
            "merge_method": "ties_sv", "base_model": "alice/push-base", "tokenizer_source": "ct",
            "models": [
                {"model": "alice/push-ct", "role": "ct", "language": "ben_Beng", "parameters": {"density": 0.5}},
                {"model": "alice/push-sft", "role": "sft", "parameters": {"density": 0.5}},
            ],
            "parameters": {"slack": 0.05},
        }
    )  # fmt: skip
    out = tmp_path_factory.mktemp("push") / "merged"
    run_merge(plan_merge(recipe, hub=client), out=out, device="cpu", progress=False)
    return out


def _record(path: Path, weights_hash: str) -> Path:
    metric = {"bits_per_byte": MetricValue(value=1.234, higher_is_better=False)}
    task = TaskResult(task="flores_ben_Beng", task_hash="0" * 64, num_fewshot=0, n_samples=20, n_total=1012,
                      limit=20, metrics=metric, duration_s=1.0)  # fmt: skip
    record = EvalRecord(
        model=ModelIdentity(reference="merged", local_path="merged", weights_hash=weights_hash), suite="ben_Beng.yaml",
        language="ben_Beng", data_source="local", lm_eval_version="x", device="cpu", limit=20, duration_s=1.0,
        created_at="2026-01-01T00:00:00Z", tasks=(task,),
    )  # fmt: skip
    record.save(path)
    return path


def test_push_publishes_one_commit_with_model_index_and_a_catalog_entry(hub, merged: Path, tmp_path: Path) -> None:
    results = _record(tmp_path / "merged.json", hash_model_files(merged))
    args = ["push", str(merged), "alice/push-merged", "--eval", str(results), "--registry", "alice/push-registry",
            "--endpoint", hub.url, "--token", hub.token, "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    client = hub.client()
    commits = hub.api().list_repo_commits("alice/push-merged")
    assert commits[0].commit_id == out["commit"] and [c.title for c in commits[1:]] == ["initial commit"]
    files = set(client.list_files("alice/push-merged"))
    assert {"model.safetensors", "config.json", "merge_report.json", "mergeling_recipe.yaml", "README.md"} <= files
    readme = client.read_file("alice/push-merged", "README.md").decode()
    assert "model-index:" in readme and "bits_per_byte" in readme and "1.234" in readme
    assert "--limit: 20 of 1012" in readme  # a limited number says so
    entry = CatalogStore(hub=client, repo_id="alice/push-registry").get(out["entry"])
    assert isinstance(entry, MergeEntry)
    assert (entry.status, entry.output_repo, entry.output_revision) == ("published", "alice/push-merged", out["commit"])
    assert {i.role for i in entry.inputs} == {"ct", "sft", "base"}
    assert [(r.task, r.metric, r.value) for r in entry.results] == [("flores_ben_Beng", "bits_per_byte", 1.234)]


def test_push_refuses_results_of_other_weights_unless_forced_and_then_says_so(
    hub, merged: Path, tmp_path: Path
) -> None:
    other = _record(tmp_path / "other.json", "1" * 64)  # another model's results
    args = [
        "push",
        str(merged),
        "alice/push-foreign",
        "--eval",
        str(other),
        "--endpoint",
        hub.url,
        "--token",
        hub.token,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "not of" in result.stderr and "--force" in result.stderr
    assert not hub.client().repo_exists("alice/push-foreign")  # nothing written
    result = CliRunner().invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    readme = hub.client().read_file("alice/push-foreign", "README.md").decode()
    assert "## Evaluation: unverified" in readme and "not measured on these weights" in readme


def test_push_of_a_folder_that_is_not_a_merge_is_refused_before_the_hub(hub, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text("{}")
    args = ["push", str(tmp_path / "x"), "alice/push-nothing", "--endpoint", hub.url, "--token", hub.token]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "is not a `registry merge` output" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not hub.client().repo_exists("alice/push-nothing")


def test_push_without_write_access_leaves_no_repo(hub, merged: Path) -> None:
    args = ["push", str(merged), "alice/push-denied", "--endpoint", hub.url, "--token", hub.bob_token]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "permission denied" in result.stderr or "token" in result.stderr
    assert not hub.client().repo_exists("alice/push-denied")


def test_merge_push_merges_then_publishes_in_one_commit(hub, merged: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "merge_method: ties_sv\nbase_model: alice/push-base\ntokenizer_source: ct\n"
        "models:\n"
        "  - {model: alice/push-ct, role: ct, language: ben_Beng, parameters: {density: 0.5}}\n"
        "  - {model: alice/push-sft, role: sft, parameters: {density: 0.5}}\n"
        "parameters: {slack: 0.05}\n"
    )
    out = tmp_path / "merged"
    args = ["merge", str(recipe), "--out", str(out), "--device", "cpu", "--push", "alice/merge-pushed",
            "--registry", "alice/push-registry", "--endpoint", hub.url, "--token", hub.token, "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    pushed = json.loads(result.stdout)["pushed"]
    commits = hub.api().list_repo_commits("alice/merge-pushed")
    assert commits[0].commit_id == pushed["commit"] and len(commits) == 2  # "initial commit" + the merge
    published = hub.client().read_file("alice/merge-pushed", "model.safetensors")
    assert published == (out / "model.safetensors").read_bytes()
    entry = next(
        e
        for e in CatalogStore(hub=hub.client(), repo_id="alice/push-registry").list_entries()
        if isinstance(e, MergeEntry) and e.output_repo == "alice/merge-pushed"
    )
    assert entry.output_revision == pushed["commit"]


def test_merge_push_with_dry_run_is_a_usage_error(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("merge_method: linear\nmodels: [{model: a}, {model: b}]\n")
    result = CliRunner().invoke(app, ["merge", str(recipe), "--dry-run", "--push", "alice/x"])
    assert result.exit_code == 2 and "--push" in result.stderr
