"""`registry eval`: evaluate a model on a language suite, and compare results files.

`eval` is both a command and a group: `registry eval MODEL --suite ...` runs the default `run`
subcommand, `registry eval compare A.json B.json` the comparison.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from registry.cli._state import cli_state, stderr_console, stdout_console
from registry.device import Device

if TYPE_CHECKING:
    # typer >= 0.23 vendors click: its groups' methods take this Context (typer.Context subclasses it).
    from typer._click.core import Context as ClickContext

    from registry.evaluate.suite import Suite
    from registry.hub import HubClient

_HELP = """Evaluate models in the target language (lm-evaluation-harness) and compare results.

Two forms:

  registry eval MODEL --suite recipes/eval/ben_Beng.yaml --data-dir DIR [--limit N] --output results.json
  MODEL is a checkpoint directory or a Hub repo OWNER/NAME, optionally @REVISION;
  the data comes from --data-dir (the ../shared/data layout) or --data-repo OWNER/NAME (a Hub
  dataset repo, see `registry hub seed-data`); Hub access takes --endpoint/--token (or HF_ENDPOINT,
  HF_TOKEN); this form is `registry eval run ...`.

  registry eval compare RESULTS.json... [--ct-sft CT_SFT.json] [--markdown]

Examples:

  registry eval ./merged --suite recipes/eval/ben_Beng.yaml --data-dir ../shared/data --limit 50 --output merged.json

  registry eval compare sft.json merged.json --markdown
"""


class DefaultCommandGroup(TyperGroup):
    """A group that runs `default_command` when the first argument is not one of its commands.

    So `registry eval MODEL ...` means `registry eval run MODEL ...`, while `registry eval
    compare ...` and `registry eval --help` keep their usual meaning.
    """

    default_command = "run"

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        help_names = set(ctx.help_option_names) | {"--help"}
        if args and args[0] not in self.commands and args[0] not in help_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(cls=DefaultCommandGroup, help=_HELP, no_args_is_help=True, rich_markup_mode=None)


@eval_app.command(
    "run",
    epilog="Hub (models and --data-repo): --endpoint URL (HF_ENDPOINT), --token TOKEN (HF_TOKEN), before or after.",
)
def run_command(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="A local checkpoint directory, or a Hub repo `owner/name\\[@revision]`.")
    ],
    suite: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="Suite file, e.g. recipes/eval/ben_Beng.yaml.")
    ],
    output: Annotated[
        Path | None, typer.Option(dir_okay=False, help="Write the results JSON here (default: print it on stdout).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            exists=True, file_okay=False, help="Local data in the ../shared/data layout (instead of --data-repo)."
        ),
    ] = None,
    data_repo: Annotated[
        str | None,
        typer.Option(
            envvar="MERGELING_DATA_REPO",
            help="Hub dataset repo `owner/name\\[@rev]` holding the data (see `registry hub seed-data`).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N documents per task (results are labelled as limited).")
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            help="Run only this task of the suite (repeat for several); lm-eval's own task names "
            "(belebele_ben_Beng, mgsm_native_cot_bn; lm_eval:NAME where ours has that name) add that task (online).",
        ),
    ] = None,
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.auto,
    batch_size: Annotated[
        int,
        typer.Option(
            min=0, help="Rows per batch (N full-length rows a scoring pass, N a generation batch); 0: from free memory."
        ),
    ] = 0,
    tasks_dir: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Task configs (default: ../tasks beside the suite's folder).",
            rich_help_panel="Advanced",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Results cache (default: $MERGELING_CACHE/eval or ~/.cache/mergeling/eval).",
            rich_help_panel="Advanced",
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the results cache.", rich_help_panel="Advanced")
    ] = False,
) -> None:
    """Evaluate MODEL on every task of a suite (cached per model and task).

    Examples:

      registry eval run ./merged --suite recipes/eval/ben_Beng.yaml --data-dir ../shared/data --limit 50

      registry eval alice/tiny-sft --suite recipes/eval/ben_Beng.yaml --data-repo alice/eval-data --output sft.json
    """
    from registry.evaluate.bars import harness_progress
    from registry.evaluate.cache import ResultCache, default_cache_dir
    from registry.evaluate.runner import evaluate_model
    from registry.evaluate.sources import resolve_model
    from registry.evaluate.suite import load_suite, select_tasks
    from registry.evaluate.tasks import find_task

    state = cli_state(ctx)
    # lm-eval warns once per request when a prompt is truncated (constant with tiny models) and
    # logs every step at INFO; show that only with -v / -vv.
    # transformers warns that a FLORES document is longer than the model's context: harmless, since
    # lm-eval scores it in rolling windows.
    level = {0: logging.ERROR, 1: logging.WARNING}.get(state.verbose, logging.DEBUG)
    for name in ("lm_eval", "transformers.tokenization_utils_base"):
        logging.getLogger(name).setLevel(level)
    tasks_root = tasks_dir or suite.resolve().parent.parent / "tasks"
    spec = select_tasks(_with_lm_eval_tasks(load_suite(suite), task or [], tasks_root), task or [])
    # lm-eval's bars: not with -q, nor into a log file or a pipe (each task logs its lines instead)
    bars = state.progress and sys.stderr.isatty()
    with harness_progress(enabled=bars):  # -q: huggingface_hub's download bars too
        files = [rel for item in spec.tasks for rel in find_task(item.task, tasks_dir=tasks_root).data_files().values()]
        if data_dir is not None:
            data_root, data_source = data_dir.resolve(), str(data_dir.resolve())
        elif files:
            data_root, data_source = _fetch_data(data_repo, files, state.hub())
        else:  # only tasks that name their own dataset (milic): no data repo to fetch
            data_root, data_source = Path.cwd(), "datasets named by the task configs"
        resolved = resolve_model(model, hub=state.hub(), progress=state.progress)
    record = evaluate_model(
        resolved,
        suite=spec,
        suite_path=suite,
        tasks_dir=tasks_root,
        data_dir=data_root,
        data_source=data_source,
        limit=limit,
        device=device.value,
        batch_size=batch_size or None,
        cache=None if no_cache else ResultCache(cache_dir or default_cache_dir()),
        progress=bars,
    )
    from registry.evaluate.compare import build_comparison, render_rich

    if output is None:
        typer.echo(record.model_dump_json(indent=2))
    else:
        record.save(output)
        typer.echo(str(output))
    if not state.quiet:  # -q: the results and warnings only
        stderr_console().print(render_rich(build_comparison([record])))
    if record.limited:
        stderr_console().print("[yellow]Limited run: some numbers cover only part of their split (marked †).[/]")


def _with_lm_eval_tasks(suite: Suite, names: list[str], tasks_dir: Path) -> Suite:
    """The suite plus the `--task` names that are lm-eval's own tasks (`lm_eval:NAME`, or a name with
    no config of ours): an online user can run the harness's maintained tasks directly."""
    from registry.evaluate.suite import SuiteTask
    from registry.evaluate.tasks import LM_EVAL_PREFIX, find_task

    known = {t.task for t in suite.tasks}
    extra = []
    for name in names:
        if name in known or (tasks_dir / f"{name}.yaml").is_file():
            continue  # in the suite, or ours (select_tasks says it is not in the suite)
        if name.startswith(LM_EVAL_PREFIX) or find_task(name, tasks_dir=tasks_dir).lm_eval:
            extra.append(SuiteTask(task=name))
    return suite.model_copy(update={"tasks": (*suite.tasks, *extra)}) if extra else suite


