"""Bad input to the bot: each ends with a one-line reason in the job (and `bot status`) and, where the
CT repo is readable, in its discussion; nothing is published; the bot keeps working."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from bot.cli import app
from bot.config import BotConfig
from bot.queue import Job, trigger_key
from bot.testing import ct_meta, eval_fixture, push_checkpoint, sft_meta
from bot.worker import Worker
from registry.catalog.store import CatalogStore
from registry.catalog.verify import build_sft_entry


@pytest.fixture(scope="module")
def world(hub, tiny_family, tmp_path_factory):
    root = tmp_path_factory.mktemp("bot-bad")
    alice, bob = hub.client(), hub.client(hub.bob_token, cache="bob-bad")
    push_checkpoint(alice, tiny_family.base, "alice/bad-base", {"license": "mit"})
    push_checkpoint(alice, tiny_family.sft, "alice/bad-sft", sft_meta("alice/bad-base"))
    CatalogStore(hub=bob, repo_id="bob/bad-registry").add(
        build_sft_entry(bob, repo="alice/bad-sft", revision=None, base="alice/bad-base")
    )
    suites, data = eval_fixture(root / "eval")
    config = BotConfig(data=root / "bot", registry="bob/bad-registry", namespace="bob", watch=("alice",),
                       endpoint=hub.url, token=hub.bob_token, suites_dir=suites, data_dir=data, eval_limit=2,
                       max_attempts=2, backoff_s=0)  # fmt: skip
    return {"alice": alice, "bob": bob, "config": config, "root": root}


def _variant(tiny_family, root: Path, name: str) -> Path:
    folder = root / name
    shutil.copytree(tiny_family.ct, folder)
    return folder


def _run(world, repo: str, folder: Path, meta: dict, *, config: BotConfig | None = None, before=None) -> Job:
    config = config or world["config"]
    sha = push_checkpoint(world["alice"], folder, repo, meta)
    queue = config.open_queue()
    job, _ = queue.enqueue(key=trigger_key(repo, sha), kind="pair", ct_repo=repo, ct_sha=sha)
    if before is not None:
        before()
    Worker(config, queue, hub=world["bob"] if config.token == world["config"].token else None).run_until_idle()
    return queue.get(job.id)  # type: ignore[return-value]


def _comment(hub, repo: str) -> str:
    api = hub.api()
    discussion = next(d for d in api.get_repo_discussions(repo) if d.author == "bob")
    events = api.get_discussion_details(repo, discussion.num).events
    return [e.content for e in events if getattr(e, "type", "") == "comment"][-1]


def _assert_failed(world, hub, job: Job, *needles: str, comment: bool = True) -> None:
    assert job.state == "failed", (job.state, job.error)
    assert job.error and "\n" not in job.error
    for needle in needles:
        assert needle in job.error
    if comment:
        text = _comment(hub, job.ct_repo)
        assert "Reason and fix" in text and job.error in text
    assert not list(world["bob"].list_models(author="bob"))  # nothing published
    status = CliRunner().invoke(app, ["status", "--data", str(world["config"].data)])
    assert job.error in status.stdout


def test_card_without_language(world, hub, tiny_family) -> None:
    folder = _variant(tiny_family, world["root"], "nolang")
    job = _run(world, "alice/bad-nolang", folder, {"base_model": "alice/bad-base", "tags": ["mergeling-ct"]})
    _assert_failed(world, hub, job, "language", "Add `language:")


def test_card_with_an_unknown_language(world, hub, tiny_family) -> None:
    folder = _variant(tiny_family, world["root"], "xx")
    job = _run(world, "alice/bad-xx", folder, ct_meta("xx", "alice/bad-base"))
    _assert_failed(world, hub, job, "names no target language")


def test_ct_of_another_architecture(world, hub, tiny_family) -> None:
    folder = _variant(tiny_family, world["root"], "arch")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    job = _run(world, "alice/bad-arch", folder, ct_meta("bn", "alice/bad-base"))
    _assert_failed(world, hub, job, "base mismatch")


def test_ct_whose_card_names_a_wrong_base_is_told_to_fix_its_card(world, hub, tiny_family) -> None:
    # Same shapes as the catalog's SFT, another base_model in the card: the card is what is wrong.
    push_checkpoint(world["alice"], tiny_family.base, "alice/bad-other-base", {"license": "mit"})
    folder = _variant(tiny_family, world["root"], "otherbase")
    job = _run(world, "alice/bad-otherbase", folder, ct_meta("bn", "alice/bad-other-base"))
    _assert_failed(world, hub, job, "fix `base_model` in your card", "alice/bad-base", "alice/bad-other-base")
    assert "add an SFT on alice/bad-other-base" in (job.error or "")  # the other way out, named second
    text = _comment(hub, "alice/bad-otherbase")
    assert "different base: CT is on alice/bad-other-base, SFT on alice/bad-base" in text


def test_nan_weights(world, hub, tiny_family) -> None:
    folder = _variant(tiny_family, world["root"], "nan")
    state = load_file(folder / "model.safetensors")
    state["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    job = _run(world, "alice/bad-nan", folder, ct_meta("bn", "alice/bad-base"))
    _assert_failed(world, hub, job, "NaN")
    assert not any((world["config"].data / "staging").iterdir())


def test_pickle_only_weights(world, hub, tiny_family) -> None:
    class Gadget:
        def __reduce__(self):
            return (print, ("unpickled!",))

    folder = _variant(tiny_family, world["root"], "pickle")
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state, "gadget": Gadget()}, folder / "pytorch_model.bin")
    job = _run(world, "alice/bad-pickle", folder, ct_meta("bn", "alice/bad-base"))
    _assert_failed(world, hub, job, "weights_only")


def test_ct_deleted_between_delivery_and_merge(world, hub, tiny_family) -> None:
    folder = _variant(tiny_family, world["root"], "deleted")
    job = _run(world, "alice/bad-deleted", folder, ct_meta("bn", "alice/bad-base"),
               before=lambda: world["alice"].delete_repo("alice/bad-deleted"))  # fmt: skip
    _assert_failed(world, hub, job, "gone or not readable", comment=False)


def test_language_without_an_eval_suite_is_published_with_eval_unavailable(world, hub, tiny_family) -> None:
    folder = _variant(tiny_family, world["root"], "tam")
    job = _run(world, "alice/bad-tam", folder, ct_meta("ta", "alice/bad-base"))
    assert job.state == "published", job.error
    readme = world["bob"].read_file(job.output_repo, "README.md").decode()
    assert "Evaluation unavailable: no evaluation suite for tam_Taml" in readme and "model-index" not in readme
    assert "Evaluation unavailable" in _comment(hub, "alice/bad-tam")
    world["bob"].delete_repo(job.output_repo)  # keep "nothing published" checks of the other tests meaningful


def test_hub_down_is_retried_with_backoff_then_failed(world, hub, tiny_family, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    config = BotConfig(data=tmp_path / "down", registry="bob/bad-registry", namespace="bob", endpoint=dead,
                       token=hub.bob_token, max_attempts=3, backoff_s=0)  # fmt: skip
    queue = config.open_queue()
    job, _ = queue.enqueue(key=trigger_key("alice/x", "1" * 40), kind="pair", ct_repo="alice/x", ct_sha="1" * 40)
    Worker(config, queue).run_until_idle()
    done = queue.get(job.id)
    assert done.state == "failed" and done.attempts == 3  # type: ignore[union-attr]
    assert "cannot be reached" in done.error and "gave up after 3 attempts" in done.error  # type: ignore[union-attr, operator]


def test_bot_token_without_write_access_to_its_namespace(world, hub, tiny_family, tmp_path: Path) -> None:
    config = BotConfig(**{**world["config"].__dict__, "namespace": "lab", "data": tmp_path / "nowrite"})
    folder = _variant(tiny_family, world["root"], "nowrite")
    job = _run(world, "alice/bad-nowrite", folder, ct_meta("bn", "alice/bad-base"), config=config)
    assert job.state == "failed" and "permission denied" in (job.error or "")
    assert not world["bob"].repo_exists("lab/bad-nowrite-bad-sft-ties-sv")
    assert not any((tmp_path / "nowrite" / "staging").iterdir())
