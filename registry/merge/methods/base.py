"""The contract between merge methods and the engine.

A method is a pure torch function (no I/O) that merges ONE tensor:

    fn(tensors, base, *, weights, densities, normalize, lambda_, stats=None, **method_specific) -> Tensor

- `tensors`: the non-base inputs in recipe order, all the same shape and device, in any float
  dtype: math is always fp32, and bf16/fp16 inputs are converted chunk by chunk (exactly), so
  the engine can pass the tensors as read, without whole-tensor fp32 copies.
- `base`: the base model's tensor (same shape, any float dtype) or None for methods with
  `needs_base=False`.
- `weights`, `densities`: one per entry of `tensors` (densities are ignored unless `uses_density`).
- `normalize`, `lambda_`: mergekit's `normalize` and `lambda` (the engine applies the defaults in
  `MethodSpec` when the recipe leaves them out).
- `stats`: when given, the method ADDS its counts to it (the engine aggregates them into
  merge_report.json); None skips the counting work.
- Returns a new fp32 tensor of the same shape (or writes into the `out` buffer the engine offers,
  see `plugin.Merger.merge`); the inputs are never modified: on CPU they are read-only views of
  the mapped safetensors files (writing to one would crash the process). The engine casts the
  result to the output dtype.

Methods take more keywords of their own (`ties_sv`: `slack`, `protect`, `cuts`; `slerp`: `t`;
DARE: `rescale`, `random_seed`, `name`). How the engine binds them to a recipe is in
`registry.merge.methods.plugin`.

Methods work through a tensor in flat chunks of `CHUNK_ELEMENTS`, so their working memory is a
few chunks, not a few copies of the tensor (the largest, the embedding, is 65 M entries for a
7B Llama). Chunking never changes a result: every operation after trimming is elementwise or a
reduction over the inputs axis, and trimming is an exact global top-k (`registry.merge.kernels.topk`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

CHUNK_ELEMENTS = 1 << 20  # 4 MiB of fp32 per input per chunk: the workspace stays in cache
CUDA_CHUNK_ELEMENTS = 1 << 24  # on a GPU, fewer and larger kernels


@dataclass
class TensorStats:
    """Diagnostics of one merged tensor (or, summed, of a model). Filled in by a method when passed.

    Attributes:
        elements: entries of the tensor.
        kept: per input (entries of `tensors`, recipe order): non-zero entries that survived trimming.
        sign_conflicts: positions where surviving entries of different inputs disagree in sign.
        protected_discarded: per protected input index: its surviving entries whose sign differs
            from the final elected sign (discarded by the election, after the slack).
        conflicts: per protected input index: |C|, its surviving entries whose sign disagrees with
            the elected sign before the slack (for `ties`, the same as `protected_discarded`).
        rescued: per protected input index: entries of C whose sign the slack flipped to theirs.
    """

    elements: int = 0
    kept: list[int] = field(default_factory=list)
    sign_conflicts: int = 0
    protected_discarded: dict[int, int] = field(default_factory=dict)
    conflicts: dict[int, int] = field(default_factory=dict)
    rescued: dict[int, int] = field(default_factory=dict)

    def add_kept(self, index: int, count: int) -> None:
        """Add `count` kept entries for input `index` (grows `kept` as needed)."""
        while len(self.kept) <= index:
            self.kept.append(0)
        self.kept[index] += count

    def merge(self, other: TensorStats) -> None:
        """Add another tensor's counts to these (for model totals)."""
        self.elements += other.elements
        for index, count in enumerate(other.kept):
            self.add_kept(index, count)
        self.sign_conflicts += other.sign_conflicts
        for mine, theirs in (
            (self.protected_discarded, other.protected_discarded),
            (self.conflicts, other.conflicts),
            (self.rescued, other.rescued),
        ):
            for index, count in theirs.items():
                mine[index] = mine.get(index, 0) + count


def chunk_elements(device: torch.device | None = None) -> int:
    """The chunk length for tensors on `device` (read at call time, so tests can shrink it)."""
    if device is not None and device.type == "cuda":
        return max(CHUNK_ELEMENTS, CUDA_CHUNK_ELEMENTS)
    return CHUNK_ELEMENTS


def flat_chunks(numel: int, size: int | None = None) -> Iterator[slice]:
    """Consecutive slices covering range(numel), each at most `size` (default `chunk_elements()`) long."""
    size = size or chunk_elements()
    for start in range(0, numel, size):
        yield slice(start, min(start + size, numel))


def fp32_chunk(flat: torch.Tensor, part: slice, buffer: torch.Tensor) -> torch.Tensor:
    """`flat[part]` in fp32: the view itself when already fp32, else converted into `buffer`.

    Args:
        flat: a 1-D tensor of any float dtype.
        part: the slice to take.
        buffer: a 1-D fp32 tensor at least as long as the slice (overwritten when converting).

    Returns:
        An fp32 tensor holding exactly the slice's values (bf16 and fp16 convert exactly).
    """
    chunk = flat[part]
    if chunk.dtype == torch.float32:
        return chunk
    out = buffer[: chunk.numel()]
    out.copy_(chunk)
    return out


def sum_inputs(stack: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    """`torch.sum(stack, dim=0, out=out)` for a (n, c) fp32 stack, bit for bit, with fewer passes.

    For n <= 4, torch's CPU sum over the leading axis accumulates in order from +0.0:
    ((0 + x₀) + x₁) + ..., which equals (x₀ + x₁ + ...) + 0.0 bit for bit (the trailing + 0.0 only
    turns a -0.0 into +0.0, as the leading one does). Plain adds are ~2x faster than the strided
    reduction; more inputs use `torch.sum` (it blocks the sum differently there).

    Args:
        stack: (n, c) fp32.
        out: (c,) fp32, written.

    Returns:
        `out`.
    """
    n = stack.shape[0]
    if n > 4 or n == 0:
        return torch.sum(stack, dim=0, out=out)
    if n == 1:
        return torch.add(stack[0], 0.0, out=out)
    torch.add(stack[0], stack[1], out=out)
    for row in stack[2:]:
        out.add_(row)
    return out.add_(0.0)


def check_inputs(tensors: Sequence[torch.Tensor], base: torch.Tensor | None, **lists: Sequence[object]) -> None:
    """Raise ValueError unless there is at least one input, shapes agree and per-input lists match.

    Args:
        tensors: the non-base inputs.
        base: the base tensor or None.
        **lists: per-input sequences (weights, densities) that must have one entry per input.
    """
    if not tensors:
        raise ValueError("a merge needs at least one input tensor")
    odd = sorted({str(t.dtype) for t in [*tensors, *([base] if base is not None else [])] if not t.is_floating_point()})
    if odd:
        raise ValueError(f"merge inputs must be floating point, got {', '.join(odd)}")
    shapes = {tuple(t.shape) for t in tensors} | ({tuple(base.shape)} if base is not None else set())
    if len(shapes) != 1:
        raise ValueError(f"input tensors differ in shape: {sorted(shapes)}")
    for name, values in lists.items():
        if len(values) != len(tensors):
            raise ValueError(f"{name} has {len(values)} entries for {len(tensors)} inputs")
