"""`registry bot ...`: serve, run-once, status, retry, cancel (mounted through the registry.commands entry point)."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bot.config import BotConfig
from bot.queue import JobQueue

app = typer.Typer(
    name="bot",
    help=(
        "The merge bot: merges, evaluates and publishes when a CT checkpoint is pushed to the Hub.\n\n"
        "Examples:\n\n"
        "  registry bot serve --registry mergebot/mergeling-registry --namespace mergebot --watch alice "
        "--eval-data-dir ../shared/data\n\n"
        "  registry bot status"
    ),
    no_args_is_help=True,
)


class Executor(StrEnum):
    local = "local"
    ray = "ray"


DataOpt = Annotated[Path, typer.Option("--data", help="The bot's folder: queue, staging, caches.")]
RegistryOpt = Annotated[
    str | None, typer.Option("--registry", envvar="MERGELING_REGISTRY", help="The catalog dataset repo (OWNER/NAME).")
]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help="Where merged models are published.")]
ExecutorOpt = Annotated[Executor, typer.Option(help="Where jobs run.")]
RayAddressOpt = Annotated[str | None, typer.Option(help="A Ray cluster (default: a local Ray).")]
EvalLimitOpt = Annotated[int | None, typer.Option(min=1, help="Documents per eval task.")]
EvalDataDirOpt = Annotated[Path | None, typer.Option(file_okay=False, help="Evaluation data (../shared/data layout).")]
EvalDataRepoOpt = Annotated[
    str | None, typer.Option(envvar="MERGELING_DATA_REPO", help="Evaluation data as a Hub dataset repo.")
]
EvalSuitesOpt = Annotated[Path | None, typer.Option(file_okay=False, help="Evaluation suites (default: recipes/eval).")]
NoEvalOpt = Annotated[
    bool,
    typer.Option(
        "--no-eval",
        help="Publish merges without evaluating them (the card and comment say so); else evaluation data is required.",
    ),
]
LeaseOpt = Annotated[float, typer.Option(min=1, help="A job's lease: a worker silent this long is presumed dead.")]
_DEFAULT_DATA = Path(".mergeling/bot")


def _config(
    ctx: typer.Context,
    *,
    data: Path,
    registry: str | None,
    namespace: str | None,
    watch: list[str] | None = None,
    executor: Executor = Executor.local,
    ray_address: str | None = None,
    eval_limit: int | None = None,
    eval_data_dir: Path | None = None,
    eval_data_repo: str | None = None,
    name_template: str | None = None,
    device: str = "cpu",
    suites_dir: Path | None = None,
    lease_s: float = 60.0,
    no_eval: bool = False,
) -> BotConfig:
    from registry.cli._state import cli_state
    from registry.hub import HubClient

    if no_eval and (eval_data_dir is not None or eval_data_repo):
        raise typer.BadParameter("--no-eval cannot be combined with --eval-data-dir or --eval-data-repo")
    if not no_eval and eval_data_dir is None and not eval_data_repo:
        raise typer.BadParameter(
            "the bot has no evaluation data, so every merge would be published un-evaluated: pass --eval-data-dir DIR "
            "(the ../shared/data layout) or --eval-data-repo OWNER/NAME (`registry hub seed-data`), or --no-eval "
            "to publish un-evaluated merges on purpose",
            param_hint="--eval-data-dir",
        )

    # --endpoint / --token (or HF_ENDPOINT / HF_TOKEN), before or after the command.
    state = cli_state(ctx)
    token, endpoint = state.token, state.endpoint
    if registry is None or namespace is None:
        user = HubClient(endpoint=endpoint, token=token).whoami()
        namespace = namespace or user
        registry = registry or f"{user}/mergeling-registry"
    config = BotConfig(
        data=data,
        registry=registry,
        namespace=namespace,
        watch=tuple(watch or ()),
        endpoint=endpoint,
        token=token,
        eval_limit=eval_limit,
        data_dir=eval_data_dir,
        data_repo=eval_data_repo,
        executor=executor.value,
        ray_address=ray_address,
        device=device,
        no_eval=no_eval,
    )
    if name_template:
        config.name_template = name_template
    if suites_dir is not None:
        config.suites_dir = suites_dir
    config.lease_s = lease_s
    return config


def _secret(secret_file: Path | None) -> str:
    if secret_file is not None:
        secret = secret_file.read_text(encoding="utf-8").strip()
    else:
        secret = os.environ.get("MERGELING_WEBHOOK_SECRET", "").strip()
    if not secret:
        raise typer.BadParameter(
            "set MERGELING_WEBHOOK_SECRET or pass --webhook-secret-file: the receiver refuses unsigned deliveries",
            param_hint="--webhook-secret-file",
        )
    return secret


@app.command("serve")
def serve(
    ctx: typer.Context,
    registry: RegistryOpt = None,
    namespace: NamespaceOpt = None,
    watch: Annotated[
        list[str] | None, typer.Option("--watch", help="A user (or org:NAME) whose CT pushes are merged (repeatable).")
    ] = None,
    data: DataOpt = _DEFAULT_DATA,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 8792,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddressOpt = None,
    eval_limit: EvalLimitOpt = None,
    eval_data_dir: EvalDataDirOpt = None,
    eval_data_repo: EvalDataRepoOpt = None,
    eval_suites: EvalSuitesOpt = None,
    no_eval: NoEvalOpt = False,
    lease_seconds: LeaseOpt = 60.0,
    poll: Annotated[
        float | None, typer.Option("--poll", help="Also list watched repos every N seconds (no webhook needed).")
    ] = None,
    webhook_secret_file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="The webhook secret (else MERGELING_WEBHOOK_SECRET)."),
    ] = None,
    public_url: Annotated[
        str | None, typer.Option(help="The URL the Hub reaches this bot at (default: the listening URL).")
    ] = None,
    no_register: Annotated[bool, typer.Option("--no-register", help="Do not register webhooks on the Hub.")] = False,
    device: Annotated[
        str, typer.Option(help="auto (one worker per GPU, else CPU), cpu or cuda: where merges and evals run.")
    ] = "auto",
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Worker threads (default: one per GPU, else one; 0: receiver only, run `bot run-once` elsewhere).",
        ),
    ] = None,
    name_template: Annotated[
        str | None, typer.Option(help="Output repo name from {ct}, {sft}, {method}, {language}.")
    ] = None,
) -> None:
    """Serve the webhook receiver and the job API, and run jobs as they come.

    HF_ENDPOINT / HF_TOKEN give the Hub and the bot's own token. The URL is the first stdout line.

    Examples:

      MERGELING_WEBHOOK_SECRET=s3cret registry bot serve --registry alice/mergeling-registry --namespace mergebot --watch alice

      registry bot serve --watch alice --poll 60 --executor ray --eval-limit 20
    """
    from bot.server import Service
    from registry.ports import ensure_port_free

    secret = _secret(webhook_secret_file)
    ensure_port_free(host, port, service="bot")
    config = _config(
        ctx,
        data=data, registry=registry, namespace=namespace, watch=watch, executor=executor, ray_address=ray_address,
        eval_limit=eval_limit, eval_data_dir=eval_data_dir, eval_data_repo=eval_data_repo, name_template=name_template,
        suites_dir=eval_suites, lease_s=lease_seconds, device=device, no_eval=no_eval,
    )  # fmt: skip

    def ready(url: str) -> None:
        typer.echo(url)
        sys.stdout.flush()

    Service(
        config,
        secret=secret,
        host=host,
        port=port,
        poll_s=poll,
        register=not no_register,
        public_url=public_url,
        workers=workers,
    ).run(on_ready=ready)


@app.command("run-once")
def run_once(
    ctx: typer.Context,
    registry: RegistryOpt = None,
    namespace: NamespaceOpt = None,
    watch: Annotated[
        list[str] | None, typer.Option("--watch", help="With --poll-first: the namespaces to list.")
    ] = None,
    data: DataOpt = _DEFAULT_DATA,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddressOpt = None,
    eval_limit: EvalLimitOpt = None,
    eval_data_dir: EvalDataDirOpt = None,
    eval_data_repo: EvalDataRepoOpt = None,
    eval_suites: EvalSuitesOpt = None,
    no_eval: NoEvalOpt = False,
    lease_seconds: LeaseOpt = 60.0,
    poll_first: Annotated[
        bool, typer.Option("--poll-first", help="List watched repos and queue new revisions first.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the jobs run as JSON.")] = False,
) -> None:
    """Process what is queued (and, with --poll-first, new revisions of watched repos), then exit: for cron and tests.

    Examples:

      registry bot run-once --registry mergebot/mergeling-registry --namespace mergebot --eval-data-dir ../shared/data

      registry bot run-once --poll-first --watch alice --json --no-eval
    """
    from bot.server import poll_once
    from bot.worker import Worker

    config = _config(
        ctx,
        data=data, registry=registry, namespace=namespace, watch=watch, executor=executor, ray_address=ray_address,
        eval_limit=eval_limit, eval_data_dir=eval_data_dir, eval_data_repo=eval_data_repo,
        suites_dir=eval_suites, lease_s=lease_seconds, no_eval=no_eval,
    )  # fmt: skip
    worker = Worker(config)
    if poll_first:
        poll_once(config, worker.queue, worker.pipeline.hub)
    done = worker.run_until_idle()
    if json_output:
        typer.echo(json.dumps([job.public() for job in done], indent=2))
    else:
        for job in done:
            typer.echo(f"{job.id}  {job.state:<10}  {job.ct_repo}  {job.output_repo or ''}  {job.error or ''}".rstrip())


def _queue(data: Path) -> JobQueue:
    if not (data / "bot.sqlite3").is_file():
        raise typer.BadParameter(f"no bot queue in {data}; pass the --data the bot runs with", param_hint="--data")
    return JobQueue(data / "bot.sqlite3")


@app.command("status")
def status(
    data: DataOpt = _DEFAULT_DATA,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many jobs.")] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="JSON, as GET /jobs.")] = False,
    wait: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="First wait up to N seconds until a job exists and none is queued or running; exit 1 if one "
            "failed or time ran out.",
        ),
    ] = None,
) -> None:
    """List jobs, newest first: id, state, CT, output repo, error; --wait waits for the bot to finish.

    Examples:

      registry bot status

      registry bot status --state failed --json --data .mergeling/demo/bot

      registry bot status --wait 600   (until the bot has no queued or running job)
    """
    if wait is not None:
        _wait_idle(data, wait)
    queue = _queue(data)
    jobs = queue.list(state=state, limit=limit)
    if json_output:
        typer.echo(json.dumps([job.public() for job in jobs], indent=2))
        return
    for job in jobs:
        line = f"{job.id}  {job.state:<10}  {job.kind:<5}  {job.ct_repo}@{(job.ct_sha or '')[:7]}"
        if job.output_repo:
            line += f"  -> {job.output_repo}"
        if job.error:
            line += f"  ({job.error})"
        typer.echo(line)


@app.command("show")
def show(
    ctx: typer.Context,
    job_id: Annotated[str | None, typer.Argument(help="The job id (default: the newest job).")] = None,
    data: DataOpt = _DEFAULT_DATA,
) -> None:
    """Show what a job published: the merged repo, its evaluation table and the bot's comment.

    The Hub is --endpoint / --token (HF_ENDPOINT / HF_TOKEN), before or after the command.

    Examples:

      registry bot show

      registry bot show 3f9c2a7d41be --data .mergeling/demo/bot --endpoint http://127.0.0.1:8791
    """
    from registry.cli._state import cli_state
    from registry.cli.jobreport import print_job_report
    from registry.errors import RegistryError

    queue = _queue(data)
    job = queue.get(job_id) if job_id else next(iter(queue.list(limit=1)), None)
    if job is None:
        raise RegistryError(
            f"no job {job_id!r} in {data}; `registry bot status` lists them" if job_id else f"no job in {data} yet"
        )
    if not print_job_report(job.public(), cli_state(ctx).hub()):
        raise typer.Exit(code=1)


@app.command("retry")
def retry(
    job_id: Annotated[str, typer.Argument(help="The job id (`registry bot status`).")], data: DataOpt = _DEFAULT_DATA
) -> None:
    """Queue a failed, cancelled or superseded job again (it resumes after its last finished step).

    Examples:

      registry bot retry 3f9c2a7d41be   (the id `registry bot status` prints)
    """
    _change(data, job_id, "retry")


@app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job id (`registry bot status`).")], data: DataOpt = _DEFAULT_DATA
) -> None:
    """Cancel a job that has not finished (a running job stops after its current step).

    Examples:

      registry bot cancel 3f9c2a7d41be   (the id `registry bot status` prints)
    """
    _change(data, job_id, "cancel")


def _wait_idle(data: Path, seconds: float) -> None:
    """Until the queue holds a job and none is active; exit 1 after printing the jobs if one failed or
    time ran out (the bot keeps working: run the command again to wait longer)."""
    import time

    from bot.queue import ACTIVE

    deadline = time.monotonic() + seconds
    while True:
        jobs = _queue(data).list(limit=1000) if (data / "bot.sqlite3").is_file() else []
        if jobs and not any(job.state in ACTIVE for job in jobs):
            if any(job.state == "failed" for job in jobs):
                typer.echo("A job failed:", err=True)
                break
            return
        if time.monotonic() >= deadline:
            what = "no job yet" if not jobs else f"{sum(job.state in ACTIVE for job in jobs)} job(s) still active"
            typer.echo(f"Waited {seconds:.0f} s: {what}; the bot keeps going (run this again to wait more)", err=True)
            break
        time.sleep(1)
    for job in _queue(data).list(limit=20) if (data / "bot.sqlite3").is_file() else []:
        typer.echo(f"{job.id}  {job.state:<10}  {job.ct_repo}  {job.output_repo or ''}  {job.error or ''}".rstrip())
    raise typer.Exit(code=1)


def _change(data: Path, job_id: str, action: str) -> None:
    from registry.errors import RegistryError

    queue = _queue(data)
    try:
        job = getattr(queue, action)(job_id)
    except KeyError:
        raise RegistryError(f"no job {job_id!r} in {data}; `registry bot status` lists them") from None
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    typer.echo(f"{job.id}  {job.state}")
