"""One retry helper: call, and on a retryable error wait (jittered exponential backoff) and call again.

The catalog store retries a commit whose parent moved (optimistic concurrency); the bot's queue
takes its retry delays from `Backoff.delay` (a job waits in the queue, not in a loop); the embedded
hub's webhook delivery can use the same helper. Clock and randomness are injected, so tests neither
sleep nor depend on luck.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

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

    def delay(self, retry: int) -> float:
        """The wait before retry number `retry` (0: the first retry): the project's one backoff formula."""
        ceiling = min(self.cap_s, self.first_s * 2**retry)
        return self.rng.uniform(0, ceiling) if self.jitter == "full" else ceiling

    def delays(self) -> Iterator[float]:
        """The waits between attempts (`attempts - 1` of them)."""
        for retry in range(self.attempts - 1):
            yield self.delay(retry)


def retry(
    call: Callable[[], T], *, on: type[BaseException] | tuple[type[BaseException], ...], backoff: Backoff, what: str
) -> T:
    """Return `call()`, retrying after the errors in `on` as `backoff` says.

    Raises:
        The last error in `on` once every attempt failed; any other error at once.
    """
    delays = backoff.delays()
    attempt = 1
    while True:
        try:
            return call()
        except on as exc:
            delay = next(delays, None)
            if delay is None:
                raise
            logger.debug(
                "%s failed (attempt %d of %d: %s); retrying in %.2fs", what, attempt, backoff.attempts, exc, delay
            )
            backoff.sleep(delay)
            attempt += 1
