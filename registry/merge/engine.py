"""The merge engine: stream one output tensor at a time through a method and into shards.

Three stages overlap: a reader thread loads the next tensors' inputs and, on CPU, checks them for
NaN/Inf; the calling thread runs the method (fp32 math, chunk by chunk) on the chosen device; a
writer thread casts the previous result and puts it at its place in its shard. On CPU the inputs
are read-only views of the mapped safetensors files (the reader reads their pages in: no copy, no
buffer; mapped pages count in RSS but are the page cache's), and results go into output buffers
recycled by size; on CUDA inputs are `pread` into pinned buffers (`registry.merge.cuda`).
Read-ahead is bounded by the byte size of the largest tensor's inputs, so the working memory is
about twice that plus the method's, whatever the model size. Everything is written to a temporary
directory beside `out` and renamed at the end; any failure (or Ctrl-C) removes it, so no
half-written output ever exists at `out`.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from registry.device import resolve_device
from registry.errors import MergeError, OutputExistsError
from registry.io.checkpoint import Checkpoint
from registry.io.writer import ShardedWriter, parse_size
from registry.merge.plan import MergePlan, TensorPlan, check_finite, check_same_base
from registry.merge.report import MergeReport
from registry.merge.sources import open_source

if TYPE_CHECKING:
    import torch

    from registry.merge.cuda import Staged
    from registry.merge.methods import MethodSpec

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    """One tensor's inputs: checked (`inputs`, `base`) on CPU, else `raw` stored tensors."""

    inputs: list[torch.Tensor] = field(default_factory=list)
    base: torch.Tensor | None = None
    raw: dict[int, torch.Tensor] | None = None
    tail: torch.Tensor | None = None  # extra vocabulary rows of the tokenizer model, stored dtype
    staged: Staged | None = None  # CUDA: inputs copied to the GPU on the side stream
    flags: torch.Tensor | None = None  # CUDA: per input, its sum is finite (checked by the writer)
    on_gpu: list[torch.Tensor] = field(default_factory=list)  # CUDA: the inputs, for the NaN message
    buffers: list[torch.Tensor] = field(default_factory=list)  # CPU: output buffers to recycle once written


class _Buffers:
    """Output buffers recycled by size (CPU). A fresh multi-MB buffer costs a page fault and a zeroed
    page per 4 KiB (0.5 ms per MB on the 2-core dev machine: 66 ms for one 131 MB result); the pool
    grows to the buffers in flight at once (a result being written, one being computed)."""

    MIN_BYTES = 1 << 20  # smaller results are cheap to allocate

    def __init__(self) -> None:
        self._free: dict[int, list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> torch.Tensor | None:
        """A uint8 buffer of exactly `nbytes` (None below MIN_BYTES: let the method allocate)."""
        import torch

        if nbytes < self.MIN_BYTES:
            return None
        with self._lock:
            free = self._free.get(nbytes)
            if free:
                return free.pop()
        return torch.empty(nbytes, dtype=torch.uint8)

    def give(self, buffers: list[torch.Tensor]) -> None:
        """Return buffers nobody reads any more (their tensor was written, or the method did not use them)."""
        with self._lock:
            for buffer in buffers:
                self._free.setdefault(buffer.numel(), []).append(buffer)


@dataclass(frozen=True)
class MergeResult:
    """What a merge produced."""

    out: Path
    files: list[Path]
    report: MergeReport
    device: str
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)  # where each thread spent its time (seconds)


def check_output(out: Path, *, overwrite: bool) -> None:
    """Refuse an existing output path unless `overwrite`.

    Raises:
        OutputExistsError: `out` exists and `overwrite` is False.
    """
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"output {out} already exists; choose another --out or pass --overwrite to replace it", path=str(out)
        )


