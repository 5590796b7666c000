"""Hub inputs: a merge whose inputs are repo ids on a real embedded hub on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from registry.errors import HubRepoNotFoundError, HubRevisionNotFoundError, HubUnavailableError
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


def _upload(hub, family: DemoFamily, prefix: str):  # type: ignore[no-untyped-def]
    client = hub.client(cache=f"{prefix}-upload")
    for name in ("base", "ct", "sft"):
        client.create_repo(f"lab/{prefix}-{name}", exist_ok=True)
        client.upload_folder(getattr(family, name), f"lab/{prefix}-{name}")
    return client


def test_merge_from_hub_repo_ids(hub, tiny_family: DemoFamily, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = hub.client(cache="merge-cache")
    commits = {}
    for name in ("base", "ct", "sft"):
        folder = tmp_path / "upload" / name
        shutil.copytree(getattr(tiny_family, name), folder)
        (folder / "README.md").write_text(f"---\nlicense: {'llama2' if name == 'base' else 'apache-2.0'}\n---\n")
        (folder / "optimizer.pt").write_bytes(b"not wanted")  # outside the download patterns
        (folder / "pytorch_model.bin").write_bytes(b"a second weights format: not wanted")
        (folder / "original").mkdir()
        (folder / "original" / "consolidated.safetensors").write_bytes(b"not at the root: not wanted")
        client.create_repo(f"lab/tiny-{name}", exist_ok=True)
        commits[name] = client.upload_folder(folder, f"lab/tiny-{name}")
    recipe = parse_recipe(_recipe("lab/tiny-base", "lab/tiny-ct@main", f"lab/tiny-sft@{commits['sft']}"))

    before = plan_merge(recipe, offline=True, hub=client)
    assert not before.complete and "not in the local Hub cache" in before.skipped[0]

    plan = plan_merge(recipe, hub=client)
    assert plan.complete
    assert [s.commit for s in plan.sources] == [commits["base"], commits["ct"], commits["sft"]]
    for unwanted in ("optimizer.pt", "pytorch_model.bin", "original"):
        assert not (plan.sources[0].path / unwanted).exists(), unwanted  # type: ignore[operator]
    assert (plan.sources[0].path / "README.md").is_file()  # type: ignore[operator]
    again = plan_merge(recipe, offline=True, hub=client)
    assert again.complete, again.skipped  # now served from the cache

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


def test_dry_run_remote_checks_read_headers_only(hub, tiny_family: DemoFamily, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    import torch
    from safetensors.torch import load_file, save_file

    from registry.errors import CompatibilityError

    uploader = _upload(hub, tiny_family, "remote")
    client = hub.client(cache="remote-dry-run")  # an empty cache: nothing downloaded yet
    recipe = parse_recipe(_recipe("lab/remote-base", "lab/remote-ct", "lab/remote-sft"))
    plan = plan_merge(recipe, offline=True, remote_headers=True, hub=client)
    assert len(plan.tensors) == len(load_file(tiny_family.base / "model.safetensors"))
    assert all(s.commit and len(s.commit) == 40 for s in plan.sources)
    assert plan.skipped and "need the weights" in plan.skipped[0]
    cache = hub.home / "remote-dry-run"
    assert list(cache.rglob("config.json")) and not list(cache.rglob("*.safetensors"))  # headers only

    # A shape mismatch is found from the headers alone.
    broken = tmp_path / "broken"
    broken.mkdir()
    state = load_file(tiny_family.ct / "model.safetensors")
    state["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3)
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    (broken / "config.json").write_text(json.dumps(json.loads((tiny_family.ct / "config.json").read_text())))
    uploader.create_repo("lab/remote-broken", exist_ok=True)
    uploader.upload_folder(broken, "lab/remote-broken")
    bad = parse_recipe(_recipe("lab/remote-base", "lab/remote-broken", "lab/remote-sft"))
    with pytest.raises(CompatibilityError, match="up_proj"):
        plan_merge(bad, offline=True, remote_headers=True, hub=client)

    # A config.json that is not JSON is named, with the fix, instead of a JSON traceback.
    (broken / "config.json").write_text("{not json")
    uploader.create_repo("lab/remote-badconfig", exist_ok=True)
    uploader.upload_folder(broken, "lab/remote-badconfig")
    from registry.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"lab/remote-badconfig@\w+: config\.json is not valid JSON.*fix it"):
        plan_merge(
            parse_recipe(_recipe("lab/remote-base", "lab/remote-badconfig", "lab/remote-sft")),
            offline=True,
            remote_headers=True,
            hub=client,
        )


def test_cli_dry_run_remote_checks(
    hub,
    tiny_family: DemoFamily,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    import yaml
    from typer.testing import CliRunner

    from registry.cli import app

    _upload(hub, tiny_family, "cli")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe("lab/cli-base", "lab/cli-ct", "lab/cli-sft")))
    plain = CliRunner().invoke(app, ["-q", "merge", str(recipe), "--dry-run", "--no-remote-checks", "--json"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["tensors"] == 0  # nothing cached, nothing read
    for args in (["--remote-checks"], []):  # the Hub answers: remote checks are the default
        remote = CliRunner().invoke(app, ["-q", "merge", str(recipe), "--dry-run", *args, "--json"])
        assert remote.exit_code == 0, remote.output
        plan = json.loads(remote.stdout)
        assert plan["tensors"] > 10 and all(len(i["commit"]) == 40 for i in plan["inputs"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: no network, the checks are skipped and said so
    offline = CliRunner().invoke(app, ["-q", "merge", str(recipe), "--dry-run", "--json"])
    assert offline.exit_code == 0, offline.output
    assert json.loads(offline.stdout)["tensors"] == 0
    assert not (tmp_path / "out").exists()


def test_cached_hub_inputs_merge_offline(hub, tiny_family: DemoFamily, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from registry.hub import HubClient

    _upload(hub, tiny_family, "offline")
    client = hub.client(cache="offline-cache")
    recipe = parse_recipe(_recipe("lab/offline-base", "lab/offline-ct@main", "lab/offline-sft"))
    run_merge(plan_merge(recipe, hub=client), out=tmp_path / "online", device="cpu", progress=False)
    want = (tmp_path / "online" / "model.safetensors").read_bytes()

    # HF_HUB_OFFLINE=1: the cache only, as huggingface_hub does.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = plan_merge(recipe, hub=client)
    run_merge(plan, out=tmp_path / "offline", device="cpu", progress=False)
    assert (tmp_path / "offline" / "model.safetensors").read_bytes() == want
    missing = parse_recipe(_recipe("lab/offline-base", "lab/never-downloaded", "lab/offline-sft"))
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE is set and it is not in the local Hub cache"):
        plan_merge(missing, hub=client)
    monkeypatch.delenv("HF_HUB_OFFLINE")

    # A dead endpoint: the cached snapshots are used.
    # fail_fast, as the CLI builds it: one quick probe instead of huggingface_hub's retries.
    dead = HubClient(endpoint="http://127.0.0.1:9", token=hub.token, cache_dir=client.cache_dir, fail_fast=True)
    plan = plan_merge(recipe, hub=dead)
    assert [s.path for s in plan.sources] == [s.path for s in plan_merge(recipe, hub=client).sources]
