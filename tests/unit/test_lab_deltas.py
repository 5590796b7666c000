"""Relative delta norms between a checkpoint and its base."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from registry.lab.deltas import delta_norms, tensor_group


def _write(path: Path, tensors: dict) -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"))
    return path


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("model.embed_tokens.weight", "embed_tokens"),
        ("lm_head.weight", "lm_head"),
        ("model.layers.3.self_attn.q_proj.weight", "self_attn"),
        ("model.layers.0.mlp.down_proj.weight", "mlp"),
        ("model.layers.1.input_layernorm.weight", "norm"),
        ("model.norm.weight", "norm"),
        ("something.else", "other"),
    ],
)
def test_tensor_group(name: str, group: str) -> None:
    assert tensor_group(name) == group


def test_identical_checkpoints_have_zero_delta(tmp_path: Path) -> None:
    import torch

    tensors = {"model.embed_tokens.weight": torch.randn(4, 3), "model.norm.weight": torch.ones(3)}
    a, b = _write(tmp_path / "a", tensors), _write(tmp_path / "b", {k: v.clone() for k, v in tensors.items()})
    assert delta_norms(a, b) == {"total": 0.0, "embed_tokens": 0.0, "norm": 0.0}


def test_known_delta(tmp_path: Path) -> None:
    import torch

    base = {"lm_head.weight": torch.full((2, 2), 2.0), "model.layers.0.mlp.up_proj.weight": torch.full((4,), 1.0)}
    tuned = {"lm_head.weight": torch.full((2, 2), 2.0), "model.layers.0.mlp.up_proj.weight": torch.full((4,), 1.5)}
    norms = delta_norms(_write(tmp_path / "t", tuned), _write(tmp_path / "b", base))
    assert norms["lm_head"] == 0.0
    assert norms["mlp"] == pytest.approx(0.5)  # ||0.5·1|| / ||1|| over 4 entries
    # total: sqrt(4·0.25) / sqrt(4·4 + 4·1)
    assert norms["total"] == pytest.approx(1.0 / math.sqrt(20.0))


def test_mismatched_checkpoints_are_refused(tmp_path: Path) -> None:
    import torch

    a = _write(tmp_path / "a", {"x.weight": torch.zeros(2)})
    b = _write(tmp_path / "b", {"y.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="different tensors"):
        delta_norms(a, b)
    c = _write(tmp_path / "c", {"x.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"shape \(3,\) vs base \(2,\)"):
        delta_norms(c, a)
