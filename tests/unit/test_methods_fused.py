"""The fused CPU kernel of TIES (numba) gives exactly the torch path's bits and counts."""

from __future__ import annotations

import itertools

import pytest
import torch

import registry.merge.methods.base as methods_base
from registry.merge.methods import TensorStats
from registry.merge.methods.fused import enabled
from registry.merge.methods.ties import merge_ties

pytest.importorskip("numba")


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
