"""The fused CPU kernels of TIES (C) give exactly the torch path's bits and counts."""

from __future__ import annotations

import itertools

import pytest
import torch

import registry.merge.methods.base as methods_base
from registry.merge.kernels.fused import enabled
from registry.merge.methods import TensorStats
from registry.merge.methods.ties import merge_ties

if not enabled():  # no C compiler: the kernels cannot be built here
    pytest.skip("the fused C kernels cannot be built here (no C compiler)", allow_module_level=True)


def _both(monkeypatch: pytest.MonkeyPatch, *args: object, **kwargs: object) -> tuple:
    out = []
    for flag in ("0", "1"):
        monkeypatch.setenv("MERGELING_FUSED", flag)
        assert enabled() == (flag == "1")
        stats = TensorStats()
        out.append((merge_ties(*args, stats=stats, **kwargs), stats))  # type: ignore[arg-type]
    return tuple(out)


@pytest.mark.parametrize(
    ("dtype", "weight", "density", "normalize", "lambda_"),
    list(itertools.product([torch.float32, torch.bfloat16], [1.0, -0.7], [0.2, 1.0, 0.0], [True, False], [1.0, 0.8])),
)
def test_fused_equals_torch_path(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, weight: float, density: float, normalize: bool, lambda_: float
) -> None:
    g = torch.Generator().manual_seed(int(weight * 10) + int(density * 100))
    base = (torch.randn(301, 77, generator=g) * 0.02).to(dtype)
    inputs = [(base.float() + 0.003 * torch.randn(base.shape, generator=g)).to(dtype) for _ in range(2)]
    monkeypatch.setattr(methods_base, "CHUNK_ELEMENTS", 4000)  # several chunks, a short last one
    (a, sa), (b, sb) = _both(
        monkeypatch,
        inputs,
        base,
        weights=[weight, 1.0],
        densities=[density, 0.3],
        normalize=normalize,
        lambda_=lambda_,
        protect=[1],
    )
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert sa == sb


