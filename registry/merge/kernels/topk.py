"""Exact top-k selection without sorting: radix select over the bit patterns of non-negative floats.

TIES keeps, per input, the k = int(density · numel) entries of largest |τ|. A sort costs
O(n log n) per tensor and dominates a CPU merge; only the k-th largest value is needed. For
non-negative IEEE floats the bit pattern, read as an int32, orders exactly like the value, so the
k-th largest value is found with two histograms (the 16 high bits, then the 15 low bits inside the
one high bucket that holds it): two O(n) passes with `torch.bincount`. Both passes accept the
values as a stream of chunks, so memory stays bounded by the chunk, not by the tensor.

A selection is a `Cut`: keep every entry whose key is above `key`, plus the first `ties` entries
(lowest flat index first) whose key equals `key`. That makes the kept set exactly k entries and
deterministic when several equal values straddle the cut (mergekit keeps whichever its sort puts
first; that is the only way our selection can differ from it).

Keys are int32 tensors with values in [0, 2**31 - 1]: `magnitude_keys` (largest |x| first) and
`ascending_keys` (smallest non-negative x first, for ranking election margins). NaN must not
reach here (the engine rejects NaN inputs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

_LOW_BITS = 15
_HIGH_BUCKETS = 1 << 16  # keys are 31-bit: 16 high bits + 15 low bits
_LOW_BUCKETS = 1 << _LOW_BITS
_LOW_MASK = _LOW_BUCKETS - 1
_KEY_MAX = (1 << 31) - 1


@dataclass(frozen=True)
class Cut:
    """Keep keys > `key`, plus the first `ties` keys == `key` in flat order (lowest index first)."""

    key: int
    ties: int = 0

    @property
    def value(self) -> float:
        """The fp32 value whose bit pattern is `key` (for magnitude keys: the threshold |x|)."""
        return float(torch.tensor([self.key], dtype=torch.int32).view(torch.float32))

    @classmethod
    def keep_all(cls) -> Cut:
        return cls(key=-1, ties=0)

    @classmethod
    def keep_none(cls) -> Cut:
        return cls(key=_KEY_MAX, ties=0)


def magnitude_keys(x: torch.Tensor) -> torch.Tensor:
    """int32 keys ordering like |x| (fp32 input; -0.0 and 0.0 both give key 0)."""
    return x.abs().view(torch.int32)


def ascending_keys(x: torch.Tensor) -> torch.Tensor:
    """int32 keys ordering like -x for non-negative fp32 x, so the smallest x has the largest key."""
    return _KEY_MAX - x.view(torch.int32)


def _select_bucket(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """Bucket holding the k-th largest entry (k >= 1) and the count of entries in higher buckets."""
    # hist: (B,) int64 counts; cumulate from the highest bucket down.
    from_top = hist.flip(0).cumsum(0)
    position = int(torch.searchsorted(from_top, torch.tensor([k], device=hist.device)).item())
    bucket = hist.numel() - 1 - position
    above = int(from_top[position].item()) - int(hist[bucket].item())
    return bucket, above


def find_cut(chunks: Callable[[], Iterable[torch.Tensor]], k: int, *, numel: int) -> Cut:
    """Find the exact cut that keeps the k largest keys.

    Args:
        chunks: called up to twice; each call yields the int32 keys (any shape) in flat order.
        k: how many entries to keep (clamped to [0, numel]).
        numel: total number of keys over all chunks.

    Returns:
        The `Cut`; applying it with `cut_mask` over the same chunks keeps exactly min(k, numel).
    """
    if k <= 0:
        return Cut.keep_none()
    if k >= numel:
        return Cut.keep_all()
    high: torch.Tensor | None = None
    for keys in chunks():
        counts = torch.bincount((keys >> _LOW_BITS).reshape(-1), minlength=_HIGH_BUCKETS)
        high = counts if high is None else high + counts
    assert high is not None
    bucket, above = _select_bucket(high, k)
    low: torch.Tensor | None = None
    for keys in chunks():
        flat = keys.reshape(-1)
        inside = flat[(flat >> _LOW_BITS) == bucket] & _LOW_MASK
        counts = torch.bincount(inside, minlength=_LOW_BUCKETS)
        low = counts if low is None else low + counts
    assert low is not None
    offset, above_low = _select_bucket(low, k - above)
    return Cut(key=(bucket << _LOW_BITS) | offset, ties=k - above - above_low)


def find_cut_sampled(
    keys_of: Callable[[slice], torch.Tensor],
    k: int,
    *,
    numel: int,
    sample: torch.Tensor,
    parts: Callable[[], Iterable[slice]],
) -> Cut:
    """Find the exact cut keeping the k largest keys in ONE pass, guided by a sample.

    The sample's quantiles give a narrow window of keys that holds the k-th largest with
    overwhelming probability (±6 standard errors of the sample quantile, at least ±0.2% of ranks);
    one pass counts the keys above the window and gathers those inside it, and the k-th largest is
    picked among those. When the window misses (a skewed sample), it falls back to the two-pass
    `find_cut`, so the result is always exact.

    Args:
        keys_of: the `magnitude_keys` of one flat slice (finite values; may be a reused buffer).
        k: how many entries to keep.
        numel: total number of keys.
        sample: int32 keys of some entries (e.g. a strided subsample), any order.
        parts: called once or three times; yields the flat slices covering range(numel) in order.

    Returns:
        The same `Cut` as `find_cut`.
    """
    if k <= 0:
        return Cut.keep_none()
    if k >= numel:
        return Cut.keep_all()
    size = sample.numel()
    if size >= 1024:
        flat_sample = sample.reshape(-1)
        quantile = k / numel
        spread = max(6 * (quantile * (1 - quantile) / size) ** 0.5, 0.002)
        high_rank = max(int((quantile - spread) * size), 0)  # 0-based ranks, largest first
        low_rank = min(int((quantile + spread) * size) + 1, size - 1)
        # kthvalue counts from the smallest (1-based): rank r from the top is size - r.
        high = Cut(int(torch.kthvalue(flat_sample, size - high_rank).values)).value
        low = Cut(int(torch.kthvalue(flat_sample, size - low_rank).values)).value
        above, inside = 0, []
        above_mask = low_mask = None
        for part in parts():
            keys = keys_of(part)
            # Non-negative fp32 values order like their keys; float compares into float masks are
            # several times faster than int32 or bool ones on CPU.
            values = keys.view(torch.float32)
            if above_mask is None or low_mask is None or above_mask.shape != values.shape:
                above_mask, low_mask = torch.empty_like(values), torch.empty_like(values)
            torch.gt(values, high, out=above_mask)
            above += int(above_mask.sum())
            torch.ge(values, low, out=low_mask)
            low_mask.sub_(above_mask)  # low <= value <= high
            inside.append(keys[low_mask.bool()])
        candidates = torch.cat(inside)
        if above < k <= above + candidates.numel():
            cut = find_cut(lambda: (candidates,), k - above, numel=candidates.numel())
            return cut if cut != Cut.keep_all() else _floor_cut(candidates)
        logger.debug("sampled window missed the cut (k=%d of %d): two-pass select", k, numel)
    return find_cut(lambda: (keys_of(part) for part in parts()), k, numel=numel)


def _floor_cut(candidates: torch.Tensor) -> Cut:
    """All candidates are kept: the cut sits at the smallest candidate, keeping all its copies."""
    key = int(candidates.min())
    return Cut(key=key, ties=int(torch.count_nonzero(candidates == key)))


def cut_mask(
    keys: torch.Tensor, cut: Cut, ties_left: int, *, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """The kept entries of one chunk.

    Args:
        keys: int32 keys of this chunk.
        cut: from `find_cut` over all chunks.
        ties_left: ties still to keep (start with `cut.ties`, pass on what this returns).
        out: an optional 1-D bool buffer with `keys.numel()` entries to write the mask into.

    Returns:
        (bool mask shaped like `keys`, ties left for the following chunks).
    """
    flat = keys.reshape(-1)
    mask = torch.gt(flat, cut.key, out=out) if out is not None else flat > cut.key
    if ties_left > 0:
        equal = torch.nonzero(flat == cut.key).squeeze(1)[:ties_left]
        mask[equal] = True
        ties_left -= int(equal.numel())
    return mask.view(keys.shape), ties_left


def topk_mask(keys: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k largest keys of one tensor (ties: lowest flat index first)."""
    cut = find_cut(lambda: (keys,), k, numel=keys.numel())
    mask, _ = cut_mask(keys, cut, cut.ties)
    return mask
