"""How far a checkpoint moved from its base: relative L2 norms of the weight deltas.

`||θ - θ₀|| / ||θ₀||` over all tensors, and per tensor group (embeddings, lm_head, attention, MLP,
norms), so a lab manifest shows whether CT and SFT stayed in the small-delta regime where merging
works, and where each one changed the model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

GROUPS = ("embed_tokens", "lm_head", "self_attn", "mlp", "norm")


def tensor_group(name: str) -> str:
    """The group of a tensor name (`model.layers.0.mlp.up_proj.weight` -> `mlp`); `other` if none.

    Args:
        name: a state-dict key.

    Returns:
        One of `GROUPS` or `other`.
    """
    for group in GROUPS:
        if group in name:
            return group
    return "other"


def delta_norms(model_dir: Path, base_dir: Path) -> dict[str, float]:
    """Relative L2 norm of (model - base), overall (`total`) and per group, in fp32.

    Args:
        model_dir: the fine-tuned checkpoint (safetensors).
        base_dir: its base (safetensors, same tensor names and shapes).

    Returns:
        `{"total": r, "<group>": r, ...}` with r = ||Δ|| / ||θ₀|| for that set of tensors.

    Raises:
        ValueError: if the two checkpoints differ in tensor names or shapes.
    """
    model = _load(model_dir)
    base = _load(base_dir)
    if model.keys() != base.keys():
        raise ValueError(f"{model_dir} and {base_dir} have different tensors: {sorted(model.keys() ^ base.keys())}")
    sums: dict[str, list[float]] = {}
    for name, tensor in model.items():
        ref = base[name].float()
        if tensor.shape != ref.shape:
            raise ValueError(f"tensor {name}: shape {tuple(tensor.shape)} vs base {tuple(ref.shape)}")
        delta_sq = float((tensor.float() - ref).pow(2).sum())
        base_sq = float(ref.pow(2).sum())
        for key in ("total", tensor_group(name)):
            acc = sums.setdefault(key, [0.0, 0.0])
            acc[0] += delta_sq
            acc[1] += base_sq
    return {key: math.sqrt(d) / math.sqrt(b) if b else 0.0 for key, (d, b) in sums.items()}


def _load(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    if not tensors:
        raise ValueError(f"no *.safetensors in {model_dir}")
    return tensors
