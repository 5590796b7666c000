"""`linear` and `task_arithmetic` on small tensors against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from registry.merge.methods import TensorStats
from registry.merge.methods.linear import merge_linear
from registry.merge.methods.task_arithmetic import merge_task_arithmetic

A = torch.tensor([[1.0, -2.0], [4.0, 0.0]])
B = torch.tensor([[3.0, 2.0], [0.0, -8.0]])
BASE = torch.tensor([[1.0, 1.0], [1.0, 1.0]])


def test_linear_weighted_average() -> None:
    out = merge_linear([A, B], None, weights=[1.0, 3.0], normalize=True)
    assert torch.equal(out, torch.tensor([[2.5, 1.0], [1.0, -6.0]]))
    assert out.dtype == torch.float32 and out.shape == A.shape


def test_linear_without_normalize_is_the_weighted_sum() -> None:
    out = merge_linear([A, B], None, weights=[1.0, 3.0], normalize=False)
    assert torch.equal(out, torch.tensor([[10.0, 4.0], [4.0, -24.0]]))


def test_linear_of_one_model_is_itself_and_inputs_are_untouched() -> None:
    x = torch.randn(33, 5, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    assert torch.equal(merge_linear([x], None, weights=[1.0], normalize=True), x)
    assert torch.equal(merge_linear([x, x], None, weights=[1.0, 1.0]), x)
    assert torch.equal(x, before)


def test_linear_stats_and_errors() -> None:
    stats = TensorStats()
    merge_linear([A, B], None, weights=[1.0, 1.0], stats=stats)
    assert stats.elements == 4 and stats.kept == [3, 3]
    with pytest.raises(ValueError, match="weights has 1 entries for 2 inputs"):
        merge_linear([A, B], None, weights=[1.0])
    with pytest.raises(ValueError, match="differ in shape"):
        merge_linear([A, B[:1]], None, weights=[1.0, 1.0])


def test_task_arithmetic_hand_computed() -> None:
    # τ_A = [[0, -3], [3, -1]], τ_B = [[2, 1], [-1, -9]]
    out = merge_task_arithmetic([A, B], BASE, weights=[1.0, 0.5], normalize=False, lambda_=1.0)
    assert torch.equal(out, torch.tensor([[2.0, -1.5], [3.5, -4.5]]))
    normalized = merge_task_arithmetic([A, B], BASE, weights=[1.0, 1.0], normalize=True, lambda_=1.0)
    assert torch.equal(normalized, torch.tensor([[2.0, 0.0], [2.0, -4.0]]))
    scaled = merge_task_arithmetic([A, B], BASE, weights=[1.0, 1.0], normalize=False, lambda_=0.5)
    assert torch.equal(scaled, torch.tensor([[2.0, 0.0], [2.0, -4.0]]))


def test_task_arithmetic_zero_weight_sum_is_guarded() -> None:
    out = merge_task_arithmetic([A, B], BASE, weights=[1.0, -1.0], normalize=True, lambda_=1.0)
    assert torch.equal(out, BASE + (A - BASE) - (B - BASE))


def test_task_arithmetic_needs_a_base() -> None:
    with pytest.raises(ValueError, match="needs a base"):
        merge_task_arithmetic([A], None, weights=[1.0])
