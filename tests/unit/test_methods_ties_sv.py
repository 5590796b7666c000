"""`ties_sv`: the slack step by hand, identities with `ties`, several protected inputs, model scope."""

from __future__ import annotations

import pytest
import torch

import registry.merge.methods.base as methods_base
from registry.merge.kernels.topk import Cut
from registry.merge.methods import TensorStats
from registry.merge.methods.ties import merge_ties
from registry.merge.methods.ties_sv import (
    conflict_margins,
    merge_ties_sv,
    plan_model_slack,
    slack_count,
)

BASE = torch.zeros(6)
CT = torch.tensor([3.0, -1.0, 2.0, -4.0, 1.0, 0.5])
SFT = torch.tensor([-1.0, 2.0, -1.0, 1.0, -3.0, -0.5])
# votes [2, 1, 1, -3, -2, 0] -> γ = + + + - - +. SFT conflicts C = {0: margin 2, 2: 1, 3: 3, 5: 0}.
TIES = [3.0, 2.0, 2.0, -4.0, -3.0, 0.5]


def _sv(slack: float, **kwargs: object) -> torch.Tensor:
    return merge_ties_sv([CT, SFT], BASE, weights=[1.0, 1.0], densities=[1.0, 1.0], slack=slack, protect=[1], **kwargs)


@pytest.mark.parametrize(
    ("slack", "expected"),
    [
        (0.0, TIES),
        (0.25, [3.0, 2.0, 2.0, -4.0, -3.0, -0.5]),  # ⌈1⌉: position 5 (margin 0)
        (0.5, [3.0, 2.0, -1.0, -4.0, -3.0, -0.5]),  # + position 2 (margin 1)
        (0.6, [-1.0, 2.0, -1.0, -4.0, -3.0, -0.5]),  # ⌈2.4⌉ = 3: + position 0 (margin 2)
        (1.0, [-1.0, 2.0, -1.0, 1.0, -3.0, -0.5]),  # all of C
    ],
)
def test_slack_by_hand(slack: float, expected: list[float]) -> None:
    assert _sv(slack).tolist() == expected


def test_stats_by_hand() -> None:
    stats = TensorStats()
    _sv(0.5, stats=stats)
    assert stats.elements == 6 and stats.kept == [6, 6]
    assert stats.conflicts == {1: 4} and stats.rescued == {1: 2} and stats.protected_discarded == {1: 2}
    assert stats.sign_conflicts == 6


def test_equal_margins_rescue_the_lower_index_first() -> None:
    out = merge_ties_sv(
        [torch.tensor([2.0, 2.0]), torch.tensor([-1.0, -1.0])],
        torch.zeros(2),
        weights=[1.0, 1.0],
        densities=[1.0, 1.0],
        slack=0.5,
        protect=[1],
    )
    assert out.tolist() == [-1.0, 2.0]


def test_slack_count_is_exact_for_decimals() -> None:
    assert slack_count(0.05, 100) == 5  # 0.05 · 100 in binary floats is 5.000000000000001
    assert slack_count(0.1, 133) == 14 and slack_count(0.0, 10) == 0 and slack_count(1.0, 7) == 7
    with pytest.raises(ValueError, match="slack=-0.1"):
        slack_count(-0.1, 3)


def _random(n: int, seed: int, shape: tuple[int, ...] = (50, 40)) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + 0.01 * torch.randn(shape, generator=g) for _ in range(n)]


def test_slack_zero_is_exactly_ties() -> None:
    base, inputs = _random(3, 0)
    kwargs = {"weights": [1.0, 0.6, 1.4], "densities": [0.2, 0.3, 0.4], "lambda_": 0.9}
    ties = merge_ties(inputs, base, **kwargs)
    sv = merge_ties_sv(inputs, base, slack=0.0, protect=[2], **kwargs)
    assert torch.equal(ties.view(torch.int32), sv.view(torch.int32))


def _trimmed(delta: torch.Tensor, density: float) -> torch.Tensor:
    k = int(density * delta.numel())
    order = torch.sort(delta.abs().reshape(-1), descending=True, stable=True).indices[:k]
    keep = torch.zeros(delta.numel(), dtype=torch.bool)
    keep[order] = True
    return delta * keep.view(delta.shape)


def test_slack_one_keeps_every_surviving_protected_entry() -> None:
    base, inputs = _random(3, 1)  # CT-mn, CT-ug, SFT
    stats = TensorStats()
    out = merge_ties_sv(
        inputs, base, weights=[1.0, 1.0, 1.0], densities=[0.3, 0.3, 0.3], slack=1.0, protect=[2], stats=stats
    )
    sft = _trimmed(inputs[2] - base, 0.3)
    survived = sft != 0
    assert stats.protected_discarded == {2: 0} and stats.rescued[2] == stats.conflicts[2] > 0
    assert torch.equal(torch.sign(out - base)[survived], torch.sign(sft)[survived])


