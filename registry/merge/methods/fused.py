"""Fused CPU kernels of TIES (numba): the per-chunk work of `ties.merge_elected` in two passes, not ~45 ops.

Per chunk: `trim_weight` makes one input's trimmed, weighted delta in one branch-free loop (LLVM
vectorizes it); `combine2` elects the sign, takes the disjoint mean of two inputs and adds the
base in a second loop, counting what `TensorStats` needs. They do the same float32 operations as
the torch path, in the same order, so the results are bit-identical (tested): the deltas, the
trimming against the cut (ties at the cut kept lowest index first while the quota lasts: a chunk
where it runs out goes through the scalar `trim_weight_quota`), the weights, the vote
((d₀ + d₁) + 0.0, as `base.sum_inputs`), the elected sign, the agreeing sum and weight sum, a
zero divisor counted as 1, the division, λ and the base. numba compiles without fast-math, so no
FMA contraction or reassociation changes a bit.

Used on CPU for plain TIES (no slack flips) with two inputs (the CT + SFT case), when numba is
installed; `MERGELING_FUSED=0` turns it off. The torch path is the fallback and the reference.
The trimming cut itself (`topk.find_cut_sampled`) stays in torch: a numba version of its window
pass was slower on bf16 inputs (many entries inside the window).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import torch

from registry.merge.methods.base import TensorStats, check_inputs, chunk_elements, flat_chunks, fp32_chunk
from registry.merge.topk import Cut


def enabled() -> bool:
    """Whether the fused kernel can run: numba importable and not turned off by MERGELING_FUSED=0."""
    if os.environ.get("MERGELING_FUSED", "1").strip() in {"0", "off", "false", "no"}:
        return False
    return _kernels() is not None


@cache
def _kernels() -> Any:
    try:
        import numba
    except ImportError:
        return None
    jit = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")

    @jit
    def count_ties(x: np.ndarray, b: np.ndarray, t: np.float32) -> int:
        n = 0
        for j in range(x.shape[0]):
            n += abs(np.float32(x[j] - b[j])) == t
        return n

    @jit
    def trim_weight(
        x: np.ndarray, b: np.ndarray, kind: int, t: np.float32, ge: bool, w: np.float32, d: np.ndarray
    ) -> int:
        # One input's trimmed, weighted delta; branch-free per element so LLVM vectorizes it.
        zero = np.float32(0.0)
        one = np.float32(1.0)
        nonzero = 0
        if kind == 0:
            for j in range(x.shape[0]):
                d[j] = np.float32(zero * w)
        elif kind == 1:
            for j in range(x.shape[0]):
                v = np.float32(x[j] - b[j])
                nonzero += v != zero
                d[j] = np.float32(v * w)
        else:
            for j in range(x.shape[0]):
                v = np.float32(x[j] - b[j])
                m = abs(v)
                keep = one if (m > t) | (ge & (m == t)) else zero
                d[j] = np.float32(np.float32(v * keep) * w)
        return nonzero

    @jit
    def trim_weight_quota(x: np.ndarray, b: np.ndarray, t: np.float32, left: int, w: np.float32, d: np.ndarray) -> int:
        # The chunk where the quota of ties at the cut runs out: lowest index first (scalar).
        zero = np.float32(0.0)
        one = np.float32(1.0)
        for j in range(x.shape[0]):
            v = np.float32(x[j] - b[j])
            m = abs(v)
            keep = zero
            if m > t:
                keep = one
            elif m == t and left > 0:
                keep = one
                left -= 1
            d[j] = np.float32(np.float32(v * keep) * w)
        return left

    @jit
    def combine2(
        d0: np.ndarray,
        d1: np.ndarray,
        b: np.ndarray,
        w0: np.float32,
        w1: np.float32,
        normalize: bool,
        scale: np.float32,
        use_scale: bool,
        out: np.ndarray,
        counts: np.ndarray,
    ) -> None:
        # Elect, disjoint mean and add for two inputs; counts: [lost 0, lost 1, positions with a loss].
        zero = np.float32(0.0)
        one = np.float32(1.0)
        lost0 = 0
        lost1 = 0
        either = 0
        for j in range(b.shape[0]):
            a = d0[j]
            c = d1[j]
            votes = np.float32(np.float32(a + c) + zero)
            sign = one if votes >= zero else -one
            s0 = np.float32(a * sign)
            s1 = np.float32(c * sign)
            g0 = one if s0 > zero else zero
            g1 = one if s1 > zero else zero
            mixed = np.float32(np.float32(np.float32(a * g0) + np.float32(c * g1)) + zero)
            div = np.float32(np.float32(np.float32(w0 * g0) + np.float32(w1 * g1)) + zero)
            div = np.float32(div + (one if div == zero else zero))
            if normalize:
                mixed = np.float32(mixed / div)
            if use_scale:
                mixed = np.float32(mixed * scale)
            out[j] = np.float32(b[j] + mixed)
            l0 = s0 < zero
            l1 = s1 < zero
            lost0 += int(l0)
            lost1 += int(l1)
            either += int(l0 | l1)
        counts[0] += lost0
        counts[1] += lost1
        counts[2] += either

    return count_ties, trim_weight, trim_weight_quota, combine2


def kernels() -> Any:
    """(count_ties, trim_weight, trim_weight_quota, combine2), compiled on first use."""
    return _kernels()


def merge_two(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool,
    lambda_: float,
    stats: TensorStats | None,
    protect: Sequence[int],
    count_conflicts: bool,
    trims: Sequence[Cut] | None,
) -> torch.Tensor:
    """`ties.merge_elected` for two inputs without slack flips, through the fused kernels (same bits)."""
    from registry.merge.methods.ties import _kept_count, trim_cuts

    check_inputs(tensors, base, weights=weights, densities=densities)
    n, numel = len(tensors), base.numel()
    cuts = list(trims) if trims is not None else trim_cuts(tensors, base, densities)
    count_ties, trim_weight, trim_weight_quota, combine2 = kernels()
    kinds = [0 if c == Cut.keep_none() else 1 if c == Cut.keep_all() else 2 for c in cuts]
    thresholds = [np.float32(c.value if k == 2 else 0.0) for c, k in zip(cuts, kinds, strict=True)]
    left = [c.ties for c in cuts]
    weight = [np.float32(w) for w in weights]
    counts = np.zeros(n + 1, dtype=np.int64)  # kept (keep-all inputs), then sign conflicts
    lost = np.zeros(3, dtype=np.int64)
    result = torch.empty(base.shape, dtype=torch.float32)
    flat_out, flat_base = result.view(-1), base.reshape(-1)
    flats = [t.reshape(-1) for t in tensors]
    size = min(chunk_elements(base.device), numel) or 1
    xs = torch.empty((n, size), dtype=torch.float32)
    ds = np.empty((n, size), dtype=np.float32)
    base_buffer = torch.empty(size, dtype=torch.float32)
    for part in flat_chunks(numel, size):
        c = part.stop - part.start
        chunk_base = fp32_chunk(flat_base, part, base_buffer).numpy()
        for i, flat in enumerate(flats):
            x = fp32_chunk(flat, part, xs[i]).numpy()
            ge = False
            if kinds[i] == 2 and left[i] > 0:
                ties = count_ties(x, chunk_base, thresholds[i])
                if ties > left[i]:  # the quota runs out in this chunk: lowest index first
                    left[i] = trim_weight_quota(x, chunk_base, thresholds[i], left[i], weight[i], ds[i, :c])
                    continue
                ge, left[i] = True, left[i] - ties
            counts[i] += trim_weight(x, chunk_base, kinds[i], thresholds[i], ge, weight[i], ds[i, :c])
        combine2(
            ds[0, :c],
            ds[1, :c],
            chunk_base,
            weight[0],
            weight[1],
            normalize,
            np.float32(lambda_),
            lambda_ != 1,
            flat_out[part].numpy(),
            lost,
        )
    counts[n] = lost[2]
    counts = np.append(counts, [lost[index] for index in protect]).astype(np.int64)  # discarded per protected
    if stats is not None:
        stats.elements += numel
        for index, (cut, density) in enumerate(zip(cuts, densities, strict=False)):
            known = _kept_count(cut, max(1, int(density * numel)))
            stats.add_kept(index, int(counts[index]) if known is None else known)
        stats.sign_conflicts += int(counts[n])
        for q, index in enumerate(protect):
            discarded = int(counts[n + 1 + q])
            stats.protected_discarded[index] = stats.protected_discarded.get(index, 0) + discarded
            if count_conflicts:
                stats.conflicts[index] = stats.conflicts.get(index, 0) + discarded
    return result
