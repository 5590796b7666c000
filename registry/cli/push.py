"""`registry push`: publish a merged folder to the Hub in one commit (card with model-index eval results)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from registry.cli._state import cli_state, stderr_console
from registry.errors import RegistryError

if TYPE_CHECKING:
    from registry.evaluate.records import EvalRecord


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("push")(push)


def push(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A `registry merge` output directory.")],
    repo: Annotated[str, typer.Argument(help="The model repo to publish to (OWNER/NAME; created if missing).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    eval_: Annotated[
        list[Path] | None,
        typer.Option(
            "--eval", exists=True, dir_okay=False, help="A results file of `registry eval --output` (repeatable)."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Publish --eval results that were not measured on FOLDER's weights (the card says so)."
        ),
    ] = False,
) -> None:
    """Publish FOLDER to REPO in one commit: weights, side files, and a model card whose model-index holds
    the --eval results. With --registry (a global option; MERGELING_REGISTRY) the merge is also recorded in
    that catalog. The Hub is --endpoint / --token (HF_ENDPOINT / HF_TOKEN: a write token).

    Examples:

      registry push ./merged alice/tiny-ben-ties-sv --eval merged.json

      registry push ./merged my-org/Llama-2-7b-ben-ties-sv --private --registry my-org/mergeling-registry
    """
    from registry.evaluate.records import load_record
    from registry.publish import publish_merge

    paths = list(eval_ or ())
    records = [load_record(path) for path in paths]
    problems = _foreign_results(folder, paths, records)
    if problems and not force:
        raise RegistryError(
            f"{problems[0]}: its results would be published as this model's. Evaluate the folder "
            f"(`registry eval {folder} --suite ... --output FILE`) and pass that file, or --force to publish them "
            "anyway (the card then says they are unverified)"
        )
    state = cli_state(ctx)
    result = publish_merge(
        state.hub(), folder, repo, private=private, records=records, registry=state.registry, unverified=problems
    )
    stderr_console().print(f"Published {folder} to {result.url} (commit {result.commit[:7]})")
    if json_output:
        typer.echo(
            json.dumps(
                {"repo": result.repo_id, "commit": result.commit, "url": result.url, "entry": result.entry_id},
                indent=2,
            )
        )
    else:
        typer.echo(result.url)


def _foreign_results(folder: Path, paths: list[Path], records: list[EvalRecord]) -> list[str]:
    """Why each results file may not describe FOLDER's weights (none: every one was measured on them)."""
    if not records:
        return []
    from registry.evaluate.sources import hash_model_files

    weights = hash_model_files(folder)
    problems = []
    for path, record in zip(paths, records, strict=True):
        model = record.model
        if model.weights_hash is None:
            where = (
                f"{model.repo_id}@{(model.sha or model.revision or 'main')[:7]}" if model.repo_id else model.reference
            )
            problems.append(f"{path} holds results of {where}, not of a local folder, so they cannot be checked")
        elif model.weights_hash != weights:
            problems.append(
                f"{path} holds results of {model.local_path or model.reference} (weights "
                f"{model.weights_hash[:12]}), not of {folder} (weights {weights[:12]})"
            )
    return problems
