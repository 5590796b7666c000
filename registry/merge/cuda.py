"""The GPU side of the engine: pinned staging, host-to-device copies on a side stream, device-to-host on another.

Per tensor, four stages overlap (see `registry.merge.engine`):

1. the reader thread has every input `pread` into a slot of a ring of pinned host buffers, the
   inputs in parallel (one pool thread each; the reads release the GIL), and queues their copies
   to the GPU on a side stream (`Staging.load`), recording an event;
2. the main thread makes the default stream wait for that event, runs the method there, casts
   the result and records another event;
3. the result's copy into a pinned output buffer is queued on a third stream behind it; the
   writer thread waits for that copy, checks the inputs' NaN/Inf flags (computed on the GPU
   without a host sync) and writes the bytes (`Drain.write`);
4. meanwhile the main thread already runs the next tensor's method.

A slot of the input ring is reused only after its copies finished (its event), so the reader can
run ahead without ever overwriting data in flight. The output side has two pinned buffers, used in
turn, so the writer can still be writing one result while the next one's copy back is queued.

Both sides add up where their thread spent its time in `times` (seconds; see `MergeResult.stages`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from registry.io.checkpoint import Checkpoint


@dataclass
class Staged:
    """One tensor's inputs on the GPU (ready once `event` completes), and their NaN/Inf flags."""

    tensors: dict[int, torch.Tensor]
    event: torch.cuda.Event


class Staging:
    """Reader-side: pinned ring slots, preadv into them (inputs in parallel), H2D on a side stream.

    `readers`: threads reading one tensor's inputs at once (one per input is enough); `close()` stops them.
    """

    def __init__(self, device: str, slot_bytes: int, slots: int = 2, readers: int = 1) -> None:
        import torch

        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
        self.buffers = [torch.empty(max(slot_bytes, 1), dtype=torch.uint8, pin_memory=True) for _ in range(slots)]
        self.events: list[torch.cuda.Event | None] = [None] * slots
        self.next = 0
        self.lock = threading.Lock()
        self.times = {"reader_slot_wait_s": 0.0, "reader_read_s": 0.0, "reader_h2d_queue_s": 0.0}
        self.pool = ThreadPoolExecutor(max_workers=max(readers, 1), thread_name_prefix="mergeling-pread")

    def close(self) -> None:
        """Stop the read threads (after the last `load`)."""
        self.pool.shutdown(wait=True)

    def load(
        self, ckpts: Sequence[Checkpoint], name: str, indices: Sequence[int], to_gpu: Sequence[int], rows: int | None
    ) -> tuple[Staged, dict[int, torch.Tensor]]:
        """Read `name` of each checkpoint in `indices` into pinned memory and queue those in `to_gpu` to the GPU.

        Returns:
            The staged GPU tensors (first `rows` rows when given), and the host tensors (views of
            the pinned slot: valid only until the slot is reused, two loads later).
        """
        import torch

        with self.lock:
            slot = self.next
            self.next = (slot + 1) % len(self.buffers)
        start = time.perf_counter()
        done = self.events[slot]
        if done is not None:
            done.synchronize()  # the copies out of this slot finished
        read = time.perf_counter()
        buffer = self.buffers[slot]
        reads: dict[int, Future[torch.Tensor]] = {}
        offset = 0
        for i in indices:  # each input into its own aligned part of the slot, all at once
            nbytes = ckpts[i].tensors[name].nbytes
            reads[i] = self.pool.submit(ckpts[i].read, name, buffer[offset : offset + nbytes])
            offset += (nbytes + 511) // 512 * 512  # keep each view aligned
        host: dict[int, torch.Tensor] = {i: future.result() for i, future in reads.items()}
        queue = time.perf_counter()
        gpu: dict[int, torch.Tensor] = {}
        with torch.cuda.stream(self.stream):
            for i in to_gpu:
                x = host[i]
                gpu[i] = (x[:rows] if rows is not None else x).to(self.device, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record(self.stream)
        self.events[slot] = event
        self.times["reader_slot_wait_s"] += read - start
        self.times["reader_read_s"] += queue - read
        self.times["reader_h2d_queue_s"] += time.perf_counter() - queue
        return Staged(gpu, event), host

    def ready(self, staged: Staged) -> dict[int, torch.Tensor]:
        """On the main thread: make the default stream wait for the copies; the tensors are then usable there."""
        import torch

        current = torch.cuda.current_stream(self.device)
        current.wait_event(staged.event)
        for x in staged.tensors.values():
            x.record_stream(current)  # the allocator must not reuse them before the default stream is done
        return staged.tensors


def finite_flag(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """A GPU bool per tensor: its sum is finite (NaN/Inf propagate through a sum); no host sync."""
    import torch

    return torch.stack([torch.isfinite(x.sum(dtype=torch.float32)) for x in tensors])


class Drain:
    """Writer-side: device-to-host on its own stream into pinned buffers used in turn, then the write.

    The caller must keep at most `buffers` results in flight: the wait of a result must have
    returned, and its host tensor been written, before the result `buffers` submits later is waited for.
    """

    def __init__(self, device: str, max_bytes: int, buffers: int = 2) -> None:
        import torch

        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
        self.buffers = [torch.empty(max(max_bytes, 1), dtype=torch.uint8, pin_memory=True) for _ in range(buffers)]
        self.next = 0
        self.times = {"writer_d2h_wait_s": 0.0}

    def submit(self, result: torch.Tensor) -> Callable[[], torch.Tensor]:
        """Queue `result`'s copy into the next pinned buffer (main thread); returns the writer-thread wait.

        The copy starts as soon as the default stream has produced `result`, so it overlaps the
        writer's write of the previous result (the other buffer).
        """
        import torch

        buffer = self.buffers[self.next]
        self.next = (self.next + 1) % len(self.buffers)
        produced = torch.cuda.Event()  # type: ignore[no-untyped-call]
        produced.record(torch.cuda.current_stream(self.device))
        result.record_stream(self.stream)
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(produced)
            host = buffer[: result.nbytes].view(result.dtype).view(result.shape)
            host.copy_(result, non_blocking=True)
            copied = torch.cuda.Event()  # type: ignore[no-untyped-call]
            copied.record(self.stream)

        def wait() -> torch.Tensor:
            start = time.perf_counter()
            copied.synchronize()
            self.times["writer_d2h_wait_s"] += time.perf_counter() - start
            return host

        return wait
