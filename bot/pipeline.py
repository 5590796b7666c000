"""The pipeline one job goes through: pair -> merge -> evaluate -> publish -> catalog -> comment.

Each step records its result in the job row (`step`, `data`) before the next starts, so a job
resumed after a crash continues after its last finished step. The steps are idempotent: the merge
goes to a staging folder that a re-run replaces (stale partial folders are removed), evaluation
results are cached, the publish is one commit whose card carries the job id (a re-run finds it and
commits nothing), catalog writes replace the entry, and the comment is marked done in the row.

Failures: a transient Hub error puts the job back with a backoff; any other `RegistryError` fails
the job with its one-line reason, which is also posted on the CT repo's discussion. Nothing is
published before the single commit, and the staging folder is removed when the job ends.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot import comments
from bot.config import BotConfig
from bot.evaluation import evaluate_models, load_records, metric_value, read_records
from bot.pairing import NotACheckpoint, Superseded, expand, verify_ct
from bot.queue import Job, JobQueue
from registry.errors import HubAuthError, HubConflictError, HubError, HubUnavailableError, RegistryError

log = logging.getLogger(__name__)

STEPS = ("paired", "merged", "evaluated", "published", "cataloged", "commented")


def is_transient(exc: BaseException) -> bool:
    """Hub trouble that may pass: unreachable, 5xx, 429, a catalog head that kept moving."""
    if isinstance(exc, HubUnavailableError | HubConflictError):
        return True
    if isinstance(exc, HubError):
        status = getattr(exc, "status", None) or 0
        return status >= 500 or status in (408, 429)
    return isinstance(exc, ConnectionError | TimeoutError) and not isinstance(exc, RegistryError)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@dataclass
class Hooks:
    """Test seams: called after each step finishes (e.g. to stop the process there)."""

    after_step: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Runs jobs of one queue with one Hub identity (the bot's)."""

    def __init__(self, config: BotConfig, queue: JobQueue, *, owner: str, hub: Any = None) -> None:
        self.config = config
        self.queue = queue
        self.owner = owner
        self.hub = hub or config.hub()
        self._bot_user: str | None = None

    @property
    def bot_user(self) -> str:
        if self._bot_user is None:
            self._bot_user = self.hub.whoami()
        return self._bot_user

    # -- one job ------------------------------------------------------------------------------
    def run(self, job: Job, *, remote: Any = None) -> Job:
        """Run `job` (already claimed) to its end or to its next retry; return its final row.

        Args:
            remote: an executor for the heavy steps (merge, evaluate, publish), e.g. a Ray task.
        """
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, stop), daemon=True, name=f"beat-{job.id}")
        beat.start()
        try:
            return self._run(job, remote=remote)
        except Exception as exc:  # noqa: BLE001 (every failure ends in the job row)
            return self._failed(job.id, exc)
        finally:
            stop.set()
            beat.join(timeout=5)

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.queue.lease_s / 3):
            try:
                if not self.queue.heartbeat(job_id, self.owner):
                    return
            except Exception:  # noqa: BLE001 (the next beat tries again)
                log.debug("heartbeat of %s failed", job_id, exc_info=True)

    def _active(self, job_id: str) -> Job | None:
        job = self.queue.get(job_id)
        return job if job is not None and job.state in ("running", "merged", "evaluated") else None

    def _run(self, job: Job, *, remote: Any) -> Job:
        if job.is_trigger:
            job = self._pair(job)
            if job.state != "running":
                return job
        for step in STEPS[1:]:
            current = self._active(job.id)
            if current is None:  # cancelled (or taken over after a lost lease)
                self._cleanup(job)
                return self.queue.get(job.id) or job
            job = current
            if STEPS.index(step) <= STEPS.index(job.step or "paired"):
                continue
            if remote is not None and step in ("merged", "evaluated", "published"):
                data = remote(self.config, job)
                for name in ("merged", "evaluated", "published"):
                    if name in data:
                        job = self.queue.finish_step(job.id, name, state=_state_after(name), **data[name])
                continue
            data = getattr(self, f"_step_{step}")(job)
            job = self.queue.finish_step(job.id, step, state=_state_after(step), **data)
        self._cleanup(job)
        return self.queue.update(job.id, state="published", error=None, lease_owner=None, lease_until=None)

    # -- steps ----------------------------------------------------------------------------------
    def _pair(self, job: Job) -> Job:
        assert job.ct_sha is not None
        try:
            ct = verify_ct(self.config, self.hub, repo=job.ct_repo, sha=job.ct_sha, language=job.language)
        except NotACheckpoint as exc:
            return self.queue.update(job.id, state="cancelled", error=f"ignored: {exc}", lease_owner=None)
        except Superseded as exc:
            return self.queue.update(job.id, state="superseded", error=str(exc), lease_owner=None)
        planned = expand(self.config, self.hub, ct)
        first, rest = planned[0], planned[1:]
        for item in rest:
            self.queue.enqueue(
                key=item.key, kind=item.kind, ct_repo=job.ct_repo, ct_sha=job.ct_sha, language=item.language,
                sft_repo=item.sft_repo, sft_sha=item.sft_sha, output_repo=item.output_repo, spec=item.spec,
            )  # fmt: skip
        twin = self.queue.add_key(job.id, first.key)
        if twin is not None:
            return self.queue.update(
                job.id, state="superseded", error=f"the same merge is job {twin.id}", lease_owner=None
            )
        return self.queue.update(
            job.id, kind=first.kind, language=first.language, sft_repo=first.sft_repo,
            sft_sha=first.sft_sha, output_repo=first.output_repo, spec=first.spec, step="paired",
            data={"language": ct.language},
        )  # fmt: skip

    def _staging(self, job: Job) -> Path:
        return self.config.staging / job.id

    def _step_merged(self, job: Job) -> dict[str, Any]:
        self._record_catalog(job, status="running")
        return merge_step(self.config, job, hub=self.hub)

    def _step_evaluated(self, job: Job) -> dict[str, Any]:
        return evaluate_step(self.config, job, hub=self.hub)

    def _step_published(self, job: Job) -> dict[str, Any]:
        return publish_step(self.config, job, hub=self.hub)

    def _step_cataloged(self, job: Job) -> dict[str, Any]:
        self._record_catalog(job, status="published")
        return {}

    def _step_commented(self, job: Job) -> dict[str, Any]:
        files = job.data.get("eval_records") or {}
        records = load_records(files) if files else {}
        extra = job.data.get("sweep_table") or ""
        text = comments.success_comment(
            job, url=f"{self.hub.endpoint}/{job.output_repo}", commit=job.data["commit"], records=records,
            unavailable=job.data.get("eval_unavailable"), extra=extra,
        )  # fmt: skip
        _, url = comments.post(self.hub, job.ct_repo, text, bot_user=self.bot_user, marker=job.id)
        return {"discussion_url": url}

    # -- catalog and failure ----------------------------------------------------------------------
    def _record_catalog(self, job: Job, *, status: str, error: str | None = None) -> None:
        from registry.catalog.entries import MergeEntry, MergeInput, merge_entry_id
        from registry.catalog.store import CatalogStore, record_merge

        spec = job.spec
        if not spec.get("recipe") or not job.output_repo:
            return
        inputs = [MergeInput(role="ct", repo=m["repo"], revision=m["sha"]) for m in spec.get("members", [])]
        inputs.append(MergeInput(role="sft", repo=job.sft_repo or "", revision=job.sft_sha or ""))
        base_repo, _, base_rev = str(spec.get("base", "")).partition("@")
        if base_repo and base_rev:
            inputs.append(MergeInput(role="base", repo=base_repo, revision=base_rev))
        results = []
        files = job.data.get("eval_records") or {}
        if status == "published" and "merge" in files:
            from registry.catalog.entries import EvalResult

            record = load_records({"merge": files["merge"]})["merge"]
            results = [
                EvalResult(task=t.task, metric=m, value=v.value, language=record.language, n=t.n_samples)
                for t in record.tasks
                for m, v in t.metrics.items()
            ]
        entry = MergeEntry(
            id=merge_entry_id(output_repo=job.output_repo, recipe_hash=spec["recipe_hash"]),
            method=str(spec["recipe"].get("merge_method", "ties_sv")),
            recipe_hash=spec["recipe_hash"],
            inputs=tuple(inputs),
            output_repo=job.output_repo,
            output_revision=job.data.get("commit") if status == "published" else None,
            status=status,  # type: ignore[arg-type]
            languages=tuple(m["language"] for m in spec.get("members", [])),
            results=tuple(results),
            error=error,
        )
        record_merge(CatalogStore(hub=self.hub, repo_id=self.config.registry), entry)

    def _failed(self, job_id: str, exc: BaseException) -> Job:
        job = self.queue.get(job_id)
        assert job is not None
        error = one_line(exc)
        if is_transient(exc):
            log.warning("job %s: transient failure: %s", job_id, error)
            job = self.queue.retry_later(job_id, error)
            if job.state != "failed":
                return job
        else:
            if isinstance(exc, HubAuthError) and "write" not in error:
                error += " (the bot's token needs write access to its namespace)"
            if not isinstance(exc, RegistryError):
                log.exception("job %s: unexpected failure", job_id)
                error = f"internal error: {type(exc).__name__}: {error}; report it with the job id"
            job = self.queue.fail(job_id, error)
        reasons = list(getattr(exc, "reasons", None) or [])
        self._cleanup(job)
        try:
            if job.output_repo and job.spec.get("recipe"):
                self._record_catalog(job, status="failed", error=job.error)
        except Exception:  # noqa: BLE001 (the job row has the reason)
            log.warning("job %s: could not record the failure in the catalog", job_id, exc_info=True)
        try:
            text = comments.failure_comment(job, job.error or error, reasons)
            _, url = comments.post(self.hub, job.ct_repo, text, bot_user=self.bot_user, marker=f"{job.id}-failed")
            job = self.queue.update(job_id, data={"discussion_url": url, "reasons": reasons})
        except Exception as post_exc:  # noqa: BLE001 (the repo may be gone; the job row has the reason)
            log.warning("job %s: could not comment on %s: %s", job_id, job.ct_repo, one_line(post_exc))
            if reasons:
                job = self.queue.update(job_id, data={"reasons": reasons})
        return job

    def _cleanup(self, job: Job) -> None:
        shutil.rmtree(self._staging(job), ignore_errors=True)


