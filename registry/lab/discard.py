"""The paper's discard analysis in miniature: how much of the SFT does the merge throw away as CT grows?

Tao et al. (2024) report that the share of SFT parameters discarded by the TIES sign election
grows with the number of CT tokens, and that TIES-SV's slack rescues some of them. Here: one lab
(`build_lab` with `LabConfig.ct_save_steps`), so every CT-ben checkpoint comes from ONE training run
with one data order; each is merged with the same SFT by `ties` and `ties_sv`; each merge's
`merge_report.json` gives the SFT's kept entries, how many lost the sign election and how many the
slack put back; a small evaluation (first N documents, the † label) scores each merge.

`run_analysis` does it all (finished stages, merges and cached evaluations are reused);
`markdown_table` and `plot` render the rows. `bench/discard_analysis.py` is the command line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import LabError
from registry.lab.build import LabConfig, build_lab, ct_step_dir

logger = logging.getLogger(__name__)

# The evaluation: (task, metric, column label, higher is better).
EVAL_TASKS: tuple[tuple[str, str, str, bool], ...] = (
    ("flores_ben_Beng", "bits_per_byte", "bpb ben ↓", False),
    ("sib200_eng_Latn", "acc", "SIB eng acc ↑", True),
)


@dataclass(frozen=True)
class SftDiscard:
    """What one merge did to the SFT model's entries (counts from merge_report.json totals)."""

    kept: int  # SFT entries that survived trimming
    conflicts: int  # of those, how many lost the sign election
    rescued: int  # of those, how many the slack put back (TIES-SV)
    discarded: int  # finally dropped: conflicts - rescued

    @property
    def conflict_share(self) -> float:
        return self.conflicts / self.kept if self.kept else 0.0

    @property
    def rescued_share(self) -> float:
        return self.rescued / self.kept if self.kept else 0.0

    @property
    def discarded_share(self) -> float:
        return self.discarded / self.kept if self.kept else 0.0


def sft_discard(report: dict[str, Any]) -> SftDiscard:
    """Read the SFT input's counts from a merge_report.json document.

    Raises:
        LabError: the report has no input with role `sft`, or no per-input counts for it.
    """
    roles = report.get("roles") or []
    inputs = report.get("inputs") or []
    try:
        label = inputs[roles.index("sft")]
        totals = report["totals"]
        kept = int(totals["kept"][label])
        conflicts = int(totals["conflicts"][label])
        rescued = int(totals["rescued"][label])
        discarded = int(totals["protected_discarded"][label])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LabError(
            f"merge_report.json has no SFT counts ({type(exc).__name__}: {exc}); merge with a `role: sft` input "
            "and a TIES-family method"
        ) from None
    return SftDiscard(kept=kept, conflicts=conflicts, rescued=rescued, discarded=discarded)


@dataclass(frozen=True)
class ModelScores:
    """One evaluated model: metric label -> value (None where the task failed or was not run)."""

    name: str
    scores: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class DiscardRow:
    """One CT checkpoint merged by one method."""

    step: int
    tokens: int
    method: str
    discard: SftDiscard
    merge: ModelScores
    ct: ModelScores


@dataclass(frozen=True)
class Analysis:
    """Everything `run_analysis` measured."""

    rows: tuple[DiscardRow, ...]
    base: ModelScores
    sft: ModelScores
    limit: int | None
    synthetic: bool
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"


def merge_recipe(*, base: Path, ct: Path, sft: Path, method: str, density: float, slack: float) -> dict[str, Any]:
    """The lab's CT-ben + SFT recipe (as docs/lab.md): density per input, λ 1, normalize, per-tensor slack."""
    parameters: dict[str, Any] = {"normalize": True, "lambda": 1.0}
    if method == "ties_sv":
        parameters |= {"slack": slack, "slack_scope": "tensor"}
    return {
        "merge_method": method,
        "base_model": str(base),
        "dtype": "float32",
        "tokenizer_source": "base",
        "models": [
            {"model": str(ct), "role": "ct", "language": "ben_Beng", "parameters": {"weight": 1.0, "density": density}},
            {"model": str(sft), "role": "sft", "parameters": {"weight": 1.0, "density": density}},
        ],
        "parameters": parameters,
    }


