"""merge_report.json content and the printed summary, from hand-made TensorStats."""

from __future__ import annotations

import json
from pathlib import Path

from registry.merge.methods import TensorStats
from registry.merge.report import MergeReport


def _report() -> MergeReport:
    report = MergeReport(method="ties_sv", inputs=["org/ct", "org/sft"], roles=["ct", "sft"], protected=[1])
    report.add(
        "b.weight",
        TensorStats(
            elements=100, kept=[20, 20], sign_conflicts=5, protected_discarded={1: 3}, conflicts={1: 4}, rescued={1: 1}
        ),
    )
    report.add(
        "a.weight",
        TensorStats(
            elements=300, kept=[60, 60], sign_conflicts=15, protected_discarded={1: 7}, conflicts={1: 8}, rescued={1: 1}
        ),
    )
    return report


def test_totals_and_shares() -> None:
    data = _report().to_dict()
    totals = data["totals"]
    assert totals["elements"] == 400
    assert totals["kept"] == {"org/ct": 80, "org/sft": 80}
    assert totals["protected_discarded"] == {"org/sft": 10}
    assert totals["conflicts"] == {"org/sft": 12} and totals["rescued"] == {"org/sft": 2}
    assert data["shares"]["protected_discarded"] == {"org/sft": 10 / 80}
    assert data["shares"]["sign_conflicts"] == 20 / 400
    assert list(data["tensors"]) == ["a.weight", "b.weight"]  # sorted, whatever the merge order
    assert data["protected"] == ["org/sft"] and data["roles"] == ["ct", "sft"]


def test_summary_names_the_protected_model() -> None:
    text = _report().summary()
    assert "ties_sv: 2 tensors, 400 parameters" in text
    assert "sft org/sft: 10 of its 80 kept entries discarded by the election (12.5%)" in text
    assert "rescued by slack 2" in text


def test_write_is_stable(tmp_path: Path) -> None:
    _report().write(tmp_path / "a.json")
    _report().write(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert json.loads((tmp_path / "a.json").read_text())["method"] == "ties_sv"


def test_methods_without_protection() -> None:
    report = MergeReport(method="linear", inputs=["x", "y"], protected=[])
    report.add("w", TensorStats(elements=4, kept=[4, 4]))
    data = report.to_dict()
    assert "protected_discarded" not in data["totals"]
    assert "discarded" not in report.summary()
    assert MergeReport(method="linear", inputs=["x"], protected=[]).summary() == "linear: no diagnostics"
