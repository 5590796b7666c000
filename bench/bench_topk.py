"""Micro-benchmark: exact top-k selection of |τ| on one 32000×2048 fp32 tensor (a Llama embedding).

Compares `registry.merge.kernels.topk` (radix select over bit patterns, whole tensor and chunked) with
`torch.topk`, `torch.kthvalue` and a full `argsort` (what mergekit does), checks that every
method keeps the same set up to ties at the threshold, and prints the medians.

    .venv/bin/python bench/bench_topk.py [--rows 32000 --cols 2048 --density 0.2 --repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from registry.merge.kernels.topk import cut_mask, find_cut, magnitude_keys, topk_mask
from registry.merge.methods.base import flat_chunks
from registry.merge.methods.ties import trim_cut


def _time(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=32000)
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="round the values through bf16 (many ties)")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.rows, args.cols) * 0.01
    if args.bf16:
        x = x.bfloat16().float()
    n = x.numel()
    k = max(1, int(args.density * n))
    flat = x.reshape(-1)

    def radix() -> torch.Tensor:
        return topk_mask(magnitude_keys(x), k)

    def radix_chunked() -> torch.Tensor:
        cut = find_cut(lambda: (magnitude_keys(flat[p]) for p in flat_chunks(n)), k, numel=n)
        left, parts = cut.ties, []
        for p in flat_chunks(n):
            m, left = cut_mask(magnitude_keys(flat[p]), cut, left)
            parts.append(m)
        return torch.cat(parts)

    zeros = torch.zeros_like(x)

    def sampled() -> torch.Tensor:
        # What `ties` runs: a sampled one-pass cut over 1M-entry chunks, then the mask pass.
        cut = trim_cut(x, zeros, args.density)
        left, parts = cut.ties, []
        for p in flat_chunks(n):
            m, left = cut_mask(magnitude_keys(flat[p]), cut, left)
            parts.append(m)
        return torch.cat(parts)

    def kthvalue() -> torch.Tensor:
        a = x.abs().reshape(-1)
        t = torch.kthvalue(a, n - k + 1).values
        return a >= t  # not exact-k when values tie at t

    def topk() -> torch.Tensor:
        m = torch.zeros(n, dtype=torch.bool)
        m[torch.topk(x.abs().reshape(-1), k, sorted=False).indices] = True
        return m

    def argsort() -> torch.Tensor:
        m = torch.zeros(n, dtype=torch.bool)
        m[torch.argsort(x.abs().reshape(-1), descending=True)[:k]] = True
        return m

    print(
        f"tensor {args.rows}x{args.cols} fp32{' (bf16 values)' if args.bf16 else ''}, k={k}, "
        f"threads={torch.get_num_threads()}, median of {args.repeat}"
    )
    reference = None
    for name, fn in [
        ("radix (ours)", radix),
        ("radix, chunked (ours)", radix_chunked),
        ("sampled 1-pass (ours, ties)", sampled),
        ("torch.kthvalue", kthvalue),
        ("torch.topk", topk),
        ("argsort (mergekit)", argsort),
    ]:
        seconds, mask = _time(fn, args.repeat)
        mask = mask.reshape(-1)
        if reference is None:
            reference = mask
        kept = int(mask.sum())
        differ = int((mask != reference).sum())
        print(f"{name:28s} {seconds:8.3f} s   kept {kept:>10d}   differs from radix at {differ} positions")


if __name__ == "__main__":
    main()
