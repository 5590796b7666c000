"""One table from several results files: models x metrics, with differences to the first model.

Results evaluated on fewer documents than the full split are marked in every cell (`†`) and the
column header, with a footnote, so a `--limit` number is never read as a full-split number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from registry.errors import EvaluationError
from registry.evaluate.records import EvalRecord

if TYPE_CHECKING:
    from rich.table import Table

LIMIT_MARK = "†"


@dataclass(frozen=True)
class Cell:
    """One model's value of one metric.

    Attributes:
        value: the metric, or None when that model lacks it.
        stderr: its standard error, when known.
        delta: value minus the first model's value (None in the first column or when missing).
        n_samples: documents evaluated.
        n_total: documents in the split.
        reference_limited: the first column's value (the delta's reference) comes from a
            partial evaluation, so the delta does too.
        vs_ct_sft: value minus the CT-then-SFT baseline's (when a baseline column is given).
    """

    value: float | None
    stderr: float | None = None
    delta: float | None = None
    n_samples: int = 0
    n_total: int = 0
    reference_limited: bool = False
    vs_ct_sft: float | None = None

    @property
    def limited(self) -> bool:
        """Whether this value comes from a partial evaluation."""
        return self.value is not None and self.n_samples < self.n_total


@dataclass(frozen=True)
class Row:
    """One (task, metric) across models."""

    task: str
    metric: str
    higher_is_better: bool
    cells: tuple[Cell, ...]

    @property
    def label(self) -> str:
        """`task metric ↑` / `↓`."""
        return f"{self.task} {self.metric} {'↑' if self.higher_is_better else '↓'}"


@dataclass(frozen=True)
class Comparison:
    """The whole table: column labels and rows."""

    models: tuple[str, ...]
    limited: tuple[bool, ...]
    rows: tuple[Row, ...]
    ct_sft_column: int | None = None  # index of the CT-then-SFT baseline's column (the last), if any

    @property
    def any_limited(self) -> bool:
        """Whether any cell comes from a partial evaluation."""
        return any(self.limited)


def build_comparison(
    records: Sequence[EvalRecord], *, labels: Sequence[str] | None = None, ct_sft: EvalRecord | None = None
) -> Comparison:
    """Line up the metrics of several records; the first record is the reference column.

    Args:
        records: results records, reference first.
        labels: column names; defaults to each model's short label.
        ct_sft: the CT-then-SFT baseline's record (the paper's comparison): a last column,
            labelled `CT-then-SFT`, and in every other cell the difference to it.

    Returns:
        The Comparison (rows in order of first appearance).

    Raises:
        EvaluationError: no records, or labels of the wrong length.
    """
    if ct_sft is not None:
        plain = build_comparison(records, labels=labels)
        both = build_comparison([*records, ct_sft], labels=[*plain.models, "CT-then-SFT"])
        baseline_rows = []
        for row in both.rows:
            base = row.cells[-1].value
            marked = tuple(
                c
                if i == len(row.cells) - 1 or c.value is None or base is None
                else replace(c, vs_ct_sft=c.value - base)
                for i, c in enumerate(row.cells)
            )
            baseline_rows.append(replace(row, cells=marked))
        return replace(both, rows=tuple(baseline_rows), ct_sft_column=len(records))
    if not records:
        raise EvaluationError("Nothing to compare: pass at least one results file.")
    if labels is not None and len(labels) != len(records):
        raise EvaluationError(
            f"Got {len(labels)} labels for {len(records)} results files; pass one --label per file, in order."
        )
    names = list(labels) if labels is not None else _unique_labels([r.model.label for r in records])
    order: list[tuple[str, str]] = []
    higher: dict[tuple[str, str], bool] = {}
    for record in records:
        for task in record.tasks:
            for metric, mv in task.metrics.items():
                if (task.task, metric) not in higher:
                    order.append((task.task, metric))
                    higher[(task.task, metric)] = mv.higher_is_better
    rows = []
    for task_name, metric in order:
        cells = []
        reference: float | None = None
        reference_limited = False
        for i, record in enumerate(records):
            found = next((t for t in record.tasks if t.task == task_name), None)
            value = found.metrics.get(metric) if found is not None else None
            if found is None or value is None:
                cells.append(Cell(value=None))
                continue
            mv = value
            if i == 0:
                reference, reference_limited = mv.value, found.limited
            delta = mv.value - reference if i > 0 and reference is not None else None
            cells.append(
                Cell(
                    value=mv.value,
                    stderr=mv.stderr,
                    delta=delta,
                    n_samples=found.n_samples,
                    n_total=found.n_total,
                    reference_limited=delta is not None and reference_limited,
                )
            )
        rows.append(
            Row(task=task_name, metric=metric, higher_is_better=higher[(task_name, metric)], cells=tuple(cells))
        )
    return Comparison(models=tuple(names), limited=tuple(r.limited for r in records), rows=tuple(rows))


def _unique_labels(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def format_cell(cell: Cell) -> str:
    """`0.4120 ±0.03 (+0.0210)†` — value, stderr, delta to the first column, limit mark.

    A full-split value compared with a limited reference keeps its own number unmarked and marks
    the delta: `0.4120 ±0.03 (+0.0210†)`.
    """
    if cell.value is None:
        return "—"
    text = f"{cell.value:.4f}"
    if cell.stderr is not None:
        text += f" ±{cell.stderr:.3f}"
    if cell.delta is not None:
        mark = LIMIT_MARK if cell.reference_limited and not cell.limited else ""
        text += f" ({cell.delta:+.4f}{mark})"
    if cell.limited:
        text += LIMIT_MARK
    if cell.vs_ct_sft is not None:
        text += f" [{cell.vs_ct_sft:+.4f} vs CT-then-SFT]"
    return text


def _header(comparison: Comparison, i: int) -> str:
    return comparison.models[i] + (f" {LIMIT_MARK}limited" if comparison.limited[i] else "")


def footnote(comparison: Comparison) -> str:
    """The explanation printed under a table with partial results ('' when there are none)."""
    if not comparison.any_limited:
        return ""
    counts = sorted({(c.n_samples, c.n_total) for r in comparison.rows for c in r.cells if c.limited})
    detail = ", ".join(f"{n} of {total}" for n, total in counts)
    return (
        f"{LIMIT_MARK} evaluated with --limit on part of the split ({detail} documents): "
        f"not comparable with full-split results (a {LIMIT_MARK} inside a difference: its reference is)."
    )


def render_markdown(comparison: Comparison) -> str:
    """The table as GitHub markdown (plus the limit footnote when needed)."""
    header = ["metric", *(_header(comparison, i) for i in range(len(comparison.models)))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison.rows:
        lines.append("| " + " | ".join([row.label, *(format_cell(c) for c in row.cells)]) + " |")
    note = footnote(comparison)
    return "\n".join(lines) + (f"\n\n{note}" if note else "") + "\n"


def render_rich(comparison: Comparison) -> Table:
    """The table as a rich Table (differences coloured by whether they are improvements)."""
    from rich.table import Table

    table = Table(title="Evaluation comparison (differences to the first column)", caption=footnote(comparison) or None)
    table.add_column("metric", style="bold")
    for i in range(len(comparison.models)):
        table.add_column(_header(comparison, i), justify="right")
    for row in comparison.rows:
        cells = []
        for cell in row.cells:
            text = format_cell(cell)
            if cell.delta is not None and cell.delta != 0:
                better = (cell.delta > 0) == row.higher_is_better
                text = f"[{'green' if better else 'red'}]{text}[/]"
            cells.append(text)
        table.add_row(row.label, *cells)
    return table
