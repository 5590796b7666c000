"""Every merge recipe in recipes/ parses and dry-run plans; Hub inputs are validated offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from registry.cli import app
from registry.lab.tiny import DemoFamily
from registry.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
# recipes/*.yaml that are not merge recipes (owned elsewhere): the catalog's seed list.
NOT_MERGE_RECIPES = {"registry-seed.yaml"}
MERGE_RECIPES = sorted(p for p in RECIPES.glob("*.yaml") if p.name not in NOT_MERGE_RECIPES)
LANGS = ("ben_Beng", "tam_Taml", "tel_Telu", "ory_Orya", "bod_Tibt", "uig_Arab", "mon_Mong")
METHODS = ("linear", "ties", "ties-sv")


def test_the_shipped_recipes_are_all_there() -> None:
    names = {p.name for p in MERGE_RECIPES}
    assert {f"{lang}-{method}.yaml" for lang in LANGS for method in METHODS} <= names
    assert {f"multi-mon_Mong-uig_Arab-{method}.yaml" for method in METHODS} <= names
    assert "demo-tiny.yaml" in names
    assert not any("khk_Cyrl" in name for name in names)  # the paper's Mongolian is Traditional script


@pytest.mark.parametrize("path", [p for p in MERGE_RECIPES if p.name != "demo-tiny.yaml"], ids=lambda p: p.name)
def test_hub_recipe_dry_run_offline(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty cache and an unroutable endpoint: the dry run must not need the network.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe(path)
    assert recipe.base_model == "meta-llama/Llama-2-7b-hf"
    sft = [m for m in recipe.models if m.role == "sft"]
    assert [m.model for m in sft] == ["pkupie/Llama-2-7b-FLAN-step884"]
    for entry in recipe.models:
        if entry.role == "ct":
            assert entry.model.startswith("pkupie/Llama-2-7b-") and entry.language in LANGS
    suite = recipe.mergeling.eval_suite
    assert suite is not None and suite.startswith("recipes/eval/") and suite.removeprefix("recipes/eval/")[:8] in LANGS
    assert (RECIPES.parent / suite).is_file(), f"{path.name}: eval suite {suite} does not exist"
    assert recipe.mergeling.output_repo
    result = CliRunner().invoke(app, ["-q", "merge", str(path), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["complete"] is False
    assert "not in the local Hub cache" in plan["skipped"][0]
    assert {i["ref"] for i in plan["inputs"]} >= {"meta-llama/Llama-2-7b-hf", "pkupie/Llama-2-7b-FLAN-step884"}
    assert "Skipped:" in result.stderr


def test_demo_recipe_dry_run_on_built_models(
    tiny_family: DemoFamily, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo recipe names .mergeling/demo/lab/{base,ct-ben_Beng,sft} relative to the current directory.
    models = tmp_path / ".mergeling" / "demo" / "lab"
    for name, folder in (("base", "base"), ("ct", "ct-ben_Beng"), ("sft", "sft")):
        shutil.copytree(getattr(tiny_family, name), models / folder)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["-q", "merge", str(RECIPES / "demo-tiny.yaml"), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["complete"] is True and plan["skipped"] == []
    assert plan["tensors"] > 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mergeling"]  # a dry run writes nothing
    text = CliRunner().invoke(app, ["-q", "merge", str(RECIPES / "demo-tiny.yaml"), "--dry-run"])
    assert "slack 0.05" in text.stdout and "every check passed" in text.stderr
    suite = load_recipe(RECIPES / "demo-tiny.yaml").mergeling.eval_suite
    assert suite is not None and (RECIPES.parent / suite).is_file()


def test_demo_recipe_is_plain_yaml_with_comments() -> None:
    text = (RECIPES / "demo-tiny.yaml").read_text()
    assert text.lstrip().startswith("#")
    assert yaml.safe_load(text)["merge_method"] == "ties_sv"


@pytest.mark.parametrize("path", [p for p in MERGE_RECIPES if p.name != "demo-tiny.yaml"], ids=lambda p: p.name)
def test_hub_recipe_matches_the_seed_metadata(path: Path) -> None:
    """Each paper recipe names the seed file's checkpoints with the seed file's languages."""
    from registry.catalog.seed import load_seed

    seed = load_seed(RECIPES / "registry-seed.yaml")
    cts = {c.repo: c.language for c in seed.checkpoints if c.kind == "ct"}
    sfts = {c.repo for c in seed.checkpoints if c.kind == "sft"}
    recipe = load_recipe(path)
    assert recipe.base_model == seed.base
    for entry in recipe.models:
        if entry.role == "ct":
            assert cts.get(entry.model) == entry.language, f"{path.name}: {entry.model} is {cts.get(entry.model)}"
        else:
            assert entry.model in sfts
    assert recipe.merge_method.replace("_", "-") in path.stem
    assert set(recipe.languages()) <= set(cts.values())


def test_every_seed_language_has_every_method() -> None:
    from registry.catalog.seed import load_seed

    seed = load_seed(RECIPES / "registry-seed.yaml")
    for lang in {c.language for c in seed.checkpoints if c.kind == "ct"}:
        for method in METHODS:
            assert (RECIPES / f"{lang}-{method}.yaml").is_file(), f"{lang}-{method}.yaml"
