"""`registry eval compare` table: alignment, differences to the first column, limit labelling."""

from __future__ import annotations

import pytest
from rich.console import Console

from registry.errors import EvaluationError
from registry.evaluate.compare import build_comparison, format_cell, render_markdown, render_rich
from registry.evaluate.records import MetricValue, TaskResult
from tests.unit.test_eval_records import make_record, make_task


def bpb_task(value: float, *, n: int = 1012) -> TaskResult:
    return TaskResult(
        task="flores_ben_Beng",
        task_hash="00" * 32,
        num_fewshot=0,
        n_samples=n,
        n_total=1012,
        metrics={"bits_per_byte": MetricValue(value=value, higher_is_better=False)},
        duration_s=1.0,
    )


def test_differences_to_first_column() -> None:
    a = make_record(make_task(acc=0.25), bpb_task(2.0), path="/m/sft")
    b = make_record(make_task(acc=0.5), bpb_task(1.5), path="/m/merge")
    table = build_comparison([a, b])
    assert table.models == ("sft", "merge")
    acc, bpb = table.rows
    assert acc.label == "sib200_ben_Beng acc ↑" and bpb.label == "flores_ben_Beng bits_per_byte ↓"
    assert acc.cells[0].delta is None and acc.cells[1].delta == pytest.approx(0.25)
    assert bpb.cells[1].delta == pytest.approx(-0.5)
    assert not table.any_limited


def test_missing_metric_and_duplicate_labels() -> None:
    a = make_record(make_task(), path="/x/m")
    b = make_record(make_task(), bpb_task(1.0), path="/y/m")
    table = build_comparison([a, b])
    assert table.models == ("m", "m (2)")
    assert table.rows[1].cells[0].value is None and table.rows[1].cells[1].delta is None
    assert format_cell(table.rows[1].cells[0]) == "—"
    with pytest.raises(EvaluationError, match="at least one"):
        build_comparison([])
    with pytest.raises(EvaluationError, match="2 labels for 1 results files; pass one --label per file"):
        build_comparison([a], labels=["x", "y"])


def test_markdown_labels_limited_results() -> None:
    full = make_record(make_task(acc=0.25), path="/m/base")
    limited = make_record(make_task(acc=0.5, n=20), path="/m/ct", limit=20)
    text = render_markdown(build_comparison([full, limited]))
    lines = text.splitlines()
    assert lines[0] == "| metric | base | ct †limited |"
    assert lines[2] == "| sib200_ben_Beng acc ↑ | 0.2500 ±0.030 | 0.5000 ±0.030 (+0.2500)† |"
    assert "† evaluated with --limit on part of the split (20 of 204 documents)" in text
    assert "†" not in render_markdown(build_comparison([full]))


def test_rich_table_renders_all_cells() -> None:
    console = Console(width=200, record=True)
    console.print(
        render_rich(build_comparison([make_record(make_task(acc=0.25)), make_record(make_task(acc=0.5, n=9))]))
    )
    out = console.export_text()
    assert "0.2500" in out and "(+0.2500)†" in out and "not comparable" in out


def test_difference_to_a_limited_reference_is_marked() -> None:
    limited = make_record(make_task(acc=0.5, n=20), path="/m/base", limit=20)
    full = make_record(make_task(acc=0.25), path="/m/ct")
    table = build_comparison([limited, full])
    ref, other = table.rows[0].cells
    assert ref.limited and not other.limited and other.reference_limited
    assert format_cell(other) == "0.2500 ±0.030 (-0.2500†)"  # the value is full-split, the difference is not
    assert "| 0.5000 ±0.030† | 0.2500 ±0.030 (-0.2500†) |" in render_markdown(table)
    assert not build_comparison([full, full]).rows[0].cells[1].reference_limited


def test_ct_then_sft_column_and_differences_to_it() -> None:
    sft = make_record(make_task(acc=0.25), bpb_task(2.0), path="/m/sft")
    merge = make_record(make_task(acc=0.5), bpb_task(1.5), path="/m/merge")
    baseline = make_record(make_task(acc=0.375), bpb_task(1.25), path="/m/ct-sft")
    table = build_comparison([sft, merge], ct_sft=baseline)
    assert table.models == ("sft", "merge", "CT-then-SFT") and table.ct_sft_column == 2
    acc, bpb = table.rows
    assert acc.cells[1].vs_ct_sft == pytest.approx(0.125) and acc.cells[0].vs_ct_sft == pytest.approx(-0.125)
    assert acc.cells[2].vs_ct_sft is None and acc.cells[2].delta == pytest.approx(0.125)  # still vs the first
    assert bpb.cells[1].vs_ct_sft == pytest.approx(0.25)
    markdown = render_markdown(table)
    assert markdown.splitlines()[0] == "| metric | sft | merge | CT-then-SFT |"
    assert "| 0.5000 ±0.030 (+0.2500) [+0.1250 vs CT-then-SFT] |" in markdown
    assert build_comparison([sft, merge]).ct_sft_column is None  # no baseline: the table is unchanged
