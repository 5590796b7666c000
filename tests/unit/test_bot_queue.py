"""The bot's SQLite queue: idempotent keys, leases, backoff, supersede, operator actions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bot.models import StepData
from bot.queue import JobQueue, trigger_key


def _queue(tmp_path: Path, **kw: float) -> JobQueue:
    return JobQueue(tmp_path / "q.sqlite3", **kw)  # type: ignore[arg-type]


def test_enqueue_is_idempotent_on_the_key_across_threads(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    created: list[bool] = []

    def add(i: int) -> None:
        for n in range(20):
            _, new = JobQueue(queue.path).enqueue(key=trigger_key("a/ct", f"{n:040d}"), kind="pair", ct_repo="a/ct",
                                                 ct_sha=f"{n:040d}")  # fmt: skip
            created.append(new)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created) == 20 and len(queue.list()) == 20


def test_claim_takes_the_oldest_and_an_expired_lease_is_taken_over(tmp_path: Path) -> None:
    queue = _queue(tmp_path, lease_s=0.2)
    first, _ = queue.enqueue(key="k1", kind="pair", ct_repo="a/ct", ct_sha="1" * 40)
    queue.enqueue(key="k2", kind="pair", ct_repo="a/ct2", ct_sha="2" * 40)
    job = queue.claim("w1")
    assert job is not None and job.id == first.id and job.state == "running" and job.lease_owner == "w1"
    assert queue.heartbeat(first.id, "w1")
    queue.finish_step(first.id, "merged", StepData(merged_dir="/x"), state="merged")
    time.sleep(0.3)  # w1 died: its lease runs out
    again = queue.claim("w2")
    assert again is not None and again.id == first.id and again.state == "merged" and again.step == "merged"
    assert again.data == StepData(merged_dir="/x") and not queue.heartbeat(first.id, "w1")


def test_transient_failures_back_off_then_fail(tmp_path: Path) -> None:
    queue = _queue(tmp_path, max_attempts=3, backoff_s=10)
    job, _ = queue.enqueue(key="k", kind="pair", ct_repo="a/ct", ct_sha="1" * 40)
    queue.claim("w")
    later = queue.retry_later(job.id, "hub down")
    assert later.state == "queued" and later.attempts == 1 and later.not_before > time.time() + 9
    assert queue.claim("w") is None  # not due yet
    queue.update(job.id, not_before=0)
    queue.claim("w")
    assert queue.retry_later(job.id, "hub down").attempts == 2
    queue.update(job.id, not_before=0)
    queue.claim("w")
    failed = queue.retry_later(job.id, "hub down")
    assert failed.state == "failed" and "gave up after 3 attempts" in (failed.error or "")


def test_a_newer_revision_supersedes_queued_jobs_of_the_old_one(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    old, _ = queue.enqueue(key=trigger_key("a/ct", "1" * 40), kind="pair", ct_repo="a/ct", ct_sha="1" * 40)
    queue.enqueue(key=trigger_key("a/ct", "2" * 40), kind="pair", ct_repo="a/ct", ct_sha="2" * 40, replaces=["1" * 40])
    assert queue.get(old.id).state == "superseded"  # type: ignore[union-attr]
    assert queue.is_replaced("a/ct", "1" * 40) and not queue.is_replaced("a/ct", "2" * 40)


def test_cancel_retry_and_their_refusals(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    job, _ = queue.enqueue(key="k", kind="pair", ct_repo="a/ct", ct_sha="1" * 40)
    assert queue.cancel(job.id).state == "cancelled"
    with pytest.raises(ValueError, match="already cancelled"):
        queue.cancel(job.id)
    assert queue.retry(job.id).state == "queued"
    with pytest.raises(ValueError, match="only failed"):
        queue.retry(job.id)
    with pytest.raises(KeyError):
        queue.retry("nope")


def test_a_pair_key_taken_by_another_job_is_reported(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    a, _ = queue.enqueue(key="ct:a/ct@1", kind="pair", ct_repo="a/ct", ct_sha="1")
    b, _ = queue.enqueue(key="pair:x", kind="pair", ct_repo="a/ct", ct_sha="1")
    assert queue.add_key(a.id, "pair:x").id == b.id  # type: ignore[union-attr]
    assert queue.add_key(a.id, "pair:y") is None and queue.by_key("pair:y").id == a.id  # type: ignore[union-attr]
    assert queue.by_key("ct:a/ct@1").id == a.id  # type: ignore[union-attr]


def test_worker_configs_one_on_cpu_one_per_gpu(tmp_path: Path) -> None:
    from bot.config import BotConfig
    from bot.server import worker_configs

    config = BotConfig(data=tmp_path, registry="a/r", namespace="a", device="auto")
    assert [c.device for c in worker_configs(config, None, gpus=0)] == ["cpu"]
    assert [c.device for c in worker_configs(config, None, gpus=2)] == ["cuda:0", "cuda:1"]
    assert [c.device for c in worker_configs(config, 3, gpus=2)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert [c.device for c in worker_configs(config, 0, gpus=2)] == []
    cpu = BotConfig(data=tmp_path, registry="a/r", namespace="a", device="cpu")
    assert [c.device for c in worker_configs(cpu, None)] == ["cpu"]


def test_the_schema_version_is_recorded_and_a_newer_file_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from bot.queue import SCHEMA_VERSION

    queue = _queue(tmp_path)
    job, _ = queue.enqueue(key=trigger_key("a/ct", "1" * 40), kind="pair", ct_repo="a/ct", ct_sha="1" * 40)
    queue.close()
    db = sqlite3.connect(tmp_path / "q.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute("PRAGMA user_version = 0")  # a file made before versions were recorded is adopted as it is
    db.commit()
    again = JobQueue(tmp_path / "q.sqlite3")
    assert again.get(job.id) is not None
    again.close()
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match=r"newer than this bot's .*point --data at another folder"):
        JobQueue(tmp_path / "q.sqlite3")


def test_retry_delays_come_from_the_one_backoff_helper(tmp_path: Path) -> None:
    from registry.retry import Backoff

    queue = _queue(tmp_path, max_attempts=10, backoff_s=2)
    job, _ = queue.enqueue(key=trigger_key("a/ct", "2" * 40), kind="pair", ct_repo="a/ct", ct_sha="2" * 40)
    waits = []
    for _ in range(3):
        before = time.time()
        later = queue.retry_later(job.id, "hub down")
        waits.append(round(later.not_before - before))
    assert waits == [2, 4, 8]
    assert [Backoff(first_s=2, cap_s=300, jitter="none").delay(n) for n in (0, 1, 2, 10)] == [2, 4, 8, 300]


def test_step_data_and_specs_are_validated_where_they_are_written(tmp_path: Path) -> None:
    from pydantic import ValidationError

    queue = _queue(tmp_path)
    job, _ = queue.enqueue(key="k9", kind="pair", ct_repo="a/ct", ct_sha="9" * 40)
    with pytest.raises(ValidationError, match="merged_dri"):
        queue.update(job.id, data={"merged_dri": "/x"})  # a misspelt key fails here, not three modules later
    queue.update(job.id, data=StepData(commit="c" * 40))
    queue.update(job.id, data=StepData(discussion_url="u"))
    assert queue.get(job.id).data == StepData(commit="c" * 40, discussion_url="u")  # type: ignore[union-attr]


def test_a_version_1_file_gains_submitted_by_and_keeps_its_jobs(tmp_path: Path) -> None:
    import sqlite3

    from bot.queue import _MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_MIGRATIONS[0][1])
    db.execute(
        "INSERT INTO jobs (id, key, kind, state, ct_repo, created_at, updated_at) "
        "VALUES ('old1', 'ct:a/ct@x', 'pair', 'queued', 'a/ct', 't', 't')"
    )
    db.execute("INSERT INTO keys (key, job_id) VALUES ('ct:a/ct@x', 'old1')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    queue = JobQueue(path)
    old = queue.get("old1")
    assert old is not None and old.submitted_by is None
    new, _ = queue.enqueue(key="ct:a/ct@y", kind="pair", ct_repo="a/ct", ct_sha="y", submitted_by="alice")
    assert [j.id for j in queue.list(submitted_by="alice")] == [new.id]
    queue.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
