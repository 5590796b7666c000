"""The bot SIGKILLed mid-merge, mid-eval and mid-push, and the hub restarted during a job: the job
completes after the restart, the output repo gets exactly one new commit, no staging dir remains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.queue import trigger_key
from bot.worker import Worker
from registry.catalog.store import CatalogStore
from registry.catalog.verify import build_sft_entry
from tests._fixtures.botkit import ct_meta, eval_fixture, push_checkpoint, sft_meta, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def _setup(hub, tiny_family, root: Path, tag: str) -> tuple[BotConfig, str]:
    alice, bob = hub.client(), hub.client(hub.bob_token, cache=f"bob-{tag}")
    push_checkpoint(alice, tiny_family.base, f"alice/{tag}-base", {"license": "mit"})
    push_checkpoint(alice, tiny_family.sft, f"alice/{tag}-sft", sft_meta(f"alice/{tag}-base"))
    CatalogStore(hub=bob, repo_id=f"bob/{tag}-registry").add(
        build_sft_entry(bob, repo=f"alice/{tag}-sft", revision=None, base=f"alice/{tag}-base")
    )
    suites, data = eval_fixture(root / "eval")
    config = BotConfig(data=root / "bot", registry=f"bob/{tag}-registry", namespace="bob", endpoint=hub.url,
                       token=hub.bob_token, suites_dir=suites, data_dir=data, eval_limit=2, lease_s=2)  # fmt: skip
    repo = f"alice/{tag}-ct"
    sha = push_checkpoint(alice, tiny_family.ct, repo, ct_meta("bn", f"alice/{tag}-base"))
    config.open_queue().enqueue(key=trigger_key(repo, sha), kind="pair", ct_repo=repo, ct_sha=sha)
    return config, repo


def _run_once_process(hub, config: BotConfig, stall: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", "from registry.cli import main; main()", "bot", "run-once",
           "--data", str(config.data), "--registry", config.registry, "--namespace", config.namespace,
           "--eval-suites", str(config.suites_dir), "--eval-data-dir", str(config.data_dir), "--eval-limit", "2",
           "--lease-seconds", "2"]  # fmt: skip
    env = hub.env(token=hub.bob_token, MERGELING_BOT_STALL=stall)
    return subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("point", ["merge", "eval", "push"])
def test_sigkill_then_restart_completes_with_one_commit(hub, tiny_family, tmp_path: Path, point: str) -> None:
    config, repo = _setup(hub, tiny_family, tmp_path, f"kill-{point}")
    proc = _run_once_process(hub, config, point)
    try:
        wait_for(lambda: (config.data / f"stalled-{point}").is_file() or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    queue = config.open_queue()
    (job,) = queue.list()
    assert job.state in ("running", "merged", "evaluated")
    time.sleep(config.lease_s + 0.5)  # the dead worker's lease runs out
    done = Worker(config, queue, hub=hub.client(hub.bob_token, cache=f"bob-kill-{point}")).run_until_idle()
    job = queue.get(job.id)
    assert [j.id for j in done] == [job.id] and job.state == "published", job.error
    commits = hub.api(hub.bob_token).list_repo_commits(job.output_repo)
    assert [c.title for c in commits][1:] == ["initial commit"] and commits[0].commit_id == job.data.commit
    assert not any((config.data / "staging").iterdir())


def test_hub_restarted_during_a_job_is_retried_and_completes(hub_factory, tiny_family, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = hub_factory.process("h1", port=port)
    config, repo = _setup(first, tiny_family, tmp_path, "restart")
    config.backoff_s = 0.1
    first.stop()  # the hub goes down with the job queued
    queue = config.open_queue()
    worker = Worker(config, queue)
    assert [j.state for j in worker.run_until_idle(max_jobs=1)] == ["queued"]  # transient: retried later
    (job,) = queue.list()
    assert job.attempts == 1 and "cannot be reached" in (job.error or "")
    hub_factory.process("h2", data_dir=first.data_dir, port=port)  # back, same data, same URL
    time.sleep(0.2)
    worker.run_until_idle()
    job = queue.get(job.id)
    assert job.state == "published", job.error
    assert not any((config.data / "staging").iterdir())
