"""Warm-pool claims: which creates in flight expect a ready sandbox of a snapshot's pool.

Concurrent supervisors must not all count the same ready sandbox as theirs, or the hit/miss
metrics would lie. `PoolClaims.claim()` reads the pool's ready count and reserves one of the
unclaimed ones for the caller; `release()` after the create returned. In memory: claims only
matter while creates are in flight in this process.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class PoolReader(Protocol):
    async def warm_pool_ready(self, snapshot: str) -> int: ...


class PoolClaims:
    def __init__(self) -> None:
        self._inflight: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def claim(self, sandboxes: PoolReader, snapshot: str) -> bool:
        async with self._lock:
            ready = await sandboxes.warm_pool_ready(snapshot)
            if ready - self._inflight.get(snapshot, 0) <= 0:
                return False
            self._inflight[snapshot] = self._inflight.get(snapshot, 0) + 1
            return True

    def release(self, snapshot: str) -> None:
        self._inflight[snapshot] = max(0, self._inflight.get(snapshot, 0) - 1)
