"""Exact top-k (registry.merge.kernels.topk) against a stable-sort reference, including ties and edge cases."""

from __future__ import annotations

import pytest
import torch

from registry.merge.kernels.topk import (
    Cut,
    ascending_keys,
    cut_mask,
    find_cut,
    find_cut_sampled,
    magnitude_keys,
    topk_mask,
)


def reference_mask(keys: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest keys; equal keys: lower flat index first (a stable descending sort)."""
    flat = keys.reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order[: max(0, min(k, flat.numel()))]] = True
    return mask.view(keys.shape)


def chunked_mask(keys: torch.Tensor, cut: Cut, size: int) -> torch.Tensor:
    flat, left, parts = keys.reshape(-1), cut.ties, []
    for start in range(0, flat.numel(), size):
        mask, left = cut_mask(flat[start : start + size], cut, left)
        parts.append(mask)
    return torch.cat(parts)


CASES = {
    "gaussian": lambda g: torch.randn(5000, generator=g),
    "many_ties": lambda g: torch.randint(-4, 5, (3000,), generator=g).float() / 4,
    "zeros_mixed": lambda g: torch.randn(2000, generator=g) * (torch.rand(2000, generator=g) < 0.1),
    "all_equal": lambda g: torch.full((777,), -0.5),
    "all_zero": lambda g: torch.zeros(300),
    "bf16_values": lambda g: (torch.randn(4096, generator=g) * 1e-3).bfloat16().float(),
    "signed_zeros": lambda g: torch.tensor([0.0, -0.0, 1.0, -1.0, -0.0, 0.0, 2.0]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.2, 0.5, 0.999, 1.0])
def test_topk_mask_matches_stable_sort(case: str, fraction: float) -> None:
    x = CASES[case](torch.Generator().manual_seed(7))
    keys = magnitude_keys(x)
    k = int(fraction * x.numel())
    mask = topk_mask(keys, k)
    assert int(mask.sum()) == k
    assert torch.equal(mask, reference_mask(keys, k))


@pytest.mark.parametrize("case", ["gaussian", "many_ties", "bf16_values"])
@pytest.mark.parametrize("size", [7, 97, 1024])
def test_chunked_cut_equals_whole(case: str, size: int) -> None:
    x = CASES[case](torch.Generator().manual_seed(3))[:1500]
    keys = magnitude_keys(x)
    k = int(0.3 * x.numel())
    flat = keys.reshape(-1)
    cut = find_cut(lambda: (flat[s : s + size] for s in range(0, flat.numel(), size)), k, numel=flat.numel())
    assert torch.equal(chunked_mask(keys, cut, size), reference_mask(keys, k))


def _parts(numel: int, size: int):
    return lambda: (slice(s, min(s + size, numel)) for s in range(0, numel, size))


@pytest.mark.parametrize("case", ["gaussian", "many_ties", "bf16_values", "all_equal"])
def test_sampled_cut_is_exact_with_a_good_and_a_misleading_sample(case: str) -> None:
    x = CASES[case](torch.Generator().manual_seed(11)).repeat(3)
    keys = magnitude_keys(x)
    n, k = keys.numel(), int(0.2 * keys.numel())
    expected = find_cut(lambda: (keys,), k, numel=n)
    good = keys[:: max(1, n // 2048)]
    misleading = torch.zeros(4096, dtype=torch.int32)  # says every value is 0: the window misses
    for sample in (good, misleading, keys[:10]):
        cut = find_cut_sampled(lambda p: keys[p], k, numel=n, sample=sample, parts=_parts(n, 500))
        assert cut == expected
        assert torch.equal(chunked_mask(keys, cut, 500), reference_mask(keys, k))


def test_sampled_cut_when_every_candidate_is_kept() -> None:
    # k lands exactly on the last key inside the window: the cut keeps all copies of the window's minimum.
    keys = magnitude_keys(torch.arange(1, 4097, dtype=torch.float32))
    for k in range(1, 4096, 37):
        cut = find_cut_sampled(lambda p: keys[p], k, numel=4096, sample=keys, parts=_parts(4096, 1000))
        assert torch.equal(chunked_mask(keys, cut, 1000), reference_mask(keys, k))


def test_edge_cuts() -> None:
    keys = magnitude_keys(torch.randn(100))
    assert find_cut(lambda: (keys,), 0, numel=100) == Cut.keep_none()
    assert find_cut(lambda: (keys,), -3, numel=100) == Cut.keep_none()
    assert find_cut(lambda: (keys,), 100, numel=100) == Cut.keep_all()
    assert not topk_mask(keys, 0).any()
    assert topk_mask(keys, 100).all()
    assert int(topk_mask(keys, 1).nonzero()) == int(torch.argmax(keys))


def test_ties_are_kept_lowest_index_first_across_chunks() -> None:
    keys = magnitude_keys(torch.tensor([1.0, 3.0, 1.0, 1.0, 0.5, 1.0, 1.0]))
    cut = find_cut(lambda: (keys,), 3, numel=7)
    assert cut.ties == 2
    assert chunked_mask(keys, cut, 2).nonzero().flatten().tolist() == [0, 1, 2]


def test_key_orders() -> None:
    x = torch.tensor([0.0, -0.0, 1e-30, -2.5, 2.5, 7.0, float("inf")])
    mags = magnitude_keys(x)
    assert torch.equal(torch.argsort(mags, stable=True), torch.argsort(x.abs(), stable=True))
    assert mags[0] == mags[1] == 0
    margins = torch.tensor([3.0, 0.0, 1.0, 1e-20])
    assert torch.argsort(ascending_keys(margins), descending=True).tolist() == [1, 3, 2, 0]
