"""mergekit 0.1.5 (a test-only peer, LGPL: the product never imports it) and `registry merge` on one config."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from registry.cli import app


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files in `path` (at least one)."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(file))
    assert tensors, f"no safetensors in {path}"
    return tensors


def run_both(config: dict[str, object], tmp_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The SAME config file merged by mergekit's `run_merge` and by `registry merge`: (theirs, ours)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    run_merge(MergeConfiguration.model_validate(config), str(tmp_path / "mergekit"), MergeOptions(copy_tokenizer=False))
    result = CliRunner().invoke(
        app, ["--quiet", "merge", str(path), "--out", str(tmp_path / "ours"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    return load_tensors(tmp_path / "mergekit"), load_tensors(tmp_path / "ours")
