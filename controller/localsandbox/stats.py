"""Counters behind ``GET /_admin/stats`` and `LocalSandboxServer.stats()`.

Does: count calls per operation (after authentication; see `faults` for the names), sandboxes
created / deleted (any cause) / alive / most alive at once, creates per sandbox name, when the
first create of each name arrived (``first_create_at``, Unix seconds; benchmarks measure
apply -> first create request with it), and what the server did on its own (auto-stops, TTL
expiries, lost sandboxes, injected faults, warm-pool hits).

Does not: know about HTTP or sandboxes; the store and middleware call it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any


class Stats:
    """Mutable counters; `snapshot()` renders them as JSON-ready data."""

    _COUNTERS = (
        "sandboxes_created", "sandboxes_deleted", "lost", "auto_stopped", "auto_archived",
        "auto_deleted", "ttl_expired", "errors_injected", "rate_limited", "unauthorized",
        "pool_hits", "pool_misses", "commands_started", "images_built", "builds_failed",
    )  # fmt: skip

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.creates_by_name: Counter[str] = Counter()
        self.first_create_at: dict[str, float] = {}
        self.counters: Counter[str] = Counter()
        self.alive = 0
        self.max_alive = 0

    def call(self, op: str) -> None:
        """Count one authenticated call to `op`."""
        self.calls[op] += 1

    def bump(self, counter: str, n: int = 1) -> None:
        """Add `n` to one of the named counters."""
        if counter not in self._COUNTERS:
            raise KeyError(counter)
        self.counters[counter] += n

    def sandbox_created(self, name: str) -> None:
        """A sandbox came into existence (it counts as alive until `sandbox_gone`)."""
        self.counters["sandboxes_created"] += 1
        self.creates_by_name[name] += 1
        self.first_create_at.setdefault(name, time.time())
        self.alive += 1
        self.max_alive = max(self.max_alive, self.alive)

    _GONE_COUNTERS = {"auto_delete": "auto_deleted", "ttl": "ttl_expired", "lost": "lost"}

    def sandbox_gone(self, reason: str = "delete") -> None:
        """A sandbox was destroyed (`reason`: delete, auto_delete, ttl, lost, shutdown, ...)."""
        self.counters["sandboxes_deleted"] += 1
        self.alive -= 1
        if reason in self._GONE_COUNTERS:
            self.counters[self._GONE_COUNTERS[reason]] += 1

    def reset(self) -> None:
        """Zero every counter; `alive` is a gauge and stays, `max_alive` restarts from it."""
        self.calls.clear()
        self.creates_by_name.clear()
        self.first_create_at.clear()
        self.counters.clear()
        self.max_alive = self.alive

    def snapshot(self) -> dict[str, Any]:
        """The stats as a JSON-ready dict."""
        out: dict[str, Any] = {name: self.counters[name] for name in self._COUNTERS}
        out["calls"] = dict(sorted(self.calls.items()))
        out["sandboxes_alive"] = self.alive
        out["max_alive"] = self.max_alive
        out["creates_by_name"] = dict(sorted(self.creates_by_name.items()))
        out["first_create_at"] = dict(sorted(self.first_create_at.items()))
        return out
