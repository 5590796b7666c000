"""The C kernels of `registry.merge.kernels.fused`: compiled once, cached, called through ctypes.

Outside `registry.merge.methods`, so importing it imports neither torch nor the methods.

`fused_kernels.c` (beside this file) is compiled on first use with the system C compiler (`$CC`,
else `cc`), about 1 s, into `$MERGELING_CACHE/kernels` (else `~/.cache/mergeling/kernels`),
keyed by the source, the flags, the compiler and the CPU (`-march=native`). Later processes load
the library in about a millisecond: no JIT start-up on the merge's critical path. (The first
version used numba: 0.8 s of start-up in every process, even from its cache, and 15-25 s to
compile once.) ctypes releases the GIL for the whole call, so the kernels run on several threads.

Without a C compiler, `load()` returns None and warns once, saying what to install, and the merge
takes the torch path (the same bits, about 2x slower on CPU).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".c")
# No fast-math: every operation rounds as IEEE single precision says, in the source's order.
# -ffp-contract=off: no a*b+c fused into an FMA (one rounding instead of two). -fno-trapping-math:
# FP exceptions are not observed, so the compiler may evaluate both sides of a select and vectorize
# the branch-free loops (without it GCC keeps them scalar, 3x slower); it changes no result, and it
# is what LLVM (numba, the kernels' first version) assumes by default.
FLAGS = (
    "-O3", "-march=native", "-std=c11", "-fPIC", "-shared",
    "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno",
)  # fmt: skip

_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_f32 = ctypes.c_float
_int = ctypes.c_int
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "mg_block": (_i64, []),
    "mg_nonfinite": (_i64, [_p, _i64]),
    "mg_quota_stop": (None, [_p, _p, _i64, _f32, _i64, _p]),
    "mg_find_cut": (_int, [_p, _p, _i64, _i64, _i64, _i64, _p]),
    "mg_magprune": (_int, [_p, _p, _i64, _i64, _i64, _p, _p, _p]),
    "mg_elect2": (None, [_p, _p, _p, _i64, _f32, _f32, _int, _f32, _int, _p, _p]),
    "mg_ties2": (
        None,
        [_p, _p, _p, _i64, _p, _p, _p, _i64, _f32, _f32, _int, _f32, _int, _p, _p, _int, _p],
    ),
}
_SUFFIX = {np.dtype(np.uint16): "_u16", np.dtype(np.uint32): "_u32"}


class KernelError(RuntimeError):
    """The C kernels could not be built or loaded."""


def cache_dir() -> Path:
    """`$MERGELING_CACHE/kernels`, else `~/.cache/mergeling/kernels`."""
    root = os.environ.get("MERGELING_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "mergeling") / "kernels"


def _cpu() -> str:
    """What `-march=native` compiles for: the CPU's model and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in info.splitlines() if line.split(":")[0].strip() in wanted}))


def _compiler() -> str:
    compiler = os.environ.get("CC") or "cc"
    path = shutil.which(compiler)
    if path is None:
        raise KernelError(f"no C compiler ({compiler!r} is not on PATH)")
    return path


def build(directory: Path | None = None) -> Path:
    """The compiled library for this source, compiler and CPU: compiled now unless cached.

    Raises:
        KernelError: no compiler, or it failed (its message included).
    """
    compiler = _compiler()
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), version.encode(), _cpu().encode()]))
    name = f"fused_kernels-{key.hexdigest()[:20]}.so"
    for place in [directory] if directory else [cache_dir(), Path(tempfile.gettempdir()) / f"mergeling-{os.getuid()}"]:
        if (place / name).exists():
            return place / name
        try:
            place.mkdir(parents=True, exist_ok=True)
            if os.access(place, os.W_OK):
                return _compile(compiler, place, name)
        except OSError:
            continue
    raise KernelError(f"no writable directory for the compiled kernels (tried {cache_dir()} and the temp dir)")


