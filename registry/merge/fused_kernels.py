"""The numba kernels of `registry.merge.methods.fused` (imported only when numba is installed).

Outside `registry.merge.methods`, so importing it imports neither torch nor the methods.

Module-level functions, so numba's on-disk cache (`cache=True`, in `__pycache__` beside this file)
is reused by every later process: compiling them takes ~15-25 s once, loading them well under a
second. See `fused` for what they compute and why the results equal the torch path's bits.

Tensors arrive as their stored bits: bf16 as uint16, fp32 as uint32. `to_f32` turns one entry
into its fp32 value inside the loop (bf16: the bits shifted up, exact), so no loop converts a
block first; numba specializes each kernel per combination of input dtypes. Loops index a slice
of the block by the loop variable (not `x[start + j]`): LLVM then drops the negative-index checks
and vectorizes them (6x on the loads).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

BLOCK = 4096  # entries per block: a block of every buffer stays in L1/L2
_INF_BITS = 0x7F800000

jit = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", boundscheck=False)


@intrinsic
def _to_f32(typingctx: Any, bits: Any) -> Any:
    """The fp32 value of stored bits: uint16 (bf16, shifted up 16) or uint32 (fp32, as is)."""
    if bits not in (types.uint16, types.uint32):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        value = args[0]
        if bits == types.uint16:
            value = builder.shl(builder.zext(value, ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _f32_bits(typingctx: Any, value: Any) -> Any:
    """The bit pattern of an fp32 value as uint32 (for |τ|: a key that orders like the value)."""
    if value != types.float32:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


# As called from jitted code: one argument (the intrinsics' first parameter is numba's typing context).
to_f32 = cast(Callable[[Any], Any], _to_f32)
f32_bits = cast(Callable[[Any], Any], _f32_bits)


@jit
def nonfinite(bits: np.ndarray, exponent: int) -> int:
    # Entries whose exponent bits are all ones (Inf or NaN): bf16 as uint16 (exponent 0x7F80),
    # fp32 as uint32 (0x7F800000).
    e = bits.dtype.type(exponent)
    count = 0
    for j in range(bits.shape[0]):
        count += (bits[j] & e) == e
    return count


@jit
def top_bucket(hist: np.ndarray, above: int, kk: int) -> tuple[int, int]:
    # Walking down from the highest bucket: the one where the count reaches kk, and the count
    # above it (starting from `above`).
    bucket = hist.shape[0] - 1
    while above + hist[bucket] < kk:
        above += hist[bucket]
        bucket -= 1
    return bucket, above


@jit
def select(keys: np.ndarray, m: int, kk: int) -> tuple[int, int]:
    # The kk-th largest (1 <= kk <= m) of keys[:m] (31-bit) and how many of its copies are kept:
    # a radix select, 16 high bits then 15 low bits.
    high = np.zeros(1 << 16, np.int64)
    for j in range(m):
        high[keys[j] >> 15] += 1
    bucket, above = top_bucket(high, 0, kk)
    low = np.zeros(1 << 15, np.int64)
    for j in range(m):
        key = keys[j]
        if (key >> 15) == bucket:
            low[key & 0x7FFF] += 1
    offset, above = top_bucket(low, above, kk)
    return (bucket << 15) | offset, kk - above


@jit
def select_stream(x: np.ndarray, b: np.ndarray, kk: int) -> tuple[int, int]:
    # `select` over every |x - b| of the tensor, block by block (two passes, bounded memory).
    n = b.shape[0]
    high = np.zeros(1 << 16, np.int64)
    for start in range(0, n, BLOCK):
        xs, bs = x[start : start + BLOCK], b[start : start + BLOCK]
        for j in range(xs.shape[0]):
            high[f32_bits(abs(np.float32(to_f32(xs[j]) - to_f32(bs[j])))) >> 15] += 1
    bucket, above = top_bucket(high, 0, kk)
    low = np.zeros(1 << 15, np.int64)
    for start in range(0, n, BLOCK):
        xs, bs = x[start : start + BLOCK], b[start : start + BLOCK]
        for j in range(xs.shape[0]):
            key = f32_bits(abs(np.float32(to_f32(xs[j]) - to_f32(bs[j]))))
            if (key >> 15) == bucket:
                low[key & 0x7FFF] += 1
    offset, above = top_bucket(low, above, kk)
    return (bucket << 15) | offset, kk - above


@jit
def quota_stop(x: np.ndarray, b: np.ndarray, t: np.float32, quota: int) -> tuple[int, int]:
    # The block where the quota of kept ties at the cut (|x - b| == t, lowest index first) runs
    # out, and the ties still to keep at its start. Every earlier block keeps all its ties, every
    # later one none: the merge then never counts ties block by block.
    seen = 0
    for start in range(0, b.shape[0], BLOCK):
        xs, bs = x[start : start + BLOCK], b[start : start + BLOCK]
        ties = 0
        for j in range(xs.shape[0]):
            ties += abs(np.float32(to_f32(xs[j]) - to_f32(bs[j]))) == t
        if seen + ties >= quota:
            return start // BLOCK, quota - seen
        seen += ties
    return b.shape[0] // BLOCK + 1, 0


@jit
def gathered_stop(gathered: np.ndarray, offsets: np.ndarray, key: int, quota: int) -> tuple[int, int]:
    # `quota_stop` from the in-window keys gathered in flat order; offsets[i]: where block i's start.
    seen = 0
    for block in range(offsets.shape[0] - 1):
        ties = 0
        for j in range(offsets[block], offsets[block + 1]):
            ties += gathered[j] == key
        if seen + ties >= quota:
            return block, quota - seen
        seen += ties
    return offsets.shape[0], 0


@jit
def find_cut(x: np.ndarray, b: np.ndarray, k: int, sample: int, exact_below: int) -> tuple[int, int, bool, int, int]:
    # (key, ties, finite, stop block, ties left there) of the cut keeping the k largest |x - b|
    # (0 < k < n), with `quota_stop`'s answer; finite is False when some |x - b| is Inf or NaN
    # (the caller falls back to the torch path then).
    n = b.shape[0]
    if n < exact_below:  # gather every key
        every = np.empty(n, np.uint32)
        worst = np.uint32(0)
        for j in range(n):
            key = f32_bits(abs(np.float32(to_f32(x[j]) - to_f32(b[j]))))
            every[j] = key
            worst = max(worst, key)
        if worst >= _INF_BITS:
            return 0, 0, False, 0, 0
        key, ties = select(every, n, k)
        blocks = np.arange(0, n + BLOCK, BLOCK)
        blocks[-1] = n
        stop, left = gathered_stop(every, blocks, key, ties)
        return key, ties, True, stop, left
    # The window: ±6 standard errors of the sample quantile (at least ±0.2% of ranks).
    stride = n // sample
    picked = np.empty(sample, np.float32)
    for j in range(sample):
        picked[j] = abs(np.float32(to_f32(x[j * stride]) - to_f32(b[j * stride])))
    q = k / n
    spread = max(6.0 * (q * (1.0 - q) / sample) ** 0.5, 0.002)
    high_rank = max(int((q - spread) * sample), 0)  # 0-based ranks, largest first
    low_rank = min(int((q + spread) * sample) + 1, sample - 1)
    picked = np.partition(picked, (sample - 1 - low_rank, sample - 1 - high_rank))
    hi = picked[sample - 1 - high_rank]
    lo = picked[sample - 1 - low_rank]
    # One pass: count above the window and gather the keys inside it, tracking the largest key.
    # The keys of a block are kept, and the gather runs branch-free over the 8-entry words of
    # flags that hold an inside entry (most hold none), so the per-entry loop stays vectorized.
    cap = n // 8 + BLOCK
    gathered = np.empty(cap, np.uint32)
    keys = np.empty(BLOCK, np.uint32)
    flags = np.zeros(BLOCK, np.uint8)
    words = flags.view(np.uint64)
    offsets = np.zeros((n + BLOCK - 1) // BLOCK + 1, np.int64)
    m = 0
    above = 0
    worst = np.uint32(0)
    overflow = False
    for start in range(0, n, BLOCK):
        offsets[start // BLOCK] = m
        xs, bs = x[start : start + BLOCK], b[start : start + BLOCK]
        c = xs.shape[0]
        count = 0
        for j in range(c):
            v = abs(np.float32(to_f32(xs[j]) - to_f32(bs[j])))
            count += v > hi
            flags[j] = (v >= lo) & (v <= hi)
            key = f32_bits(v)
            keys[j] = key
            worst = max(worst, key)
        above += count
        if m + c > cap:
            overflow = True
            continue
        for j in range(c, (c + 7) // 8 * 8):
            flags[j] = 0
        for w in range((c + 7) // 8):
            if words[w] != 0:
                for j in range(8 * w, 8 * w + 8):
                    gathered[m] = keys[j]
                    m += flags[j]
    offsets[-1] = m
    if worst >= _INF_BITS:
        return 0, 0, False, 0, 0
    if not overflow and above < k <= above + m:
        key, ties = select(gathered, m, k - above)
        stop, left = gathered_stop(gathered, offsets, key, ties)
        return key, ties, True, stop, left
    key, ties = select_stream(x, b, k)
    stop, left = quota_stop(x, b, to_f32(np.uint32(key)), ties)
    return key, ties, True, stop, left


@jit
def tie_limit(xs: np.ndarray, bs: np.ndarray, t: np.float32, left: int) -> int:
    # In the block where the quota runs out: entries j < limit with |τ| == t are kept (the
    # first `left` of them, lowest index first).
    for j in range(xs.shape[0]):
        if left <= 0:
            return j
        left -= abs(np.float32(to_f32(xs[j]) - to_f32(bs[j]))) == t
    return int(xs.shape[0])


@jit
def count_nonzero(xs: np.ndarray, bs: np.ndarray) -> int:
    nonzero = 0
    for j in range(xs.shape[0]):
        nonzero += np.float32(to_f32(xs[j]) - to_f32(bs[j])) != np.float32(0.0)
    return nonzero


@jit
def word_sum(words: np.ndarray, n: int) -> int:
    # The sum of the uint16 lanes of words[:n] (each lane's total must stay below 65536).
    acc = np.uint64(0)
    for j in range(n):
        acc += words[j]
    lane = np.uint64(0xFFFF)
    total = (acc & lane) + ((acc >> np.uint64(16)) & lane) + ((acc >> np.uint64(32)) & lane)
    return int(total + (acc >> np.uint64(48)))


@jit
def to_bf16(src: np.ndarray, out: np.ndarray) -> int:
    # fp32 bits -> bf16, rounding to nearest even as torch's CPU cast; returns the NaN count
    # (the caller redoes a tensor with NaN results the torch way: torch rounds NaN differently
    # in its vector and scalar loops).
    nans = 0
    for j in range(out.shape[0]):
        u = src[j]
        nans += (u & np.uint32(0x7FFFFFFF)) > np.uint32(_INF_BITS)
        out[j] = np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    return nans


@jit
def combine(
    x0: np.ndarray,
    x1: np.ndarray,
    bs: np.ndarray,
    lo: int,
    hi: int,
    t0: np.float32,
    t1: np.float32,
    w0: np.float32,
    w1: np.float32,
    normalize: bool,
    scale: np.float32,
    use_scale: bool,
    res: np.ndarray,
    lost0: np.ndarray,
    lost1: np.ndarray,
) -> None:
    # Entries lo..hi of a block: trim (keep |τᵢ| > tᵢ), weight, elect, disjoint mean, λ, base;
    # the torch path's float32 operations in its order.
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for j in range(lo, hi):
        base = to_f32(bs[j])
        v0 = np.float32(to_f32(x0[j]) - base)
        k0 = one if abs(v0) > t0 else zero
        a = np.float32(np.float32(v0 * k0) * w0)
        v1 = np.float32(to_f32(x1[j]) - base)
        k1 = one if abs(v1) > t1 else zero
        e = np.float32(np.float32(v1 * k1) * w1)
        votes = np.float32(np.float32(a + e) + zero)
        sign = one if votes >= zero else -one
        p0 = np.float32(a * sign)
        p1 = np.float32(e * sign)
        g0 = one if p0 > zero else zero
        g1 = one if p1 > zero else zero
        mixed = np.float32(np.float32(np.float32(a * g0) + np.float32(e * g1)) + zero)
        div = np.float32(np.float32(np.float32(w0 * g0) + np.float32(w1 * g1)) + zero)
        div = np.float32(div + (one if div == zero else zero))
        if normalize:
            mixed = np.float32(mixed / div)
        if use_scale:
            mixed = np.float32(mixed * scale)
        res[j] = np.float32(base + mixed)
        lost0[j] = p0 < zero
        lost1[j] = p1 < zero


@jit
def combine_split(
    x0: np.ndarray,
    x1: np.ndarray,
    bs: np.ndarray,
    lim0: int,
    lim1: int,
    t0: np.float32,
    t1: np.float32,
    below0: np.float32,
    below1: np.float32,
    w0: np.float32,
    w1: np.float32,
    normalize: bool,
    scale: np.float32,
    use_scale: bool,
    res: np.ndarray,
    lost0: np.ndarray,
    lost1: np.ndarray,
) -> None:
    # `combine` over the segments of a block between the tie limits: before its limit an input
    # keeps |τ| >= t, i.e. |τ| > the float just below t; after it, |τ| > t. (A separate function:
    # three calls of `combine` inlined into `ties2` kept LLVM from vectorizing its main loop.)
    lo = 0
    for hi in (min(lim0, lim1), max(lim0, lim1), bs.shape[0]):
        if hi > lo:
            ta = below0 if lo < lim0 else t0
            tb = below1 if lo < lim1 else t1
            combine(x0, x1, bs, lo, hi, ta, tb, w0, w1, normalize, scale, use_scale, res, lost0, lost1)
            lo = hi


@jit
def ties2(
    x0: np.ndarray,
    x1: np.ndarray,
    b: np.ndarray,
    kinds: np.ndarray,
    thresholds: np.ndarray,
    stops: np.ndarray,
    first_block: int,
    w0: np.float32,
    w1: np.float32,
    normalize: bool,
    scale: np.float32,
    use_scale: bool,
    out32: np.ndarray,
    out16: np.ndarray,
    bf16: bool,
    counts: np.ndarray,
) -> None:
    # TIES of two inputs into out32 (fp32) or out16 (bf16 bits), one vectorized loop per block.
    # counts: [non-zero entries of a keep-all input 0, 1, lost 0, lost 1, NaN results]. stops:
    # per input, `quota_stop`'s (block, ties left there), in blocks from the tensor's start;
    # x0[0] is in block first_block (a part of a tensor merged on another thread).
    #
    # Trimming: keep |τ| > t, or |τ| == t before the block's tie limit. A keep-all input has
    # t = -1 (v · 1.0 == v, as the torch path's plain delta); a keep-none input t = +Inf (v · 0.0
    # is ±0 where the torch path has +0; every later sum adds +0.0 last, so the bits agree).
    n = b.shape[0]
    res = np.empty(BLOCK, np.float32)
    lost0 = np.zeros(BLOCK, np.uint16)
    lost1 = np.zeros(BLOCK, np.uint16)
    ures = res.view(np.uint32)
    words0, words1 = lost0.view(np.uint64), lost1.view(np.uint64)
    t0, t1 = thresholds[0], thresholds[1]
    below0 = np.nextafter(t0, np.float32(-np.inf))
    below1 = np.nextafter(t1, np.float32(-np.inf))
    for start in range(0, n, BLOCK):
        xs0, xs1, bs = x0[start : start + BLOCK], x1[start : start + BLOCK], b[start : start + BLOCK]
        c = bs.shape[0]
        block = first_block + start // BLOCK
        lim0 = c if block < stops[0, 0] else tie_limit(xs0, bs, t0, stops[0, 1]) if block == stops[0, 0] else 0
        lim1 = c if block < stops[1, 0] else tie_limit(xs1, bs, t1, stops[1, 1]) if block == stops[1, 0] else 0
        if kinds[0] == 1:
            counts[0] += count_nonzero(xs0, bs)
        if kinds[1] == 1:
            counts[1] += count_nonzero(xs1, bs)
        if 0 < lim0 < c or 0 < lim1 < c:  # a quota runs out inside this block
            combine_split(
                xs0, xs1, bs, lim0, lim1, t0, t1, below0, below1, w0, w1, normalize, scale, use_scale,
                res, lost0, lost1,
            )  # fmt: skip
        else:
            combine(
                xs0, xs1, bs, 0, c, below0 if lim0 else t0, below1 if lim1 else t1, w0, w1, normalize, scale,
                use_scale, res, lost0, lost1,
            )  # fmt: skip
        for j in range(c, (c + 3) // 4 * 4):
            lost0[j] = 0
            lost1[j] = 0
        counts[2] += word_sum(words0, (c + 3) // 4)
        counts[3] += word_sum(words1, (c + 3) // 4)
        if bf16:
            counts[4] += to_bf16(ures, out16[start : start + c])
        else:
            out32[start : start + c] = res[:c]


def warm_up() -> None:
    """Load the kernels for bf16 and fp32 inputs, mapped (read-only) and in memory (numba's first call
    costs ~0.4 s even from its cache, then ~10 ms per signature; compiling them, once per install,
    ~15-20 s). Logs nothing: it may run on a daemon thread that outlives the caller's log streams."""
    _warm_up()


