"""Evaluation with the model and the data served by the embedded hub: pinned shas, and the same
task hashes and numbers as with local data."""

from __future__ import annotations

import shutil
from pathlib import Path

from registry.datarepo import seed_data_repo
from registry.evaluate.runner import evaluate_model
from registry.evaluate.sources import fetch_data_repo, resolve_model
from registry.evaluate.suite import Suite, SuiteTask

TASKS = Path(__file__).resolve().parents[2] / "recipes" / "tasks"
SUITE = Suite(language="ben_Beng", tasks=(SuiteTask(task="flores_ben_Beng"), SuiteTask(task="sib200_ben_Beng", num_fewshot=2)))


def test_hub_model_and_data_match_local(hub, shared_data: Path, tiny_family, tmp_path: Path) -> None:
    client = hub.client()
    data = tmp_path / "data"
    for rel in ("flores200/devtest/ben_Beng.jsonl", "sib200/ben_Beng/train.jsonl", "sib200/ben_Beng/test.jsonl"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / rel, data / rel)
    data_sha = seed_data_repo(client, data, repo_id="alice/eval-data-test", progress=False)
    client.create_repo("alice/tiny-base", exist_ok=True)
    upload = tmp_path / "upload"
    shutil.copytree(tiny_family.base, upload)
    (upload / "optimizer.pt").write_bytes(b"not needed for evaluation")
    model_sha = client.upload_folder(upload, "alice/tiny-base")

    model = resolve_model("alice/tiny-base@main", hub=client)
    assert model.identity.sha == model_sha and model.identity.repo_id == "alice/tiny-base"
    assert model.identity.key == f"hub:alice/tiny-base@{model_sha}"
    assert (model.path / "model.safetensors").is_file() and not (model.path / "optimizer.pt").exists()
    files = ["flores200/devtest/ben_Beng.jsonl", "sib200/ben_Beng/train.jsonl", "sib200/ben_Beng/test.jsonl"]
    data_root, source = fetch_data_repo("alice/eval-data-test", files=files, hub=client)
    assert source == f"hub:alice/eval-data-test@{data_sha}"

    common = {"suite": SUITE, "suite_path": Path("mini.yaml"), "tasks_dir": TASKS, "limit": 3, "device": "cpu",
              "batch_size": 4, "cache": None}
    from_hub = evaluate_model(model, data_dir=data_root, data_source=source, **common)
    local = evaluate_model(resolve_model(str(tiny_family.base)), data_dir=shared_data, data_source="local", **common)
    assert from_hub.data_source == source and from_hub.model.sha == model_sha
    for a, b in zip(from_hub.tasks, local.tasks, strict=True):
        assert a.task_hash == b.task_hash  # same bytes, wherever they were served from
        assert {k: m.value for k, m in a.metrics.items()} == {k: m.value for k, m in b.metrics.items()}
