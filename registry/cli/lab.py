"""`registry lab`: build tiny base / CT-X / SFT checkpoints offline, for tests and the demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from registry.cli._state import cli_state, stderr_console, stdout_console

_STAGES = ("base", "ct", "sft")
# --quick: about a fifth of the default steps (base=1000, ct=400 per language, sft=300). The
# checkpoints load, merge and evaluate like the full ones; their scores are closer to chance.
QUICK_STEPS = {"base_steps": 200, "ct_steps": 80, "sft_steps": 60}
# --tiny: the demo's size (2 layers, hidden 64, a 2048-token vocabulary): about 100 s on 2 cores,
# big enough that the CT learns its language and the SFT its task; the README's walkthrough uses it.
TINY_PROFILE: dict[str, Any] = {
    "vocab_size": 2048, "hidden_size": 64, "intermediate_size": 192, "num_layers": 2, "num_heads": 4,
    "max_position_embeddings": 1024, "base_steps": 500, "ct_steps": 250, "sft_steps": 250, "batch_size": 8,
    "seq_len": 64, "sft_seq_len": 128,
}  # fmt: skip
# What a build costs on the 2-core machine with nothing else running (2026-12-07): fixed work (tokenizer,
# data, saving) plus seconds per training step, by model size. --tiny: 98 s for one language (1,000
# steps); --quick at the default size: about 5 minutes for one language (340 steps); the full build of
# three languages 20-25 minutes. Under load it takes longer: the estimate says "on an idle machine".
_COST = {"tiny": (40.0, 0.06), "default": (120.0, 0.5)}


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    lab = typer.Typer(
        help=(
            "The tiny-model lab: real CT-X / SFT / base checkpoints built offline on a CPU.\n\n"
            "Examples:\n\n"
            "  registry lab build --out lab --languages ben_Beng --quick\n\n"
            "  registry lab push lab"
        )
    )
    lab.command("build")(build)
    lab.command("push")(push)
    lab.command("experiment")(experiment)
    app.add_typer(lab, name="lab")


def build(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Output directory (base/, ct-<lang>/, sft/, lab.json).")],
    languages: Annotated[
        str, typer.Option(help="Comma-separated FLORES-200 codes of the CT languages.")
    ] = "ben_Beng,khk_Cyrl,uig_Arab",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Data laid out like ../shared/data. Default: ../shared/data from the current directory if it "
            "exists, else synthetic text.",
            file_okay=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seeds the tokenizer sample, the init and every training run.")] = 0,
    steps: Annotated[
        str | None,
        typer.Option(
            help="Training steps per stage, e.g. 'base=1000,ct=400,sft=300' (any subset; those are the defaults).",
            show_default=False,
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="A short build (base=200,ct=80,sft=60 steps; about 5 minutes on 2 cores instead of 20-25): "
            "working checkpoints whose scores are nearer chance. --steps still overrides single stages.",
        ),
    ] = False,
    tiny: Annotated[
        bool,
        typer.Option(
            "--tiny",
            help="The demo's model size (2 layers, hidden 64) and steps: about 100 s on 2 cores for one language.",
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty --out.")] = False,
    resume: Annotated[
        bool, typer.Option(help="Keep stages already finished in --out (same settings) and build the rest.")
    ] = False,
    ct_save_steps: Annotated[
        str | None,
        typer.Option(
            help="Also save each CT run after these steps, e.g. '100,200' (ct-<lang>-step<N>/: growing CT tokens).",
            show_default=False,
        ),
    ] = None,
    ct_sft: Annotated[
        bool,
        typer.Option(
            "--ct-sft",
            help="Also build CT-then-SFT (the paper's baseline): the SFT stage run on every CT checkpoint "
            "(ct-<lang>-sft/, ct-<lang>-step<N>-sft/).",
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print lab.json instead of a table.")] = False,
    namespace: Annotated[
        str,
        typer.Option(
            help="Hub namespace the checkpoints are named under (cards: base_model = NAMESPACE/tiny-base); "
            "push them there with `registry lab push`.",
        ),
    ] = "mergeling-lab",
) -> None:
    """Build a tokenizer, a tiny Llama base, CT-X per language and an SFT model, with model cards.

    Takes time: the default build (three languages) trains for about 20-25 minutes on a 2-core CPU;
    --quick takes about 5. --resume keeps the stages an interrupted build finished.

    Examples:

        registry lab build --out lab                                  # ben_Beng, khk_Cyrl, uig_Arab

        registry lab build --out lab --languages ben_Beng --quick     # a few minutes

        registry lab build --out lab --languages ben_Beng --steps base=200,ct=100,sft=100

        registry lab build --out lab --namespace alice && registry lab push lab
    """
    from pydantic import ValidationError
    from transformers.utils import logging as hf_logging

    from registry.lab.build import LabConfig, build_lab
    from registry.lab.corpora import resolve_data_dir

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers' per-load bars; the lab shows its own per stage
    console = stderr_console()
    resolved = resolve_data_dir(data_dir, cwd=Path.cwd())
    if resolved is None:
        console.print(
            "[bold yellow]WARNING: no data directory (no --data-dir, no ../shared/data): training on SYNTHETIC "
            "text. The checkpoints work, but their scores mean nothing.[/]"
        )
    else:
        console.print(f"Data: {resolved}")
    try:
        config = LabConfig.model_validate(
            {
                "languages": tuple(code.strip() for code in languages.split(",") if code.strip()),
                "seed": seed,
                "repo_prefix": namespace,
                **(TINY_PROFILE if tiny else {}),
                **stage_steps(quick=quick, steps=steps),
                "ct_save_steps": _save_steps(ct_save_steps),
                "ct_sft": ct_sft,
            }
        )
    except ValidationError as exc:
        # One line per problem, named by its option (pydantic's own text spans lines and links to its docs).
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        hint = {
            "languages": "--languages",
            "repo_prefix": "--namespace",
            "seed": "--seed",
            "ct_save_steps": "--ct-save-steps",
        }.get(field, "--steps")
        message = str(first["msg"]).removeprefix("Value error, ")
        if hint == "--steps":
            message = f"{field}: {message}"
        raise typer.BadParameter(message, param_hint=hint) from None
    starts = len(config.languages) * (1 + sum(step < config.ct_steps for step in config.ct_save_steps))
    total = (
        config.base_steps
        + config.ct_steps * len(config.languages)
        + config.sft_steps * (1 + (starts if config.ct_sft else 0))
    )
    fixed, per_step = _COST["tiny" if tiny else "default"]
    minutes = max(1, round((fixed + total * per_step) / 60))
    hint = "" if quick else "; --quick for a short build"
    console.print(f"Training {total} steps in all: about {minutes} min on an idle 2-core CPU{hint}.")
    result = build_lab(
        out, config=config, data_dir=resolved, overwrite=overwrite, resume=resume, progress=cli_state(ctx).progress
    )
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
    if json_output:
        typer.echo(json.dumps(manifest, indent=2, ensure_ascii=False))
        return
    _print_table(manifest, synthetic=result.synthetic)
    console.print(f"Wrote {len(result.checkpoints)} checkpoints and {result.manifest}")


def push(
    ctx: typer.Context,
    lab_dir: Annotated[
        Path,
        typer.Argument(help="A `registry lab build --out` directory (holds lab.json).", exists=True, file_okay=False),
    ],
    private: Annotated[bool, typer.Option("--private", help="Create the repos private.")] = False,
    only: Annotated[
        str | None,
        typer.Option(help="Only these roles, comma-separated: base, sft, ct (e.g. base,sft before the bot runs)."),
    ] = None,
) -> None:
    """Upload every lab checkpoint to the Hub under the repo id its card names; prints REPO@SHA lines.

    The base goes first, so a CT/SFT card's base_model exists by the time it lands; then
    `registry add ct|sft` can verify them. The Hub is the global --endpoint/--token (HF_ENDPOINT,
    HF_TOKEN; a write token), given before or after the command.

    Examples:

      registry lab push lab

      registry lab push lab --only base,sft

      registry lab push lab --private --endpoint http://127.0.0.1:8791 --token $ALICE_TOKEN
    """
    from registry.errors import LabError

    manifest_path = lab_dir / "lab.json"
    if not manifest_path.is_file():
        raise LabError(f"{lab_dir} has no lab.json: build it first with `registry lab build --out {lab_dir}`")
    checkpoints = json.loads(manifest_path.read_text(encoding="utf-8"))["checkpoints"]
    if only is not None:
        roles = {role.strip() for role in only.split(",") if role.strip()}
        if not roles or roles - {"base", "sft", "ct"}:
            raise typer.BadParameter(f"{only!r}: write roles from base, sft, ct, e.g. base,sft", param_hint="--only")
        checkpoints = {name: entry for name, entry in checkpoints.items() if entry["role"] in roles}
    client = cli_state(ctx).hub()
    # base first: the others' cards name it
    for name, entry in sorted(checkpoints.items(), key=lambda item: item[1]["role"] != "base"):
        folder = lab_dir / name
        if not (folder / "config.json").is_file():
            raise LabError(
                f"{folder} is missing or incomplete: rebuild with `registry lab build --out {lab_dir} --resume`"
            )
        client.create_repo(entry["repo_id"], private=private, exist_ok=True)
        sha = client.upload_folder(folder, entry["repo_id"], message=f"Upload lab checkpoint {name}")
        stderr_console().print(f"Pushed {name} to {entry['repo_id']}")
        typer.echo(f"{entry['repo_id']}@{sha}")


def experiment(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Working directory (seed<S>/lab, merges, eval; results.json).")],
    language: Annotated[str, typer.Option(help="The CT language (FLORES-200 code).")] = "ben_Beng",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds: one lab per seed (>= 3 for intervals).")] = "0,1,2",
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data laid out like ../shared/data (default: ../shared/data if it exists).", file_okay=False),
    ] = None,
    ct_save_steps: Annotated[
        str, typer.Option(help="The CT points below the final CT, e.g. '25,60,125' (growing CT tokens).")
    ] = "25,60,125",
    tiny: Annotated[bool, typer.Option("--tiny", help="The --tiny build profile (2 layers unless --layers).")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="The --quick step counts.")] = False,
    steps: Annotated[
        str | None, typer.Option(help="Steps per stage, e.g. 'base=500,ct=250,sft=250'.", show_default=False)
    ] = None,
    layers: Annotated[
        int | None, typer.Option(help="Transformer layers (the layer swap needs >= 3).", min=1, show_default=False)
    ] = None,
    sft_lr: Annotated[
        float | None,
        typer.Option(help="SFT learning rate (default: the lab's, 1e-3); lower keeps the SFT delta small.", min=0),
    ] = None,
    suite: Annotated[
        Path | None, typer.Option(help="Evaluation suite (default recipes/eval/<language>.yaml).", dir_okay=False)
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option(help="Only these suite tasks, comma-separated (default: the whole suite).", show_default=False),
    ] = None,
    tasks_dir: Annotated[Path, typer.Option(help="Task configs.", file_okay=False)] = Path("recipes/tasks"),
    limit: Annotated[
        int | None, typer.Option(help="Evaluate only the first N documents of each task (labelled †).", min=1)
    ] = None,
    density: Annotated[float, typer.Option(help="TIES / TIES-SV density of both inputs.")] = 0.2,
    slack: Annotated[float, typer.Option(help="TIES-SV slack (per tensor).")] = 0.1,
    variants: Annotated[
        bool, typer.Option(help="At the final CT also the per-module and layer-swap recipes (issue 19 item 4).")
    ] = True,
    plot: Annotated[
        Path | None,
        typer.Option(help="Also write the plot here (needs matplotlib, a test extra).", dir_okay=False),
    ] = None,
) -> None:
    """The paper's experiment: CT, SFT, CT-then-SFT, TIES and TIES-SV at each CT point, over seeds.

    For every seed: a lab with CT checkpoints and a CT-then-SFT on each.
    Every CT point is merged with the SFT (TIES, TIES-SV); everything is evaluated on the suite.
    Writes OUT/table.md (methods x tasks + average, discarded-SFT share, gains kept), table.csv, results.json.
    Run it again to finish an interrupted run: finished builds, merges and evaluations are kept.

    Examples:

        registry lab experiment --out lab-out/exp --tiny --layers 4 \\
            --suite recipes/eval/lab/ben_Beng-experiment.yaml --plot docs/lab_experiment.png

        registry lab experiment --out lab-out/exp1 --tiny --seeds 0 --limit 20    # a smoke run
    """
    from pydantic import ValidationError
    from transformers.utils import logging as hf_logging

    from registry.lab.build import LabConfig
    from registry.lab.corpora import resolve_data_dir
    from registry.lab.experiment import ExperimentSettings, gains_markdown, run_experiment, table_csv, tables_markdown

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    console = stderr_console()
    resolved = resolve_data_dir(data_dir, cwd=Path.cwd())
    if resolved is None:
        raise typer.BadParameter("no data directory: pass --data-dir (e.g. ../shared/data)", param_hint="--data-dir")
    try:
        seed_list = tuple(int(part) for part in seeds.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{seeds!r} is not a comma-separated list of seeds", param_hint="--seeds") from None
    if not seed_list:
        raise typer.BadParameter("give at least one seed, e.g. 0,1,2", param_hint="--seeds")
    try:
        config = LabConfig.model_validate(
            {
                "languages": (language,),
                **(TINY_PROFILE if tiny else {}),
                **stage_steps(quick=quick, steps=steps),
                **({"num_layers": layers} if layers else {}),
                **({"sft_lr": sft_lr} if sft_lr else {}),
                "ct_save_steps": _save_steps(ct_save_steps),
                "ct_sft": True,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise typer.BadParameter(str(first["msg"]).removeprefix("Value error, ")) from None
    suite_path = suite or Path("recipes/eval") / f"{language}.yaml"
    settings = ExperimentSettings(
        lab=config, seeds=seed_list, suite_path=suite_path,
        tasks=tuple(t.strip() for t in (tasks or "").split(",") if t.strip()), tasks_dir=tasks_dir,
        data_dir=resolved, limit=limit, density=density, slack=slack, with_variants=variants,
    )  # fmt: skip
    quiet = not cli_state(ctx).progress
    result = run_experiment(out, settings, say=(lambda _line: None) if quiet else console.print, progress=False)
    text = tables_markdown(result) + "\n" + gains_markdown(result)
    (out / "table.md").write_text(text, encoding="utf-8")
    (out / "table.csv").write_text(table_csv(result), encoding="utf-8")
    if plot is not None:
        from registry.lab.experiment import plot as draw

        draw(result, plot)
        console.print(f"Wrote {plot}")
    typer.echo(text)
    console.print(f"Wrote {out / 'table.md'}, {out / 'table.csv'} and {out / 'results.json'}")


def _save_steps(spec: str | None) -> tuple[int, ...]:
    """`--ct-save-steps 100,200` as step counts."""
    if not spec:
        return ()
    try:
        return tuple(int(part) for part in spec.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"--ct-save-steps {spec!r} is not a comma-separated list of step counts") from None


def stage_steps(*, quick: bool, steps: str | None) -> dict[str, int]:
    """The LabConfig step fields: the --quick profile (if asked), then --steps on top."""
    return {**(QUICK_STEPS if quick else {}), **_parse_steps(steps)}


def _parse_steps(spec: str | None) -> dict[str, int]:
    if not spec:
        return {}
    values: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, number = part.partition("=")
        name = name.strip()
        if not sep or name not in _STAGES or not number.strip().isdigit():
            raise typer.BadParameter(
                f"--steps part {part!r} is not STAGE=N with STAGE one of {', '.join(_STAGES)} (e.g. base=800,ct=300)"
            )
        values[f"{name}_steps"] = int(number)
    return values


def _print_table(manifest: dict[str, Any], *, synthetic: bool) -> None:
    from rich.table import Table

    title = "Lab checkpoints" + (" (SYNTHETIC DATA)" if synthetic else "")
    table = Table(title=title)
    for column in ("name", "role", "language", "params", "steps", "loss", "Δ vs base", "path"):
        table.add_column(column)
    for name, entry in manifest["checkpoints"].items():
        delta = entry["delta_vs_base"]
        train = entry["train"]
        table.add_row(
            name,
            entry["role"],
            entry["language"],
            f"{entry['n_params'] / 1e6:.2f} M",
            str(train["steps"]),
            f"{train['first_loss']:.2f} → {train['last_loss']:.2f}",
            "—" if delta is None else f"{delta['total']:.4f}",
            entry["path"],
        )
    stdout_console().print(table)
