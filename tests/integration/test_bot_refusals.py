"""What cannot be merged correctly is refused, and custom code never rides along (issue 16, item 4).

- a CT whose tokenizer maps a shared id to another string than the SFT's: the job fails naming the
  first differing id and both strings; nothing is published;
- a CT carrying `auto_map` (config and tokenizer config) and `*.py` files: the published merge has no
  `auto_map` in any JSON file and no `*.py` file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.queue import Job, trigger_key
from bot.worker import Worker
from registry.catalog.store import CatalogStore
from registry.catalog.verify import build_sft_entry
from tests._fixtures.botkit import ct_meta, eval_fixture, push_checkpoint, sft_meta


@pytest.fixture(scope="module")
def world(hub, tiny_family, tmp_path_factory):
    root = tmp_path_factory.mktemp("bot-refusals")
    alice, bob = hub.client(), hub.client(hub.bob_token, cache="bob-refusals")
    push_checkpoint(alice, tiny_family.base, "alice/rf-base", {"license": "mit"})
    push_checkpoint(alice, tiny_family.sft, "alice/rf-sft", sft_meta("alice/rf-base"))
    CatalogStore(hub=bob, repo_id="bob/rf-registry").add(
        build_sft_entry(bob, repo="alice/rf-sft", revision=None, base="alice/rf-base")
    )
    suites, data = eval_fixture(root / "eval")
    config = BotConfig(data=root / "bot", registry="bob/rf-registry", namespace="bob", watch=("alice",),
                       endpoint=hub.url, token=hub.bob_token, suites_dir=suites, data_dir=data, eval_limit=2,
                       max_attempts=1)  # fmt: skip
    return {"alice": alice, "bob": bob, "config": config, "root": root}


def _run(world, repo: str, folder: Path) -> Job:
    sha = push_checkpoint(world["alice"], folder, repo, ct_meta("bn", "alice/rf-base"))
    queue = world["config"].open_queue()
    job, _ = queue.enqueue(key=trigger_key(repo, sha), kind="pair", ct_repo=repo, ct_sha=sha)
    Worker(world["config"], queue, hub=world["bob"]).run_until_idle()
    return queue.get(job.id)  # type: ignore[return-value]


def test_a_ct_whose_tokenizer_maps_ids_differently_is_refused_naming_the_first_differing_id(world, tiny_family) -> None:
    folder = world["root"] / "swapped"
    shutil.copytree(tiny_family.ct, folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    a, b = by_id[100], by_id[101]
    vocab[a], vocab[b] = 101, 100  # two ordinary tokens exchange ids
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))

    job = _run(world, "alice/rf-swapped", folder)
    assert job.state == "failed"
    assert f"id 100 is {b!r} in the CT alice/rf-swapped but {a!r} in the SFT alice/rf-sft" in job.error
    assert not world["bob"].repo_exists("bob/alice__rf-swapped-rf-sft-ties-sv")


def test_custom_code_is_never_published(world, tiny_family) -> None:
    folder = world["root"] / "custom"
    shutil.copytree(tiny_family.ct, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    tok_config_path = folder / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text()) if tok_config_path.is_file() else {}
    tok_config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    tok_config_path.write_text(json.dumps(tok_config))
    (folder / "modeling_evil.py").write_text("import os\nos.system('echo pwned')\n")
    (folder / "tokenization_evil.py").write_text("raise SystemExit('pwned')\n")

    job = _run(world, "alice/rf-custom", folder)
    assert job.state == "published", job.error
    bob = world["bob"]
    files = bob.list_files(job.output_repo)
    assert "config.json" in files and "tokenizer_config.json" in files
    assert not [f for f in files if f.endswith(".py")]
    for name in files:
        if name.endswith(".json"):
            assert "auto_map" not in bob.read_file(job.output_repo, name).decode(), name