def run_merge(
    plan: MergePlan,
    *,
    out: Path,
    device: str = "auto",
    shard_size: int | str = "5GB",
    overwrite: bool = False,
    progress: bool = True,
    extra_files: dict[str, str] | None = None,
) -> MergeResult:
    """Run a planned merge and write the output directory atomically.

    Args:
        plan: from `plan_merge(recipe)` (every input resolved).
        out: the output directory (must not exist unless `overwrite`).
        device: auto | cpu | cuda.
        shard_size: the most bytes per safetensors shard (`5GB`, `500MB`, bytes).
        overwrite: replace an existing `out`.
        progress: show a progress bar on stderr.
        extra_files: more files to write into the output (name -> text), e.g. the model card.

    Returns:
        The files written, the diagnostics report, the device and the wall time.

    Raises:
        OutputExistsError, MergeError, CompatibilityError, CheckpointError.
    """
    from registry.merge.methods import get_method

    started = time.monotonic()
    out = Path(out)
    check_output(out, overwrite=overwrite)
    if not plan.complete:
        raise MergeError(f"the plan is incomplete ({plan.skipped[0]}); plan without offline mode to merge")
    target = out.resolve()
    for src in [*plan.sources, *plan.models]:
        # --overwrite onto an input (or a folder holding one) would destroy what is being merged.
        if src.path is not None and (target == src.path or target in src.path.parents):
            raise OutputExistsError(
                f"--out {out} would replace the input {src.ref}; choose another --out", path=str(out)
            )
    dev = resolve_device(device, error=MergeError)
    if dev == "cpu":
        from registry.merge.kernels import fused

        fused.warm_up_in_background()  # overlaps opening the inputs and the first reads
    spec = get_method(plan.recipe.merge_method)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    ckpts: list[Checkpoint] = []
    writer: ShardedWriter | None = None
    try:
        ckpts = [open_source(s) for s in plan.sources]
        check_same_base(plan, ckpts)
        writer = ShardedWriter(
            tmp, [(t.name, t.dtype, t.shape) for t in plan.tensors], shard_size=parse_size(shard_size)
        )
        stream = _Stream(plan, ckpts, spec, dev)
        report = stream.run(writer, progress=progress)
        stages = stream.stage_times()
        files = writer.close()
        writer = None
        from registry.merge.outputs import write_side_files

        write_side_files(plan, tmp, report=report, extra_files=extra_files or {})
        _publish(tmp, out)
    except BaseException:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for ckpt in ckpts:
            ckpt.close()
    files = [out / f.name for f in files]
    return MergeResult(
        out=out, files=files, report=report, device=dev, seconds=time.monotonic() - started, stages=stages
    )