def stall_point(config: BotConfig, name: str) -> None:
    """A crash-test seam: with MERGELING_BOT_STALL=<name>, write `<data>/stalled-<name>` and hang there.

    Points: `merge` (the staging output written, the step not yet recorded), `eval` (records written,
    not recorded), `push` (the commit landed, not recorded). The bench and the tests SIGKILL the bot there.
    """
    import os
    import time

    if os.environ.get("MERGELING_BOT_STALL") == name:
        (config.data / f"stalled-{name}").write_text(str(os.getpid()))
        time.sleep(3600)


def _state_after(step: str) -> str | None:
    return {"merged": "merged", "evaluated": "evaluated"}.get(step)


# -- the heavy steps, as plain functions (the ray executor runs them remotely) -----------------------
def merge_step(config: BotConfig, job: Job, *, hub: Any) -> dict[str, Any]:
    """Merge into `<staging>/<job>/merged` (or each sweep point into `point-<name>`)."""
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge
    from registry.recipe import parse_recipe

    staging = config.staging / job.id
    staging.mkdir(parents=True, exist_ok=True)
    if job.kind == "sweep":
        from bot.recipes import concrete_recipe, point_name

        sweep = job.spec["sweep"]
        recipe_raw = job.spec["recipe"]
        points = {}
        for density in sweep["density"]:
            for slack in sweep["slack"]:
                point = {"density": float(density), "slack": float(slack)}
                raw = concrete_recipe(
                    sweep["template"], cts=[(m["model"], m.get("language")) for m in recipe_raw["models"]
                                            if m.get("role") == "ct"],
                    sft=next(m["model"] for m in recipe_raw["models"] if m.get("role") == "sft"),
                    base=recipe_raw["base_model"], output_repo=job.output_repo or "", point=point,
                )  # fmt: skip
                out = staging / f"point-{point_name(point)}"
                plan = plan_merge(parse_recipe(raw, source=f"job {job.id}"), hub=hub)
                run_merge(plan, out=out, device=config.device, overwrite=True, progress=False)
                points[point_name(point)] = str(out)
        return {"points": points}
    recipe = parse_recipe(job.spec["recipe"], source=f"job {job.id}")
    plan = plan_merge(recipe, hub=hub)
    result = run_merge(plan, out=staging / "merged", device=config.device, overwrite=True, progress=False)
    stall_point(config, "merge")
    return {"merged_dir": str(result.out), "merge_seconds": round(result.seconds, 2)}


