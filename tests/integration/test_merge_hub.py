"""Hub inputs: a merge whose inputs are repo ids on a real embedded hub on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from registry.errors import HubRepoNotFoundError, HubRevisionNotFoundError
from registry.lab.tiny import DemoFamily
from registry.merge.engine import run_merge
from registry.merge.plan import plan_merge
from registry.recipe import parse_recipe


def _recipe(base: str, ct: str, sft: str) -> dict:
    return {
        "merge_method": "ties_sv",
        "base_model": base,
        "models": [
            {"model": ct, "role": "ct", "language": "tam_Taml", "parameters": {"weight": 1.0, "density": 0.3}},
            {"model": sft, "role": "sft", "parameters": {"weight": 1.0, "density": 0.3}},
        ],
        "parameters": {"slack": 0.1},
    }


def test_merge_from_hub_repo_ids(hub, tiny_family: DemoFamily, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = hub.client(cache="merge-cache")
    commits = {}
    for name in ("base", "ct", "sft"):
        folder = tmp_path / "upload" / name
        shutil.copytree(getattr(tiny_family, name), folder)
        (folder / "README.md").write_text(f"---\nlicense: {'llama2' if name == 'base' else 'apache-2.0'}\n---\n")
        (folder / "optimizer.pt").write_bytes(b"not wanted")  # outside the download patterns
        client.create_repo(f"lab/tiny-{name}", exist_ok=True)
        commits[name] = client.upload_folder(folder, f"lab/tiny-{name}")
    recipe = parse_recipe(_recipe("lab/tiny-base", "lab/tiny-ct@main", f"lab/tiny-sft@{commits['sft']}"))

    before = plan_merge(recipe, offline=True, hub=client)
    assert not before.complete and "not in the local Hub cache" in before.skipped[0]

    plan = plan_merge(recipe, hub=client)
    assert plan.complete
    assert [s.commit for s in plan.sources] == [commits["base"], commits["ct"], commits["sft"]]
    assert not (plan.sources[0].path / "optimizer.pt").exists()  # type: ignore[operator]
    assert plan_merge(recipe, offline=True, hub=client).complete  # now served from the cache

    out = tmp_path / "hub-merge"
    run_merge(plan, out=out, device="cpu", progress=False)
    local = parse_recipe(_recipe(str(tiny_family.base), str(tiny_family.ct), str(tiny_family.sft)))
    run_merge(plan_merge(local), out=tmp_path / "local-merge", device="cpu", progress=False)
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "local-merge" / "model.safetensors").read_bytes()

    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == ["lab/tiny-base", "lab/tiny-ct", "lab/tiny-sft"]
    assert card.data.license == "llama2"
    assert card.data.language == ["ta", "en"]
    for commit in commits.values():
        assert commit in card.text


def test_hub_errors_are_clear(hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = hub.client(cache="errors-cache")
    client.create_repo("lab/tiny-empty", exist_ok=True)
    with pytest.raises(HubRepoNotFoundError, match="lab/nope"):
        plan_merge(parse_recipe(_recipe("lab/nope", "lab/nope-ct", "lab/nope-sft")), hub=client)
    with pytest.raises(HubRevisionNotFoundError, match="no-such-branch"):
        plan_merge(parse_recipe(_recipe("lab/tiny-empty@no-such-branch", "lab/a", "lab/b")), hub=client)