def _fix_for(exc: BaseException, device: str) -> str:
    """What to do after the method failed on a tensor."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError) and device != "cpu":
        return (
            "out of GPU memory (the GPU path holds about 10x the largest tensor's inputs): free GPU memory "
            "or merge with --device cpu; nothing was written"
        )
    if isinstance(exc, torch.OutOfMemoryError):
        return "not enough memory: close other programs or merge on a machine with more RAM"
    return "run with MERGELING_DEBUG=1 and report the traceback"


def _remove_stale_partials(out: Path) -> None:
    # A merge killed hard (SIGKILL, power loss) cannot clean up; its process id is in the name.
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        pid = partial.name.rpartition("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.info("Removing %s, left by an interrupted merge", partial)
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def _publish(tmp: Path, out: Path) -> None:
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, trash)
        os.rename(tmp, out)
        shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() else trash.unlink()
    else:
        os.rename(tmp, out)


class _Stream:
    """Reads, computes and writes the planned tensors with the three stages overlapped."""

    def __init__(self, plan: MergePlan, ckpts: list[Checkpoint], spec: MethodSpec, device: str) -> None:
        recipe = plan.recipe
        self.plan, self.ckpts, self.spec, self.device = plan, ckpts, spec, device
        self.times = {"main_wait_read_s": 0.0, "main_compute_s": 0.0, "main_wait_write_s": 0.0, "writer_write_s": 0.0}
        self.buffers = _Buffers()
        ctx = recipe.method_context()
        bindings = plan.bindings or [(recipe.parameters, ctx)]
        # One merger per distinct parameter set (gradient or `filter:` values make several).
        used = sorted({t.binding for t in plan.tensors}) or [0]
        self.mergers = {i: spec.bind(*bindings[i]) for i in used}
        self.merger = self.mergers[used[0]]  # the whole-model scans (one parameter set only, see plan)
        self.protect = list(spec.protected(recipe.parameters, ctx))
        # linear ignores the base (it is listed for the card and the config only): never read it.
        self.base_index = plan.base_index if spec.needs_base else None
        self.needed = sorted(
            {
                *([self.base_index] if self.base_index is not None else []),
                *plan.input_indices,
                *{t.extra_from for t in plan.tensors if t.extra_from is not None},
            }
        )
        self.on_gpu = sorted({*([self.base_index] if self.base_index is not None else []), *plan.input_indices})
        if device != "cpu":
            from registry.io.safetensors import DTYPE_SIZES
            from registry.merge.cuda import Drain, Staging

            slot = max(
                (sum(ckpts[i].tensors[t.name].nbytes + 512 for i in self.needed) for t in plan.tensors), default=0
            )
            self.staging = Staging(device, slot, readers=len(self.needed))
            self.drain = Drain(device, max((t.numel * DTYPE_SIZES[t.dtype] for t in plan.tensors), default=0))

    def stage_times(self) -> dict[str, float]:
        """Seconds each thread spent per stage (main: waiting for reads, in the method, waiting for writes)."""
        times = dict(self.times)
        if self.device != "cpu":
            times.update(self.staging.times)
            times.update(self.drain.times)
        return {k: round(v, 3) for k, v in times.items()}

    def _load(self, t: TensorPlan) -> _Loaded:
        # Runs on the reader thread. On CPU it also does the NaN/Inf checks, so they overlap the
        # method's compute on the main thread; on CUDA it queues the copies to the GPU.
        if self.device != "cpu":
            staged, host = self.staging.load(self.ckpts, t.name, self.needed, self.on_gpu, t.shared_rows)
            tail = None
            if t.extra_from is not None and t.shape[0] > (t.shared_rows or 0):
                tail = host[t.extra_from][t.shared_rows : t.shape[0]].clone()  # the pinned slot is reused
                check_finite(tail.float(), model=self.plan.sources[t.extra_from].ref, name=t.name)
            return _Loaded(staged=staged, tail=tail)
        # CPU: safetensors inputs are mapped, not copied (the reader thread reads their pages in).
        raw = {i: self.ckpts[i].map(t.name) for i in self.needed}
        tail = None
        if t.extra_from is not None and t.shape[0] > (t.shared_rows or 0):
            tail = raw[t.extra_from][t.shared_rows : t.shape[0]]
            check_finite(tail.float(), model=self.plan.sources[t.extra_from].ref, name=t.name)
        if self.device == "cpu":
            inputs, base = self._prepare(t, raw)
            return _Loaded(inputs=inputs, base=base, tail=tail)
        return _Loaded(raw=raw, tail=tail)

    def _prepare(self, t: TensorPlan, raw: dict[int, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Inputs and base on the device, shared vocabulary rows only, each checked for NaN/Inf.

        Tensors keep their stored dtype: the methods do fp32 math chunk by chunk (bf16/fp16 convert
        exactly), so no whole-tensor fp32 copy is ever made.
        """
        ready: dict[int, torch.Tensor] = {}
        for i in [*([self.base_index] if self.base_index is not None else []), *self.plan.input_indices]:
            if i in ready:
                continue
            x = raw[i]
            if t.shared_rows is not None:
                x = x[: t.shared_rows]
            x = x.to(self.device, non_blocking=True)
            check_finite(x, model=self.plan.sources[i].ref, name=t.name)
            ready[i] = x
        base = ready[self.base_index] if self.base_index is not None else None
        return [ready[i] for i in self.plan.input_indices], base

    def _ready(self, t: TensorPlan, loaded: _Loaded) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        if loaded.staged is not None:
            from registry.merge.cuda import finite_flag

            ready = self.staging.ready(loaded.staged)
            loaded.on_gpu = [ready[i] for i in self.on_gpu]
            loaded.flags = finite_flag(loaded.on_gpu)  # checked by the writer once its copy synchronised
            base = ready[self.base_index] if self.base_index is not None else None
            return [ready[i] for i in self.plan.input_indices], base
        if loaded.raw is not None:
            return self._prepare(t, loaded.raw)
        return loaded.inputs, loaded.base

    def _drain_and_write(
        self, writer: ShardedWriter, t: TensorPlan, wait: Callable[[], torch.Tensor], loaded: _Loaded
    ) -> None:
        """Writer thread, CUDA: wait for the copy to pinned memory, check the inputs' flags, write."""
        host = wait()
        if loaded.flags is not None and not bool(loaded.flags.all()):
            for i, x in zip(self.on_gpu, loaded.on_gpu, strict=True):
                check_finite(x, model=self.plan.sources[i].ref, name=t.name)
        start = time.perf_counter()
        writer.write(t.name, host)
        self.times["writer_write_s"] += time.perf_counter() - start

    def _recycle(self, loaded: _Loaded, merged: torch.Tensor, raw_out: torch.Tensor | None) -> None:
        """The output buffer: held until written when the method wrote its result there, else free now."""
        if raw_out is None:
            return
        if merged.untyped_storage().data_ptr() == raw_out.untyped_storage().data_ptr():
            loaded.buffers.append(raw_out)
        else:
            self.buffers.give([raw_out])

    def _out_buffer(
        self, t: TensorPlan, inputs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """A recycled buffer (CPU) and its view in the output dtype and the inputs' shape, for the
        method to write its result into (fresh memory costs a page fault per 4 KiB)."""
        from registry.io.safetensors import DTYPE_SIZES, torch_dtype

        if self.device != "cpu" or not inputs:
            return None, None
        buffer = self.buffers.take(inputs[0].numel() * DTYPE_SIZES[t.dtype])
        if buffer is None:
            return None, None
        return buffer, buffer.view(torch_dtype(t.dtype)).view(inputs[0].shape)

    def _cast(self, t: TensorPlan, merged: torch.Tensor, tail: torch.Tensor | None) -> torch.Tensor:
        """Cast to the output dtype and append the tokenizer model's extra vocabulary rows (on the result's device)."""
        import torch

        from registry.io.safetensors import torch_dtype

        result = merged.to(torch_dtype(t.dtype))
        if tail is not None:
            result = torch.cat([result, tail.to(result.device).to(result.dtype)])
        return result

    def _finish(self, t: TensorPlan, merged: torch.Tensor, tail: torch.Tensor | None) -> torch.Tensor:
        """`_cast`, then to CPU."""
        return self._cast(t, merged, tail).cpu()

    def _stages(self, progress: bool, desc: str) -> Iterator[tuple[TensorPlan, _Loaded]]:
        """Yield (tensor plan, loaded inputs) with loading running ahead on a thread."""
        from registry.progress import progress_bar

        tensors = self.plan.tensors
        # Read ahead as far as a byte budget allows: many small tensors, but only one of the
        # largest (the embeddings), so peak memory stays about twice the largest tensor's inputs.
        # On CUDA the loaded inputs sit in GPU memory (the host slots are reused once copied), so
        # the reader may run two of the largest ahead: the read then overlaps more of the compute.
        cost = [sum(self.ckpts[i].tensors[t.name].nbytes for i in self.needed) for t in tensors]
        budget = max(cost, default=0) * (1 if self.device == "cpu" else 2)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mergeling-read") as reader:
            pending: deque[tuple[int, Future[_Loaded]]] = deque()
            submitted = in_flight = 0
            bar = progress_bar(
                total=sum(t.numel for t in tensors), desc=desc, unit="param", unit_scale=True, enabled=progress
            )
            try:
                for t in tensors:
                    while submitted < len(tensors) and (not pending or in_flight + cost[submitted] <= budget):
                        pending.append((cost[submitted], reader.submit(self._load, tensors[submitted])))
                        in_flight += cost[submitted]
                        submitted += 1
                    size, future = pending.popleft()
                    in_flight -= size
                    start = time.perf_counter()
                    loaded = future.result()
                    self.times["main_wait_read_s"] += time.perf_counter() - start
                    yield t, loaded
                    bar.update(t.numel)
            finally:
                for _, fut in pending:
                    fut.cancel()
                bar.close()

    def _scan(self, progress: bool) -> None:
        """The method's whole-model passes (e.g. TIES-SV's model-scope slack), before any merge."""
        for step in range(self.merger.scans):
            desc = f"{self.spec.name} scan {step + 1}/{self.merger.scans}"
            for t, loaded in self._stages(progress, desc):
                inputs, base = self._ready(t, loaded)
                try:
                    self.merger.scan(step, t.name, inputs, base)
                except (ValueError, RuntimeError) as exc:
                    raise self._failure(t, exc) from exc
                for i in self.needed if self.device == "cpu" else ():
                    self.ckpts[i].evict(t.name)
            self.merger.end_scan(step)

    def _failure(self, t: TensorPlan, exc: BaseException) -> MergeError:
        return MergeError(
            f"merging tensor {t.name!r} with {self.spec.name} failed: {exc}; {_fix_for(exc, self.device)}",
            tensor=t.name,
            method=self.spec.name,
        )

    def _finish_and_write(self, writer: ShardedWriter, t: TensorPlan, merged: torch.Tensor, loaded: _Loaded) -> None:
        start = time.perf_counter()
        writer.write(t.name, self._finish(t, merged, loaded.tail))
        self.times["writer_write_s"] += time.perf_counter() - start  # on CPU: the cast too
        self.buffers.give(loaded.buffers)  # written: the result's buffer is free again

    def run(self, writer: ShardedWriter, *, progress: bool) -> MergeReport:
        """Merge every tensor into `writer`; returns the diagnostics.

        Raises:
            MergeError: the method failed, or the GPU ran out of memory (anywhere: copies too).
        """
        import torch

        try:
            return self._run(writer, progress=progress)
        except torch.OutOfMemoryError as exc:
            raise MergeError(
                f"merging with {self.spec.name} on {self.device} failed: {_fix_for(exc, self.device)}",
                method=self.spec.name,
            ) from exc
        finally:
            if self.device != "cpu":
                self.staging.close()

    def _run(self, writer: ShardedWriter, *, progress: bool) -> MergeReport:
        from registry.merge.methods import TensorStats

        labels = [self.plan.sources[i].ref for i in self.plan.input_indices]
        roles: list[str] = [m.role or "input" for m in self.plan.recipe.merge_inputs()]
        report = MergeReport(
            method=self.spec.name,
            inputs=labels,
            roles=roles,
            protected=self.protect if "protected_discarded" in self.spec.diagnostics else [],
        )
        self._scan(progress)
        on_cpu = self.device == "cpu"
        # Results in flight: one on CPU (bounded memory); on CUDA one per pinned output buffer, so
        # the next result's copy back overlaps the write of the previous one.
        depth = 1 if on_cpu else len(self.drain.buffers)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mergeling-write") as pool:
            writes: deque[Future[None]] = deque()
            for t, loaded in self._stages(progress, "merge"):
                start = time.perf_counter()
                inputs, base = self._ready(t, loaded)
                stats = TensorStats()
                try:
                    raw_out, out = self._out_buffer(t, inputs)
                    merged = self.mergers[t.binding].merge(t.name, inputs, base, stats, out=out)
                except (ValueError, RuntimeError) as exc:
                    raise self._failure(t, exc) from exc
                self._recycle(loaded, merged, raw_out)
                for i in self.needed if on_cpu else ():
                    self.ckpts[i].evict(t.name)  # its mapped pages: RSS follows the tensors in flight
                del inputs, base
                report.add(t.name, stats)
                self.times["main_compute_s"] += time.perf_counter() - start
                start = time.perf_counter()
                while len(writes) >= depth:
                    writes.popleft().result()  # its buffer is free again
                self.times["main_wait_write_s"] += time.perf_counter() - start
                if on_cpu:  # the cast overlaps the next tensor's compute
                    writes.append(pool.submit(self._finish_and_write, writer, t, merged, loaded))
                else:  # cast on the GPU, copy back queued now; checks and write on the writer thread
                    wait = self.drain.submit(self._cast(t, merged, loaded.tail))
                    writes.append(pool.submit(self._drain_and_write, writer, t, wait, loaded))
                del merged, loaded
            start = time.perf_counter()
            while writes:
                writes.popleft().result()
            self.times["main_wait_write_s"] += time.perf_counter() - start
        return report
