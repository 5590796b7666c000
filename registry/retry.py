"""The project's one retry helper, on tenacity: call, and on a retryable error wait (exponential
backoff, optionally jittered) and call again.

The catalog store retries a commit whose parent moved (optimistic concurrency); the bot's queue
takes its retry delays from `Backoff.delay` (a job waits in the queue, not in a loop); the embedded
hub's webhook delivery uses the same helper. Clock and randomness are injected, so tests neither
sleep nor depend on luck. `Backoff.retrying` gives the tenacity `Retrying` object itself, for a
caller that wants tenacity's own API (e.g. `for attempt in backoff.retrying(on=...)`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """How often and how long to wait.

    Args:
        attempts: calls in all (the first one included).
        first_s: the first delay's ceiling; it doubles each retry, up to `cap_s`.
        cap_s: the longest ceiling.
        jitter: "full" waits uniform(0, ceiling) (spreads writers that collided); "none" waits the ceiling.
        sleep: how to wait (injectable).
        rng: the jitter's random source (injectable).
    """

    attempts: int = 5
    first_s: float = 0.05
    cap_s: float = 2.0
    jitter: str = "full"
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.jitter not in ("full", "none"):
            raise ValueError(f"jitter must be 'full' or 'none', not {self.jitter!r}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")

    def delay(self, retry: int) -> float:
        """The wait before retry number `retry` (0: the first retry): the project's one backoff formula."""
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = retry + 1  # tenacity counts the attempt that just failed from 1
        return self.wait()(state)

    def delays(self) -> Iterator[float]:
        """The waits between attempts (`attempts - 1` of them)."""
        for retry in range(self.attempts - 1):
            yield self.delay(retry)

    def wait(self) -> tenacity.wait.wait_base:
        """The tenacity wait strategy: `first_s * 2**retry` capped at `cap_s`, then the jitter."""
        ceiling = tenacity.wait_exponential(multiplier=self.first_s, exp_base=2, min=0, max=self.cap_s)
        return ceiling if self.jitter == "none" else _FullJitter(ceiling, self.rng)

    def retrying(
        self, *, on: type[BaseException] | tuple[type[BaseException], ...], what: str = "call"
    ) -> tenacity.Retrying:
        """A tenacity `Retrying` with these attempts, waits, sleep and jitter, retrying only `on`.

        The last error is re-raised as itself once every attempt failed (not wrapped in `RetryError`).
        """

        def log(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            logger.debug(
                "%s failed (attempt %d of %d: %s); retrying in %.2fs", what, state.attempt_number, self.attempts,
                error, wait,
            )  # fmt: skip

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self.wait(),
            retry=tenacity.retry_if_exception_type(on),
            sleep=self.sleep,
            before_sleep=log,
            reraise=True,
        )


class _FullJitter(tenacity.wait.wait_base):
    """uniform(0, ceiling) with an injected random source (tenacity's own jitter uses the global one)."""

    def __init__(self, ceiling: tenacity.wait.wait_base, rng: random.Random) -> None:
        self.ceiling = ceiling
        self.rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return self.rng.uniform(0, self.ceiling(retry_state))


def retry(
    call: Callable[[], T], *, on: type[BaseException] | tuple[type[BaseException], ...], backoff: Backoff, what: str
) -> T:
    """Return `call()`, retrying after the errors in `on` as `backoff` says.

    Raises:
        The last error in `on` once every attempt failed; any other error at once.
    """
    return backoff.retrying(on=on, what=what)(call)
