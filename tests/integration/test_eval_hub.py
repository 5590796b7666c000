"""Evaluation with the model and the data served by the embedded hub: pinned shas, and the same
task hashes and numbers as with local data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from registry.datarepo import seed_data_repo
from registry.evaluate.records import load_record
from registry.evaluate.runner import evaluate_model
from registry.evaluate.sources import fetch_data_repo, resolve_model
from registry.evaluate.suite import load_suite

TASKS = Path(__file__).resolve().parents[2] / "recipes" / "tasks"
FILES = ["flores200/devtest/ben_Beng.jsonl", "sib200/ben_Beng/train.jsonl", "sib200/ben_Beng/test.jsonl"]


@pytest.mark.slow
def test_hub_model_and_data_match_local(hub, shared_data: Path, tiny_family, tmp_path: Path) -> None:
    client = hub.client()
    data = tmp_path / "data"
    for rel in FILES:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / rel, data / rel)
    data_sha = seed_data_repo(client, data, repo_id="alice/eval-data-test", progress=False)
    upload = tmp_path / "upload"
    shutil.copytree(tiny_family.base, upload)
    (upload / "optimizer.pt").write_bytes(b"not needed for evaluation")
    client.create_repo("alice/tiny-base", exist_ok=True)
    model_sha = client.upload_folder(upload, "alice/tiny-base")

    model = resolve_model("alice/tiny-base@main", hub=client)
    assert model.identity.sha == model_sha and model.identity.repo_id == "alice/tiny-base"
    assert model.identity.key == f"hub:alice/tiny-base@{model_sha}"
    assert (model.path / "model.safetensors").is_file() and not (model.path / "optimizer.pt").exists()
    data_root, source = fetch_data_repo("alice/eval-data-test", files=FILES, hub=client)
    assert source == f"hub:alice/eval-data-test@{data_sha}"
    assert sorted(p.relative_to(data_root).as_posix() for p in data_root.rglob("*.jsonl")) == sorted(FILES)

    suite = tmp_path / "suite" / "ben_Beng.yaml"
    suite.parent.mkdir()
    suite.write_text(
        "language: ben_Beng\ntasks:\n  - {task: flores_ben_Beng}\n  - {task: sib200_ben_Beng, num_fewshot: 2}\n"
    )
    local = evaluate_model(
        resolve_model(str(tiny_family.base)),
        suite=load_suite(suite),
        suite_path=suite,
        tasks_dir=TASKS,
        data_dir=shared_data,
        data_source="local",
        limit=3,
        device="cpu",
        batch_size=4,
        cache=None,
    )
    # the CLI in a fresh process, model and data from the hub (HF_ENDPOINT / HF_TOKEN, fresh HF_HOME)
    out = tmp_path / "cli.json"
    cli = subprocess.run(
        [
            str(Path(sys.executable).parent / "registry"),
            "-q",
            "eval",
            "alice/tiny-base@main",
            "--suite",
            str(suite),
            "--tasks-dir",
            str(TASKS),
            "--data-repo",
            "alice/eval-data-test",
            "--limit",
            "3",
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--output",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        # bars left on in the environment (conftest turns the Hub's off), so -q alone must hide them
        env={k: v for k, v in hub.env().items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert cli.returncode == 0, cli.stderr
    # -q outside a git checkout, fresh datasets cache: no progress bars (lm-eval's, transformers',
    # datasets' split building) and none of lm-eval's `git describe` noise
    assert not any(s in cli.stderr for s in ("%|", "it/s", "examples/s", "fatal:")), cli.stderr
    from_hub = load_record(out)
    assert from_hub.model.sha == model_sha and from_hub.model.repo_id == "alice/tiny-base"
    assert from_hub.data_source == source
    for a, b in zip(from_hub.tasks, local.tasks, strict=True):
        assert a.task_hash == b.task_hash  # same bytes, wherever they were served from
        assert {k: m.value for k, m in a.metrics.items()} == pytest.approx({k: m.value for k, m in b.metrics.items()})


def test_missing_local_dir_read_as_repo_id_is_said(
    hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from registry.errors import HubRepoNotFoundError

    (tmp_path / "ckpts" / "ct-ben").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HubRepoNotFoundError, match="ckpts/ct-bn not found"):
        resolve_model("ckpts/ct-bn", hub=hub.client())  # a typo of the local directory
    assert "No directory ckpts/ct-bn here (though ckpts/ exists); looking for the Hub repo" in caplog.text
