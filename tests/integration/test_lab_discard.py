"""The discard analysis on a small synthetic lab: CT checkpoints of one run, real merges, real merge reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.errors import LabError
from registry.lab.build import LabConfig, ct_step_dir
from registry.lab.discard import Analysis, markdown_table, plot, run_analysis, sft_discard

REPO = Path(__file__).resolve().parents[2]
SMALL = LabConfig(
    languages=("ben_Beng",), base_steps=30, ct_steps=24, sft_steps=8, vocab_size=1024, hidden_size=64,
    intermediate_size=192, num_layers=2, batch_size=8, sft_seq_len=128, ct_save_steps=(3, 6, 12),
)  # fmt: skip


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Analysis, Path]:
    out = tmp_path_factory.mktemp("discard")
    result = run_analysis(out, config=SMALL, data_dir=None, tasks_dir=REPO / "recipes" / "tasks", progress=False)
    return result, out


def test_one_run_gives_every_checkpoint_and_each_merge_reports_the_sfts_fate(analysis: tuple[Analysis, Path]) -> None:
    result, out = analysis
    assert [(r.step, r.method) for r in result.rows] == [
        (step, method) for step in (3, 6, 12, 24) for method in ("ties", "ties_sv")
    ]
    for step in (3, 6, 12):
        assert (ct_step_dir(out / "lab", "ben_Beng", step) / "model.safetensors").is_file()
    tokens = [r.tokens for r in result.rows if r.method == "ties"]
    assert tokens == sorted(tokens) and tokens[0] > 0 and tokens[-1] == 8 * tokens[0]  # 8 × the steps, same rows
    by = {(r.step, r.method): r.discard for r in result.rows}
    for step in (3, 6, 12, 24):
        ties, sv = by[(step, "ties")], by[(step, "ties_sv")]
        assert ties.kept == sv.kept == by[(3, "ties")].kept > 0  # one SFT, trimmed the same way every time
        assert ties.conflicts == sv.conflicts  # the same election; only TIES-SV's slack differs
        assert ties.rescued == 0 and ties.discarded == ties.conflicts
        assert sv.discarded == sv.conflicts - sv.rescued and 0 <= sv.rescued <= sv.conflicts
    assert by[(24, "ties_sv")].rescued > 0
    report = json.loads((out / "merges" / "ties_sv-step24" / "merge_report.json").read_text())
    assert sft_discard(report) == by[(24, "ties_sv")]
    assert result.synthetic and all(v is None for r in result.rows for v in r.merge.scores.values())


def test_table_and_plot(analysis: tuple[Analysis, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result, _ = analysis
    table = markdown_table(result)
    lines = table.splitlines()
    assert lines[0].startswith("| CT step | CT tokens | SFT kept | lost the election | rescued by slack (ties_sv)")
    assert [line.split(" | ")[0] for line in lines[2:6]] == ["| 3", "| 6", "| 12", "| 24"]
    sv = next(r.discard for r in result.rows if (r.step, r.method) == (24, "ties_sv"))
    assert f"{sv.rescued:,} ({sv.rescued_share:.2%})" in lines[5]
    assert "Synthetic data" in table and "†" in table
    png = plot(result, tmp_path / "discard.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_too_few_checkpoints_and_reports_without_an_sft_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="at least 4 CT checkpoints"):
        run_analysis(tmp_path, config=SMALL.model_copy(update={"ct_save_steps": (3, 30)}), data_dir=None,
                     tasks_dir=REPO / "recipes" / "tasks")  # fmt: skip
    with pytest.raises(LabError, match="no SFT counts"):
        sft_discard({"inputs": ["a", "b"], "roles": ["ct", "input"], "totals": {}})
