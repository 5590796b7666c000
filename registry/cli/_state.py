"""State the root callback passes to every command through `ctx.obj` (no globals)."""

from __future__ import annotations

from dataclasses import dataclass

import typer
from rich.console import Console


@dataclass(frozen=True)
class CliState:
    verbose: int = 0
    quiet: bool = False

    @property
    def progress(self) -> bool:
        """Whether progress bars should be shown."""
        return not self.quiet


def cli_state(ctx: typer.Context) -> CliState:
    """The root state, or defaults when a command is invoked on its own (tests)."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliState) else CliState()


def stderr_console() -> Console:
    """The console for diagnostics (stdout is for results only).

    `soft_wrap`: an error is one line whatever the terminal width (or none, when stderr is a pipe),
    so scripts can grep it and tests need no COLUMNS workaround.
    """
    return Console(stderr=True, soft_wrap=True)


def stdout_console() -> Console:
    """The console for results (tables)."""
    return Console()
