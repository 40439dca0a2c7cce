"""The one retry policy: full jitter, Retry-After as a floor, no overflow, in-place retries."""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from controller.errors import Fatal, Retryable
from controller.retry import Backoff, RetryPolicy, retry_after_seconds, retry_call

NOW = 1_800_000_000.0


def test_delay_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(base=1.0, cap=60.0)
    assert [policy.ceiling(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.delay(3, draw=lambda: 0.0) == 0.0
    assert policy.delay(3, draw=lambda: 0.5) == 2.0
    assert policy.delay(3, draw=lambda: 0.999) < 4.0


def test_retry_after_is_a_lower_bound() -> None:
    policy = RetryPolicy(base=1.0, cap=60.0)
    assert policy.delay(1, retry_after=17.0, draw=lambda: 0.5) == 17.0
    assert policy.delay(9, retry_after=1.0, draw=lambda: 1.0) == 60.0


def test_no_overflow_after_very_many_failures() -> None:
    backoff = Backoff(RetryPolicy(base=0.5, cap=60.0), draw=lambda: 1.0)
    delays = [backoff.next() for _ in range(5000)]
    assert max(delays) == 60.0 and backoff.failures == 5000
    backoff.reset()
    assert backoff.next() == 0.5


@pytest.mark.parametrize(("headers", "seconds"), [
    ({}, None),
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "2.5"}, 2.5),
    ({"Retry-After-sandbox-create": "12"}, 12.0),                       # Daytona's named throttlers
    ({"retry-after-authenticated": "3", "Retry-After-sandbox-lifecycle": "9"}, 9.0),  # the longest wins
    ({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),            # HTTP date
    ({"Retry-After": "soon"}, None),
    ({"X-RateLimit-Reset-authenticated": "40"}, None),                 # not a retry-after header
])
def test_retry_after_header_forms(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == seconds


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_retry_call_retries_transient_errors_then_succeeds() -> None:
    calls, slept = [], []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Retryable("busy", retry_after=0.25)
        return "ok"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    assert run(retry_call(flaky, policy=RetryPolicy(base=0.1, attempts=4), sleep=sleep, draw=lambda: 0.0)) == "ok"
    assert len(calls) == 3 and slept == [0.25, 0.25]


def test_retry_call_gives_up_after_its_attempts() -> None:
    calls = []

    async def down() -> None:
        calls.append(1)
        raise Retryable("down")

    async def sleep(_: float) -> None:
        return None

    with pytest.raises(Retryable):
        run(retry_call(down, policy=RetryPolicy(attempts=3), sleep=sleep))
    assert len(calls) == 3


def test_retry_call_does_not_hold_a_long_server_wait_in_place() -> None:
    """The server asked for 120 s: the caller gets the error (with its retry_after) at once."""
    calls = []

    async def throttled() -> None:
        calls.append(1)
        raise Retryable("slow down", retry_after=120.0)

    with pytest.raises(Retryable) as caught:
        run(retry_call(throttled, policy=RetryPolicy(attempts=5, max_retry_after=30.0)))
    assert len(calls) == 1 and caught.value.retry_after == 120.0


def test_retry_call_never_retries_refusals() -> None:
    calls = []

    async def refused() -> None:
        calls.append(1)
        raise Fatal("no")

    with pytest.raises(Fatal):
        run(retry_call(refused, policy=RetryPolicy(attempts=5)))
    assert len(calls) == 1