def _compile(compiler: str, directory: Path, name: str) -> Path:
    for stale in directory.glob(".building-*"):  # left by a process killed while compiling
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 600:
                stale.unlink()
    # Compiled under a private name, then renamed into place: concurrent builds never see half a library.
    fd, partial = tempfile.mkstemp(prefix=".building-", suffix=".so", dir=directory)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", partial], capture_output=True, text=True)
        if done.returncode != 0:
            raise KernelError(f"{compiler} failed on {SOURCE.name}:\n{done.stderr.strip()[-2000:]}")
        os.replace(partial, directory / name)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return directory / name


class Kernels:
    """The loaded library, with numpy-facing calls (bf16 bits as uint16, fp32 bits as uint32)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lib = ctypes.CDLL(str(path))
        for name, (restype, argtypes) in _SIGNATURES.items():
            for suffix in ("",) if name == "mg_block" else ("_u16", "_u32"):
                fn = getattr(self._lib, name + suffix)
                fn.restype, fn.argtypes = restype, argtypes
        self.BLOCK = int(self._lib.mg_block())

    def _fn(self, name: str, *arrays: np.ndarray) -> Any:
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1 or (dtype := dtypes.pop()) not in _SUFFIX:
            raise TypeError(f"{name}: inputs must all be uint16 or all uint32, got {[a.dtype for a in arrays]}")
        if not all(a.flags.c_contiguous for a in arrays) or len({a.shape for a in arrays}) != 1:
            raise TypeError(f"{name}: inputs must be contiguous and of one length (the C code trusts both)")
        return getattr(self._lib, name + _SUFFIX[dtype])

    def nonfinite(self, bits: np.ndarray) -> int:
        """Entries whose exponent bits are all ones (Inf or NaN)."""
        return int(self._fn("mg_nonfinite", bits)(bits.ctypes.data, bits.shape[0]))

    def find_cut(
        self, x: np.ndarray, b: np.ndarray, k: int, sample: int, exact_below: int
    ) -> tuple[int, int, bool, int, int]:
        """(key, ties, finite, stop block, ties left there) of the cut keeping the k largest |x - b|
        (0 < k < n), with `quota_stop`'s answer; finite is False when some |x - b| is Inf or NaN."""
        out = np.zeros(5, np.int64)
        if self._fn("mg_find_cut", x, b)(
            x.ctypes.data, b.ctypes.data, b.shape[0], k, sample, exact_below, out.ctypes.data
        ):
            raise MemoryError("fused find_cut: out of memory")
        return int(out[0]), int(out[1]), bool(out[2]), int(out[3]), int(out[4])

    def magprune(
        self,
        x: np.ndarray,
        b: np.ndarray,
        cols: int,
        lo: int,
        uniforms: np.ndarray,
        table: np.ndarray,
        keep: np.ndarray,
    ) -> None:
        """DELLA's keep mask of the flat entries [lo, lo + len(uniforms)) into `keep` (uint8 0/1): kept
        where uniforms < table[rank], rank = the place by |x - b| in its row of `cols` (stable)."""
        hi = lo + uniforms.shape[0]
        if not (0 <= lo <= hi <= b.shape[0] and b.shape[0] % cols == 0 and table.shape[0] == cols):
            raise ValueError("magprune: the range, the row length and the table do not fit the tensor")
        if uniforms.dtype != np.float32 or table.dtype != np.float32 or keep.dtype != np.uint8:
            raise TypeError("magprune: uniforms and table must be float32, keep uint8")
        if keep.shape != uniforms.shape or not (uniforms.flags.c_contiguous and keep.flags.c_contiguous):
            raise TypeError("magprune: keep and uniforms must be contiguous and of one length")
        if self._fn("mg_magprune", x, b)(
            x.ctypes.data, b.ctypes.data, cols, lo, hi, uniforms.ctypes.data, table.ctypes.data, keep.ctypes.data
        ):
            raise MemoryError("fused magprune: out of memory")

    def elect2(
        self,
        d0: np.ndarray,
        d1: np.ndarray,
        b: np.ndarray,
        *,
        weights: tuple[float, float],
        normalize: bool,
        scale: float,
        out: np.ndarray,
        counts: np.ndarray,
    ) -> None:
        """The election and disjoint mean of two sparsified fp32 deltas onto the base `b` into `out`
        (float32); adds the entries each input lost to the election to `counts` (int64, 2)."""
        arrays = (d0, d1, out)
        if any(a.dtype != np.float32 or not a.flags.c_contiguous or a.shape != b.shape for a in arrays):
            raise TypeError("elect2: d0, d1 and out must be contiguous float32 arrays of the base's length")
        if counts.dtype != np.int64 or counts.shape != (2,):
            raise TypeError("elect2: counts must be two int64")
        self._fn("mg_elect2", b)(
            d0.ctypes.data, d1.ctypes.data, b.ctypes.data, b.shape[0], weights[0], weights[1], normalize,
            scale, scale != 1, out.ctypes.data, counts.ctypes.data,
        )  # fmt: skip

    def quota_stop(self, x: np.ndarray, b: np.ndarray, t: float, quota: int) -> tuple[int, int]:
        """The block where the quota of kept ties at the cut (|x - b| == t) runs out, and the ties
        still to keep at its start."""
        out = np.zeros(2, np.int64)
        self._fn("mg_quota_stop", x, b)(x.ctypes.data, b.ctypes.data, b.shape[0], t, quota, out.ctypes.data)
        return int(out[0]), int(out[1])

    def ties2(
        self,
        x0: np.ndarray,
        x1: np.ndarray,
        b: np.ndarray,
        *,
        kinds: np.ndarray,
        thresholds: np.ndarray,
        stops: np.ndarray,
        first_block: int,
        weights: tuple[float, float],
        normalize: bool,
        scale: float,
        out: np.ndarray,
    ) -> np.ndarray:
        """TIES of two inputs into `out` (float32, or uint16 for bf16 bits); returns the counts
        [non-zero entries of a keep-all input 0, 1, lost 0, lost 1, NaN results (bf16 only)]."""
        if out.shape != b.shape or out.dtype not in (np.float32, np.uint16) or not out.flags.c_contiguous:
            raise TypeError("ties2: out must be a contiguous float32 or uint16 array of the inputs' length")
        kinds = np.ascontiguousarray(kinds, np.int64)
        thresholds = np.ascontiguousarray(thresholds, np.float32)
        stops = np.ascontiguousarray(stops, np.int64)
        counts = np.zeros(5, np.int64)
        bf16 = out.dtype == np.uint16
        self._fn("mg_ties2", x0, x1, b)(
            x0.ctypes.data, x1.ctypes.data, b.ctypes.data, b.shape[0], kinds.ctypes.data, thresholds.ctypes.data,
            stops.ctypes.data, first_block, weights[0], weights[1], normalize, scale, scale != 1,
            None if bf16 else out.ctypes.data, out.ctypes.data if bf16 else None, bf16, counts.ctypes.data,
        )  # fmt: skip
        return counts


