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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import comments
from bot.access import is_private_repo
from bot.config import BotConfig
from bot.errors import NotACheckpoint, Superseded, public_text
from bot.evaluation import evaluate_models, language_tables, load_records, metric_value, read_records
from bot.models import StepData
from bot.pairing import expand, verify_ct
from bot.queue import Job, JobQueue
from registry.errors import HubAuthError, HubConflictError, HubError, HubUnavailableError, RegistryError

if TYPE_CHECKING:
    from registry.hub import HubClient
    from registry.merge.plan import MergePlan

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


class Pipeline:
    """Runs jobs of one queue with one Hub identity (the bot's)."""

    def __init__(self, config: BotConfig, queue: JobQueue, *, owner: str, hub: HubClient | None = None) -> None:
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
                results = remote(self.config, job)
                for name in ("merged", "evaluated", "published"):
                    if name in results:
                        job = self.queue.finish_step(job.id, name, results[name], state=_state_after(name))
                continue
            data = getattr(self, f"_step_{step}")(job)
            job = self.queue.finish_step(job.id, step, data, state=_state_after(step))
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
        planned = expand(self.config, self.hub, ct, custom=job.spec.custom_recipe)
        first, rest = planned[0], planned[1:]
        for item in rest:
            self.queue.enqueue(
                key=item.key, kind=item.kind, ct_repo=job.ct_repo, ct_sha=job.ct_sha, language=item.language,
                sft_repo=item.sft_repo, sft_sha=item.sft_sha, output_repo=item.output_repo, spec=item.spec,
                submitted_by=job.submitted_by,
            )  # fmt: skip
        twin = self.queue.add_key(job.id, first.key)
        if twin is not None:
            return self.queue.update(
                job.id, state="superseded", error=f"the same merge is job {twin.id}", lease_owner=None
            )
        return self.queue.update(
            job.id, kind=first.kind, language=first.language, sft_repo=first.sft_repo,
            sft_sha=first.sft_sha, output_repo=first.output_repo, spec=first.spec, step="paired",
            data=StepData(language=ct.language),
        )  # fmt: skip

    def _staging(self, job: Job) -> Path:
        return self.config.staging / job.id

    def _step_merged(self, job: Job) -> StepData:
        self._record_catalog(job, status="running")
        return merge_step(self.config, job, hub=self.hub)

    def _step_evaluated(self, job: Job) -> StepData:
        return evaluate_step(self.config, job, hub=self.hub)

    def _step_published(self, job: Job) -> StepData:
        return publish_step(self.config, job, hub=self.hub)

    def _step_cataloged(self, job: Job) -> StepData:
        self._record_catalog(job, status="published")
        self._record_checkpoint_results(job)
        return StepData()

    def _step_commented(self, job: Job) -> StepData:
        records = load_records(job.data.eval_records)
        unavailable = job.data.eval_unavailable
        extra = job.data.sweep_table or ""
        if job.data.eval_by_language or job.data.eval_unavailable_by_language:  # a group: one table per language
            by_language = {lang: load_records(texts) for lang, texts in job.data.eval_by_language.items()}
            tables = language_tables(by_language, job.data.eval_unavailable_by_language, heading="####")
            records, unavailable, extra = {}, None, "\n\n".join(p for p in (tables, extra) if p)
        assert job.data.commit is not None
        text = comments.success_comment(
            job, url=f"{self.hub.endpoint}/{job.output_repo}", commit=job.data.commit, records=records,
            unavailable=unavailable, extra=extra,
        )  # fmt: skip
        _, url = comments.post(self.hub, job.ct_repo, text, bot_user=self.bot_user, marker=job.id)
        return StepData(discussion_url=url)

    # -- catalog and failure ----------------------------------------------------------------------
    def _record_catalog(self, job: Job, *, status: str, error: str | None = None) -> None:
        from registry.catalog.entries import MergeInput
        from registry.catalog.store import CatalogStore, record_merge
        from registry.publish import build_merge_entry

        spec = job.spec
        if not spec.recipe or not job.output_repo:
            return
        if spec.private and not is_private_repo(self.hub, self.config.registry, repo_type="dataset"):
            return  # a merge of private or gated inputs leaves no trace in a public catalog
        inputs = [MergeInput(role="ct", repo=m.repo, revision=m.sha) for m in spec.members]
        inputs.append(MergeInput(role="sft", repo=job.sft_repo or "", revision=job.sft_sha or ""))
        base_repo, _, base_rev = spec.base.partition("@")
        if base_repo and base_rev:
            inputs.append(MergeInput(role="base", repo=base_repo, revision=base_rev))
        per_language = job.data.eval_by_language or {"": job.data.eval_records}
        merge_texts = [texts["merge"] for _, texts in sorted(per_language.items()) if "merge" in texts]
        records = list(load_records({str(i): t for i, t in enumerate(merge_texts)}).values())
        entry = build_merge_entry(
            output_repo=job.output_repo, method=spec.method, recipe_hash=spec.recipe_hash, inputs=inputs,
            languages=[m.language for m in spec.members], status=status, commit=job.data.commit,
            records=records if status == "published" else [], error=error,
        )  # fmt: skip
        record_merge(CatalogStore(hub=self.hub, repo_id=self.config.registry), entry)

    def _record_checkpoint_results(self, job: Job) -> None:
        """The CT's (each member's, in its language) and the SFT's evaluation numbers, as results of their
        catalog entries (what the Space's leaderboard shows for CT and SFT rows). The bot evaluates no
        CT-then-SFT checkpoint, so none is recorded for one."""
        from registry.catalog.entries import ct_entry_id
        from registry.catalog.store import CatalogStore
        from registry.errors import CatalogError
        from registry.publish import eval_results, with_results

        spec = job.spec
        if spec.private and not is_private_repo(self.hub, self.config.registry, repo_type="dataset"):
            return
        per_language = job.data.eval_by_language or {job.language or "": job.data.eval_records}
        found: dict[str, list[Any]] = {}
        for language, texts in per_language.items():
            records = load_records(texts)
            member = next((m for m in spec.members if m.language == language), None)
            if "ct" in records:
                ct_id = (
                    ct_entry_id(repo=member.repo, revision=member.sha, language=member.language)
                    if member
                    else spec.ct_entry
                )
                found.setdefault(ct_id, []).extend(eval_results([records["ct"]]))
            if "sft" in records and spec.sft_entry:
                found.setdefault(spec.sft_entry, []).extend(eval_results([records["sft"]]))
        store = CatalogStore(hub=self.hub, repo_id=self.config.registry)
        for entry_id, results in found.items():
            if not entry_id or not results:
                continue
            try:
                entry = store.get(entry_id)
            except CatalogError:
                continue  # not in this catalog (e.g. recorded elsewhere): nothing to add to
            merged = with_results(getattr(entry, "results", ()), results)
            if merged != getattr(entry, "results", ()):
                store.add(entry.model_copy(update={"results": merged}), replace=True)

    def _failed(self, job_id: str, exc: BaseException) -> Job:
        job = self.queue.get(job_id)
        assert job is not None
        error = public_text(one_line(exc), roots=(self.config.data,))
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
        reasons = [public_text(str(r), roots=(self.config.data,)) for r in getattr(exc, "reasons", None) or []]
        self._cleanup(job)
        try:
            if job.output_repo and job.spec.recipe:
                self._record_catalog(job, status="failed", error=job.error)
        except Exception:  # noqa: BLE001 (the job row has the reason)
            log.warning("job %s: could not record the failure in the catalog", job_id, exc_info=True)
        try:
            text = comments.failure_comment(job, job.error or error, reasons)
            _, url = comments.post(self.hub, job.ct_repo, text, bot_user=self.bot_user, marker=f"{job.id}-failed")
            job = self.queue.update(job_id, data=StepData(discussion_url=url, reasons=reasons))
        except Exception as post_exc:  # noqa: BLE001 (the repo may be gone; the job row has the reason)
            log.warning("job %s: could not comment on %s: %s", job_id, job.ct_repo, one_line(post_exc))
            if reasons:
                job = self.queue.update(job_id, data=StepData(reasons=reasons))
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
def merge_step(config: BotConfig, job: Job, *, hub: HubClient) -> StepData:
    """Merge into `<staging>/<job>/merged` (or each sweep point into `point-<name>`)."""
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge
    from registry.recipe import parse_recipe

    staging = config.staging / job.id
    staging.mkdir(parents=True, exist_ok=True)
    if job.kind == "sweep":
        from bot.recipes import point_name

        sweep = job.spec.sweep
        assert sweep is not None
        concrete = parse_recipe(job.spec.recipe, source=f"job {job.id}")
        points = {}
        for density in sweep.density:
            for slack in sweep.slack:
                point = {"density": float(density), "slack": float(slack)}
                out = staging / f"point-{point_name(point)}"
                plan = plan_merge(concrete.at_point(point, source=f"job {job.id}"), hub=hub)
                check_plan_tokenizers(plan)
                run_merge(plan, out=out, device=config.device, overwrite=True, progress=False)
                points[point_name(point)] = str(out)
        return StepData(points=points)
    recipe = parse_recipe(job.spec.recipe, source=f"job {job.id}")
    plan = plan_merge(recipe, hub=hub)
    check_plan_tokenizers(plan)
    result = run_merge(plan, out=staging / "merged", device=config.device, overwrite=True, progress=False)
    stall_point(config, "merge")
    return StepData(merged_dir=str(result.out), merge_seconds=round(result.seconds, 2))


