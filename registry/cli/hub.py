"""`registry hub ...`: run the embedded Hub-compatible server, manage its tokens, seed data repos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from registry.cli._state import cli_state, stderr_console
from registry.errors import HubError

hub_app = typer.Typer(
    help=(
        "The embedded Hub-compatible server: serve, tokens, seed evaluation data.\n\n"
        "Examples:\n\n"
        "  registry hub token create alice --data hubdata --init --write\n\n"
        "  registry hub serve --data hubdata --port 8791"
    ),
    no_args_is_help=True,
)
token_app = typer.Typer(
    help=("Access tokens of an embedded hub.\n\nExamples:\n\n  registry hub token create alice --data hubdata --write"),
    no_args_is_help=True,
)
hub_app.add_typer(token_app, name="token")

DataDir = Annotated[
    Path, typer.Option("--data", help="The hub's data directory (repos, blobs, accounts).", file_okay=False)
]


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.add_typer(hub_app, name="hub")


@hub_app.command("serve")
def serve(
    data: DataDir,
    host: Annotated[
        str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless others must reach it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.", min=0, max=65535)] = 8780,
    lfs_threshold: Annotated[
        int,
        typer.Option(
            help="Files this big (bytes) go through LFS for clients with Xet off.", min=1, rich_help_panel="Limits"
        ),
    ] = 10 * 1024 * 1024,
    webhook_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--webhook-allow",
            help="A CIDR or host name webhooks may target although private, loopback or link-local (repeatable). "
            "Loopback is allowed anyway while --host is a loopback address.",
            rich_help_panel="Webhooks",
        ),
    ] = None,
) -> None:
    """Serve a Hub-compatible API on HOST:PORT over --data; prints the URL as the first stdout line.

    Point clients at it with HF_ENDPOINT=URL and HF_TOKEN (see `registry hub token create`).

    Examples:

      registry hub serve --data hubdata --port 8791 &

      registry hub serve --data hubdata --host 0.0.0.0 --port 0   (a free port; the URL is printed)
    """
    import signal

    from registry.localhub import EmbeddedHub
    from registry.localhub.app import HubConfig
    from registry.ports import ensure_port_free

    ensure_port_free(host, port, service="hub")
    try:
        hub = EmbeddedHub.create(
            data,
            host=host,
            port=port,
            config=HubConfig(lfs_threshold=lfs_threshold, webhook_allow=tuple(webhook_allow or ())),
        )
    except OSError as exc:
        # errno is set for socket errors (port taken, host not local); the data-dir lock says its own fix.
        hint = ". Pick another --port (0: any free one) or --host" if exc.errno is not None else ""
        raise HubError(f"Cannot serve {data} on {host}:{port}: {exc}{hint}", endpoint=f"http://{host}:{port}") from exc

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    typer.echo(hub.url)
    stderr_console().print(
        f"Serving {data} at {hub.url} (Ctrl-C to stop). Clients: HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1"
    )
    try:
        hub.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="User name (created if new).")],
    data: DataDir,
    org: Annotated[str | None, typer.Option(help="Organisation to create or join; the token may act for it.")] = None,
    write: Annotated[bool, typer.Option("--write", help="A write token (default: read-only).")] = False,
    name: Annotated[str, typer.Option(help="A label for the token, shown by whoami.")] = "cli",
    init: Annotated[
        bool, typer.Option("--init", help="Start a new hub in --data when it holds none (a missing or empty folder).")
    ] = False,
) -> None:
    """Create an access token for USER on the hub stored in --data; the token is the LAST stdout line.

    Only its hash is stored: copy it now, it cannot be shown again.

    Examples:

      registry hub token create alice --data hubdata --init --write   (--init: a new hub in an empty folder)

      registry hub token create mergebot --data hubdata --write --name bot
    """
    from registry.localhub.auth import Accounts

    _check_hub_dir(data, init=init)
    try:
        token = Accounts(data).create_token(user, org=org, write=write, name=name)
    except ValueError as exc:
        raise HubError(f"Cannot create a token: {exc}") from None
    role = "write" if write else "read"
    stderr_console().print(
        f"Created a {role} token for {user!r}{f' (member of {org!r})' if org else ''}. Store it now:"
    )
    typer.echo(token)


def _check_hub_dir(data: Path, *, init: bool) -> None:
    """A token goes into an existing hub; a typo in --data must not silently start an empty one."""
    if (data / "accounts.json").is_file() or (data / "repos").is_dir():
        return
    empty = not data.exists() or (data.is_dir() and not any(data.iterdir()))
    if init and empty:
        data.mkdir(parents=True, exist_ok=True)
        return
    if init:
        raise HubError(f"{data} is not empty and holds no hub: --init starts a hub only in a missing or empty folder")
    raise HubError(
        f"{data} holds no hub (no accounts.json or repos/): check --data (the folder `registry hub serve --data` "
        "uses), or pass --init to start a new hub there"
    )


def _repo_id(value: str) -> str:
    from registry.catalog.entries import validate_repo_id

    try:
        return validate_repo_id(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@hub_app.command("seed-data")
def seed_data(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Argument(help="A folder laid out like ../shared/data.", exists=True, file_okay=False)
    ],
    repo: Annotated[str, typer.Option(callback=_repo_id, help="The dataset repo to create or update, OWNER/NAME.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
) -> None:
    """Upload evaluation data (the ../shared/data layout) as a dataset repo; prints the commit sha.

    Files keep their paths, so `registry eval --data-repo OWNER/NAME` finds them; the README gets
    `configs:` so `datasets.load_dataset(REPO, "sib200-ben_Beng")` works too.

    Examples:

      registry hub seed-data ../shared/data --repo alice/eval-data

      registry hub seed-data ./my-data --repo my-org/eval-data --private
    """
    from registry.datarepo import seed_data_repo

    client = cli_state(ctx).hub()  # the global --endpoint/--token (a write token), before or after the command
    sha = seed_data_repo(client, directory, repo_id=repo, private=private, progress=cli_state(ctx).progress)
    typer.echo(sha)
