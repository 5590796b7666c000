"""The paper's experiment on the lab (`registry lab experiment`): does merging beat CT-then-SFT when CT is short?

Tao et al. (2024) compare, as the continued pre-training (CT) grows, the traditional pipeline
(CT, then SFT on top of it) with merging the CT model and an SFT model of the same base (TIES, TIES-SV).
Here, for each seed: one lab (`build_lab` with `ct_save_steps` and `ct_sft`), so every CT point
(each saved step and the final CT) has its CT model, its CT-then-SFT model and, merged with the one SFT
through the engine's typed `Recipe` API, a TIES and a TIES-SV model; each is evaluated on the language's
suite (cached, so a second run only does what is missing). At the final CT the item-4 recipes are
added: per-module merges and a layer swap (`VARIANTS`).

`run_experiment` does it and returns an `ExperimentResult` (every score of every seed);
`tables_markdown`, `table_csv`, `gains_kept` and `plot` render it. Intervals are 95 % t-intervals over
the seeds (mean ± t₀.₉₇₅,ₙ₋₁ · s / √n); with one seed there is none.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from registry.errors import LabError
from registry.lab.build import LabConfig, build_lab, ct_step_dir
from registry.lab.discard import sft_discard

logger = logging.getLogger(__name__)

# Rows of the tables, in order; the variants only exist at the final CT point.
METHODS = ("base", "sft", "ct", "ct_sft", "ties", "ties_sv")
METHOD_LABELS = {
    "base": "base",
    "sft": "SFT",
    "ct": "CT",
    "ct_sft": "CT-then-SFT",
    "ties": "TIES",
    "ties_sv": "TIES-SV",
    "modules": "per-module",
    "ties_d0.5": "TIES d0.5",
    "ties_sv_d0.5": "TIES-SV d0.5",
    "modules_dense": "per-module, dense",
    "layer_swap": "layer swap",
}
# The metric read from each task kind (the first one a result has).
_PRIMARY = ("acc", "exact_match", "bits_per_byte")
# t quantiles (0.975) for 1..10 degrees of freedom; 1.96 beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


@dataclass(frozen=True)
class Variant:
    """An item-4 recipe at the final CT: module name patterns -> where those tensors come from.

    `parts` maps a source (`ct`, `sft`, a TIES merge `ties:<density>` or a TIES-SV merge
    `ties_sv:<density>:<slack>`, each of the CT and the SFT, λ 1, normalized) to the
    substrings that select its tensors; a tensor takes the first part that matches, else `rest`.
    """

    name: str
    description: str
    parts: tuple[tuple[str, tuple[str, ...]], ...]
    rest: str


def _layer_swap_parts(num_layers: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    bottom_top = ("layers.0.", f"layers.{num_layers - 1}.") if num_layers > 1 else ("layers.0.",)
    return (("ct", ("embed_tokens", "lm_head", "model.norm", *bottom_top)),)


def variants(num_layers: int) -> tuple[Variant, ...]:
    """The item-4 recipes for a model of `num_layers` layers."""
    return (
        Variant(
            "modules",
            "embed_tokens, lm_head and the final norm from the CT; attention (and its norm) TIES-SV density 0.5 "
            "slack 0.1; MLP (and its norm) TIES-SV density 0.3 slack 0.3",
            (
                ("ct", ("embed_tokens", "lm_head", "model.norm")),
                ("ties_sv:0.5:0.1", ("self_attn", "input_layernorm")),
            ),
            rest="ties_sv:0.3:0.3",
        ),
        Variant("ties_d0.5", "TIES at density 0.5 (less trimming)", (), rest="ties:0.5"),
        Variant("ties_sv_d0.5", "TIES-SV at density 0.5, slack 0.1", (), rest="ties_sv:0.5:0.1"),
        Variant(
            "modules_dense",
            "embed_tokens from the CT; everything else TIES-SV at density 1.0 (no trimming), slack 0.1",
            (("ct", ("embed_tokens",)),),
            rest="ties_sv:1.0:0.1",
        ),
        Variant(
            "layer_swap",
            f"the SFT with the CT's embed_tokens, lm_head, final norm and its bottom and top layers "
            f"(0 and {num_layers - 1} of {num_layers}); the middle layers stay the SFT's",
            _layer_swap_parts(num_layers),
            rest="sft",
        ),
    )


@dataclass(frozen=True)
class ExperimentSettings:
    """What `run_experiment` does."""

    lab: LabConfig  # the template: its seed is replaced per seed; languages[0] is the language
    seeds: tuple[int, ...]
    suite_path: Path
    tasks: tuple[str, ...]  # suite tasks to run (empty: all)
    tasks_dir: Path
    data_dir: Path | None
    limit: int | None = None
    density: float = 0.2
    slack: float = 0.1
    with_variants: bool = True

    @property
    def language(self) -> str:
        return self.lab.languages[0]


@dataclass(frozen=True)
class Point:
    """One evaluated model of one seed."""

    seed: int
    step: int  # CT steps (0 for base and SFT)
    tokens: int  # CT tokens seen
    method: str
    scores: dict[str, float]  # task -> primary metric
    discard: dict[str, float] | None = None  # TIES-family merges: SFT shares (conflict, rescued, discarded)


@dataclass
class ExperimentResult:
    """Every score of every seed, and what is needed to render it."""

    language: str
    seeds: tuple[int, ...]
    tasks: tuple[str, ...]
    metrics: dict[str, str]  # task -> metric name
    higher_is_better: dict[str, bool]
    limit: int | None
    synthetic: bool
    settings: dict[str, Any]
    points: list[Point] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ExperimentResult:
        data = json.loads(text)
        points = [Point(**p) for p in data.pop("points")]
        return cls(**{**data, "seeds": tuple(data["seeds"]), "tasks": tuple(data["tasks"]), "points": points})

    def steps(self) -> list[tuple[int, int]]:
        """(CT step, CT tokens) of every CT point, in order."""
        return sorted({(p.step, p.tokens) for p in self.points if p.method == "ct"})


def _interval(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95 % t-interval (None with one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = _T975[n - 2] if n - 2 < len(_T975) else 1.96
    return mean, t * sd / math.sqrt(n)


def run_experiment(
    out: Path,
    settings: ExperimentSettings,
    *,
    say: Callable[[str], None] = logger.info,
    progress: bool = False,
) -> ExperimentResult:
    """Build, merge and evaluate everything the experiment needs; skip what `out` already holds.

    Layout: `out/seed<S>/lab/` (the lab), `out/seed<S>/merges/<method>-step<N>/`,
    `out/seed<S>/eval/<method>-step<N>.json` (records), `out/cache/` (task results), `out/results.json`.

    Raises:
        LabError: a CT checkpoint is missing, or a merge report has no SFT counts.
        EvaluationError, DataNotFoundError: from the evaluation.
    """
    from registry.evaluate.suite import load_suite, select_tasks

    suite = select_tasks(load_suite(settings.suite_path), list(settings.tasks))
    if suite.language != settings.language:
        raise LabError(f"the suite {settings.suite_path} is for {suite.language}, the lab for {settings.language}")
    out.mkdir(parents=True, exist_ok=True)
    suite_path = out / "suite.yaml"
    suite_path.write_text(json.dumps(suite.model_dump(mode="json"), ensure_ascii=False) + "\n", encoding="utf-8")
    result = ExperimentResult(
        language=settings.language, seeds=settings.seeds, tasks=tuple(t.task for t in suite.tasks), metrics={},
        higher_is_better={}, limit=settings.limit, synthetic=False,
        settings={"lab": settings.lab.model_dump(mode="json"), "density": settings.density, "slack": settings.slack,
                  "suite": str(settings.suite_path), "data_dir": None if settings.data_dir is None else str(settings.data_dir),
                  "variants": [asdict(v) for v in variants(settings.lab.num_layers)] if settings.with_variants else []},
    )  # fmt: skip
    for seed in settings.seeds:
        _run_seed(out, seed, settings, result, suite_path=suite_path, say=say, progress=progress)
        (out / "results.json").write_text(result.to_json(), encoding="utf-8")
    return result


def _run_seed(
    out: Path,
    seed: int,
    settings: ExperimentSettings,
    result: ExperimentResult,
    *,
    suite_path: Path,
    say: Callable[[str], None],
    progress: bool,
) -> None:
    root = out / f"seed{seed}"
    lang = settings.language
    config = settings.lab.model_copy(update={"seed": seed, "ct_sft": True, "languages": (lang,)})
    say(f"seed {seed}: lab (kept where finished) in {root / 'lab'}")
    lab = build_lab(root / "lab", config=config, data_dir=settings.data_dir, resume=True, progress=progress)
    result.synthetic = result.synthetic or lab.synthetic
    manifest = json.loads(lab.manifest.read_text(encoding="utf-8"))
    lab_dir = root / "lab"
    base, sft = lab_dir / "base", lab_dir / "sft"
    ct_train = manifest["checkpoints"][f"ct-{lang}"]["train"]
    points = [(int(s), int(t), ct_step_dir(lab_dir, lang, int(s))) for s, t, _ in ct_train["checkpoints"]]
    points.append((int(ct_train["steps"]), int(ct_train["tokens"]), lab_dir / f"ct-{lang}"))
    evaluate = _Evaluator(root / "eval", out / "cache", settings=settings, suite_path=suite_path, result=result)
    jobs: list[tuple[str, int, int, Callable[[], Path]]] = [
        ("base", 0, 0, partial(_existing, base)),
        ("sft", 0, 0, partial(_existing, sft)),
    ]
    final = points[-1][0]
    for step, tokens, ct_dir in points:
        if not (ct_dir / "config.json").is_file():
            raise LabError(f"the CT checkpoint of step {step} is missing ({ct_dir}); rebuild the lab")
        jobs.append(("ct", step, tokens, partial(_existing, ct_dir)))
        jobs.append(("ct_sft", step, tokens, partial(_existing, ct_dir.with_name(f"{ct_dir.name}-sft"))))
        for method in ("ties", "ties_sv"):
            make: Callable[[], Path] = partial(
                _merge, method, base=base, ct=ct_dir, sft=sft, out=root / "merges" / f"{method}-step{step}",
                density=settings.density, slack=settings.slack if method == "ties_sv" else None, language=lang,
            )  # fmt: skip
            jobs.append((method, step, tokens, make))
        if step == final and settings.with_variants:
            for variant in variants(config.num_layers):
                make = partial(
                    _compose, variant, base=base, ct=ct_dir, sft=sft, out=root / "merges" / f"{variant.name}-step{step}",
                    work=root / "merges", language=lang, step=final,
                )  # fmt: skip
                jobs.append((variant.name, step, tokens, make))
    for number, (method, step, tokens, make) in enumerate(jobs, start=1):
        name = method if method in ("base", "sft") else f"{method}-step{step}"
        say(f"seed {seed} [{number}/{len(jobs)}] {METHOD_LABELS.get(method, method)} at CT step {step}")
        model_dir = make()
        scores = evaluate.scores(name, model_dir)
        discard = None
        report = model_dir / "merge_report.json"
        if method in ("ties", "ties_sv") and report.is_file():
            counts = sft_discard(json.loads(report.read_text(encoding="utf-8")))
            discard = {"conflict": counts.conflict_share, "rescued": counts.rescued_share,
                       "discarded": counts.discarded_share}  # fmt: skip
        result.points = [p for p in result.points if (p.seed, p.step, p.method) != (seed, step, method)]
        result.points.append(Point(seed, step, tokens, method, scores, discard))


def _existing(path: Path) -> Path:
    if not (path / "config.json").is_file():
        raise LabError(f"{path} is missing: rebuild the lab")
    return path


def _merge(
    method: str, *, base: Path, ct: Path, sft: Path, out: Path, density: float, slack: float | None, language: str
) -> Path:
    """CT + SFT by `ties` / `ties_sv` through the typed Recipe API (λ 1, normalize, per-tensor slack); kept if done."""
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge
    from registry.recipe import Recipe

    if (out / "merge_report.json").is_file():
        return out
    parameters: dict[str, Any] = {"normalize": True, "lambda": 1.0}
    if slack is not None:
        parameters |= {"slack": slack, "slack_scope": "tensor"}
    recipe = Recipe.from_parts(
        method=method,
        base=str(base),
        models=[
            {"model": str(ct), "role": "ct", "language": language, "parameters": {"weight": 1.0, "density": density}},
            {"model": str(sft), "role": "sft", "parameters": {"weight": 1.0, "density": density}},
        ],
        parameters=parameters,
        dtype="float32",
        tokenizer_source="base",
        source=f"lab experiment {out.name}",
    )
    run_merge(plan_merge(recipe), out=out, device="cpu", overwrite=True, progress=False)
    return out


def _compose(
    variant: Variant, *, base: Path, ct: Path, sft: Path, out: Path, work: Path, language: str, step: int
) -> Path:
    """Assemble a variant tensor by tensor from the CT, the SFT and TIES-SV merges (each made by `_merge`)."""
    import torch
    from safetensors.torch import load_file, save_file

    if (out / "model.safetensors").is_file():
        return out
    sources: dict[str, Path] = {"ct": ct, "sft": sft}
    for source in {name for name, _ in variant.parts} | {variant.rest}:
        if source.startswith(("ties:", "ties_sv:")):
            method, density, *slack = source.split(":")
            target = work / f"{method}-d{density}{''.join(f'-s{s}' for s in slack)}-step{step}"
            sources[source] = _merge(
                method, base=base, ct=ct, sft=sft, out=target, density=float(density),
                slack=float(slack[0]) if slack else None, language=language,
            )  # fmt: skip
    tensors = {key: load_file(str(sources[key] / "model.safetensors")) for key in {*sources} if key in _used(variant)}
    reference = tensors[variant.rest]
    merged: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for name in reference:
        source = next((src for src, patterns in variant.parts if any(p in name for p in patterns)), variant.rest)
        merged[name] = tensors[source][name].contiguous()
        origin[name] = source
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(sft, partial, ignore=shutil.ignore_patterns("*.safetensors", "README.md", "lab_train.json"))
    save_file(merged, str(partial / "model.safetensors"), metadata={"format": "pt"})
    (partial / "variant.json").write_text(
        json.dumps({"variant": asdict(variant), "tensors": origin}, indent=2) + "\n", encoding="utf-8"
    )
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def _used(variant: Variant) -> set[str]:
    return {name for name, _ in variant.parts} | {variant.rest}


class _Evaluator:
    """`registry eval` of one model on the experiment's suite; the record is kept next to the others."""

    def __init__(
        self, root: Path, cache: Path, *, settings: ExperimentSettings, suite_path: Path, result: ExperimentResult
    ):
        self.root, self.cache, self.settings, self.suite_path, self.result = root, cache, settings, suite_path, result
        root.mkdir(parents=True, exist_ok=True)

    def scores(self, name: str, model_dir: Path) -> dict[str, float]:
        from registry.evaluate.cache import ResultCache
        from registry.evaluate.records import EvalRecord
        from registry.evaluate.runner import evaluate_model
        from registry.evaluate.sources import resolve_model
        from registry.evaluate.suite import load_suite

        data_dir = self.settings.data_dir
        if data_dir is None:
            raise LabError("the experiment needs the evaluation data: pass --data-dir (e.g. ../shared/data)")
        target = self.root / f"{name}.json"
        resolved = resolve_model(str(model_dir))
        record = EvalRecord.model_validate_json(target.read_text(encoding="utf-8")) if target.is_file() else None
        if record is None or record.model.weights_hash != resolved.identity.weights_hash:
            record = evaluate_model(
                resolved, suite=load_suite(self.suite_path), suite_path=self.suite_path,
                tasks_dir=self.settings.tasks_dir, data_dir=data_dir, data_source=str(data_dir),
                limit=self.settings.limit, device="cpu", batch_size=16, cache=ResultCache(self.cache), progress=False,
            )  # fmt: skip
            record.save(target)
        scores: dict[str, float] = {}
        for task in record.tasks:
            metric = next((m for m in _PRIMARY if m in task.metrics), None)
            if metric is None:
                continue
            self.result.metrics[task.task] = metric
            self.result.higher_is_better[task.task] = task.metrics[metric].higher_is_better
            scores[task.task] = task.metrics[metric].value
        return scores


