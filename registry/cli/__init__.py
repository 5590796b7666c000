"""The `registry` command line: one module per command group, mounted here.

Each module in this package exposes `register(app)`, which adds its commands to the root app.
Errors: a `RegistryError` becomes a one-line message on stderr and exit code 1; usage errors exit
2 (click's convention). Set `MERGELING_DEBUG=1` to see the traceback instead (never with locals:
they may hold tokens).
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from registry import __version__
from registry.cli import catalog, demo, evaluate, hub, lab, merge, push
from registry.cli._state import CliState, stderr_console
from registry.errors import RegistryError


class _ErrorMappingGroup(TyperGroup):
    """Root group: turns our errors into a clean message and exit 1, wherever they are raised."""

    def invoke(self, ctx: click.Context) -> Any:
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


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


app = typer.Typer(
    cls=_ErrorMappingGroup,
    name="registry",
    help=(
        "Mergeling: merge continually pre-trained (CT) low-resource-language models with English SFT "
        "models (TIES-SV), keep a registry of checkpoints on a Hugging Face Hub, evaluate in the "
        "target language."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mergeling {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, warnings only.")] = False,
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
    ctx.obj = CliState(verbose=verbose, quiet=quiet)


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


_mount_plugins(app)


def main() -> None:
    """Console-script entry point."""
    app()