def check_plan_tokenizers(plan: MergePlan) -> None:
    """The CT(s), SFT and base of a planned merge share one tokenizer (see bot/vocab.py).

    Raises:
        TokenizerMismatchError: the first differing id and both strings.
    """
    from bot.vocab import check_same_tokenizer

    roles = {m.model: m.role or "input" for m in plan.recipe.models}
    labelled = []
    for i, src in enumerate(plan.sources):
        if src.path is None:
            continue
        role = "base" if i == plan.base_index else roles.get(src.ref, "input")
        order = {"ct": 0, "sft": 1, "base": 2}.get(role, 3)
        labelled.append((order, f"{role if role == 'base' else role.upper()} {src.repo_id or src.ref}", src.path))
    check_same_tokenizer({label: path for _, label, path in sorted(labelled, key=lambda x: x[0])})


def evaluate_step(config: BotConfig, job: Job, *, hub: HubClient) -> StepData:
    """Evaluate the merge (each sweep point), the CT and the SFT on the language's suite."""
    import time

    started = time.monotonic()
    staging = config.staging / job.id
    language = job.language or ""
    members = job.spec.members
    models = {"ct": f"{job.ct_repo}@{job.ct_sha}", "sft": f"{job.sft_repo}@{job.sft_sha}"}
    if len(members) > 1:  # a group merge: compare with the CT of the suite's language
        models = {"ct": next(f"{m.repo}@{m.sha}" for m in members if m.language == language), **models}
        models["sft"] = f"{job.sft_repo}@{job.sft_sha}"
    if job.kind == "sweep":  # choose on dev, then the chosen point on the test suite for the card
        points = {f"point-{name}": path for name, path in job.data.points.items()}
        dev = evaluate_models(
            config, hub, language=language, models=points, out_dir=staging / "eval-dev", limit=config.eval_limit,
            split="dev",
        )  # fmt: skip
        chosen = _pick_point(job, read_records(dev.files), dev.unavailable)
    else:
        chosen = StepData()
    merged_dir = chosen.merged_dir or job.data.merged_dir
    assert merged_dir is not None
    models["merge"] = merged_dir
    if job.kind == "group":  # the paper's claim is about every member language: evaluate on each
        return chosen.model_copy(
            update=_evaluate_languages(config, job, hub=hub, merged_dir=merged_dir, started=started)
        )
    outcome = evaluate_models(
        config, hub, language=language, models=models, out_dir=staging / "eval", limit=config.eval_limit,
        adapter_base=job.spec.base or None,
    )  # fmt: skip
    stall_point(config, "eval")
    return chosen.model_copy(
        update={"eval_records": read_records(outcome.files), "eval_unavailable": outcome.unavailable,
                "eval_seconds": round(time.monotonic() - started, 2)},
    )  # fmt: skip


