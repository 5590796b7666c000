"""registry.retry: attempts, delays and which errors are retried (clock and jitter injected)."""

from __future__ import annotations

import random

import pytest

from registry.retry import Backoff, retry


def test_retries_only_the_named_errors_then_gives_up_with_the_last() -> None:
    waits: list[float] = []
    backoff = Backoff(attempts=4, first_s=0.1, cap_s=0.3, jitter="none", sleep=waits.append)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"down {len(calls)}")
        return "ok"

    assert retry(flaky, on=ConnectionError, backoff=backoff, what="flaky") == "ok"
    assert waits == [0.1, 0.2] and len(calls) == 3

    def always() -> str:
        raise ConnectionError("still down")

    waits.clear()
    with pytest.raises(ConnectionError, match="still down"):
        retry(always, on=ConnectionError, backoff=backoff, what="always")
    assert waits == [0.1, 0.2, 0.3]  # doubling, capped; three waits between four attempts

    def wrong() -> str:
        raise KeyError("not retried")

    waits.clear()
    with pytest.raises(KeyError):
        retry(wrong, on=ConnectionError, backoff=backoff, what="wrong")
    assert waits == []


def test_full_jitter_stays_under_the_ceiling() -> None:
    delays = list(Backoff(attempts=6, first_s=0.05, cap_s=0.2, rng=random.Random(1)).delays())
    ceilings = [0.05, 0.1, 0.2, 0.2, 0.2]
    assert len(delays) == 5 and all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))


def test_the_helper_is_tenacity_with_the_same_waits_and_reraises_the_error_itself() -> None:
    import tenacity

    waits: list[float] = []
    backoff = Backoff(attempts=3, first_s=0.5, cap_s=0.75, jitter="none", sleep=waits.append)
    retrying = backoff.retrying(on=TimeoutError, what="loop")
    assert isinstance(retrying, tenacity.Retrying)
    tries = 0
    with pytest.raises(TimeoutError, match="slow 3"):  # the error itself, not tenacity.RetryError
        for attempt in retrying:
            with attempt:
                tries += 1
                raise TimeoutError(f"slow {tries}")
    assert tries == 3 and waits == [0.5, 0.75] == list(backoff.delays())


def test_a_misspelt_jitter_is_refused() -> None:
    with pytest.raises(ValueError, match="jitter must be"):
        Backoff(jitter="ful")
