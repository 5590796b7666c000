"""Progress bars of lm-eval and the libraries under it, on or off for a block, per thread.

lm-eval has no switch for its bars: its model methods take `disable_tqdm`, but `evaluate` never
passes it (and `loglikelihood_rolling` forces a bar per batch), and the request-building bar in
`lm_eval.api.task` takes no option at all. Transformers', datasets' and huggingface_hub's bars
have process-wide switches only. `harness_progress` handles both (see `_BarSwitch`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# The lm-eval modules whose `tqdm` draws bars on our path.
_TQDM_MODULES = ("lm_eval.api.task", "lm_eval.api.model", "lm_eval.models.huggingface")


class _BarSwitch:
    """The progress-bar state `harness_progress` changes, kept thread-safe and scoped.

    lm-eval's bars: the `tqdm` name in the modules that draw them is bound once (idempotent, under
    a lock) to a wrapper that turns the bar off when the *current context* asked for no bars (a
    `ContextVar`), so one thread's `-q` never hides another's bars and nothing is rebound per call.
    Transformers', datasets' and huggingface_hub's bars have process-wide switches only: they are
    turned off by the first quiet block and restored by the last one to leave (a count under the
    lock), so overlapping blocks in threads cannot leave them off.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bars_on: ContextVar[bool] = ContextVar("mergeling_harness_bars", default=True)
        self.quiet_blocks = 0
        self.saved: tuple[bool, bool, bool] = (True, True, True)

    def install(self) -> None:
        import importlib

        with self.lock:
            for name in _TQDM_MODULES:
                module: Any = importlib.import_module(name)
                if not getattr(module.tqdm, "_mergeling_scoped", False):
                    module.tqdm = self._scoped(module.tqdm)

    def _scoped(self, original: Any) -> Any:
        bars_on = self.bars_on

        def tqdm(*args: Any, **kwargs: Any) -> Any:
            # lm-eval's model code passes disable=False explicitly: override it when quiet.
            return original(*args, **({**kwargs, "disable": True} if not bars_on.get() else kwargs))

        tqdm._mergeling_scoped = True  # type: ignore[attr-defined]
        tqdm.__wrapped__ = original  # type: ignore[attr-defined]
        return tqdm

    def enter_quiet(self) -> None:
        import datasets
        from huggingface_hub.utils import _tqdm as hub_tqdm
        from transformers.utils import logging as hf_logging

        with self.lock:
            if self.quiet_blocks == 0:
                self.saved = (
                    hf_logging.is_progress_bar_enabled(),
                    datasets.is_progress_bar_enabled(),
                    not hub_tqdm.are_progress_bars_disabled(),
                )
                hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
                datasets.disable_progress_bars()
                hub_tqdm.disable_progress_bars()
            self.quiet_blocks += 1

    def leave_quiet(self) -> None:
        import datasets
        from huggingface_hub.utils import _tqdm as hub_tqdm
        from transformers.utils import logging as hf_logging

        with self.lock:
            self.quiet_blocks -= 1
            if self.quiet_blocks == 0:
                transformers_bars, datasets_bars, hub_bars = self.saved
                if transformers_bars:
                    hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
                if datasets_bars:
                    datasets.enable_progress_bars()
                if hub_bars:
                    hub_tqdm.enable_progress_bars()


# The libraries' bar switches are process-wide, so the object that guards them is too.
_SWITCH = _BarSwitch()


@contextmanager
def harness_progress(*, enabled: bool) -> Iterator[None]:
    """Show or hide the progress bars of lm-eval and the libraries under it for the block.

    lm-eval has no switch for them: its model methods take `disable_tqdm`, but `evaluate` never
    passes it (and `loglikelihood_rolling` forces a bar per batch), and the request-building bar
    in `lm_eval.api.task` takes no option at all. So the `tqdm` name in the modules that draw bars
    on our path is wrapped once, and the wrapper reads a context variable this block sets: safe
    for threads (the bot, the Space), and scoped to the block. Transformers' bars (loading
    weights), datasets' (building a split on first use) and huggingface_hub's (downloading
    models and data) have documented process-wide switches, also restored (see `_BarSwitch`).

    Args:
        enabled: True leaves every bar on (in this context).
    """
    _SWITCH.install()
    token = _SWITCH.bars_on.set(enabled)
    if not enabled:
        _SWITCH.enter_quiet()
    try:
        yield
    finally:
        if not enabled:
            _SWITCH.leave_quiet()
        _SWITCH.bars_on.reset(token)
