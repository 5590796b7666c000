"""`registry hub serve | token create | seed-data` through the real CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from registry.cli import app
from tests._fixtures.hub import HubFactory, HubHandle


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_token_create_prints_token_last_and_stores_only_its_hash(tmp_path: Path) -> None:
    code, out, err = _invoke(
        "hub", "token", "create", "carol", "--data", str(tmp_path), "--org", "lab", "--write", "--init"
    )
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    assert re.fullmatch(r"hf_[A-Za-z0-9_-]{40,}", token)
    stored = (tmp_path / "accounts.json").read_text()
    assert token not in stored and "carol" in stored
    accounts = json.loads(stored)
    assert accounts["orgs"]["lab"]["members"] == ["carol"]
    assert [t["role"] for t in accounts["tokens"].values()] == ["write"]


def test_token_create_refuses_bad_names(tmp_path: Path) -> None:
    code, _, err = _invoke("hub", "token", "create", "../evil", "--data", str(tmp_path), "--init")
    assert code == 1 and "Error:" in err and "../evil" in err
    assert not (tmp_path / "accounts.json").exists()


def test_serve_process_answers_with_the_cli_token(hub_factory: HubFactory) -> None:
    served = hub_factory.process("served")
    code, out, err = _invoke("hub", "token", "create", "dave", "--data", str(served.data_dir), "--write")
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    assert served.api(token).whoami()["name"] == "dave"  # the running server sees new tokens
    code, _, err = _invoke("hub", "serve", "--data", str(served.data_dir), "--port", "0")
    assert code == 1 and "Another hub server is already using" in err


def test_seed_data_uploads_the_layout(hub: HubHandle, tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "sib200" / "xx_Latn").mkdir(parents=True)
    for split, n in (("train", 3), ("dev", 1), ("test", 2)):
        rows = "".join(json.dumps({"text": f"{split}{i}", "category": "travel"}) + "\n" for i in range(n))
        (src / "sib200" / "xx_Latn" / f"{split}.jsonl").write_text(rows)
    (src / "sib200" / "labels.txt").write_text("travel\n")
    (src / "README.md").write_text("# data\n")
    code, out, err = _invoke(
        "--quiet", "hub", "seed-data", str(src), "--repo", "lab/seeded", "--endpoint", hub.url, "--token", hub.token
    )
    assert code == 0, err
    sha = out.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    client = hub.client()
    files = set(client.list_files("lab/seeded", repo_type="dataset", revision=sha))
    assert {"sib200/xx_Latn/train.jsonl", "sib200/xx_Latn/dev.jsonl", "sib200/labels.txt", "README.md"} <= files
    card = client.repo_info("lab/seeded", repo_type="dataset").card_data.to_dict()
    assert card["configs"][0]["config_name"] == "sib200-xx_Latn"
    assert {f["split"] for f in card["configs"][0]["data_files"]} == {"train", "validation", "test"}
    code, _, err = _invoke(
        "hub", "seed-data", str(src), "--repo", "lab/seeded", "--endpoint", hub.url, "--token", hub.bob_token
    )
    assert code == 1 and "permission denied" in err


def test_seed_data_refuses_a_folder_without_jsonl(hub: HubHandle, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    code, _, err = _invoke(
        "hub",
        "seed-data",
        str(tmp_path / "empty"),
        "--repo",
        "lab/nothing",
        "--endpoint",
        hub.url,
        "--token",
        hub.token,
    )
    assert code == 1 and "No .jsonl files" in err
    assert not hub.client().repo_exists("lab/nothing", repo_type="dataset")
    for bad in ("../x", "noowner", "a/b/c"):
        code, _, err = _invoke(
            "hub", "seed-data", str(tmp_path / "empty"), "--repo", bad, "--endpoint", hub.url, "--token", hub.token
        )
        assert code == 2 and "--repo" in err, bad


def test_serve_refuses_a_busy_data_dir_or_port(hub: HubHandle, tmp_path: Path) -> None:
    code, out, err = _invoke("hub", "serve", "--data", str(hub.data_dir), "--port", "0")
    assert code == 1 and out == "" and "Another hub server is already using" in " ".join(err.split())
    port = hub.url.rsplit(":", 1)[1]
    code, out, err = _invoke("hub", "serve", "--data", str(tmp_path / "other"), "--port", port)
    assert code == 1 and out == "" and "Pick another --port" in " ".join(err.split())


def test_serve_webhook_allow_opens_chosen_private_targets(tmp_path: Path) -> None:
    import subprocess
    import sys

    import httpx

    from registry.localhub.auth import Accounts
    from tests._fixtures.hub import REPO_ROOT

    token = Accounts(tmp_path / "data").create_token("alice", write=True)
    cmd = [
        sys.executable,
        "-c",
        "from registry.cli import main; main()",
        "hub",
        "serve",
        "--data",
        str(tmp_path / "data"),
    ]
    cmd += ["--port", "0", "--webhook-allow", "10.0.0.0/8", "--webhook-allow", "intranet.example"]
    with (tmp_path / "err.log").open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO_ROOT)
    try:
        url = proc.stdout.readline().strip() if proc.stdout else ""
        assert url.startswith("http://127.0.0.1:"), (tmp_path / "err.log").read_text()

        def register(target: str) -> int:
            body = {"url": target, "watched": [{"type": "user", "name": "alice"}]}
            answer = httpx.post(f"{url}/api/settings/webhooks", json=body, headers={"Authorization": f"Bearer {token}"})
            return answer.status_code

        assert register("http://10.1.2.3/hook") == 200
        assert register("http://192.168.0.1/hook") == 400
        assert register("http://127.0.0.1:9/hook") == 200  # loopback: the hub listens on loopback
    finally:
        proc.terminate()
        proc.wait(timeout=10)
