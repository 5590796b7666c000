"""`registry demo`: builds the tiny family offline, merges it, prints the report; reruns reuse the models."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from registry.cli import app


def test_demo_end_to_end(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = CliRunner().invoke(app, ["-q", "demo", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    out = workdir / "merged"
    assert "discarded by the election" in result.stdout
    assert str(out) in result.stdout
    report = json.loads((out / "merge_report.json").read_text())
    assert report["method"] == "ties_sv"
    sft = str(workdir / "models" / "sft")
    assert report["totals"]["rescued"][sft] > 0
    config = json.loads((out / "config.json").read_text())
    ct_config = json.loads((workdir / "models" / "ct" / "config.json").read_text())
    assert config["vocab_size"] == ct_config["vocab_size"]  # the CT's extended vocabulary is kept
    first = (out / "model.safetensors").read_bytes()
    mtime = (workdir / "models" / "base" / "model.safetensors").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["-q", "demo", "--workdir", str(workdir)])
    assert again.exit_code == 0, again.output
    assert (workdir / "models" / "base" / "model.safetensors").stat().st_mtime_ns == mtime  # models reused
    assert (out / "model.safetensors").read_bytes() == first
    assert sorted(p.name for p in workdir.iterdir()) == ["merged", "models"]