def run_analysis(
    out: Path,
    *,
    config: LabConfig,
    data_dir: Path | None,
    methods: Sequence[str] = ("ties", "ties_sv"),
    density: float = 0.2,
    slack: float = 0.1,
    limit: int | None = 200,
    sib_shots: int = 5,
    tasks_dir: Path,
    progress: bool = True,
) -> Analysis:
    """Build the lab (with intermediate CT checkpoints), merge each with the SFT, read the reports, evaluate.

    Args:
        out: working directory (`lab/`, `merges/`, `eval/`); reused on a second run.
        config: the lab settings; `ct_save_steps` must name at least 3 steps below `ct_steps`.
        data_dir: a `../shared/data`-style directory (None: synthetic text, numbers meaningless).
        methods: merge methods (each must report the SFT's counts).
        density: TIES density of both inputs.
        slack: TIES-SV slack (per tensor).
        limit: evaluate the first N documents of each task (None: all).
        sib_shots: few-shot examples for SIB.
        tasks_dir: the task configs (`recipes/tasks`).
        progress: progress bars on stderr.

    Raises:
        LabError: too few checkpoints, or a report without SFT counts.
    """
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge
    from registry.recipe import parse_recipe

    if len([s for s in config.ct_save_steps if s < config.ct_steps]) < 3:
        raise LabError("the discard analysis needs at least 4 CT checkpoints: set 3 or more ct_save_steps < ct_steps")
    language = config.languages[0]
    lab = build_lab(out / "lab", config=config, data_dir=data_dir, resume=True, progress=progress)
    manifest = json.loads(lab.manifest.read_text(encoding="utf-8"))
    base_dir, sft_dir = out / "lab" / "base", out / "lab" / "sft"
    ct_train = manifest["checkpoints"][f"ct-{language}"]["train"]
    points = [
        (int(step), int(tokens), ct_step_dir(out / "lab", language, int(step)))
        for step, tokens, _ in ct_train["checkpoints"]
    ]
    points.append((int(ct_train["steps"]), int(ct_train["tokens"]), out / "lab" / f"ct-{language}"))
    evaluator = _Evaluator(out / "eval", tasks_dir=tasks_dir, data_dir=data_dir, limit=limit, sib_shots=sib_shots)
    rows = []
    for step, tokens, ct_dir in points:
        if not (ct_dir / "model.safetensors").is_file():
            raise LabError(f"the CT checkpoint of step {step} is missing ({ct_dir}); remove {out / 'lab'} and rerun")
        ct_scores = evaluator.scores(f"ct-step{step}", ct_dir)
        for method in methods:
            merged = out / "merges" / f"{method}-step{step}"
            if not (merged / "merge_report.json").is_file():
                recipe = merge_recipe(
                    base=base_dir, ct=ct_dir, sft=sft_dir, method=method, density=density, slack=slack
                )
                plan = plan_merge(parse_recipe(recipe, source=f"{method} step {step}"))
                run_merge(plan, out=merged, device="cpu", overwrite=True, progress=False)
            report = json.loads((merged / "merge_report.json").read_text(encoding="utf-8"))
            discard = sft_discard(report)
            merge_scores = evaluator.scores(f"{method}-step{step}", merged)
            rows.append(DiscardRow(step, tokens, method, discard, merge_scores, ct_scores))
            logger.info("step %d %s: SFT conflicts %.2f%%", step, method, 100 * discard.conflict_share)
    settings = {
        "lab": config.model_dump(mode="json"), "methods": list(methods), "density": density, "slack": slack,
        "slack_scope": "tensor", "sib_shots": sib_shots, "data_dir": None if data_dir is None else str(data_dir),
    }  # fmt: skip
    return Analysis(
        rows=tuple(rows),
        base=evaluator.scores("base", base_dir),
        sft=evaluator.scores("sft", sft_dir),
        limit=limit,
        synthetic=lab.synthetic,
        settings=settings,
    )


