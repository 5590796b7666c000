"""`ties` on small tensors against hand-computed values, identities and stats."""

from __future__ import annotations

import pytest
import torch

import registry.merge.methods.base as methods_base
from registry.errors import UnknownMethodError
from registry.merge.methods import METHODS, TensorStats, get_method
from registry.merge.methods.ties import merge_ties

BASE = torch.ones(5)
# τ1 = [3, -2, 0.5, 1, -1]: top 3 by |τ| = 3, -2 and the FIRST of the two 1s (index 3).
# τ2 = [-1, -3, 0.25, 2, 4]: top 3 = 4, -3, 2.
T1 = BASE + torch.tensor([3.0, -2.0, 0.5, 1.0, -1.0])
T2 = BASE + torch.tensor([-1.0, -3.0, 0.25, 2.0, 4.0])


def test_ties_hand_computed() -> None:
    # trimmed: [3, -2, 0, 1, 0] and [0, -3, 0, 2, 4]; votes [3, -5, 0, 3, 4] -> + - + + +
    out = merge_ties([T1, T2], BASE, weights=[1.0, 1.0], densities=[0.6, 0.6])
    assert torch.equal(out - BASE, torch.tensor([3.0, -2.5, 0.0, 1.5, 4.0]))


def test_ties_normalize_and_lambda() -> None:
    summed = merge_ties([T1, T2], BASE, weights=[1.0, 1.0], densities=[0.6, 0.6], normalize=False)
    assert torch.equal(summed - BASE, torch.tensor([3.0, -5.0, 0.0, 3.0, 4.0]))
    half = merge_ties([T1, T2], BASE, weights=[1.0, 1.0], densities=[0.6, 0.6], lambda_=0.5)
    assert torch.equal(half - BASE, torch.tensor([1.5, -1.25, 0.0, 0.75, 2.0]))


def test_weights_apply_before_the_election_and_zero_votes_elect_plus() -> None:
    base = torch.zeros(2)
    a, b = torch.tensor([3.0, 2.0]), torch.tensor([-2.0, -2.0])
    equal = merge_ties([a, b], base, weights=[1.0, 1.0], densities=[1.0, 1.0])
    assert equal.tolist() == [3.0, 2.0]  # votes [1, 0]: both elect +
    heavy = merge_ties([a, b], base, weights=[1.0, 2.0], densities=[1.0, 1.0])
    assert heavy.tolist() == [-2.0, -2.0]  # votes [-1, -2]; (2 · -2) / 2


def test_zero_deltas_never_count() -> None:
    base = torch.zeros(3)
    a, b = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 4.0, 0.0])
    out = merge_ties([a, b], base, weights=[1.0, 1.0], densities=[1.0, 1.0])
    assert out.tolist() == [2.0, 4.0, 0.0]  # divisor counts only non-zero agreeing entries


def test_density_edges() -> None:
    none = merge_ties([T1, T2], BASE, weights=[1.0, 1.0], densities=[0.0, 0.0])
    assert torch.equal(none, BASE)
    one = merge_ties([T1, T2], BASE, weights=[1.0, 1.0], densities=[0.01, 0.01])
    assert torch.equal(one - BASE, torch.tensor([3.0, 0.0, 0.0, 0.0, 4.0]))  # k = max(1, int(0.05)) = 1


def test_one_model_and_identical_models() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 30, generator=g)
    t = base + 0.1 * torch.randn(40, 30, generator=g)
    alone = merge_ties([t], base, weights=[1.0], densities=[1.0])
    assert torch.equal(alone, base + (t - base))
    twice = merge_ties([t, t], base, weights=[0.5, 0.5], densities=[1.0, 1.0])
    assert torch.equal(twice, alone)


def test_three_inputs_ct_mn_ct_ug_sft_shape_dtype_and_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(64, 48, generator=g)
    inputs = [base + 0.01 * torch.randn(64, 48, generator=g) for _ in range(3)]
    whole = merge_ties(inputs, base, weights=[1.0, 0.7, 1.3], densities=[0.2, 0.3, 0.5])
    assert whole.shape == base.shape and whole.dtype == torch.float32
    monkeypatch.setattr(methods_base, "CHUNK_ELEMENTS", 100)
    chunked = merge_ties(inputs, base, weights=[1.0, 0.7, 1.3], densities=[0.2, 0.3, 0.5])
    assert torch.equal(whole, chunked)


def test_stats_hand_checked() -> None:
    base = torch.zeros(4)
    a = torch.tensor([3.0, -1.0, 2.0, 0.0])
    b = torch.tensor([-1.0, 2.0, 2.0, 0.0])
    stats = TensorStats()
    merge_ties([a, b], base, weights=[1.0, 1.0], densities=[1.0, 1.0], stats=stats, protect=[1])
    assert stats.elements == 4
    assert stats.kept == [3, 3]
    assert stats.sign_conflicts == 2  # positions 0 and 1
    assert stats.conflicts == {1: 1} and stats.protected_discarded == {1: 1}  # b loses position 0
    assert stats.rescued == {}


def test_registry() -> None:
    # Every method mergekit 0.1.5 registers, and ties_sv.
    mk_registry = pytest.importorskip("mergekit.merge_methods.registry", reason="mergekit 0.1.5 is the test extra")
    assert sorted(METHODS) == sorted({m.spec.name for m in mk_registry.registered_methods()} | {"ties_sv"})
    assert len(METHODS) == 21
    assert get_method("ties").default_normalize and not get_method("task_arithmetic").default_normalize
    assert get_method("linear").default_normalize and not get_method("linear").needs_base
    with pytest.raises(UnknownMethodError, match="'core_space'.*dare_linear, dare_ties, della"):
        get_method("core_space")