# -- rendering ------------------------------------------------------------------------------


def _accuracy_tasks(result: ExperimentResult) -> list[str]:
    return [t for t in result.tasks if result.metrics.get(t) in ("acc", "exact_match")]


def target_task(result: ExperimentResult) -> str | None:
    """The first accuracy task in the target language (the plot's y axis)."""
    return next((t for t in _accuracy_tasks(result) if t.endswith(result.language)), None)


def _values(result: ExperimentResult, method: str, step: int, task: str) -> list[float]:
    fixed = method in ("base", "sft")
    return [
        p.scores[task] for p in result.points if p.method == method and (fixed or p.step == step) and task in p.scores
    ]


def _average(result: ExperimentResult, method: str, step: int) -> list[float]:
    """Per seed, the mean over the accuracy tasks (the paper's "average" column)."""
    tasks = _accuracy_tasks(result)
    fixed = method in ("base", "sft")
    per_seed = []
    for p in result.points:
        if p.method == method and (fixed or p.step == step) and tasks and all(t in p.scores for t in tasks):
            per_seed.append(sum(p.scores[t] for t in tasks) / len(tasks))
    return per_seed


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "—"
    mean, half = _interval(values)
    return f"{mean:.3f}" if half is None else f"{mean:.3f} ± {half:.3f}"


