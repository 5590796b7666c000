"""The same pipeline with the `ray` executor on a local Ray (ray.init(num_cpus=2)): merge, evaluate and
publish run as a Ray task; the queue, pairing, catalog and comment stay in the bot."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.queue import trigger_key
from bot.worker import Worker
from registry.catalog.entries import MergeEntry
from registry.catalog.store import CatalogStore
from registry.catalog.verify import build_sft_entry
from tests._fixtures.botkit import ct_meta, eval_fixture, push_checkpoint, sft_meta

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_executor_publishes_the_merge(hub, tiny_family, tmp_path: Path) -> None:
    alice, bob = hub.client(), hub.client(hub.bob_token, cache="bob-ray")
    push_checkpoint(alice, tiny_family.base, "alice/ray-base", {"license": "mit"})
    push_checkpoint(alice, tiny_family.sft, "alice/ray-sft", sft_meta("alice/ray-base"))
    store = CatalogStore(hub=bob, repo_id="bob/ray-registry")
    store.add(build_sft_entry(bob, repo="alice/ray-sft", revision=None, base="alice/ray-base"))
    sha = push_checkpoint(alice, tiny_family.ct, "alice/ray-ct", ct_meta("bn", "alice/ray-base"))
    suites, data = eval_fixture(tmp_path / "eval")
    config = BotConfig(data=tmp_path / "bot", registry="bob/ray-registry", namespace="bob", endpoint=hub.url,
                       token=hub.bob_token, suites_dir=suites, data_dir=data, eval_limit=2, executor="ray")  # fmt: skip
    queue = config.open_queue()
    job, _ = queue.enqueue(key=trigger_key("alice/ray-ct", sha), kind="pair", ct_repo="alice/ray-ct", ct_sha=sha)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}})  # fmt: skip
    try:
        worker = Worker(config, queue, hub=bob)
        assert worker.remote is not None
        worker.run_until_idle()
    finally:
        ray.shutdown()
    job = queue.get(job.id)
    assert job.state == "published", job.error
    assert job.data.merge_seconds >= 0 and job.data.eval_records
    readme = bob.read_file(job.output_repo, "README.md").decode()
    assert "model-index:" in readme and sha in readme
    merge = next(e for e in store.list_entries() if isinstance(e, MergeEntry))
    assert merge.status == "published" and merge.output_revision == job.data.commit
    assert not any((config.data / "staging").iterdir())
