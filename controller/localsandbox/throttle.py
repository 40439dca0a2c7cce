"""Daytona's failed-authentication throttler (``apps/api/src/auth/failed-auth-tracker.service.ts``).

Does: count requests with a bad or missing API key per client address; once `limit` of them
arrive within `ttl` seconds the client is blocked for `ttl` seconds and every further failed
request answers 429 with the headers Daytona sets there: ``X-RateLimit-Limit-failed-auth``,
``X-RateLimit-Remaining-failed-auth``, ``X-RateLimit-Reset-failed-auth`` and a plain
``Retry-After`` (the only place Daytona sends the unsuffixed header,
``common/utils/rate-limit-headers.util.ts``). Requests with a valid key are never counted.

Does not: throttle authenticated traffic (injected with the ``rate_limit`` fault instead).
"""

from __future__ import annotations

import math
import time

from .settings import FailedAuth


class FailedAuthTracker:
    """Per-client failed-auth counters."""

    def __init__(self) -> None:
        self._hits: dict[str, tuple[int, float]] = {}  # client -> (hits, window end)
        self._blocked: dict[str, float] = {}  # client -> block end

    def failed(self, client: str, limit: FailedAuth) -> dict[str, str] | None:
        """Count one failure of `client`; the 429 headers if it is (now) blocked, else None."""
        now = time.monotonic()
        until = self._blocked.get(client)
        if until is not None and until > now:
            return self._headers(limit.limit, math.ceil(until - now))
        hits, end = self._hits.get(client, (0, now + limit.ttl))
        if end <= now:
            hits, end = 0, now + limit.ttl
        hits += 1
        self._hits[client] = (hits, end)
        if hits >= limit.limit:
            self._blocked[client] = now + limit.ttl
            self._hits.pop(client, None)
            return self._headers(limit.limit, math.ceil(limit.ttl))
        return None

    @staticmethod
    def _headers(limit: int, retry_after: int) -> dict[str, str]:
        retry = str(max(1, retry_after))
        return {
            "X-RateLimit-Limit-failed-auth": str(limit),
            "X-RateLimit-Remaining-failed-auth": "0",
            "X-RateLimit-Reset-failed-auth": retry,
            "Retry-After": retry,
        }
