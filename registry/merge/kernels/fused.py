"""Fused CPU kernels of TIES (C): the trimming cut and the merge in a few vectorized loops per block.

The torch path does ~45 tensor ops per position (and two histogram passes per input for the cut).
The kernels (`registry/merge/kernels/fused_kernels.c`, built and loaded by `fused_kernels`)
run over blocks of 4096 entries that stay in L1/L2, read the stored bits directly (bf16 widened
inside the loop, fp32 as is; no fp32 copy of a tensor is ever made), and the compiler vectorizes
their branch-free loops:

- `find_cuts`: the exact trimming cut of each input (`topk.Cut`: the k-th largest |τ| and how many
  of its ties are kept), inputs in parallel. A strided sample predicts a narrow window of
  magnitudes around the cut; one pass counts the entries above it and gathers those inside it,
  and a radix select among the gathered gives the exact k-th. A missed window (a skewed sample)
  or an overflowing gather (huge classes of equal bf16 deltas) falls back to an exact two-pass
  radix select over the stream. Same `Cut` as `topk.find_cut`: a cut is defined by its value, so
  any exact selection gives the same one.
- `merge_two`: TIES for two inputs (CT + SFT) without slack flips: delta, trim against the cut
  (ties at the cut kept lowest index first while the quota lasts; where it runs out comes from the
  cut's gathered keys), weight, the vote, the elected sign, the disjoint mean, λ and the base in
  one loop per block, counting what `TensorStats` needs, and for a bf16 output the
  round-to-nearest-even cast of torch's `.to(torch.bfloat16)`, written into the caller's `out`
  buffer. The tensor is split into parts merged on `workers()` threads.

Bit identity with the torch path (the reference, tested): the same float32 operations in the same
order; compiled without fast-math or FMA contraction, so no reassociation changes a bit. Used on
CPU when the inputs and base are all bf16 or all fp32 and a C compiler built the kernels;
`MERGELING_FUSED=0` turns it off.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from functools import cache, partial
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from registry.merge.kernels import fused_allowed, fused_kernels
from registry.merge.kernels.topk import Cut
from registry.merge.kernels.trim import kept_count, trim_target

_SAMPLE = 1 << 16  # strided sample predicting the cut's window
_EXACT_BELOW = 1 << 18  # smaller tensors: every key gathered, exact select (no sample)
_PARALLEL_FROM = 1 << 20  # smaller tensors are merged on one thread

T = TypeVar("T")


class Stats(Protocol):
    """What `merge_two` adds its counts to (`registry.merge.methods.TensorStats` is one)."""

    elements: int
    sign_conflicts: int
    protected_discarded: dict[int, int]
    conflicts: dict[int, int]

    def add_kept(self, index: int, count: int) -> None: ...


def enabled() -> bool:
    """Whether the fused kernels can run: built (a C compiler) and not turned off by MERGELING_FUSED=0."""
    return fused_allowed() and kernels() is not None


def supports(*tensors: torch.Tensor | None) -> bool:
    """The fused kernels handle these together: CPU, contiguous, all bf16 or all fp32 (fp16 and
    mixed dtypes go the torch way)."""
    present = [t for t in tensors if t is not None]
    return (
        bool(present)
        and len(present) == len(tensors)
        and all(t.device.type == "cpu" and t.is_contiguous() for t in present)
        and len({t.dtype for t in present}) == 1
        and present[0].dtype in (torch.bfloat16, torch.float32)
    )


def _bits(t: torch.Tensor) -> np.ndarray:
    """A flat view of the stored bits: bf16 as uint16, fp32 as uint32 (what the kernels take)."""
    flat = t.reshape(-1)
    if t.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(np.uint16)
    return flat.view(torch.int32).numpy().view(np.uint32)


def kernels() -> fused_kernels.Kernels | None:
    """The loaded C kernels (built on first use and cached), None without a C compiler."""
    return fused_kernels.load()


def _loaded() -> fused_kernels.Kernels:
    kernel = kernels()
    if kernel is None:  # callers check `enabled()` first
        raise RuntimeError("the fused kernels are not available")
    return kernel


def warm_up_in_background() -> threading.Thread | None:
    """`fused_kernels.start_warm_up()` unless MERGELING_FUSED=0 turned the kernels off."""
    return fused_kernels.start_warm_up() if fused_allowed() else None


def workers() -> int:
    """Threads for the fused kernels: torch's intra-op thread count (OMP_NUM_THREADS, --threads)."""
    return max(1, torch.get_num_threads())