def evaluate_step(config: BotConfig, job: Job, *, hub: Any) -> dict[str, Any]:
    """Evaluate the merge (each sweep point), the CT and the SFT on the language's suite."""
    import time

    started = time.monotonic()
    staging = config.staging / job.id
    language = job.language or ""
    members = job.spec.get("members") or []
    models = {"ct": f"{job.ct_repo}@{job.ct_sha}", "sft": f"{job.sft_repo}@{job.sft_sha}"}
    if len(members) > 1:  # a group merge: compare with the CT of the suite's language
        models = {"ct": next(f"{m['repo']}@{m['sha']}" for m in members if m["language"] == language), **models}
        models["sft"] = f"{job.sft_repo}@{job.sft_sha}"
    if job.kind == "sweep":  # choose on dev, then the chosen point on the test suite for the card
        points = {f"point-{name}": path for name, path in job.data["points"].items()}
        dev = evaluate_models(
            config, hub, language=language, models=points, out_dir=staging / "eval-dev", limit=config.eval_limit,
            split="dev",
        )  # fmt: skip
        chosen = _pick_point(job, read_records(dev.files), dev.unavailable)
        models["merge"] = chosen["merged_dir"]
    else:
        chosen = {}
        models["merge"] = job.data["merged_dir"]
    outcome = evaluate_models(
        config, hub, language=language, models=models, out_dir=staging / "eval", limit=config.eval_limit,
        adapter_base=job.spec.get("base"),
    )  # fmt: skip
    stall_point(config, "eval")
    return chosen | {
        "eval_records": read_records(outcome.files), "eval_unavailable": outcome.unavailable,
        "eval_seconds": round(time.monotonic() - started, 2),
    }  # fmt: skip


