"""The `registry` command line: one module per command group, mounted here.

Each module in this package exposes `register(app)`, which adds its commands to the root app.
Errors: a `RegistryError` becomes a one-line message on stderr and exit code 1; usage errors exit
2 (click's convention). Set `MERGELING_DEBUG=1` to see the traceback instead (never with locals:
they may hold tokens).

The root callback reads the global options once (`-q/-v`, and the Hub's `--endpoint/--token/
--registry`) into `ctx.obj` (`registry.cli._state.CliState`), which builds the Hub client and the
catalog store for the commands that need them. The global options may also follow any
subcommand, plug-in groups included (`registry eval MODEL -q`, `registry bot serve --token T`),
unless that command declares an option of the same name itself (`registry bot serve --registry`).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from registry import __version__
from registry.cli import catalog, demo, evaluate, hub, lab, merge, push
from registry.cli._state import CliState, hoist_global_options, stderr_console
from registry.errors import RegistryError

if TYPE_CHECKING:
    # typer >= 0.23 vendors click: its groups' methods take this Context (typer.Context subclasses it).
    from typer._click.core import Context as ClickContext


class _ErrorMappingGroup(TyperGroup):
    """Root group: turns our errors into a clean message and exit 1, wherever they are raised, and
    accepts the global options after any subcommand too."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        commands = {name: _option_names(command) for name, command in self.commands.items()}
        return super().parse_args(ctx, hoist_global_options(args, commands=commands))

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        from registry.cli._help import humanize

        humanize(self)
        # TyperGroup.main with rich_markup_mode=None for errors only (help keeps its panels): usage
        # errors print as click prints them, the message on one "Error: ..." line, instead of in a
        # rich panel that wraps it at the terminal width.
        from typer.core import _main

        return _main(
            self,
            args=args,
            prog_name=prog_name,
            complete_var=complete_var,
            standalone_mode=standalone_mode,
            windows_expand_args=windows_expand_args,
            rich_markup_mode=None,
            **extra,
        )

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except RegistryError as exc:
            if os.environ.get("MERGELING_DEBUG"):
                raise
            stderr_console().print(f"[bold red]Error:[/] {_escape(str(exc))}")
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            stderr_console().print("[bold red]Interrupted.[/]")
            raise typer.Exit(code=130) from None


def _option_names(command: Any) -> set[str]:
    """Every option name a command (and, for a group, its subcommands) declares."""
    names = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("-")}
    for sub in getattr(command, "commands", {}).values():
        names |= _option_names(sub)
    return names


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


app = typer.Typer(
    cls=_ErrorMappingGroup,
    name="registry",
    help=(
        "Mergeling: merge continually pre-trained (CT) low-resource-language models with English SFT "
        "models (TIES-SV), keep a registry of checkpoints on a Hugging Face Hub, evaluate in the "
        "target language.\n\n"
        "Examples:\n\n"
        "  registry demo\n\n"
        "  registry merge recipes/demo-tiny.yaml --dry-run\n\n"
        "  registry --endpoint http://127.0.0.1:8791 list   (Hub options go before or after the command)"
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mergeling {__version__}")
        raise typer.Exit()


_HUB_PANEL = "Hub (also accepted after the command)"


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug); also after the command.")
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars, warnings only; also after the command.")
    ] = False,
    endpoint: Annotated[
        str | None,
        typer.Option(envvar="HF_ENDPOINT", rich_help_panel=_HUB_PANEL, help="Hub URL (default: huggingface.co)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="HF_TOKEN", rich_help_panel=_HUB_PANEL, show_default=False, help="Hub token (default: stored login)."
        ),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            envvar="MERGELING_REGISTRY",
            rich_help_panel=_HUB_PANEL,
            help="Registry dataset repo OWNER/NAME (default: <your namespace>/mergeling-registry).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=stderr_console(), show_path=False, show_time=False)],
        force=True,
    )
    # huggingface_hub has a stderr handler of its own and also propagates to the root logger, so
    # each of its warnings (retries, say) would print twice.
    logging.getLogger("huggingface_hub").propagate = False
    # httpx logs every request at INFO; keep that for -vv (DEBUG) only.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    _set_transformers_verbosity(quiet=quiet)
    state = CliState(verbose=verbose, quiet=quiet, endpoint=endpoint, token=token, registry=registry)
    if quiet or not sys.stderr.isatty():
        _disable_library_bars()
    ctx.obj = state


def _disable_library_bars() -> None:
    """-q, or stderr not a terminal (a log file, a pipe): no library draws a bar either.

    huggingface_hub reads HF_HUB_DISABLE_PROGRESS_BARS when imported ("Fetching N files"), and
    transformers follows huggingface_hub's switch; children (the demo's hub, bot and Space) inherit
    it. Our own bars follow `registry.progress`, lm-eval's and datasets' `registry.evaluate.bars`.
    """
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils.tqdm import disable_progress_bars

        disable_progress_bars()


def _set_transformers_verbosity(*, quiet: bool) -> None:
    """transformers logs through its own handler at WARNING, set when it is first imported, so the
    root logger's level does not reach it: -q sets its verbosity itself. Not loaded yet, it reads
    TRANSFORMERS_VERBOSITY when it is (importing it just for this took 0.7 s of every -q command,
    a merge included); otherwise it is left alone unless already loaded."""
    import sys

    if "transformers" not in sys.modules:
        if quiet:
            os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity(logging.ERROR if quiet else logging.WARNING)


for _module in (merge, push, demo, catalog, hub, evaluate, lab):
    _module.register(app)


def _mount_plugins(root: typer.Typer) -> None:
    """Mount the command groups other packages declare (entry point group `registry.commands`).

    The bot and the Space import `registry`; `registry` never imports them. They reach the CLI the
    way any plug-in does, by entry point, so `registry` works unchanged when they are absent.
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group="registry.commands"):
        try:
            group = ep.load()
        except ModuleNotFoundError as exc:
            # The declaring package is not importable here (e.g. a partial install): skip that group.
            if exc.name and ep.value.split(":")[0].startswith(exc.name):
                logging.getLogger(__name__).debug("command group %s not mounted: %s", ep.name, exc)
                continue
            raise
        root.add_typer(group, name=ep.name)


def _builtin_command(argv: Sequence[str]) -> bool:
    """The command line names one of `registry`'s own commands first (`registry merge ...`): no plug-in
    group is needed, so none is imported (the bot's import cost 0.3-1.8 s of every merge's start-up)."""
    names = {c.name or (c.callback.__name__.replace("_", "-") if c.callback else "") for c in app.registered_commands}
    names |= {g.name or "" for g in app.registered_groups}
    words = [word for word in argv[1:] if not word.startswith("-")]
    return bool(words) and words[0] in names - {""}


if not (os.path.basename(sys.argv[0]) == "registry" and _builtin_command(sys.argv)):
    _mount_plugins(app)


def main() -> None:
    """Console-script entry point."""
    # Commands import torch (and transformers) lazily: hundreds of thousands of long-lived
    # objects, during which the default young-generation threshold (700) ran collections worth
    # 0.3-0.5 s of a merge's start-up. Young collections every 50 000 allocations instead.
    gc.set_threshold(50_000, 20, 20)
    app()