def _methods_at(result: ExperimentResult, step: int) -> list[str]:
    present = {p.method for p in result.points if p.step == step or p.method in ("base", "sft")}
    extra = [m for m in dict.fromkeys(p.method for p in result.points) if m not in METHODS and m in present]
    return [m for m in METHODS if m in present] + extra


def tables_markdown(result: ExperimentResult) -> str:
    """Per CT point: methods × tasks (+ the average of the accuracy tasks), then the discarded-SFT share."""
    dagger = "†" if result.limit else ""
    tasks = list(result.tasks)
    lines: list[str] = []
    for step, tokens in result.steps():
        lines.append(f"**CT step {step} ({tokens / 1e3:.1f}k CT tokens)**")
        lines.append("")
        head = ["method"] + [f"{t} {result.metrics.get(t, '')} {'↑' if result.higher_is_better.get(t, True) else '↓'}{dagger}"
                             for t in tasks] + ["average (accuracy tasks)"]  # fmt: skip
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in _methods_at(result, step):
            cells = [METHOD_LABELS.get(method, method)]
            cells += [_cell(_values(result, method, step, t)) for t in tasks]
            cells.append(_cell(_average(result, method, step)))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("**Share of the SFT's kept (trimmed) entries that lost the sign election / were rescued by the "
                 "slack / were finally discarded**")  # fmt: skip
    lines.append("")
    lines += [
        "| CT step | CT tokens | TIES: discarded | TIES-SV: rescued | TIES-SV: discarded |",
        "|---|---|---|---|---|",
    ]
    for step, tokens in result.steps():
        ties = [p.discard["discarded"] for p in result.points if p.method == "ties" and p.step == step and p.discard]
        sv = [p.discard for p in result.points if p.method == "ties_sv" and p.step == step and p.discard]
        lines.append(
            f"| {step} | {tokens / 1e3:.1f}k | {_pct(ties)} | {_pct([d['rescued'] for d in sv])} | "
            f"{_pct([d['discarded'] for d in sv])} |"
        )
    lines.append("")
    for line in crossings(result):
        lines.append(f"- {line}")
    lines.append("")
    n = len(result.seeds)
    lines.append(
        f"Mean over {n} seed(s) ({', '.join(map(str, result.seeds))})"
        + (", ± the half-width of the 95 % t-interval over seeds." if n > 1 else "; one seed: no interval.")
    )
    if result.limit:
        lines.append(f"† first {result.limit} documents of each task only (`--limit {result.limit}`).")
    if result.synthetic:
        lines.append("**Synthetic data: no real text was found, these numbers mean nothing.**")
    return "\n".join(lines) + "\n"


