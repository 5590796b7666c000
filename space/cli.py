"""`registry space`: serve the Mergeling Space locally (mounted through the `registry.commands` entry point).

Importing this module is cheap (no Gradio): the root CLI imports it to mount the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from space.config import SpaceConfig

app = typer.Typer(
    name="space",
    help=(
        "Serve the Mergeling Space (Gradio): try, compare, merge and submit models.\n\n"
        "Examples:\n\n"
        "  registry space --registry mergebot/mergeling-registry --bot http://127.0.0.1:8792\n\n"
        "  registry space --port 7861 --endpoint http://127.0.0.1:8791"
    ),
    no_args_is_help=False,
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def space(
    ctx: typer.Context,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            envvar="MERGELING_REGISTRY",
            help="Registry dataset repo (OWNER/NAME). Default: <token owner>/mergeling-registry.",
        ),
    ] = None,
    bot: Annotated[
        str | None,
        typer.Option("--bot", envvar="MERGELING_BOT_URL", help="The bot's URL (Submit and jobs); none: Submit is off."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 7860,
    share: Annotated[bool, typer.Option("--share", help="Also open a public gradio.live link.")] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="MERGELING_SHARED_DATA",
            file_okay=False,
            help="Data in the ../shared/data layout, for example prompts (FLORES / SIB-200).",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto (the GPU when present), cpu or cuda.")] = "auto",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="The most new tokens a request may ask for.")] = 256,
) -> None:
    """Serve the Space on HF_ENDPOINT (with HF_TOKEN); prints its URL first, then serves until Ctrl-C.

    Examples:

      registry space --registry alice/mergeling-registry

      registry space --bot http://127.0.0.1:8792 --port 7861

      HF_ENDPOINT=http://127.0.0.1:8791 HF_TOKEN=... registry space --host 0.0.0.0
    """
    if ctx.invoked_subcommand is not None:
        return
    import socket

    from registry.catalog.entries import validate_repo_id
    from space.app import build_app
    from space.config import SpaceConfig

    if registry is not None:
        try:
            validate_repo_id(registry)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--registry") from exc
    from registry.ports import ensure_port_free

    ensure_port_free(host, port, service="Space")
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    from registry.cli._state import cli_state

    state = cli_state(ctx)  # --endpoint / --token (or HF_ENDPOINT / HF_TOKEN), before or after `space`
    config = SpaceConfig.from_env(
        registry=registry, bot_url=bot, data_dir=data_dir, device=device, max_new_tokens=max_new_tokens,
        endpoint=state.endpoint, token=state.token,
    )  # fmt: skip
    _warn_if_no_registry(config)
    demo = build_app(config)
    _, local_url, share_url = demo.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True
    )
    typer.echo(local_url.rstrip("/"))
    if share_url:
        typer.echo(share_url)
    typer.echo(f"Mergeling Space on {config.endpoint} (registry {registry or 'default'}); Ctrl-C stops it", err=True)
    try:
        demo.block_thread()
    finally:
        demo.close()


def _warn_if_no_registry(config: SpaceConfig) -> None:
    """One warning line when the registry cannot be read: the Space still starts, with empty lists."""
    from registry.catalog.store import REGISTRY_REPO_NAME
    from registry.errors import RegistryError
    from registry.hub import HubClient

    try:
        hub = HubClient(endpoint=config.endpoint, token=config.token, fail_fast=True)
        repo = config.registry or f"{hub.whoami()}/{REGISTRY_REPO_NAME}"
        if hub.repo_exists(repo, repo_type="dataset"):
            return
        problem = f"the registry {repo} does not exist on {config.endpoint} (or this token cannot read it)"
    except RegistryError as exc:
        problem = f"the registry cannot be read ({exc})"
    typer.echo(
        f"Warning: {problem}; the Space starts with empty lists. Record checkpoints with `registry add ct|sft "
        "--registry OWNER/NAME`, or pass the --registry the bot uses.",
        err=True,
    )