class _Evaluator:
    """`registry eval` on the lab suite (FLORES ben bpb, SIB eng), records and cached task results kept under `root`."""

    def __init__(self, root: Path, *, tasks_dir: Path, data_dir: Path | None, limit: int | None, sib_shots: int):
        self.root, self.tasks_dir, self.data_dir, self.limit = root, tasks_dir, data_dir, limit
        root.mkdir(parents=True, exist_ok=True)
        self.suite_path = root / "suite.yaml"
        tasks = ", ".join(
            f"{{task: {task}" + (f", num_fewshot: {sib_shots}}}" if task.startswith("sib200") else "}")
            for task, *_ in EVAL_TASKS
        )
        self.suite_path.write_text(f"language: ben_Beng\ntasks: [{tasks}]\n", encoding="utf-8")

    def scores(self, name: str, model_dir: Path) -> ModelScores:
        from registry.evaluate.cache import ResultCache
        from registry.evaluate.records import EvalRecord
        from registry.evaluate.runner import evaluate_model
        from registry.evaluate.sources import resolve_model
        from registry.evaluate.suite import load_suite

        if self.data_dir is None:
            return ModelScores(name, {label: None for _, _, label, _ in EVAL_TASKS})
        target = self.root / f"{name}.json"
        resolved = resolve_model(str(model_dir))
        record = EvalRecord.model_validate_json(target.read_text(encoding="utf-8")) if target.is_file() else None
        if record is None or record.model.weights_hash != resolved.identity.weights_hash:
            record = evaluate_model(
                resolved, suite=load_suite(self.suite_path), suite_path=self.suite_path, tasks_dir=self.tasks_dir,
                data_dir=self.data_dir, data_source=str(self.data_dir), limit=self.limit, device="cpu", batch_size=16,
                cache=ResultCache(self.root / "cache"), progress=False,
            )  # fmt: skip
            record.save(target)
        by_task = {result.task: result for result in record.tasks}
        scores: dict[str, float | None] = {}
        for task, metric, label, _ in EVAL_TASKS:
            value = by_task[task].metrics.get(metric) if task in by_task else None
            scores[label] = None if value is None else value.value
        return ModelScores(name, scores)


