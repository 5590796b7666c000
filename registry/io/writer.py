"""A deterministic sharded safetensors writer.

Shapes and dtypes are known before the merge starts, so every shard's header is written first and
each tensor goes straight to its final offset as it is computed (any order, `os.pwrite`). Names are
sorted, shards filled greedily up to `shard_size`, metadata fixed: the same tensors always give the
same bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import MergeError, RecipeError
from registry.io.safetensors import DTYPE_SIZES, dtype_code

if TYPE_CHECKING:
    import torch

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def parse_size(text: str | int) -> int:
    """Parse a shard size: `5GB` (10^9, as transformers), `2GiB` (2^30), `500MB` or plain bytes.

    Raises:
        RecipeError: not a positive size.
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, flags=re.IGNORECASE)
        if not match:
            raise RecipeError(f"shard size {text!r} is not a size; write e.g. 5GB, 500MB or 2GiB", value=text)
        value = int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])
    if value <= 0:
        raise RecipeError(f"shard size {text!r} must be positive; write e.g. 5GB", value=text)
    return value


@dataclass(frozen=True)
class _Slot:
    file: Path
    offset: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]


class ShardedWriter:
    """Writes a fixed set of tensors into safetensors shards plus an index (when sharded).

    Args:
        directory: existing output directory.
        specs: (name, safetensors dtype code, shape) of every tensor to write.
        shard_size: the most data bytes per shard (a tensor larger than this gets its own shard).
    """

    def __init__(self, directory: Path, specs: list[tuple[str, str, tuple[int, ...]]], *, shard_size: int) -> None:
        self.directory = Path(directory)
        groups: list[list[tuple[str, str, tuple[int, ...], int]]] = [[]]
        used = 0
        for name, code, shape in sorted(specs):
            nbytes = math.prod(shape) * DTYPE_SIZES[code]
            if groups[-1] and used + nbytes > shard_size:
                groups.append([])
                used = 0
            groups[-1].append((name, code, shape, nbytes))
            used += nbytes
        count = len(groups)
        names = [SINGLE_FILE] if count == 1 else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        self.files = [self.directory / n for n in names]
        self.slots: dict[str, _Slot] = {}
        self.total_size = 0
        self._fds: dict[Path, int] = {}
        self._written: set[str] = set()
        for file, group in zip(self.files, groups, strict=True):
            self._start_shard(file, group)

    def _start_shard(self, file: Path, group: list[tuple[str, str, tuple[int, ...], int]]) -> None:
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, code, shape, nbytes in group:
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as safetensors writes it
        start = 8 + len(raw)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._fds[file] = fd
        _pwrite_all(fd, len(raw).to_bytes(8, "little") + raw, 0)
        os.ftruncate(fd, start + offset)
        pos = start
        for name, code, shape, nbytes in group:
            self.slots[name] = _Slot(file, pos, nbytes, code, shape)
            pos += nbytes
        self.total_size += offset

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write one tensor (CPU, the planned dtype and shape) to its place. Thread-safe per name."""
        slot = self.slots[name]
        if dtype_code(tensor.dtype) != slot.dtype or tuple(tensor.shape) != slot.shape:
            raise MergeError(
                f"internal: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, planned {slot.dtype} {slot.shape}",
                tensor=name,
            )
        import torch

        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        if slot.nbytes:
            _pwrite_all(self._fds[slot.file], memoryview(data.numpy()), slot.offset)  # type: ignore[arg-type]
        self._written.add(name)

    def close(self) -> list[Path]:
        """Close the shards, write the index when sharded; return the files written.

        Raises:
            MergeError: some planned tensor was never written.
        """
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        missing = sorted(set(self.slots) - self._written)
        if missing:
            raise MergeError(f"internal: {len(missing)} planned tensors were not written, e.g. {missing[0]!r}")
        if len(self.files) == 1:
            return list(self.files)
        index = {
            "metadata": {"total_size": self.total_size},
            "weight_map": {name: slot.file.name for name, slot in sorted(self.slots.items())},
        }
        (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return [*self.files, self.directory / INDEX_FILE]

    def abort(self) -> None:
        """Close file descriptors without checks (the caller removes the directory)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done : done + (1 << 30)], offset + done)
