"""State the root callback passes to every command through `ctx.obj` (no globals).

The root callback reads the global options once (`-q/-v`, `--endpoint`, `--token`, `--registry`)
into a `CliState`; commands ask it for the Hub client and the catalog store, which it builds on
first use (so `registry lab build` never touches a Hub) and then reuses.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from registry.catalog.store import CatalogStore
    from registry.hub import HubClient

# Options of the root group that may also follow the subcommand (`registry eval MODEL -q`,
# `registry list --endpoint URL`): `hoist_global_options` moves them in front of it. Flags take no
# value; the others take one (`--endpoint URL` or `--endpoint=URL`).
GLOBAL_FLAGS = frozenset({"-q", "--quiet", "-v", "-vv", "-vvv", "--verbose"})
GLOBAL_VALUE_OPTIONS = frozenset({"--endpoint", "--token", "--registry"})


@dataclass
class CliState:
    """The global options, and the Hub client and catalog store built from them on first use.

    Args:
        verbose: -v count.
        quiet: -q.
        endpoint: the Hub URL (None: HF_ENDPOINT or huggingface.co).
        token: the Hub token (None: HF_TOKEN or the stored login).
        registry: the registry dataset repo (None: `<token owner>/mergeling-registry`).
    """

    verbose: int = 0
    quiet: bool = False
    endpoint: str | None = None
    token: str | None = None
    registry: str | None = None
    _hub: HubClient | None = field(default=None, repr=False)
    _catalog: CatalogStore | None = field(default=None, repr=False)

    @property
    def progress(self) -> bool:
        """Whether progress should be shown (not with -q): as bars on a terminal, else one log line
        per stage (`registry.progress.progress_bar`)."""
        return not self.quiet

    def hub(self) -> HubClient:
        """The Hub client of this invocation (built once).

        Interactive commands fail fast: an unreachable Hub is reported within seconds instead of
        after huggingface_hub's retries (about 25 s); the bot keeps its own retry policy.
        """
        if self._hub is None:
            from registry.hub import HubClient

            # HF_HUB_CACHE is read here, not only at huggingface_hub's import, so a caller (or a
            # test runner) can point one invocation's downloads elsewhere.
            cache = os.environ.get("HF_HUB_CACHE")
            self._hub = HubClient(
                endpoint=self.endpoint, token=self.token, cache_dir=Path(cache) if cache else None, fail_fast=True
            )
        return self._hub

    def catalog(self) -> CatalogStore:
        """The catalog store on `--registry` (default: the token owner's `mergeling-registry`), built once.

        Raises:
            typer.BadParameter: --registry is not OWNER/NAME.
            CatalogError: no --registry and the token's owner is unknown.
        """
        if self._catalog is None:
            from registry.catalog.entries import validate_repo_id
            from registry.catalog.store import REGISTRY_REPO_NAME, CatalogStore

            hub = self.hub()
            registry = self.registry or f"{_namespace(hub)}/{REGISTRY_REPO_NAME}"
            try:
                validate_repo_id(registry)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--registry") from exc
            self._catalog = CatalogStore(hub=hub, repo_id=registry)
        return self._catalog


def _namespace(hub: HubClient) -> str:
    """The token owner's name, for the default registry repo."""
    from registry.errors import CatalogError, HubAuthError

    hint = "pass --registry OWNER/NAME (or set MERGELING_REGISTRY), or a valid --token (HF_TOKEN)"
    try:
        return hub.whoami()
    except HubAuthError as exc:
        raise CatalogError(f"no registry repo given and the token's namespace is unknown ({exc}); {hint}") from exc


def cli_state(ctx: typer.Context) -> CliState:
    """The root state, or defaults when a command is invoked on its own (tests)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def hoist_global_options(args: list[str], *, commands: Mapping[str, Collection[str]]) -> list[str]:
    """Move the root's options that follow a built-in subcommand in front of it.

    `registry eval MODEL -q --endpoint URL` becomes `registry -q --endpoint URL eval MODEL`. Only for
    `commands`, never an option the command declares itself (`commands[name]`: its option names,
    subcommands' included), never past `--`.
    """
    start = 0  # the subcommand's index: skip the root options already in front of it
    while start < len(args) and args[start].startswith("-"):
        start += 2 if args[start] in GLOBAL_VALUE_OPTIONS else 1
    if start >= len(args) or args[start] not in commands:
        return args
    own = set(commands[args[start]])
    hoisted: list[str] = []
    rest: list[str] = []
    i = start + 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.partition("=")[0]
        if name in own:
            rest.append(arg)
        elif arg in GLOBAL_FLAGS or (name in GLOBAL_VALUE_OPTIONS and "=" in arg):
            hoisted.append(arg)
        elif arg in GLOBAL_VALUE_OPTIONS and i + 1 < len(args):
            hoisted += [arg, args[i + 1]]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return args[:start] + hoisted + [args[start]] + rest


def stderr_console() -> Console:
    """The console for diagnostics (stdout is for results only).

    `soft_wrap`: an error is one line whatever the terminal width (or none, when stderr is a pipe),
    so scripts can grep it and tests need no COLUMNS workaround.
    """
    return Console(stderr=True, soft_wrap=True)


def stdout_console() -> Console:
    """The console for results (tables).

    On a terminal, tables fit its width; piped (a script, a test) they are as wide as their
    content, so no ID or repo name is folded across lines whatever `COLUMNS` says.
    """
    import sys

    return Console(width=None if sys.stdout.isatty() else 10_000)