def markdown_table(analysis: Analysis) -> str:
    """One row per CT checkpoint: tokens, the SFT's fate under each method, and each merge's scores."""
    dagger = "†" if analysis.limit else ""
    labels = [label for _, _, label, _ in EVAL_TASKS]
    methods = list(dict.fromkeys(row.method for row in analysis.rows))
    head = ["CT step", "CT tokens", "SFT kept", "lost the election"]
    head += ["rescued by slack (ties_sv)", "finally discarded (ties_sv)"] if "ties_sv" in methods else []
    head += [f"CT {label}{dagger}" for label in labels]
    head += [f"{method} {label}{dagger}" for method in methods for label in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for step in sorted({row.step for row in analysis.rows}):
        by_method = {row.method: row for row in analysis.rows if row.step == step}
        first = by_method[methods[0]]
        d = first.discard
        cells = [str(step), f"{first.tokens / 1e6:.3f} M", f"{d.kept:,}", f"{d.conflicts:,} ({d.conflict_share:.2%})"]
        if "ties_sv" in by_method:
            sv = by_method["ties_sv"].discard
            cells += [f"{sv.rescued:,} ({sv.rescued_share:.2%})", f"{sv.discarded:,} ({sv.discarded_share:.2%})"]
        cells += [_num(first.ct.scores.get(label)) for label in labels]
        cells += [_num(by_method[m].merge.scores.get(label)) for m in methods for label in labels]
        lines.append("| " + " | ".join(cells) + " |")
    refs = ", ".join(
        f"{model.name}: " + ", ".join(f"{label} {_num(model.scores.get(label))}{dagger}" for label in labels)
        for model in (analysis.base, analysis.sft)
    )
    lines.append("")
    lines.append(f"For reference, {refs}.")
    if analysis.limit:
        lines.append(
            f"† first {analysis.limit} documents of each task only (`registry eval --limit {analysis.limit}`)."
        )
    if analysis.synthetic:
        lines.append("**Synthetic data: no real text was found, these numbers mean nothing.**")
    return "\n".join(lines) + "\n"


def plot(analysis: Analysis, path: Path) -> Path:
    """Two panels against CT tokens: the SFT's entries lost / rescued / discarded, and the merges' scores.

    Raises:
        LabError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LabError("the plot needs matplotlib: pip install matplotlib") from None
    steps = sorted({row.step for row in analysis.rows})
    rows = {(row.step, row.method): row for row in analysis.rows}
    tokens = [rows[(s, analysis.rows[0].method)].tokens / 1e6 for s in steps]
    figure, axes = plt.subplots(1, 1 + len(EVAL_TASKS), figsize=(5.2 * (1 + len(EVAL_TASKS)), 5.0))
    left = axes[0]
    first = analysis.rows[0].method
    left.plot(tokens, [100 * rows[(s, first)].discard.conflict_share for s in steps], "o-", color="tab:red",
              label="lost the sign election (ties = ties_sv before slack)")  # fmt: skip
    if any(row.method == "ties_sv" for row in analysis.rows):
        left.plot(tokens, [100 * rows[(s, "ties_sv")].discard.rescued_share for s in steps], "s--", color="tab:green",
                  label="rescued by the slack (ties_sv)")  # fmt: skip
        left.plot(tokens, [100 * rows[(s, "ties_sv")].discard.discarded_share for s in steps], "^:",
                  color="tab:purple", label="finally discarded (ties_sv)")  # fmt: skip
    left.set_xlabel("CT tokens seen")
    left.set_ylabel("% of the SFT's kept (trimmed) entries")
    left.set_title("SFT entries the merge throws away")
    left.set_ylim(bottom=0)
    for axis in axes:
        if tokens[0] > 0 and tokens[-1] / tokens[0] >= 8:  # checkpoints at doubling step counts: a log axis spaces them
            axis.set_xscale("log")
            axis.minorticks_off()
        axis.set_xticks(tokens, [f"{t * 1e3:.0f}k" if t < 1 else f"{t:.2f}M" for t in tokens])
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    dagger = "†" if analysis.limit else ""
    styles = {"ties": ("o-", "tab:blue"), "ties_sv": ("s--", "tab:orange")}
    for axis, (_, _, label, _) in zip(axes[1:], EVAL_TASKS, strict=True):
        for method in dict.fromkeys(row.method for row in analysis.rows):
            marker, color = styles.get(method, ("d-", None))
            axis.plot(tokens, [_nan(rows[(s, method)].merge.scores.get(label)) for s in steps], marker, color=color,
                      label=f"merge ({method})")  # fmt: skip
        axis.plot(tokens, [_nan(rows[(s, first)].ct.scores.get(label)) for s in steps], "x-", color="gray", label="CT")
        for reference, style in ((analysis.sft, ":"), (analysis.base, "-.")):
            value = reference.scores.get(label)
            if value is not None:
                axis.axhline(
                    value,
                    color="black",
                    linestyle=style,
                    linewidth=1,
                    label="SFT" if reference.name == "sft" else reference.name,
                )
        axis.set_xlabel("CT tokens seen")
        axis.set_title(f"{label}{dagger}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    note = f"† first {analysis.limit} documents per task. " if analysis.limit else ""
    figure.suptitle(
        f"Tiny lab: CT-ben checkpoints of one run merged with one SFT (density {analysis.settings.get('density')}, "
        f"slack {analysis.settings.get('slack')}). {note}",
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
