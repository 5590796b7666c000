"""Fixtures: tiny random Llama checkpoints (registry.lab.tiny), cheap enough for every test.

`tiny_family` (session-scoped, fp32, one file each) gives base/ct/sft dirs; treat them as
read-only. `make_tiny_family(tmp_path, ...)` builds a fresh family with any option (bf16, sharded,
tied embeddings, extended CT vocabulary) for tests that need their own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from registry.lab.tiny import DemoFamily, build_demo_family


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> DemoFamily:
    """base + ct + sft, fp32, untied, single-file safetensors (shared: do not modify)."""
    return build_demo_family(tmp_path_factory.mktemp("tiny_family"), seed=0)


@pytest.fixture(scope="session")
def tiny_family_bf16(tmp_path_factory: pytest.TempPathFactory) -> DemoFamily:
    """base + ct + sft stored in bf16 (shared: do not modify)."""
    return build_demo_family(tmp_path_factory.mktemp("tiny_family_bf16"), seed=10, dtype="bfloat16")


@pytest.fixture(scope="session")
def tiny_family_sharded(tmp_path_factory: pytest.TempPathFactory) -> DemoFamily:
    """base + ct + sft, fp32, each sharded into several files with an index (shared)."""
    return build_demo_family(tmp_path_factory.mktemp("tiny_family_sharded"), seed=20, max_shard_size="40KB")


@pytest.fixture(scope="session")
def tiny_family_tied(tmp_path_factory: pytest.TempPathFactory) -> DemoFamily:
    """base + ct + sft with tied embeddings (no lm_head.weight on disk) (shared)."""
    return build_demo_family(tmp_path_factory.mktemp("tiny_family_tied"), seed=30, tie_word_embeddings=True)


@pytest.fixture(scope="session")
def tiny_family_extended(tmp_path_factory: pytest.TempPathFactory) -> DemoFamily:
    """base + ct + sft where the CT has 16 extra vocabulary rows and tokens (shared)."""
    return build_demo_family(tmp_path_factory.mktemp("tiny_family_ext"), seed=40, ct_extra_vocab=16)


@pytest.fixture
def make_tiny_family() -> Callable[..., DemoFamily]:
    """A factory: `make_tiny_family(root, seed=..., dtype=..., ct_extra_vocab=..., ...)`."""

    def make(root: Path, **options: object) -> DemoFamily:
        return build_demo_family(root, **options)  # type: ignore[arg-type]

    return make


def write_stack_family(root: Path, *, tensors: int, rows: int = 1024, cols: int = 1024, seed: int = 1) -> int:
    """Write base/, a/, b/ under `root`: `tensors` fp32 matrices each, a and b = base + small deltas.

    A minimal Llama-typed checkpoint (config + one safetensors file) with many equal-sized tensors,
    for tests that need a merge to take a while or to scale (memory, interrupts).

    Returns:
        The bytes of weights written (three models).
    """
    import json

    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    config = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 8})
    base = {f"layers.{i:02d}.weight": 0.02 * torch.randn(rows, cols, generator=generator) for i in range(tensors)}
    for name in ("base", "a", "b"):
        state = (
            base
            if name == "base"
            else {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in base.items()}
        )
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text(config)
        save_file(state, root / name / "model.safetensors", metadata={"format": "pt"})
    return 3 * tensors * rows * cols * 4