class _DaemonPool:
    """Worker threads that never hold up the interpreter's exit. A ThreadPoolExecutor's workers are
    joined at exit, so a Ctrl-C while one waited for the kernels' first compile (15-25 s, longer
    on a loaded machine) kept the interrupted process alive until the compile was done. The
    workers only touch memory their calls hold references to (mapped inputs stay mapped while a
    view of them lives), so leaving them behind at exit is safe."""

    def __init__(self, size: int) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        for i in range(size):
            threading.Thread(target=self._work, name=f"mergeling-fused-{i}", daemon=True).start()

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._calls.put((future, call))
        return future

    def _work(self) -> None:
        while True:
            future, call = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue  # cancelled: its caller was interrupted
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller, like ThreadPoolExecutor does
                future.set_exception(exc)


@cache
def _pool(size: int) -> _DaemonPool:
    return _DaemonPool(size)


def _parallel(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls on up to `workers()` threads (the kernels release the GIL); results in order."""
    if len(calls) <= 1 or workers() == 1:
        return [call() for call in calls]
    futures = [_pool(workers() - 1).submit(call) for call in calls[1:]]
    try:
        first = calls[0]()  # the calling thread takes a share too
        return [first, *(f.result() for f in futures)]
    except BaseException:  # e.g. Ctrl-C: calls not started yet are dropped
        for f in futures:
            f.cancel()
        raise


def count_nonfinite(tensor: torch.Tensor) -> int | None:
    """Inf/NaN entries of a bf16/fp32 CPU tensor in one vectorized pass on the calling thread (no
    OpenMP team, which spins on a busy 2-core machine); None when the kernels cannot take it."""
    if not (supports(tensor) and enabled()):
        return None
    return _loaded().nonfinite(_bits(tensor))


def magprune_masks(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    tables: Sequence[torch.Tensor | None],
    draws: Sequence[Iterable[torch.Tensor] | None],
) -> list[torch.Tensor | None]:
    """DELLA's MAGPRUNE keep masks (bool, flat), inputs in parallel: entry j of input i is kept when its
    uniform draw is below tables[i][rank], rank = its place in its row (the last dimension; a 1-D
    tensor is one row) by |x - base| ascending, equal magnitudes by column (a stable sort).

    Args:
        tensors, base: bf16 or fp32 CPU tensors of one shape (`supports`).
        tables: per input, fp32 keep probabilities by rank (one per column), None where nothing is drawn.
        draws: per input, its fp32 uniform draws in consecutive blocks covering the tensor, or None.

    Returns:
        Per input its mask, or None where `draws` has None.
    """
    kernel = _loaded()
    b = _bits(base)
    numel = base.numel()
    cols = base.shape[-1] if base.dim() >= 2 else max(numel, 1)

    def one(
        tensor: torch.Tensor, table: torch.Tensor | None, draw: Iterable[torch.Tensor] | None
    ) -> torch.Tensor | None:
        if draw is None or table is None:
            return None
        keep = torch.empty(numel, dtype=torch.uint8)
        x, out = _bits(tensor), keep.numpy()
        probs = table.to(torch.float32).contiguous().numpy()
        lo = 0
        for block in draw:
            count = block.numel()
            kernel.magprune(x, b, cols, lo, block.contiguous().numpy(), probs, out[lo : lo + count])
            lo += count
        if lo != numel:
            raise ValueError(f"magprune: {lo} draws for {numel} entries")
        return keep.view(torch.bool)

    return _parallel([partial(one, t, p, d) for t, p, d in zip(tensors, tables, draws, strict=True)])


def elect_two(
    d0: torch.Tensor,
    d1: torch.Tensor,
    base: torch.Tensor,
    *,
    weights: Sequence[float],
    normalize: bool,
    lambda_: float,
    out: torch.Tensor,
    counts: torch.Tensor,
) -> None:
    """TIES' election and disjoint mean of two sparsified fp32 deltas (one chunk) onto `base` (bf16 or
    fp32 CPU) into the fp32 `out`, on the calling thread; `counts` (int64, 2) gains the entries each
    input lost to the election. The same bits as the torch path of `ties.merge_elected`."""
    _loaded().elect2(
        d0.numpy(), d1.numpy(), _bits(base), weights=(weights[0], weights[1]), normalize=normalize,
        scale=lambda_, out=out.numpy(), counts=counts.numpy(),
    )  # fmt: skip


def top_cuts(tensors: Sequence[torch.Tensor], base: torch.Tensor, ks: Sequence[int]) -> list[Cut | None]:
    """Per (tensor, k), the cut keeping the k largest |tensor - base| (`ties.top_cut`'s), in parallel;
    None where some |τ| is not finite (the torch path then decides)."""
    find_cut = _loaded().find_cut
    b = _bits(base)
    numel = base.numel()

    def one(tensor: torch.Tensor, k: int) -> Cut | None:
        if k <= 0:
            return Cut.keep_none()
        if k >= numel:
            return Cut.keep_all()
        key, ties, finite, _, _ = find_cut(_bits(tensor), b, k, _SAMPLE, _EXACT_BELOW)
        return Cut(key=int(key), ties=int(ties)) if finite else None

    return _parallel([partial(one, t, k) for t, k in zip(tensors, ks, strict=True)])


def find_cuts(
    tensors: Sequence[torch.Tensor], base: torch.Tensor, densities: Sequence[float]
) -> list[tuple[Cut, tuple[int, int]] | None]:
    """Per input, its trimming cut (`ties.trim_cut`'s) and where the cut's quota of ties runs out
    (`fused_kernels.quota_stop`: block, ties left there; (-1, 0) for a trivial cut), inputs in
    parallel; None where some |τ| is not finite (the torch path then decides: NaN inputs are
    refused, an overflowing difference is its call)."""
    find_cut = _loaded().find_cut
    b = _bits(base)

    def one(tensor: torch.Tensor, density: float) -> tuple[Cut, tuple[int, int]] | None:
        k = trim_target(density, base.numel())
        if isinstance(k, Cut):
            return k, (-1, 0)
        key, ties, finite, stop, left = find_cut(_bits(tensor), b, k, _SAMPLE, _EXACT_BELOW)
        return (Cut(key=int(key), ties=int(ties)), (int(stop), int(left))) if finite else None

    return _parallel([partial(one, t, d) for t, d in zip(tensors, densities, strict=True)])


def merge_two(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool,
    lambda_: float,
    stats: Stats | None,
    protect: Sequence[int],
    count_conflicts: bool,
    trims: Sequence[Cut] | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """`ties.merge_elected` for two inputs without slack flips, fused (same bits, same counts).

    The caller checks the inputs (`methods.base.check_inputs`): same shapes, one weight and density each.

    Returns:
        The merged tensor: `out` when it is a contiguous bf16 or fp32 tensor of `base`'s shape (for
        bf16 the cast is fused, the same bits as torch's), else a new fp32 tensor; None when the
        tensor holds non-finite values (take the torch path).
    """
    numel = base.numel()
    kernel = _loaded()
    x0, x1, b = _bits(tensors[0]), _bits(tensors[1]), _bits(base)
    stops = np.full((2, 2), -1, np.int64)  # per input: (block where its ties quota runs out, ties left)
    if trims is None:
        found = find_cuts(tensors, base, densities)
        if any(f is None for f in found):
            return None
        cuts = [f[0] for f in found if f is not None]
        stops[:] = [f[1] for f in found if f is not None]
    else:
        cuts = list(trims)
    kinds = np.array([0 if c == Cut.keep_none() else 1 if c == Cut.keep_all() else 2 for c in cuts], np.int64)
    thresholds = np.array(
        [{0: np.inf, 1: -1.0}.get(int(k), c.value) for c, k in zip(cuts, kinds, strict=True)], np.float32
    )
    if trims is not None:

        def stop(i: int, x: np.ndarray) -> None:
            if kinds[i] == 2:
                stops[i] = kernel.quota_stop(x, b, thresholds[i], cuts[i].ties)

        _parallel([partial(stop, 0, x0), partial(stop, 1, x1)])
    usable = out is not None and out.shape == base.shape and supports(out)
    result = out if out is not None and usable else torch.empty(base.shape, dtype=torch.float32)
    flat = result.view(-1)
    # bf16: its bits (the kernel rounds as torch's cast does); fp32: the values.
    into = flat.view(torch.int16).numpy().view(np.uint16) if result.dtype == torch.bfloat16 else flat.numpy()
    # Parts of the tensor (whole blocks) merged in parallel; the quota stops are in global blocks.
    parts = workers() if numel >= _PARALLEL_FROM else 1
    step = -(-numel // parts // kernel.BLOCK) * kernel.BLOCK

    def part(p: int) -> np.ndarray:
        lo, hi = p * step, min(numel, (p + 1) * step)
        return kernel.ties2(
            x0[lo:hi], x1[lo:hi], b[lo:hi], kinds=kinds, thresholds=thresholds, stops=stops,
            first_block=lo // kernel.BLOCK, weights=(weights[0], weights[1]), normalize=normalize,
            scale=lambda_, out=into[lo:hi],
        )  # fmt: skip

    counts = np.sum(_parallel([partial(part, p) for p in range(parts) if p * step < numel]), axis=0)
    if counts[4]:
        return None
    if stats is not None:
        stats.elements += numel
        for index, (cut, density) in enumerate(zip(cuts, densities, strict=False)):
            known = kept_count(cut, max(1, int(density * numel)))
            stats.add_kept(index, int(counts[index]) if known is None else known)
        # With two inputs at most one of them disagrees with the sign of their sum at a position.
        stats.sign_conflicts += int(counts[2] + counts[3])
        for index in protect:
            discarded = int(counts[2 + index])
            stats.protected_discarded[index] = stats.protected_discarded.get(index, 0) + discarded
            if count_conflicts:
                stats.conflicts[index] = stats.conflicts.get(index, 0) + discarded
    return result