def _pick_point(job: Job, files: dict[str, str], unavailable: str | None) -> dict[str, Any]:
    sweep = job.spec["sweep"]
    points = job.data["points"]
    scores: dict[str, float | None] = {}
    if not unavailable:
        records = load_records({k: v for k, v in files.items() if k.startswith("point-")})
        scores = {name: metric_value(records[f"point-{name}"], sweep["metric"]) for name in points}
    valid = {name: s for name, s in scores.items() if s is not None}
    if valid:
        pick = max if sweep.get("higher_is_better", True) else min
        best = pick(valid, key=lambda name: valid[name])
    else:
        best = sorted(points)[0]
    rows = "\n".join(
        f"| `{name}` | {'' if scores.get(name) is None else f'{scores[name]:.4f}'} | {'**best**' if name == best else ''} |"
        for name in sorted(points)
    )
    how = f"dev split ({unavailable}: the first point was kept)" if unavailable else "dev split"
    table = (
        f"## Sweep\n\nEvery point is on branch `sweep/<point>`; chosen by `{sweep['metric']}` on the {how}; the "
        f"evaluation above is the chosen point's on the test split.\n\n| point | dev value | |\n|---|---|---|\n{rows}\n"
    )
    return {"best_point": best, "sweep_table": table, "merged_dir": points[best], "sweep_dev": files}


def publish_step(config: BotConfig, job: Job, *, hub: Any) -> dict[str, Any]:
    """One commit of the merge with its card to the output repo (sweeps: each point on its branch first)."""
    import time

    from registry.publish import publish_merge

    started = time.monotonic()
    files = job.data.get("eval_records") or {}
    records = load_records(files) if files else {}
    names = {"ct": "CT", "sft": "SFT", "merge": "merged"}
    comparison = [(names[label], records[label]) for label in ("ct", "sft", "merge") if label in records]
    members = job.spec.get("members") or []
    inputs = "\n".join(f"- CT `{m['repo']}` at commit `{m['sha']}` ({m['language']})" for m in members)
    sections = [
        "## Provenance\n\n"
        f"Merged by the Mergeling bot from [{job.ct_repo}]({hub.endpoint}/{job.ct_repo}) at commit `{job.ct_sha}` "
        f"(job `{job.id}`).\n\n{inputs}\n- SFT `{job.sft_repo}` at commit `{job.sft_sha}`\n"
        f"- base `{job.spec.get('base')}`\n- recipe: `{job.spec.get('recipe_source')}`"
    ]
    if job.data.get("eval_unavailable"):
        from bot.evaluation import describe_unavailable

        sections.append(f"## Evaluation\n\n{describe_unavailable(job.data['eval_unavailable'])}")
    if job.data.get("sweep_table"):
        sections.append(job.data["sweep_table"])
    assert job.output_repo is not None
    best = Path(job.data["merged_dir"])
    published = publish_merge(
        hub, best, job.output_repo, records=[records["merge"]] if "merge" in records else [], comparison=comparison,
        sections=sections, marker=job.id, message=f"Merge {job.ct_repo}@{(job.ct_sha or '')[:7]} (job {job.id})",
    )  # fmt: skip
    stall_point(config, "push")
    if job.kind == "sweep":
        from registry.publish import publish_merge as _publish

        for name, path in job.data["points"].items():
            branch = f"sweep/{name}"
            hub.create_branch(job.output_repo, branch, revision=published.commit, exist_ok=True)
            _publish(hub, Path(path), job.output_repo, marker=f"{job.id}-{name}", revision=branch,
                     message=f"Sweep point {name} (job {job.id})")  # fmt: skip
    return {"commit": published.commit, "publish_seconds": round(time.monotonic() - started, 2)}