def _evaluate_languages(
    config: BotConfig, job: Job, *, hub: HubClient, merged_dir: str, started: float
) -> dict[str, object]:
    """A group merge on each member language's suite, with that language's CT and the SFT."""
    import time

    by_language: dict[str, dict[str, str]] = {}
    unavailable: dict[str, str] = {}
    for member in job.spec.members:
        models = {"ct": f"{member.repo}@{member.sha}", "sft": f"{job.sft_repo}@{job.sft_sha}", "merge": merged_dir}
        outcome = evaluate_models(
            config, hub, language=member.language, models=models, limit=config.eval_limit,
            out_dir=config.staging / job.id / "eval" / member.language, adapter_base=job.spec.base or None,
        )  # fmt: skip
        by_language[member.language] = read_records(outcome.files)
        if outcome.unavailable:
            unavailable[member.language] = outcome.unavailable
    stall_point(config, "eval")
    primary = job.language or job.spec.members[0].language
    return {
        "eval_records": by_language.get(primary, {}), "eval_unavailable": unavailable.get(primary),
        "eval_by_language": by_language, "eval_unavailable_by_language": unavailable,
        "eval_seconds": round(time.monotonic() - started, 2),
    }  # fmt: skip


def _pick_point(job: Job, files: dict[str, str], unavailable: str | None) -> StepData:
    sweep = job.spec.sweep
    assert sweep is not None
    points = job.data.points
    scores: dict[str, float | None] = {}
    if not unavailable:
        records = load_records({k: v for k, v in files.items() if k.startswith("point-")})
        scores = {name: metric_value(records[f"point-{name}"], sweep.metric) for name in points}
    valid = {name: s for name, s in scores.items() if s is not None}
    if valid:
        pick = max if sweep.higher_is_better else min
        best = pick(valid, key=lambda name: valid[name])
    else:
        best = sorted(points)[0]
    rows = "\n".join(
        f"| `{name}` | {'' if scores.get(name) is None else f'{scores[name]:.4f}'} | {'**best**' if name == best else ''} |"
        for name in sorted(points)
    )
    how = f"dev split ({unavailable}: the first point was kept)" if unavailable else "dev split"
    table = (
        f"## Sweep\n\nEvery point is on branch `sweep/<point>`; chosen by `{sweep.metric}` on the {how}; the "
        f"evaluation above is the chosen point's on the test split.\n\n| point | dev value | |\n|---|---|---|\n{rows}\n"
    )
    return StepData(best_point=best, sweep_table=table, merged_dir=points[best], sweep_dev=files)


