"""`@spaces.GPU` on Hugging Face ZeroGPU hardware, a no-op everywhere else.

The `spaces` package exists only on Hugging Face Spaces (and where someone installed it); without
it the handlers run as they are, on the GPU when there is one, else on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def on_gpu(fn: F, *, duration: int = 60) -> F:
    """`spaces.GPU(duration=...)(fn)` when the `spaces` package is installed, else `fn` unchanged."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)  # type: ignore[no-any-return]