def _fetch_data(data_repo: str | None, files: list[str], hub: HubClient) -> tuple[Path, str]:
    """The suite's data files from `data_repo`, with errors that name both ways to give data."""
    from registry.errors import DataNotFoundError, HubRepoNotFoundError
    from registry.evaluate.sources import fetch_data_repo

    either = (
        "pass --data-dir DIR (a folder laid out like ../shared/data) or --data-repo OWNER/NAME (a Hub dataset "
        "repo; create one with `registry hub seed-data DIR --repo OWNER/NAME`)"
    )
    if data_repo is None:
        raise DataNotFoundError(f"the suite's tasks read data files ({files[0]}, ...): {either}", path=files[0])
    try:
        return fetch_data_repo(data_repo, files=files, hub=hub)
    except HubRepoNotFoundError as exc:
        raise DataNotFoundError(f"data repo {data_repo} not found on {hub.endpoint}: {either}") from exc


@eval_app.command("compare")
def compare_command(
    results: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, help="Results files; the first is the reference.")
    ],
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print GitHub markdown instead of a rich table.")
    ] = False,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="Column name per results file (repeat, in order).")
    ] = None,
    ct_sft: Annotated[
        Path | None,
        typer.Option(
            "--ct-sft",
            exists=True,
            dir_okay=False,
            help="The CT-then-SFT baseline's results: a last column, and each cell's difference to it.",
        ),
    ] = None,
) -> None:
    """Print one table of RESULTS (models x metrics) with differences to the first.

    Examples:

      registry eval compare sft.json ct.json merged.json

      registry eval compare sft.json merged.json --markdown --label SFT --label merged
    """
    from registry.evaluate.compare import build_comparison, render_markdown, render_rich
    from registry.evaluate.records import load_record

    baseline = load_record(ct_sft) if ct_sft is not None else None
    comparison = build_comparison([load_record(p) for p in results], labels=label or None, ct_sft=baseline)
    if markdown:
        typer.echo(render_markdown(comparison), nl=False)
    else:
        stdout_console().print(render_rich(comparison))


def register(app: typer.Typer) -> None:
    """Mount `registry eval` (a command and a group: see DefaultCommandGroup)."""
    app.add_typer(eval_app, name="eval")