def test_ties_quota_running_out_mid_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many equal magnitudes at the cut: which of them survive depends on the quota, lowest index first.
    base = torch.zeros(10_000)
    x = torch.where(torch.arange(10_000) % 3 == 0, 0.5, 0.25) * torch.where(torch.arange(10_000) % 2 == 0, 1, -1)
    y = -x.flip(0)
    monkeypatch.setattr(methods_base, "CHUNK_ELEMENTS", 777)
    (a, sa), (b, sb) = _both(monkeypatch, [x, y], base, weights=[1.0, 1.0], densities=[0.5, 0.41])
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert sa == sb and sa.kept == [5000, 4100]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_parallel_parts_and_tie_quota_stops_equal_the_torch_path(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    # Big enough for the sampled window (> 2**18 entries) and split into parts merged on three
    # threads; coarse values make many ties at each cut, so the quota runs out inside some block.
    import registry.merge.kernels.fused as fused

    g = torch.Generator().manual_seed(5)
    base = (torch.randint(-40, 40, (700, 611), generator=g) / 64).to(dtype)
    inputs = [(base.float() + torch.randint(-9, 9, base.shape, generator=g) / 64).to(dtype) for _ in range(2)]
    monkeypatch.setattr(fused, "_PARALLEL_FROM", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        (a, sa), (b, sb) = _both(monkeypatch, inputs, base, weights=[1.0, 0.6], densities=[0.3, 0.45], protect=[1])
        out = torch.empty(base.shape, dtype=dtype)
        monkeypatch.setenv("MERGELING_FUSED", "1")
        into = merge_ties(inputs, base, weights=[1.0, 0.6], densities=[0.3, 0.45], out=out)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert sa == sb and sa.sign_conflicts > 0
    assert into is out and torch.equal(into, b.to(dtype))  # written into `out`: the cast's bits


def test_given_trims_find_their_quota_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    # ties_sv's model scope hands the cuts in: the fused kernel finds where each quota runs out itself.
    from registry.merge.methods.ties import merge_elected, trim_cuts

    g = torch.Generator().manual_seed(6)
    base = torch.randint(-20, 20, (400, 300), generator=g) / 32
    inputs = [base + torch.randint(-5, 5, base.shape, generator=g) / 32 for _ in range(2)]
    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv("MERGELING_FUSED", flag)
        trims = trim_cuts(inputs, base, [0.25, 0.5])
        results.append(
            merge_elected(inputs, base, weights=[1.0, 1.0], densities=[0.25, 0.5], normalize=True, lambda_=1.0,
                          stats=None, trims=trims)
        )  # fmt: skip
    assert torch.equal(results[0].view(torch.int32), results[1].view(torch.int32))


def test_nonfinite_count_matches_torch() -> None:
    from registry.merge.kernels.fused import count_nonfinite

    x = torch.randn(10_000)
    x[[3, 77, 9000]] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    for dtype in (torch.float32, torch.bfloat16):
        assert count_nonfinite(x.to(dtype)) == int((~torch.isfinite(x.to(dtype))).sum()) == 3
    assert count_nonfinite(x.half()) is None  # fp16: the torch path checks


def _stride_blind(n: int) -> torch.Tensor:
    # Small deltas exactly where the strided sample looks, large ones everywhere else: the
    # sample's window misses the cut and the exact stream select takes over.
    delta = torch.linspace(1.0, 2.0, n)
    delta[:: n // (1 << 16)] = 1e-3
    return delta


@pytest.mark.parametrize(
    "case",
    ["smooth fp32 (sampled window)", "coarse bf16 (window overflows)", "small (every key)", "skewed sample"],
)
def test_fused_cuts_equal_the_torch_select(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    from registry.merge.kernels.fused import find_cuts
    from registry.merge.methods.ties import trim_cut

    g = torch.Generator().manual_seed(7)
    n = 5000 if case.startswith("small") else 600_000
    base = torch.randn(n, generator=g)
    if case.startswith("coarse"):
        base = (torch.randint(-8, 8, (n,), generator=g) / 8).to(torch.bfloat16)
        x = (base.float() + torch.randint(-3, 3, (n,), generator=g) / 8).to(torch.bfloat16)
    elif case == "skewed sample":
        x = base + _stride_blind(n)
    else:
        x = base + torch.randn(n, generator=g) * 0.01
    monkeypatch.setenv("MERGELING_FUSED", "0")
    expected = [trim_cut(x, base, d) for d in (0.05, 0.3, 0.9)]
    got = [found[0] if found else None for found in find_cuts([x, x, x], base, (0.05, 0.3, 0.9))]
    assert got == expected


@pytest.mark.parametrize("method", ["dare_ties", "della", "breadcrumbs_ties"])
@pytest.mark.parametrize(
    ("dtype", "weight", "normalize", "lambda_"), [(torch.bfloat16, -0.7, True, 0.8), (torch.float32, 1.0, False, 1.0)]
)
def test_fused_election_of_sparsified_inputs_equals_torch_path(
    monkeypatch: pytest.MonkeyPatch, method: str, dtype: torch.dtype, weight: float, normalize: bool, lambda_: float
) -> None:
    # Two inputs after DARE's / DELLA's / Breadcrumbs' drop: one C loop elects and merges; same bits and counts.
    from registry.merge.methods import get_method

    g = torch.Generator().manual_seed(7)
    base = (torch.randn(301, 77, generator=g) * 0.02).to(dtype)
    inputs = [(base.float() + 0.003 * torch.randn(base.shape, generator=g)).to(dtype) for _ in range(2)]
    monkeypatch.setattr(methods_base, "CHUNK_ELEMENTS", 4000)
    kwargs = {"weights": [1.0, weight], "densities": [0.4, 0.6], "normalize": normalize, "lambda_": lambda_}
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("MERGELING_FUSED", flag)
        stats = TensorStats()
        merged = get_method(method).fn(inputs, base, stats=stats, protect=[1], **kwargs)
        results.append((merged, stats))
    (a, sa), (b, sb) = results
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert sa == sb and sa.sign_conflicts > 0 and sa.conflicts[1] > 0
