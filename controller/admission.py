"""Admission: a global (and optional per-namespace) limit of active sandboxes, first come first served.

`order_admissions` is the pure rule; `AdmissionQueue` is the in-process bookkeeping the
supervisors share. Only the active replica runs supervisors, so in-memory state is enough;
after a restart or failover it is rebuilt from the kopf index of all AgentTasks (complete
before any supervisor runs), where every task that was admitted and has not released its
sandbox still holds its slot. Slots are reserved here *before* the admitting status write,
and the sandbox is created only after that write, so the limit holds across restarts.

Not here: quotas per user (use per-namespace limits and namespaces per team).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .plan import Admission

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Waiting:
    key: Key
    created: dt.datetime
    uid: str


def order_admissions(
    *,
    active: Mapping[Key, str],
    waiting: Iterable[Waiting],
    limit: int,
    per_namespace: int | None,
) -> tuple[set[Key], dict[Key, int]]:
    """(keys that may be admitted now, queue position of every waiting key; 1 = next).

    Strict FCFS by creation time (then uid, for equal timestamps): a waiting task is never
    overtaken by a younger one unless the older one is blocked only by its own namespace limit.
    """
    ordered = sorted(waiting, key=lambda w: (w.created, w.uid))
    used = len(active)
    per_ns: dict[str, int] = {}
    for namespace in active.values():
        per_ns[namespace] = per_ns.get(namespace, 0) + 1
    admit: set[Key] = set()
    positions: dict[Key, int] = {}
    position = 0
    for item in ordered:
        namespace = item.key[0]
        ns_full = per_namespace is not None and per_ns.get(namespace, 0) >= per_namespace
        if used < limit and not ns_full:
            admit.add(item.key)
            used += 1
            per_ns[namespace] = per_ns.get(namespace, 0) + 1
            continue
        position += 1
        positions[item.key] = position
    return admit, positions


class AdmissionQueue:
    """Shared by all supervisors of one operator process."""

    def __init__(self, *, limit: int, per_namespace: int | None = None):
        self.limit = limit
        self.per_namespace = per_namespace
        self._active: dict[Key, str] = {}
        self._waiting: dict[Key, Waiting] = {}
        self._seeded = False
        self._turn: dict[Key, asyncio.Event] = {}  # waiting key -> set when it may be admitted now

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def seed(self, holding: Iterable[Key], waiting: Iterable[Waiting]) -> None:
        """Rebuild from the index once per process (later calls are ignored)."""
        if self._seeded:
            return
        self._seeded = True
        for key in holding:
            self._active[key] = key[0]
        for item in waiting:
            if item.key not in self._active:
                self._waiting.setdefault(item.key, item)

    def holds(self, key: Key) -> None:
        """Record that `key` holds a slot (it was admitted before this process started)."""
        self._waiting.pop(key, None)
        self._active[key] = key[0]

    def request(self, item: Waiting) -> Admission:
        """Admit `item` now if FCFS and the limits allow it (reserving its slot), else queue it."""
        if item.key in self._active:
            return Admission(admitted=True)
        self._waiting.setdefault(item.key, item)
        admit, positions = order_admissions(active=self._active, waiting=self._waiting.values(),
                                            limit=self.limit, per_namespace=self.per_namespace)
        if item.key in admit:
            self._waiting.pop(item.key)
            self._turn.pop(item.key, None)
            self._active[item.key] = item.key[0]
            return Admission(admitted=True, granted=True)
        turn = self._turn.get(item.key)
        if turn is None or turn.is_set():  # woken but overtaken (e.g. by an older task): wait again
            self._turn[item.key] = asyncio.Event()
        position = positions.get(item.key)
        total = len(positions)
        message = (f"waiting for a sandbox slot: position {position} of {total} in the queue "
                   f"({len(self._active)}/{self.limit} active")
        if self.per_namespace is not None:
            message += f", at most {self.per_namespace} per namespace"
        return Admission(admitted=False, position=position, queued=total, limit_message=message + ")")

    def release(self, key: Key) -> None:
        """The task finished (or is gone): free its slot / leave the queue, and wake the waiting
        tasks that may be admitted now — only those: with N queued, waking every waiter on every
        release made each release cost N re-observations and N status writes (O(N²) per batch).
        The others refresh their queue position on their own recheck interval."""
        self._turn.pop(key, None)
        freed = self._active.pop(key, None) is not None
        left = self._waiting.pop(key, None) is not None
        if not (freed or left) or not self._turn:
            return
        admit, _ = order_admissions(active=self._active, waiting=self._waiting.values(),
                                    limit=self.limit, per_namespace=self.per_namespace)
        for admissible in admit:
            turn = self._turn.get(admissible)
            if turn is not None:
                turn.set()

    async def wait_for_turn(self, key: Key, timeout: float) -> None:
        """Sleep until `key` may be admitted (a slot freed for it), at most `timeout` seconds.
        A wake-up that came while the task was busy is not lost: it returns at once."""
        turn = self._turn.get(key)
        if turn is None:
            turn = self._turn[key] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(turn.wait(), timeout)
