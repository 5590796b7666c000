"""Catalog commands: `registry add ct|sft|--from`, `list`, `show`, `pairs`, `sync`, `remove`.

Every command works on a registry dataset repo on a Hub, named by the root's global options
`--registry` (default `<your namespace>/mergeling-registry`), `--endpoint` (env HF_ENDPOINT) and
`--token` (env HF_TOKEN), given before or after the command; the root callback builds the Hub client
and the catalog store once (`registry.cli._state.CliState`). Results (IDs, tables, JSON) go to
stdout; progress and notes go to stderr.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from registry.cli._state import cli_state, stderr_console, stdout_console
from registry.errors import CatalogError

if TYPE_CHECKING:
    from rich.table import Table

    from registry.catalog.entries import CtEntry, MergeEntry, SftEntry
    from registry.catalog.pairing import PairCheck
    from registry.catalog.store import CatalogStore


# Shown under every catalog command's help: the Hub options live on the root (one client per run).
HUB_EPILOG = (
    "Hub: --endpoint URL (HF_ENDPOINT), --token TOKEN (HF_TOKEN), --registry OWNER/NAME (MERGELING_REGISTRY), "
    "before or after the command."
)


class Kind(StrEnum):
    ct = "ct"
    sft = "sft"
    merge = "merge"


def _language(value: str | None) -> str | None:
    from registry.languages import check_language

    if value is None:
        return None
    try:
        return check_language(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _reference(value: str | None) -> str | None:
    from registry.catalog.entries import split_reference

    if value is None:
        return None
    try:
        split_reference(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return value


# -- add ------------------------------------------------------------------------------------
add_app = typer.Typer(
    help=(
        "Record a checkpoint in the registry (verified on the Hub first).\n\n"
        "Examples:\n\n"
        "  registry add ct alice/tiny-ct-ben_Beng --language ben_Beng --base alice/tiny-base\n\n"
        "  registry add sft alice/tiny-sft --base alice/tiny-base --data sib200-eng\n\n"
        "  registry add --from recipes/registry-seed.yaml --no-verify"
    ),
    no_args_is_help=False,
)


@add_app.callback(invoke_without_command=True)
def add(
    ctx: typer.Context,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from", exists=True, dir_okay=False, help="Seed file of checkpoints (e.g. recipes/registry-seed.yaml)."
        ),
    ] = None,
    no_verify: Annotated[
        bool,
        typer.Option("--no-verify", help="With --from: record entries the Hub cannot verify as unverified metadata."),
    ] = False,
) -> None:
    """Record checkpoints: `add ct`, `add sft`, or `add --from FILE` for a whole seed file."""
    if ctx.invoked_subcommand is not None:
        if from_file is not None or no_verify:
            raise typer.BadParameter("--from/--no-verify cannot be combined with `add ct` or `add sft`")
        return
    if from_file is None:
        stderr_console().print(ctx.get_help())
        raise typer.Exit(code=2)
    from registry.catalog.seed import load_seed, seed_entries

    seed = load_seed(from_file)
    state = cli_state(ctx)
    hub, store = state.hub(), state.catalog()
    entries = seed_entries(None if no_verify else hub, seed, verify=not no_verify, progress=cli_state(ctx).progress)
    result = store.add_many(entries)
    for entry_id in result.added:
        typer.echo(entry_id)
    note = f" (commit {result.commit[:7]})" if result.commit else ""
    kind = "unverified " if no_verify else ""
    stderr_console().print(
        f"Added {len(result.added)} {kind}entries to {store.repo_id}{note}; {len(result.present)} already present."
    )


@add_app.command("ct", epilog=HUB_EPILOG)
def add_ct(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(metavar="REPO[@REV]", callback=_reference, help="CT model repo.")],
    language: Annotated[str, typer.Option(callback=_language, help="Target language, e.g. ben_Beng.")],
    base: Annotated[
        str | None,
        typer.Option(
            callback=_reference,
            help="Base model REPO[@REV] the CT continued from (a LoRA adapter's is read from its adapter_config.json).",
        ),
    ] = None,
    tokens: Annotated[int | None, typer.Option(min=0, help="Tokens of continued pre-training.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Record it even if its card names another language or the SFT role.")
    ] = False,
) -> None:
    """Verify a continually pre-trained (CT) checkpoint on the Hub and record it.

    The CT may be a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors): it is recorded
    on the adapter's base_model_name_or_path, which --base, when given, must name.

    Examples:

      registry add ct alice/tiny-ct-ben_Beng --language ben_Beng --base alice/tiny-base

      registry add ct pkupie/Llama-2-7b-ben@main --language ben_Beng --registry my-org/mergeling-registry
    """
    from registry.catalog.entries import split_reference
    from registry.catalog.verify import build_ct_entry

    state = cli_state(ctx)
    hub, store = state.hub(), state.catalog()
    repo, revision = split_reference(reference)
    base_repo, base_revision = split_reference(base) if base is not None else (None, None)
    entry = build_ct_entry(
        hub,
        repo=repo,
        revision=revision,
        language=language,
        base=base_repo,
        base_revision=base_revision,
        tokens=tokens,
        force=force,
    )
    _report_added(store, entry)


@add_app.command("sft", epilog=HUB_EPILOG)
def add_sft(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(metavar="REPO[@REV]", callback=_reference, help="SFT model repo.")],
    base: Annotated[str, typer.Option(callback=_reference, help="Base model REPO[@REV] the SFT was tuned from.")],
    data: Annotated[str | None, typer.Option(help="Training data, e.g. flan.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Record it even if its card tags it mergeling-ct.")] = False,
) -> None:
    """Verify an instruction-tuned (SFT) checkpoint on the Hub and record it.

    Examples:

      registry add sft alice/tiny-sft --base alice/tiny-base --data sib200-eng

      registry add sft meta-llama/Llama-2-7b-chat-hf --base meta-llama/Llama-2-7b-hf
    """
    from registry.catalog.entries import split_reference
    from registry.catalog.verify import build_sft_entry

    state = cli_state(ctx)
    hub, store = state.hub(), state.catalog()
    repo, revision = split_reference(reference)
    base_repo, base_revision = split_reference(base)
    entry = build_sft_entry(
        hub, repo=repo, revision=revision, base=base_repo, base_revision=base_revision, data=data, force=force
    )
    _report_added(store, entry)


def _report_added(store: CatalogStore, entry: CtEntry | SftEntry) -> None:
    sha = store.add(entry)
    typer.echo(entry.id)
    stderr_console().print(
        f"Added {entry.id} ({entry.repo}@{entry.revision[:7]}) to {store.repo_id} (commit {sha[:7]})."
    )


# -- list, show, remove ---------------------------------------------------------------------
def list_entries(
    ctx: typer.Context,
    language: Annotated[str | None, typer.Option(callback=_language, help="Only this language, e.g. ben_Beng.")] = None,
    kind: Annotated[Kind | None, typer.Option(help="Only this kind of entry.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List registry entries (a table, or --json).

    Examples:

      registry list

      registry list --kind ct --language ben_Beng --json
    """
    store = cli_state(ctx).catalog()
    entries = [e for e in store.list_entries(kind=kind.value if kind else None) if _has_language(e, language)]
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    stdout_console().print(_entries_table(entries, title=store.repo_id))