def _warm_up() -> None:
    for dtype, exponent, writable in (
        (np.uint16, 0x7F80, False),
        (np.uint32, _INF_BITS, False),
        (np.uint16, 0x7F80, True),
    ):
        x = np.zeros(2 * BLOCK, dtype)
        x.setflags(write=writable)  # inputs mapped from files are read-only arrays (another signature)
        nonfinite(x, exponent)
        find_cut(x, x, 3, 1 << 16, 1 << 18)
        quota_stop(x, x, np.float32(0.0), 1)
        ties2(
            x, x, x, np.array([2, 2]), np.zeros(2, np.float32), np.zeros((2, 2), np.int64), 0,
            np.float32(1.0), np.float32(1.0), True, np.float32(1.0), False,
            np.empty(2 * BLOCK, np.float32), np.empty(2 * BLOCK, np.uint16), dtype == np.uint16, np.zeros(5, np.int64),
        )  # fmt: skip


_warm_up_thread: threading.Thread | None = None
_warm_up_lock = threading.Lock()


def start_warm_up() -> threading.Thread:
    """Run `warm_up` on a daemon thread, once per process: numba's start-up (~0.6 s) then overlaps
    opening the inputs and the first reads."""
    global _warm_up_thread
    with _warm_up_lock:
        if _warm_up_thread is None:
            _warm_up_thread = threading.Thread(target=warm_up, name="mergeling-fused-warm-up", daemon=True)
            _warm_up_thread.start()
        return _warm_up_thread
