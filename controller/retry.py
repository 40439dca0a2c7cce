"""The one retry policy of every client: Daytona adapter, GitHub client, Kubernetes, supervisor.

Exponential backoff with full jitter (a delay drawn uniformly from [0, min(cap, base * 2^n)]),
with the server's requested delay (any Retry-After form) as a lower bound. Computation never
overflows, however many failures there were.

- `RetryPolicy.delay()` is pure (the random draw is injected in tests).
- `Backoff` counts consecutive failures of a loop (the supervisor's steps).
- `retry_call()` retries one request in place while the error is `Retryable`, at most
  `attempts` times, and gives up at once — raising the error with its `retry_after` — when the
  server asks for longer than `max_retry_after` (the caller then waits that long itself, e.g.
  the supervisor before its next step, instead of holding the request open).
- `retry_after_seconds()` reads what a server asked for from its headers: `Retry-After` and
  every `Retry-After-<name>` variant Daytona's throttlers send (seconds or an HTTP date).

What this module does not do: decide whether an error is transient (adapters do, see
`failures.py`), or log (callers pass `on_retry`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import Retryable

T = TypeVar("T")

_MAX_EXPONENT = 62  # 2**62 * any sane base is far above every cap; avoids float overflow


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 0.5
    """First backoff ceiling in seconds (the n-th retry draws from [0, base * 2^(n-1)])."""
    cap: float = 60.0
    """Largest backoff ceiling in seconds."""
    attempts: int = 4
    """Tries per request in `retry_call` (1 = no retry)."""
    max_retry_after: float = 30.0
    """A server-requested delay longer than this is not waited in place: the error is raised."""

    def ceiling(self, failures: int) -> float:
        exponent = min(max(failures - 1, 0), _MAX_EXPONENT)
        return min(self.cap, self.base * 2.0 ** exponent)

    def delay(self, failures: int, *, retry_after: float | None = None,
              draw: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the `failures`-th consecutive failure."""
        jittered = draw() * self.ceiling(failures)
        return max(jittered, retry_after or 0.0)


class Backoff:
    """Consecutive-failure counter over a `RetryPolicy` (one per retrying loop)."""

    def __init__(self, policy: RetryPolicy, *, draw: Callable[[], float] = random.random):
        self.policy = policy
        self.failures = 0
        self._draw = draw

    def next(self, retry_after: float | None = None) -> float:
        self.failures += 1
        return self.policy.delay(self.failures, retry_after=retry_after, draw=self._draw)

    def reset(self) -> None:
        self.failures = 0


async def retry_call(make: Callable[[], Awaitable[T]], *, policy: RetryPolicy,
                     on_retry: Callable[[Retryable, float], None] | None = None,
                     sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                     draw: Callable[[], float] = random.random) -> T:
    """`await make()`, retried in place while it raises `Retryable` (see the module docstring)."""
    failures = 0
    while True:
        try:
            return await make()
        except Retryable as exc:
            failures += 1
            asked = exc.retry_after
            if failures >= policy.attempts or (asked is not None and asked > policy.max_retry_after):
                raise
            wait = policy.delay(failures, retry_after=asked, draw=draw)
            if on_retry is not None:
                on_retry(exc, wait)
            await sleep(wait)


def _seconds(value: str, *, now: float) -> float | None:
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


def retry_after_seconds(headers: Mapping[str, Any] | None, *, now: float) -> float | None:
    """The longest delay any `Retry-After` / `Retry-After-<name>` header asks for, or None.

    Daytona's throttlers name the header after the throttler that refused the request
    (`Retry-After-authenticated`, `-sandbox-create`, `-sandbox-lifecycle`, ...); only its
    failed-auth tracking sends a plain `Retry-After`. Both the number-of-seconds and the
    HTTP-date forms are understood; unparseable values are ignored.
    """
    best: float | None = None
    for name, raw in (headers or {}).items():
        key = str(name).lower()
        if key != "retry-after" and not key.startswith("retry-after-"):
            continue
        for part in (raw if isinstance(raw, list | tuple) else [raw]):
            seconds = _seconds(str(part), now=now)
            if seconds is not None and (best is None or seconds > best):
                best = seconds
    return best
