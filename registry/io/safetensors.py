"""A strict safetensors reader: the header is parsed and validated by us before any tensor is read.

Layout: 8-byte little-endian header length N, N bytes of JSON, then the data. Every entry must
have a known dtype, a shape of non-negative ints, and `data_offsets` whose span equals
prod(shape) x itemsize; spans must be in bounds, start at 0, tile the data without gaps or
overlaps, and end exactly at the end of the file. Tensors are read with `os.preadv` into a fresh
buffer rather than mmap, so RSS holds only the tensors in flight (mmap counts touched pages).
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import CheckpointError

if TYPE_CHECKING:
    import torch

DTYPE_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})  # the dtypes Mergeling merges
_TORCH_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
_MAX_HEADER = 16 * 1024 * 1024  # ~130k tensor entries; a 70B checkpoint's largest shard header is < 100 KB


def header_bound(file_size: int) -> int:
    """The largest header accepted in a file of `file_size` bytes, checked before the header is read.

    A header entry is ~100-150 bytes and describes at least a few hundred bytes of tensor data in any
    real checkpoint, so 1/16 of the file (at least 1 MiB, for tiny test models) is far above what
    a writer produces, and 16 MiB caps what a user-sent file can make the bot parse.
    """
    return min(_MAX_HEADER, max(1 << 20, file_size // 16))


_MAX_READ = 1 << 30  # one preadv call; Linux caps a single read near 2 GiB anyway


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, absolute byte offset and size, safetensors dtype code, shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def torch_dtype(code: str) -> torch.dtype:
    """The torch dtype for a safetensors dtype code (`BF16` -> torch.bfloat16)."""
    import torch

    dtype: torch.dtype = getattr(torch, _TORCH_NAMES[code])
    return dtype


def dtype_code(dtype: torch.dtype) -> str:
    """The safetensors dtype code for a torch dtype (torch.bfloat16 -> `BF16`)."""
    name = str(dtype).removeprefix("torch.")
    for code, torch_name in _TORCH_NAMES.items():
        if torch_name == name:
            return code
    raise CheckpointError(
        f"dtype {dtype} cannot be stored in safetensors; set dtype: float32, bfloat16 or float16", dtype=str(dtype)
    )


def read_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header.

    Args:
        path: the `.safetensors` file.

    Returns:
        (tensors by name, `__metadata__` strings).

    Raises:
        CheckpointError: unreadable, truncated, or a header that is not valid or lies about the data.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) < 8:
                raise _bad(path, f"file is {size} bytes, too short for a header (truncated?)")
            (length,) = struct.unpack("<Q", head)
            if 8 + length > size:
                raise _bad(path, f"header length {length} does not fit the file of {size} bytes (truncated?)")
            if length > header_bound(size):
                raise _bad(
                    path,
                    f"header of {length} bytes is over the {header_bound(size)}-byte bound for a file of {size} "
                    "bytes (refused unread)",
                )
            raw = fh.read(length)
    except OSError as exc:
        raise CheckpointError(
            f"cannot read {path}: {exc.strerror or exc}; check the file and its permissions", path=str(path)
        ) from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad(path, "__metadata__ must map strings to strings")
    data_start = 8 + length
    data_size = size - data_start
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        infos[name] = _parse_entry(path, name, entry, data_start)
    end = 0
    for info in sorted(infos.values(), key=lambda i: (i.offset, i.nbytes)):
        begin = info.offset - data_start
        if begin != end:
            what = "overlaps the previous tensor" if begin < end else f"leaves a gap of {begin - end} bytes"
            raise _bad(path, f"tensor {info.name!r} at data offset {begin} {what} (header lies about offsets)")
        end = begin + info.nbytes
    if end != data_size:
        detail = "the file is truncated" if end > data_size else f"{data_size - end} trailing bytes"
        raise _bad(path, f"header describes {end} data bytes but the file holds {data_size}: {detail}")
    return infos, metadata


def _parse_entry(path: Path, name: str, entry: Any, data_start: int) -> TensorInfo:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _bad(path, f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if code not in DTYPE_SIZES:
        raise _bad(path, f"tensor {name!r}: unknown dtype {code!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(path, f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _bad(path, f"tensor {name!r}: data_offsets {offsets!r} must be [begin, end] with 0 <= begin <= end")
    nbytes = math.prod(shape) * DTYPE_SIZES[code]
    if offsets[1] - offsets[0] != nbytes:
        raise _bad(
            path,
            f"tensor {name!r}: data_offsets span {offsets[1] - offsets[0]} bytes but shape {shape} "
            f"x {code} needs {nbytes} (header lies about offsets)",
        )
    return TensorInfo(name, code, tuple(shape), path, data_start + offsets[0], nbytes)


def _bad(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a valid safetensors file: {reason}; re-download or re-save the checkpoint",
        path=str(path),
        reason=reason,
    )


def read_tensor(fd: int, info: TensorInfo, out: torch.Tensor | None = None) -> torch.Tensor:
    """Read one tensor with preadv into a fresh buffer (no mmap, no page-cache pinning in RSS).

    `out`: a uint8 CPU buffer of at least `info.nbytes` to read into instead (e.g. pinned memory
    for a GPU copy); the returned tensor is a view of it.

    Raises:
        CheckpointError: the file ended early (it changed since the header was read).
    """
    import torch

    buf = torch.empty(info.nbytes, dtype=torch.uint8) if out is None else out[: info.nbytes]
    view = memoryview(buf.numpy()) if info.nbytes else memoryview(b"")  # type: ignore[arg-type]
    done = 0
    while done < info.nbytes:
        got = os.preadv(fd, [view[done : done + _MAX_READ]], info.offset + done)
        if got <= 0:
            raise CheckpointError(
                f"{info.path}: tensor {info.name!r} ends past the end of the file (truncated while reading?); "
                "re-download the checkpoint",
                path=str(info.path),
                tensor=info.name,
            )
        done += got
    return buf.view(torch_dtype(info.dtype)).reshape(info.shape)


_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14; Python's mmap may not name it


class SafetensorsFile:
    """An open safetensors file; `read(name)` is thread-safe (pread has no shared file position)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tensors, self.metadata = read_header(self.path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self._map: mmap.mmap | None = None
        self._map_lock = threading.Lock()

    def map(self, name: str) -> torch.Tensor:
        """Tensor `name` as a read-only view of the file mapped into memory: no copy, no buffer.

        The pages are read in (`MADV_POPULATE_READ`) before returning, so whoever computes on the
        view does not stall on page faults. The mapping lives as long as any view of it (closing
        the file does not unmap it). Views must not be written to.
        """
        import torch

        info = self.tensors[name]
        with self._map_lock:
            if self._map is None:
                self._map = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
            mapped = self._map
        if info.nbytes == 0:
            return read_tensor(self._fd, info)
        start = info.offset - info.offset % mmap.PAGESIZE
        try:
            mapped.madvise(_MADV_POPULATE_READ, start, info.offset + info.nbytes - start)
        except OSError:  # before Linux 5.14: let the first touch read the pages
            pass
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not writable": the views are only read
            flat = torch.frombuffer(mapped, dtype=torch.uint8, count=info.nbytes, offset=info.offset)
        return flat.view(torch_dtype(info.dtype)).reshape(info.shape)

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """Read tensor `name` (a new CPU tensor in its stored dtype, or a view of the uint8 buffer `out`)."""
        return read_tensor(self._fd, self.tensors[name], out)

    def evict(self, name: str) -> None:
        """Drop tensor `name`'s pages from this process (`MADV_DONTNEED`) once it was used: they stay
        in the page cache, views of them stay valid (a later touch maps them again), and RSS stays
        bounded by the tensors in flight instead of growing with the model."""
        info = self.tensors[name]
        mapped = self._map
        if mapped is None or info.nbytes == 0:
            return
        start = info.offset - info.offset % mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, start, info.offset + info.nbytes - start)

    def close(self) -> None:
        self._map = None  # unmapped once no view of it is left
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
