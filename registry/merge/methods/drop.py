"""The shared rules of the random and magnitude drops (DARE, DELLA, Breadcrumbs): one place each.

- `mask_seed`, `MASK_BLOCK`, `uniform_blocks`, `Blocks`: the seeded draws. Input i's uniform draws
  in tensor `name` come from its own CPU generator seeded with sha256(`random_seed`, name, i), in
  fixed blocks of `MASK_BLOCK` entries in flat order, so they depend only on (seed, name, input):
  not on the tensor order, the chunking or the device.
- `check_random_seed`: the one rule for `random_seed`.
- `l1_scales`: mergekit's `RescaleNorm.l1`, ‖τ‖₁ / ‖τ̂‖₁ per input (fp64 sums by chunks).
- `check_drop_density`: DARE's density is a keep probability in (0, 1].

The election that follows a drop is `ties.elected_chunks` (with the drop as its `Sparsifier`);
the sum without election is `breadcrumbs.merge_sparse_linear`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence

import torch

from registry.merge.methods.base import TensorStats, chunk_elements, flat_chunks, fp32_chunk
from registry.merge.methods.ties import DeltaFill, Workspace

MASK_BLOCK = 1 << 20  # entries per random draw; fixed, so draws do not depend on the compute chunks
RESCALE_EPS = 1e-7  # mergekit: below this either norm, no rescale


def mask_seed(seed: int, name: str, index: int) -> int:
    """The generator seed of input `index`'s draws in tensor `name` (63 bits of a sha256)."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def check_random_seed(value: int | None) -> int | None:
    """The one rule for `random_seed` (dare_ties, dare_linear, della, della_linear): a 63-bit whole number."""
    if value is not None and not 0 <= value < 2**63:
        raise ValueError("random_seed is a non-negative whole number, e.g. 0")
    return value


def check_drop_density(densities: Sequence[float]) -> None:
    """DARE's densities are keep probabilities in (0, 1].

    Raises:
        ValueError: names the first bad density.
    """
    bad = [d for d in densities if not 0 < d <= 1]
    if bad:
        raise ValueError(f"density={bad[0]} must be in (0, 1]: it is the probability of keeping an entry")


def uniform_blocks(numel: int, seed: int) -> Iterator[torch.Tensor]:
    """fp32 uniform draws in [0, 1) for range(numel), in consecutive `MASK_BLOCK`-entry blocks, on CPU."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    for start in range(0, numel, MASK_BLOCK):
        yield torch.rand(min(MASK_BLOCK, numel - start), generator=generator)


class Blocks:
    """Consecutive blocks of a flat stream (draws, masks), handed out for arbitrary consecutive slices."""

    def __init__(self, blocks: Iterator[torch.Tensor], device: torch.device | str = "cpu") -> None:
        self.blocks = blocks
        self.device = torch.device(device)
        self.pending = torch.empty(0)

    def take(self, count: int) -> torch.Tensor:
        """The next `count` entries (on the device)."""
        parts, have = [self.pending], self.pending.numel()
        while have < count:
            block = next(self.blocks)
            parts.append(block)
            have += block.numel()
        joined = torch.cat(parts) if len(parts) > 1 else parts[0]
        self.pending = joined[count:]
        return joined[:count].to(self.device)


def l1_scales(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    start: Callable[[TensorStats | None], DeltaFill],
    sparse: Sequence[bool],
) -> list[float]:
    """Per input ‖τ‖₁ / ‖τ̂‖₁ in fp64 sums by chunks (1.0 where nothing is dropped or a norm is below 1e-7).

    Args:
        tensors, base: the inputs and the base.
        start: the sparsifier without its rescale (`start(None)` gives the chunk fill of τ̂).
        sparse: per input, whether anything is dropped at all.
    """
    n, numel = len(tensors), base.numel()
    before, after = [0.0] * n, [0.0] * n
    size = max(1, min(chunk_elements(base.device), numel))
    ws_full = Workspace(n, size, base.device)
    fill = start(None)
    flats, flat_base = [t.reshape(-1) for t in tensors], base.reshape(-1)
    full = torch.empty(size, dtype=torch.float32, device=base.device)
    for part in flat_chunks(numel, size):
        ws = ws_full.view(part.stop - part.start)
        ws.base = fp32_chunk(flat_base, part, ws.base)
        fill(part, ws)
        for index in range(n):
            if not sparse[index]:
                continue
            whole = torch.sub(fp32_chunk(flats[index], part, full[: part.stop - part.start]), ws.base)
            before[index] += float(whole.abs().sum(dtype=torch.float64))
            after[index] += float(ws.deltas[index].abs().sum(dtype=torch.float64))
    return [
        b / a if s and b >= RESCALE_EPS and a >= RESCALE_EPS else 1.0
        for b, a, s in zip(before, after, sparse, strict=True)
    ]