def _pct(values: Sequence[float]) -> str:
    if not values:
        return "—"
    mean, half = _interval([100 * v for v in values])
    return f"{mean:.1f} %" if half is None else f"{mean:.1f} ± {half:.1f} %"


def table_csv(result: ExperimentResult) -> str:
    """Long format: one row per CT point, method and task (plus `average`), mean, CI half-width and the seeds' values."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ct_step", "ct_tokens", "method", "task", "metric", "mean", "ci95", "n_seeds", "values", "limit"])
    for step, tokens in result.steps():
        for method in _methods_at(result, step):
            rows = [(t, result.metrics.get(t, ""), _values(result, method, step, t)) for t in result.tasks]
            rows.append(("average", "acc", _average(result, method, step)))
            for task, metric, values in rows:
                if not values:
                    continue
                mean, half = _interval(values)
                writer.writerow([step, tokens, method, task, metric, f"{mean:.6f}", "" if half is None else f"{half:.6f}",
                                 len(values), " ".join(f"{v:.6f}" for v in values), result.limit or ""])  # fmt: skip
    return buffer.getvalue()


@dataclass(frozen=True)
class GainsKept:
    """Item 4 for one merge at the final CT: per seed, the two fractions of docs/lab.md."""

    method: str
    language: list[float]  # (bpb_SFT − bpb_merge) / (bpb_SFT − bpb_CT) on flores_<language>
    task: list[float]  # (acc_merge − acc_CT) / (acc_SFT − acc_CT) on sib200_eng_Latn

    def met(self, goal: float = 0.8) -> bool:
        return bool(self.language and self.task) and min(_interval(self.language)[0], _interval(self.task)[0]) >= goal


def gains_kept(result: ExperimentResult, *, task: str = "sib200_eng_Latn") -> list[GainsKept]:
    """Language and task gain kept by every merge at the final CT point, per seed."""
    if not result.steps():
        return []
    final = result.steps()[-1][0]
    flores = f"flores_{result.language}"
    by = {(p.seed, p.method): p for p in result.points if p.step == final or p.method == "sft"}
    out = []
    for method in _methods_at(result, final):
        if method in ("base", "sft", "ct"):
            continue
        language, skill = [], []
        for seed in result.seeds:
            merge, ct, sft = by.get((seed, method)), by.get((seed, "ct")), by.get((seed, "sft"))
            if merge is None or ct is None or sft is None:
                continue
            if flores in merge.scores and sft.scores.get(flores, 0) != ct.scores.get(flores, 0):
                language.append((sft.scores[flores] - merge.scores[flores]) / (sft.scores[flores] - ct.scores[flores]))
            if task in merge.scores and sft.scores.get(task, 0) != ct.scores.get(task, 0):
                skill.append((merge.scores[task] - ct.scores[task]) / (sft.scores[task] - ct.scores[task]))
        out.append(GainsKept(method, language, skill))
    return out


def gains_markdown(result: ExperimentResult, *, goal: float = 0.8) -> str:
    """The ≥ 80 % / ≥ 80 % table: each merge's language and task gain kept at the final CT, mean ± CI."""
    rows = gains_kept(result)
    dagger = "†" if result.limit else ""
    lines = [
        f"| merge (final CT) | language gain kept (bpb {result.language}){dagger} | task gain kept (SIB eng acc){dagger} "
        f"| both ≥ {goal:.0%} |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {METHOD_LABELS.get(row.method, row.method)} | {_pct(row.language)} | {_pct(row.task)} | "
            f"{'met' if row.met(goal) else 'not met'} |"
        )
    return "\n".join(lines) + "\n"