def publish_step(config: BotConfig, job: Job, *, hub: HubClient) -> StepData:
    """One commit of the merge with its card to the output repo (sweeps: each point on its branch first)."""
    import time

    from registry.publish import publish_merge

    started = time.monotonic()
    records = load_records(job.data.eval_records)
    names = {"ct": "CT", "sft": "SFT", "merge": "merged"}
    comparison = [(names[label], records[label]) for label in ("ct", "sft", "merge") if label in records]
    merge_records = [records["merge"]] if "merge" in records else []
    by_language = {lang: load_records(texts) for lang, texts in job.data.eval_by_language.items()}
    if len(by_language) > 1 or job.data.eval_unavailable_by_language:
        comparison = []  # one table per member language instead (below)
        merge_records = [recs["merge"] for _, recs in sorted(by_language.items()) if "merge" in recs]
    inputs = "\n".join(f"- CT `{m.repo}` at commit `{m.sha}` ({m.language})" for m in job.spec.members)
    sections = [
        "## Provenance\n\n"
        f"Merged by the Mergeling bot from [{job.ct_repo}]({hub.endpoint}/{job.ct_repo}) at commit `{job.ct_sha}` "
        f"(job `{job.id}`).\n\n{inputs}\n- SFT `{job.sft_repo}` at commit `{job.sft_sha}`\n"
        f"- base `{job.spec.base}`\n- recipe: `{job.spec.recipe_source}`"
        + (f"\n- requested by `{job.submitted_by}`" if job.submitted_by else "")
    ]
    if comparison == [] and (by_language or job.data.eval_unavailable_by_language):
        sections.append(language_tables(by_language, job.data.eval_unavailable_by_language, heading="## Evaluation:"))
    elif job.data.eval_unavailable:
        from bot.evaluation import describe_unavailable

        sections.append(f"## Evaluation\n\n{describe_unavailable(job.data.eval_unavailable)}")
    if job.data.sweep_table:
        sections.append(job.data.sweep_table)
    assert job.output_repo is not None and job.data.merged_dir is not None
    best = Path(job.data.merged_dir)
    published = publish_merge(
        hub, best, job.output_repo, records=merge_records, comparison=comparison,
        sections=sections, marker=job.id, message=f"Merge {job.ct_repo}@{(job.ct_sha or '')[:7]} (job {job.id})",
        private=job.spec.private, strict=True,
    )  # fmt: skip
    stall_point(config, "push")
    if job.kind == "sweep":
        from registry.publish import publish_merge as _publish

        for name, path in job.data.points.items():
            branch = f"sweep/{name}"
            hub.create_branch(job.output_repo, branch, revision=published.commit, exist_ok=True)
            _publish(hub, Path(path), job.output_repo, marker=f"{job.id}-{name}", revision=branch,
                     message=f"Sweep point {name} (job {job.id})")  # fmt: skip
    return StepData(commit=published.commit, publish_seconds=round(time.monotonic() - started, 2))