def test_slack_grows_what_the_sft_keeps() -> None:
    base, inputs = _random(2, 2)
    lost = []
    for slack in (0.0, 0.1, 0.5, 1.0):
        stats = TensorStats()
        merge_ties_sv(inputs, base, weights=[1.0, 1.0], densities=[0.2, 0.2], slack=slack, protect=[1], stats=stats)
        assert stats.rescued.get(1, 0) == slack_count(slack, stats.conflicts[1])
        lost.append(stats.protected_discarded[1])
    assert lost == sorted(lost, reverse=True) and lost[-1] == 0 and lost[0] > 0


def test_two_protected_inputs_apply_in_order() -> None:
    base = torch.zeros(3)
    ct = torch.tensor([5.0, 5.0, -5.0])
    p1 = torch.tensor([-1.0, -2.0, 1.0])
    p2 = torch.tensor([-3.0, 1.0, 1.0])
    # votes [1, 4, -3] -> + + -. p1 conflicts {0: margin 1, 1: 4, 2: 3}; ⌈3/3⌉ = 1 -> flip 0 to −.
    # Then, against γ = − + −, p2 conflicts only at 2 (margin 3): ⌈1/3⌉ = 1 -> flip 2 to +.
    stats = TensorStats()
    out = merge_ties_sv(
        [ct, p1, p2], base, weights=[1.0, 1.0, 1.0], densities=[1.0] * 3, slack=1 / 3, protect=[1, 2], stats=stats
    )
    assert out.tolist() == [-2.0, 3.0, 1.0]
    assert stats.conflicts == {1: 3, 2: 1} and stats.rescued == {1: 1, 2: 1}


def test_chunking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    base, inputs = _random(3, 3)
    kwargs = {"weights": [1.0, 0.5, 1.0], "densities": [0.2, 0.5, 0.3], "slack": 0.3, "protect": [2, 0]}
    whole = merge_ties_sv(inputs, base, **kwargs)
    monkeypatch.setattr(methods_base, "CHUNK_ELEMENTS", 77)
    assert torch.equal(whole, merge_ties_sv(inputs, base, **kwargs))


def test_model_scope_equals_tensor_scope_on_the_concatenation() -> None:
    # With no trimming (density 1) a model of tensors A, B ranks C like one tensor cat(A, B).
    base_a, inputs_a = _random(2, 4, (30, 20))
    base_b, inputs_b = _random(2, 5, (17,))
    kwargs = {"weights": [1.0, 1.0], "densities": [1.0, 1.0], "protect": [1]}
    for slack in (0.05, 0.3, 0.77):
        margins = [
            ("a", conflict_margins(inputs_a, base_a, **kwargs)),
            ("b", conflict_margins(inputs_b, base_b, **kwargs)),
        ]
        plan = plan_model_slack(margins, slack=slack)
        a = merge_ties_sv(inputs_a, base_a, slack=slack, cuts=[plan.cuts["a"]], **kwargs)
        b = merge_ties_sv(inputs_b, base_b, slack=slack, cuts=[plan.cuts["b"]], **kwargs)
        whole = merge_ties_sv(
            [torch.cat([x.reshape(-1), y]) for x, y in zip(inputs_a, inputs_b, strict=False)],
            torch.cat([base_a.reshape(-1), base_b]),
            slack=slack,
            **kwargs,
        )
        assert torch.equal(torch.cat([a.reshape(-1), b]), whole)
        assert plan.conflicts == margins[0][1].numel() + margins[1][1].numel()


def test_model_scope_gives_threshold_ties_to_the_first_tensor() -> None:
    margins = [("first", torch.tensor([1.0, 2.0, 1.0])), ("second", torch.tensor([1.0, 0.5]))]
    plan = plan_model_slack(margins, slack=0.6)  # ⌈3⌉ of 5: 0.5, then two of the three 1.0s
    assert plan.cuts["first"].ties == 2 and plan.cuts["second"].ties == 0
    assert plan.rescued == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="slack=1.5"):
        _sv(1.5)
    with pytest.raises(ValueError, match="protect=\\[2\\]"):
        merge_ties_sv([CT, SFT], BASE, weights=[1.0, 1.0], densities=[1.0, 1.0], slack=0.1, protect=[2])
    with pytest.raises(ValueError, match="1 cuts for 0"):
        merge_ties_sv([CT, SFT], BASE, weights=[1.0, 1.0], densities=[1.0, 1.0], cuts=[Cut.keep_none()])


def test_shared_trimming_cuts_give_the_same_merge() -> None:
    from registry.merge.methods.ties import trim_cuts

    base, inputs = _random(2, 6)
    kwargs = {"weights": [1.0, 1.0], "densities": [0.2, 0.3], "protect": [1]}
    trims = trim_cuts(inputs, base, kwargs["densities"])
    margins = conflict_margins(inputs, base, trims=trims, **kwargs)
    assert torch.equal(margins, conflict_margins(inputs, base, **kwargs))
    plan = plan_model_slack([("t", margins)], slack=0.4)
    shared = merge_ties_sv(inputs, base, slack=0.4, cuts=[plan.cuts["t"]], trims=trims, **kwargs)
    assert torch.equal(shared, merge_ties_sv(inputs, base, slack=0.4, **kwargs))  # one tensor: same ranking