def crossings(result: ExperimentResult) -> list[str]:
    """For each accuracy task and merge: which is ahead of CT-then-SFT at each CT point, and where the means cross."""
    lines = []
    for task in _accuracy_tasks(result):
        for merge in ("ties", "ties_sv"):
            order = []
            for step, tokens in result.steps():
                a, b = _values(result, merge, step, task), _values(result, "ct_sft", step, task)
                if a and b:
                    diff = _interval(a)[0] - _interval(b)[0]
                    order.append((step, tokens, (diff > 0) - (diff < 0)))
            if not order:
                continue
            signs = {sign for _, _, sign in order}
            name = METHOD_LABELS[merge]
            if signs == {1}:
                lines.append(f"{task}: {name} above CT-then-SFT at every CT point (no crossing).")
            elif signs == {-1}:
                lines.append(f"{task}: {name} below CT-then-SFT at every CT point (no crossing).")
            else:
                changes = [f"{tokens / 1e3:.1f}k" for (_, _, s0), (_, tokens, s1) in zip(order, order[1:], strict=False)
                           if s0 != s1]  # fmt: skip
                said = ", ".join(changes) or "nowhere"
                lines.append(f"{task}: {name} vs CT-then-SFT: the order of the means changes by {said} CT tokens.")
    return lines


