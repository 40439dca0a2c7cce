"""Liveness: is this operator process still doing its work, or wedged?

`/healthz` (the pod's liveness probe) answers 500 when
- a background loop the operator depends on (the maintenance loop) has ended — it never ends
  on its own, so it crashed;
- supervisors exist but none of them completed a step for `stall_seconds`: every step is
  bounded by request timeouts (the longest, a clone, by 20 request timeouts), so a silent
  fleet of supervisors means an await that never returns.
A blocked event loop cannot answer at all, which the probe's timeout catches.

Readiness is separate (`/readyz`): a degraded operator is alive but not ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Liveness:
    def __init__(self, *, stall_seconds: float = 1200.0, clock: Callable[[], float] = time.monotonic):
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._running = 0
        self._last_step = clock()

    def watch(self, name: str, task: asyncio.Task[None]) -> None:
        self._loops[name] = task

    def beat(self) -> None:
        """A supervisor completed a step."""
        self._last_step = self._clock()

    def started(self) -> None:
        self._running += 1
        self._last_step = self._clock()

    def ended(self) -> None:
        self._running = max(0, self._running - 1)

    def check(self) -> tuple[bool, dict[str, str]]:
        problems = {name: "ended" for name, task in self._loops.items() if task.done()}
        silent = self._clock() - self._last_step
        if self._running and silent > self.stall_seconds:
            problems["supervisors"] = f"{self._running} running, no step completed for {silent:.0f}s"
        return not problems, problems