_load_lock = threading.Lock()
_warned = False


@cache
def _load() -> Kernels | KernelError:
    try:
        return Kernels(build())
    except (KernelError, OSError) as exc:
        return exc if isinstance(exc, KernelError) else KernelError(str(exc))


def load() -> Kernels | None:
    """The kernels, built on first use (about 1 s) and cached; None when they cannot be built (said
    once, as a warning naming what to install)."""
    global _warned
    with _load_lock:  # one build per process, however many threads ask
        loaded = _load()
        if isinstance(loaded, Kernels):
            return loaded
        if not _warned:
            _warned = True
            log.warning(
                "The fused CPU merge kernels are off (%s): merges take the torch path, the same bits about 2x "
                "slower. Install a C compiler (e.g. apt-get install gcc) or point CC at one.",
                loaded,
            )
        return None


def _warm_up() -> None:
    with _load_lock:
        _load()  # logs nothing: a daemon thread may outlive the caller's log streams


_warm_up_thread: threading.Thread | None = None
_warm_up_lock = threading.Lock()


def start_warm_up() -> threading.Thread:
    """Build or load the kernels on a daemon thread, once per process, so a first compile overlaps
    opening the inputs and the first reads (a daemon: an interrupted process does not wait for it)."""
    global _warm_up_thread
    with _warm_up_lock:
        if _warm_up_thread is None:
            _warm_up_thread = threading.Thread(target=_warm_up, name="mergeling-fused-warm-up", daemon=True)
            _warm_up_thread.start()
        return _warm_up_thread