def plot(result: ExperimentResult, path: Path) -> Path:
    """Target-language task score, bpb and English SIB against CT tokens (CT-then-SFT vs the merges), and the
    discarded-SFT share; error bars are the 95 % intervals over seeds.

    Raises:
        LabError: matplotlib is not installed (it is a test extra, not a product dependency).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LabError("the plot needs matplotlib: pip install matplotlib") from None
    steps = result.steps()
    tokens = [t / 1e3 for _, t in steps]
    target = target_task(result)
    panels = [t for t in (target, f"flores_{result.language}", "sib200_eng_Latn") if t and t in result.metrics]
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(4.6 * (len(panels) + 1), 4.4))
    styles = {"ct_sft": ("o-", "black"), "ties": ("s--", "tab:blue"), "ties_sv": ("^--", "tab:orange"),
              "ct": ("x:", "gray")}  # fmt: skip
    dagger = "†" if result.limit else ""
    for axis, task in zip(axes, panels, strict=False):
        for method, (marker, color) in styles.items():
            means, halves = [], []
            for step, _ in steps:
                values = _values(result, method, step, task)
                mean, half = _interval(values) if values else (float("nan"), None)
                means.append(mean)
                halves.append(half or 0.0)
            axis.errorbar(tokens, means, yerr=halves, fmt=marker, color=color, capsize=3,
                          label=METHOD_LABELS[method])  # fmt: skip
        for method, style in (("sft", ":"), ("base", "-.")):
            values = _values(result, method, 0, task)
            if values:
                axis.axhline(
                    _interval(values)[0], color="gray", linestyle=style, linewidth=1, label=METHOD_LABELS[method]
                )
        arrow = "↑" if result.higher_is_better.get(task, True) else "↓"
        axis.set_title(f"{task} {result.metrics[task]} {arrow}{dagger}", fontsize=9)
        axis.set_xlabel("CT tokens (thousands)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    left = axes[len(panels)]
    for method, (marker, color) in (("ties", ("s--", "tab:blue")), ("ties_sv", ("^--", "tab:orange"))):
        means, halves = [], []
        for step, _ in steps:
            values = [100 * p.discard["discarded"] for p in result.points
                      if p.method == method and p.step == step and p.discard]  # fmt: skip
            mean, half = _interval(values) if values else (float("nan"), None)
            means.append(mean)
            halves.append(half or 0.0)
        left.errorbar(tokens, means, yerr=halves, fmt=marker, color=color, capsize=3, label=METHOD_LABELS[method])
    left.set_title("SFT entries discarded by the sign election (%)", fontsize=9)
    left.set_xlabel("CT tokens (thousands)")
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    n = len(result.seeds)
    figure.suptitle(
        f"Lab, {result.language}: CT-then-SFT vs merging as CT grows; mean of {n} seed(s)"
        + (", 95 % t-intervals" if n > 1 else "")
        + (f"; † first {result.limit} documents per task" if result.limit else ""),
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def modules_recipe(*, base: Path, ct: Path, sft: Path, language: str) -> Any:
    """The `modules` variant as ONE engine recipe, with mergekit `filter:` conditions (registry/merge/settings.py).

    embed_tokens, lm_head and the final norm: the SFT's weight is 0 and nothing is trimmed, so they are
    base + τ_CT (the CT's tensors up to float rounding); attention and its norm: TIES-SV density 0.5, slack 0.1;
    the rest (MLP and its norm): density 0.3, slack 0.3. `_compose` builds the same tensors from separate
    merges (tests/integration/test_lab_experiment.py checks they agree).
    """
    from registry.recipe import Recipe

    ct_only = [{"filter": name, "value": 1.0} for name in ("embed_tokens", "lm_head", "model.norm")]
    density = [*ct_only, {"filter": "self_attn", "value": 0.5}, {"filter": "input_layernorm", "value": 0.5},
               {"value": 0.3}]  # fmt: skip
    sft_weight = [{"filter": name, "value": 0.0} for name in ("embed_tokens", "lm_head", "model.norm")]
    return Recipe.from_parts(
        method="ties_sv",
        base=str(base),
        models=[
            {"model": str(ct), "role": "ct", "language": language, "parameters": {"weight": 1.0, "density": density}},
            {
                "model": str(sft),
                "role": "sft",
                "parameters": {"weight": [*sft_weight, {"value": 1.0}], "density": density},
            },
        ],
        parameters={
            "normalize": True,
            "lambda": 1.0,
            "slack_scope": "tensor",
            "slack": [
                {"filter": "self_attn", "value": 0.1},
                {"filter": "input_layernorm", "value": 0.1},
                {"value": 0.3},
            ],
        },  # fmt: skip
        dtype="float32",
        tokenizer_source="base",
        source="lab experiment: per-module recipe",
    )
