"""`registry demo`: the main job on the embedded default: a tiny offline TIES-SV merge with its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from registry.cli._state import cli_state, stderr_console

DEMO_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo-tiny.yaml"


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("demo")(demo)


def demo(
    ctx: typer.Context,
    workdir: Annotated[Path, typer.Option(help="Where the tiny models (models/) and the merge (merged/) go.")] = Path(
        ".mergeling/demo"
    ),
    recipe: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="The demo recipe.")] = DEMO_RECIPE,
) -> None:
    """Build a tiny base / CT / SFT family offline (once), merge it with recipes/demo-tiny.yaml, print the report.

    The recipe names the models as .mergeling/demo/models/{base,ct,sft} (relative to the current
    directory, as mergekit resolves paths); the demo points it at --workdir with --set overrides.

    Examples:

      registry demo

      registry demo --workdir /tmp/mergeling-demo

      registry merge recipes/demo-tiny.yaml --dry-run    (after a first `registry demo`)
    """
    from registry.lab.tiny import build_demo_family
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge
    from registry.recipe import load_recipe

    console = stderr_console()
    models = workdir / "models"
    names = ("base", "ct", "sft")
    if not all((models / n / "config.json").is_file() for n in names):
        console.print(f"Building the tiny demo models in {models} ...")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        build_demo_family(models, seed=0, ct_extra_vocab=16)
    overrides = [f"base_model={models / 'base'}", f"models.0.model={models / 'ct'}", f"models.1.model={models / 'sft'}"]
    parsed = load_recipe(recipe, overrides=overrides)
    plan = plan_merge(parsed)
    out = workdir / "merged"
    result = run_merge(plan, out=out, device="cpu", overwrite=True, progress=cli_state(ctx).progress)
    console.print(f"Merged {len(plan.tensors)} tensors in {result.seconds:.1f} s")
    typer.echo(result.report.summary())
    typer.echo(f"Output: {result.out} (model card: {result.out / 'README.md'}, report: merge_report.json)")