def show(
    ctx: typer.Context,
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="Entry ID (see `registry list`).")],
) -> None:
    """Print one entry as JSON.

    Examples:

      registry show ct-ben_Beng-alice--tiny-ct-ben_Beng-1a2b3c4   (the ids `registry list` prints)
    """
    store = cli_state(ctx).catalog()
    typer.echo(store.get(entry_id).model_dump_json(indent=2))


def remove(
    ctx: typer.Context,
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="Entry ID (see `registry list`).")],
) -> None:
    """Remove one entry from the registry (the checkpoint itself is untouched).

    Examples:

      registry remove sft-alice--tiny-sft-1a2b3c4   (the ids `registry list` prints)
    """
    store = cli_state(ctx).catalog()
    sha = store.remove(entry_id)
    typer.echo(entry_id)
    stderr_console().print(f"Removed {entry_id} from {store.repo_id} (commit {sha[:7]}).")


# -- pairs and sync -------------------------------------------------------------------------
def pairs(
    ctx: typer.Context,
    language: Annotated[
        str | None, typer.Option(callback=_language, help="Only CT checkpoints of this language.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """CT × SFT pairs: which can be merged, and why the others cannot.

    Examples:

      registry pairs

      registry pairs --language ben_Beng --registry mergebot/mergeling-registry
    """
    from registry.catalog.pairing import find_pairs

    store = cli_state(ctx).catalog()
    checks = find_pairs(store.list_entries(), language=language)
    if as_json:
        typer.echo(json.dumps([c.model_dump(mode="json") for c in checks], indent=2))
        return
    stdout_console().print(_pairs_table(checks))


def sync(
    ctx: typer.Context,
) -> None:
    """Discover checkpoints tagged mergeling-ct / mergeling-sft on the Hub and record the new ones.

    Examples:

      registry sync

      registry sync --registry mergebot/mergeling-registry --endpoint http://127.0.0.1:8791
    """
    from registry.catalog.sync import discover

    state = cli_state(ctx)
    hub, store = state.hub(), state.catalog()
    try:
        known = set(store.entry_ids())
    except CatalogError:
        known = set()  # no registry yet: add_many creates it
    found = discover(hub, known_ids=known, progress=cli_state(ctx).progress)
    result = store.add_many(list(found.new))
    for entry_id in result.added:
        typer.echo(entry_id)
    console = stderr_console()
    for reason in found.skipped:
        console.print(f"[yellow]Skipped[/] {reason}", markup=True, highlight=False)
    console.print(
        f"Sync: {len(result.added)} added, {len(found.present) + len(result.present)} already present, "
        f"{len(found.skipped)} skipped (registry {store.repo_id})."
    )


# -- rendering ------------------------------------------------------------------------------
def _has_language(entry: CtEntry | SftEntry | MergeEntry, language: str | None) -> bool:
    if language is None:
        return True
    if entry.kind == "ct":
        return entry.language == language
    if entry.kind == "merge":
        return language in entry.languages
    return False


def _entries_table(entries: list[CtEntry | SftEntry | MergeEntry], *, title: str) -> Table:
    from rich.table import Table

    table = Table(title=f"{title}: {len(entries)} entries", title_justify="left")
    for column in ("ID", "kind", "language/data", "model", "base/method", "vocab", "status"):
        table.add_column(column, overflow="fold")
    for e in entries:
        if e.kind == "merge":
            output = f"{e.output_repo}@{e.output_revision[:7]}" if e.output_revision else e.output_repo
            table.add_row(e.id, e.kind, ",".join(e.languages), output, e.method, "", e.status)
            continue
        vocab = str(e.shape.vocab_size) if e.shape else "?"
        if e.kind == "ct" and e.tokenizer and e.tokenizer.extended:
            vocab += f" (+{e.tokenizer.added_tokens})"
        language = e.language if e.kind == "ct" else (e.data or "")
        kind = f"{e.kind} (LoRA r{e.adapter.r})" if e.kind == "ct" and e.adapter else e.kind
        revision = e.revision[:7] if e.verified else e.revision
        table.add_row(
            e.id,
            kind,
            language,
            f"{e.repo}@{revision}",
            str(e.base),
            vocab,
            "verified" if e.verified else "unverified",
        )
    return table


def _pairs_table(checks: list[PairCheck]) -> Table:
    from rich.table import Table

    table = Table(title=f"{sum(c.compatible for c in checks)} of {len(checks)} pairs compatible", title_justify="left")
    for column in ("language", "CT", "SFT", "status", "why"):
        table.add_column(column, overflow="fold")
    styles = {"compatible": "green", "incompatible": "red", "unverified": "yellow"}
    for c in checks:
        why = "; ".join(c.reasons + c.notes)
        table.add_row(c.language, c.ct_id, c.sft_id, f"[{styles[c.status]}]{c.status}[/]", why)
    return table


def register(app: typer.Typer) -> None:
    """Add the catalog commands to the root app."""
    app.add_typer(add_app, name="add")
    for name, command in (("list", list_entries), ("show", show), ("pairs", pairs), ("sync", sync), ("remove", remove)):
        app.command(name, epilog=HUB_EPILOG)(command)
