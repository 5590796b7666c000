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
