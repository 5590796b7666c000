"""Executors and the worker loop.

`local`: jobs run in this process, one at a time (a merge uses every core on CPU). `ray`: each
job's heavy steps (merge, evaluate, publish) run as a Ray task (`num_gpus=1` when the cluster has
GPUs); the queue, pairing, catalog and comments stay in the bot. Either way the job row is the
source of truth, so a crashed worker's job is picked up again when its lease runs out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING, Any

from bot.config import BotConfig
from bot.models import StepData
from bot.pipeline import Pipeline
from bot.queue import Job, JobQueue

if TYPE_CHECKING:
    from registry.hub import HubClient

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RayExecutor:
    """Runs the heavy steps of a job as a Ray task."""

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None) -> None:
        import ray

        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:  # a local Ray: its workers import this checkout, as the driver does
                from bot.config import REPO_ROOT

                ray.init(
                    num_cpus=num_cpus or 2,
                    log_to_driver=False,
                    include_dashboard=False,
                    runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
                )
        gpus = ray.cluster_resources().get("GPU", 0)  # type: ignore[no-untyped-call]
        # max_retries: a task whose node died (not one that raised) runs again on another node; the
        # steps are idempotent (staging is per node, the publish finds its own marker), so the job
        # still ends in exactly one commit.
        self._task = ray.remote(num_gpus=1 if gpus else 0, max_retries=3, retry_exceptions=False)(_heavy_steps)
        self._ray = ray

    def __call__(self, config: BotConfig, job: Job) -> dict[str, StepData]:
        ref = self._task.remote(config.portable(), job.__dict__)
        result: dict[str, StepData] = self._ray.get(ref)
        return result


def _heavy_steps(portable: dict[str, Any], job_fields: dict[str, Any]) -> dict[str, StepData]:
    """Inside a Ray worker: merge, evaluate and publish what is not done yet; return each step's data."""
    import ray

    from bot.pipeline import STEPS, evaluate_step, merge_step, publish_step

    config = BotConfig.from_portable(portable)
    job = Job(**job_fields)
    hub = config.hub()
    out: dict[str, StepData] = {}
    node = ray.get_runtime_context().get_node_id()
    done = STEPS.index(job.step or "paired")
    for step, func in (("merged", merge_step), ("evaluated", evaluate_step), ("published", publish_step)):
        if STEPS.index(step) <= done:
            continue
        data = func(config, job, hub=hub).model_copy(update={"ray_node": node})
        out[step] = data
        job.data = job.data.model_copy(update=data.model_dump(exclude_unset=True))
        job.step = step
    import shutil

    shutil.rmtree(config.staging / job.id, ignore_errors=True)  # this node's staging; results are in `out`
    return out


class Worker:
    """Claims jobs from the queue and runs them through the pipeline."""

    def __init__(self, config: BotConfig, queue: JobQueue | None = None, *, hub: HubClient | None = None) -> None:
        self.config = config
        self.queue = queue or config.open_queue()
        self.owner = worker_id()
        self.pipeline = Pipeline(config, self.queue, owner=self.owner, hub=hub)
        self.remote: Any = None
        if config.executor == "ray":
            self.remote = RayExecutor(address=config.ray_address)

    def run_one(self) -> Job | None:
        """Claim and run one job; None when nothing is runnable."""
        job = self.queue.claim(self.owner)
        if job is None:
            return None
        log.info("job %s: %s %s@%s", job.id, job.kind, job.ct_repo, (job.ct_sha or "")[:7])
        done = self.pipeline.run(job, remote=self.remote)
        log.info("job %s: %s%s", done.id, done.state, f" ({done.error})" if done.error else "")
        self._bound_cache(done)
        return done

    def _bound_cache(self, job: Job) -> None:
        """Mark the job's repos used; then, with `--cache-max-gb`, evict least recently used repos."""
        from bot.cache import enforce_cache_bound, mark_used

        try:
            mark_used(self.config.cache_dir, job.input_repos())
            if self.config.cache_max_gb is not None:
                running = [j for state in ("running", "merged", "evaluated") for j in self.queue.list(state=state)]
                keep = {repo for j in running for repo in j.input_repos()}
                max_bytes = int(self.config.cache_max_gb * 1024**3)
                enforce_cache_bound(self.config.cache_dir, max_bytes=max_bytes, keep=keep)
        except OSError as exc:  # the next job tries again
            log.warning("cache bound not enforced: %s", exc)

    def run_until_idle(self, *, max_jobs: int | None = None) -> list[Job]:
        """Run jobs until none is runnable now (jobs backing off later are left queued)."""
        done: list[Job] = []
        while max_jobs is None or len(done) < max_jobs:
            job = self.run_one()
            if job is None:
                break
            done.append(job)
        return done

    def loop(self, stop: threading.Event, *, idle_s: float = 0.5) -> None:
        """Run jobs until `stop` is set."""
        while not stop.is_set():
            try:
                job = self.run_one()
            except Exception:  # noqa: BLE001 (the loop must keep serving)
                log.exception("worker loop error")
                job = None
            if job is None:
                stop.wait(idle_s)
