"""`registry merge`: run a recipe (a mergekit-style YAML) into a model directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from registry.cli._state import cli_state, stderr_console
from registry.device import Device

if TYPE_CHECKING:
    from rich.console import Console

    from registry.hub import HubClient
    from registry.merge.plan import MergePlan
    from registry.recipe import Recipe


def _dry_run_plan(parsed: Recipe, remote_checks: bool | None, console: Console, hub: HubClient) -> MergePlan:
    """Plan without downloading; remote header checks when asked, or by default when the Hub answers."""
    from registry.errors import HubUnavailableError
    from registry.merge.plan import plan_merge
    from registry.merge.sources import hub_offline

    if remote_checks is not None:
        return plan_merge(parsed, offline=True, remote_headers=remote_checks, hub=hub)
    if hub_offline():
        return plan_merge(parsed, offline=True, remote_headers=False, hub=hub)
    try:
        return plan_merge(parsed, offline=True, remote_headers=True, hub=hub)
    except HubUnavailableError as exc:
        console.print(f"[yellow]The Hub is unreachable ({exc}); remote checks skipped.[/]")
        return plan_merge(parsed, offline=True, remote_headers=False, hub=hub)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("merge")(merge)


def merge(
    ctx: typer.Context,
    recipe: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The recipe YAML (mergekit-style).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", file_okay=True, help="Output model directory (must not exist unless --overwrite)."),
    ] = None,
    device: Annotated[
        Device, typer.Option(help="Where to compute (fp32); auto picks CUDA when present.")
    ] = Device.auto,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and run every check (headers, NaN/Inf scan), compute nothing.")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a recipe value, e.g. --set parameters.slack=0.1 (repeatable).", show_default=False
        ),
    ] = None,
    remote_checks: Annotated[
        bool | None,
        typer.Option(
            "--remote-checks/--no-remote-checks",
            help="With --dry-run: read config, tokenizer and safetensors headers of Hub inputs that are not "
            "cached (a few MB). Default: when the Hub is reachable (not with HF_HUB_OFFLINE=1).",
            show_default=False,
        ),
    ] = None,
    shard_size: Annotated[str, typer.Option(help="Largest safetensors shard, e.g. 5GB, 500MB, 2GiB.")] = "5GB",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result (or plan) as JSON.")] = False,
    push: Annotated[
        str | None,
        typer.Option(
            "--push",
            metavar="OWNER/NAME",
            help="Then publish --out to this model repo in one commit (as `registry push`); with --registry the "
            "merge is also recorded in that catalog.",
            rich_help_panel="Publish",
        ),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="With --push: create the repo private.", rich_help_panel="Publish")
    ] = False,
) -> None:
    """Merge the models of RECIPE into --out (safetensors shards, config, tokenizer, report, model card).

    Inputs are local directories or Hub repo ids (org/name@revision), downloaded with HF_ENDPOINT and HF_TOKEN.
    A mergekit 0.1.5 config runs unchanged (its 20 methods, slices, gradients, filter:; tokenizer: but union): docs/merge.md.
    Every compatibility check runs before any compute; a failure leaves nothing at --out.

    Examples:

      registry merge recipes/ben_Beng-ties-sv.yaml --out ./merged

      registry merge my-mergekit-config.yml --out ./merged --device cuda

      registry merge recipes/demo-tiny.yaml --dry-run

      registry merge RECIPE --out DIR --set parameters.slack=0.1 --set models.0.parameters.density=0.3

      registry merge recipes/ben_Beng-ties-sv.yaml --out ./merged --push my-org/Llama-2-7b-ben-ties-sv
    """
    from registry.device import resolve_device
    from registry.errors import MergeError
    from registry.io.writer import parse_size
    from registry.merge.engine import check_output, run_merge
    from registry.merge.plan import needs_hub, plan_merge, scan_inputs
    from registry.recipe import load_recipe

    state = cli_state(ctx)
    console = stderr_console()
    if out is None and not dry_run:
        raise typer.BadParameter("--out is required (unless --dry-run)", param_hint="--out")
    if push is not None and dry_run:
        raise typer.BadParameter("--push publishes a merge; it cannot go with --dry-run", param_hint="--push")
    if push is not None:
        from registry.catalog.entries import validate_repo_id

        try:
            validate_repo_id(push)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--push") from exc
    parsed = load_recipe(recipe, overrides=list(set_ or ()))
    parse_size(shard_size)
    if out is not None:
        check_output(out, overwrite=overwrite)
    if dry_run:
        plan = _dry_run_plan(parsed, remote_checks, console, state.hub())
        if plan.complete:
            scan_inputs(plan, progress=state.progress)
        for line in plan.skipped:
            console.print(f"[yellow]Skipped:[/] {line}")
        if json_output:
            typer.echo(
                json.dumps(
                    {
                        "recipe": str(recipe),
                        "recipe_hash": parsed.recipe_hash(),
                        "complete": plan.complete,
                        "skipped": plan.skipped,
                        "warnings": plan.warnings,
                        "inputs": [
                            {"ref": s.ref, "path": str(s.path) if s.path else None, "commit": s.commit}
                            for s in plan.sources
                        ],
                        "tensors": len(plan.tensors),
                        "parameters": sum(t.numel for t in plan.tensors),
                    },
                    indent=2,
                )
            )
        else:
            typer.echo(plan.describe())
            verdict = "every check passed" if plan.complete else "the checks that ran passed (see Skipped)"
            console.print(f"Dry run: {verdict}; nothing was computed or written.")
        return
    assert out is not None  # checked above: only a dry run may omit it
    resolve_device(device.value, error=MergeError)
    # Building the Hub client imports huggingface_hub (0.2 s): only when an input is on the Hub.
    plan = plan_merge(parsed, hub=state.hub() if needs_hub(parsed) else None)
    for line in plan.warnings:
        console.print(f"[yellow]Warning:[/] {line}")
    result = run_merge(
        plan,
        out=out,
        device=device.value,
        shard_size=shard_size,
        overwrite=overwrite,
        progress=state.progress,
    )
    if not state.quiet:
        console.print(f"Merged on {result.device} in {result.seconds:.1f} s")
    published = None
    if push is not None:
        from registry.publish import publish_merge

        published = publish_merge(state.hub(), result.out, push, private=private, registry=state.registry)
        console.print(f"Published {result.out} to {published.url} (commit {published.commit[:7]})")
    if json_output:
        report = result.report.to_dict()
        payload = {
            "out": str(result.out),
            "files": [str(f) for f in result.files],
            "totals": report["totals"],
            "shares": report["shares"],
        }
        if published is not None:
            payload["pushed"] = {"repo": published.repo_id, "commit": published.commit, "url": published.url}
        typer.echo(json.dumps(payload, indent=2))
    else:
        typer.echo(result.report.summary())
        typer.echo(str(result.out))
        if published is not None:
            typer.echo(published.url)
