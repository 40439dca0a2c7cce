"""What ``GET /sandbox`` sees: the live records, or a copy that trails them by ``list_lag``.

Daytona documents its list as eventually consistent (``controllers/sandbox.controller.ts``
"Eventually consistent"; served from OpenSearch when search publishing is on,
``providers/sandbox-search.provider.ts``). With a lag of 0 (the default) the list reads the
live records. With a lag > 0 every change to a sandbox (create, state, desired state, labels,
settings, deletion) reaches the list only `lag` seconds later: the index holds copies of the
records as they were, and applies queued changes when they are due. A sandbox created less than
`lag` seconds ago is missing, one deleted less than `lag` seconds ago still shows as it was.

Does not: filter or page (see `listing`); it only supplies the records to list.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import time
from collections.abc import Callable, Iterable

from .models import SandboxRecord

Lag = Callable[[], float]


class ListIndex:
    """A store listener that keeps the list's view of the sandboxes."""

    def __init__(self, live: dict[str, SandboxRecord], lag: Lag) -> None:
        self._live = live
        self._lag = lag
        self._copies: dict[str, SandboxRecord] = {}
        self._queue: list[tuple[float, int, str, SandboxRecord | None]] = []
        self._tick = itertools.count()
        self._lagging = False

    def on_change(self, event: str, rec: SandboxRecord, _old: str | None, _new: str | None) -> None:
        """`SandboxStore` listener: queue the change when the list lags."""
        lag = self._lag()
        if lag <= 0 and not self._queue:
            self._lagging = False
            return
        if not self._lagging:  # start lagging from the live state as it is now
            self._copies = {r.id: self._snapshot(r) for r in self._live.values() if r.id != rec.id}
            self._lagging = True
        value = None if event == "sandbox.gone" else self._snapshot(rec)
        heapq.heappush(self._queue, (time.monotonic() + lag, next(self._tick), rec.id, value))

    @staticmethod
    def _snapshot(rec: SandboxRecord) -> SandboxRecord:
        snap = copy.copy(rec)
        snap.labels = dict(rec.labels)
        snap.task = None
        return snap

    @property
    def lagging(self) -> bool:
        """Whether the last `view` was the lagging copy (it changes by itself as time passes)."""
        return self._lagging

    def view(self) -> Iterable[SandboxRecord]:
        """The records the list sees now."""
        if not self._lagging:
            return self._live.values()
        now = time.monotonic()
        while self._queue and self._queue[0][0] <= now:
            _, _, sandbox_id, value = heapq.heappop(self._queue)
            if value is None:
                self._copies.pop(sandbox_id, None)
            else:
                self._copies[sandbox_id] = value
        if not self._queue and self._lag() <= 0:
            self._lagging = False
            self._copies = {}
            return self._live.values()
        return list(self._copies.values())
