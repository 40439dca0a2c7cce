"""Admission: a global (and optional per-namespace) limit of active sandboxes, first come first served.

`order_admissions` is the pure rule; `AdmissionQueue` is the in-process bookkeeping the
supervisors share. Only the active replica runs supervisors, so in-memory state is enough;
after a restart or failover it is rebuilt from the kopf index of all AgentTasks (complete
before any supervisor runs), where every task that was admitted and has not released its
sandbox still holds its slot. Slots are reserved here *before* the admitting status write,
and the sandbox is created only after that write, so the limit holds across restarts.

Per-requester and per-namespace concurrency caps of AgentTaskQuotas (`quota.py`) enter the
same FCFS order as group limits (`groups_of`): a task blocked only by its own group's cap does
not hold up tasks of other groups. Their window caps (cost, sandbox hours) are checked before a
task enters the queue at all (the supervisor asks `quota.budget`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .logs import task_fields
from .plan import Admission

_log = logging.getLogger("kopf.objects")  # the per-task log stream, like the supervisors' lines

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Waiting:
    key: Key
    created: dt.datetime
    uid: str
    requester: str = ""


# (namespace, requester) -> [(group key, cap, what to call it)]: the quota groups a task counts in
GroupsOf = Callable[[str, str], list[tuple[str, int, str]]]


def _no_groups(_namespace: str, _requester: str) -> list[tuple[str, int, str]]:
    return []


def group_counts(active: Mapping[Key, str], requesters: Mapping[Key, str], groups_of: GroupsOf) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key, namespace in active.items():
        for group, _, _ in groups_of(namespace, requesters.get(key, "")):
            counts[group] = counts.get(group, 0) + 1
    return counts


def order_admissions(
    *,
    active: Mapping[Key, str],
    waiting: Iterable[Waiting],
    limit: int,
    per_namespace: int | None,
    groups_of: GroupsOf = _no_groups,
    requesters: Mapping[Key, str] | None = None,
) -> tuple[set[Key], dict[Key, int]]:
    """(keys that may be admitted now, queue position of every waiting key; 1 = next).

    Strict FCFS by creation time (then uid, for equal timestamps): a waiting task is never
    overtaken by a younger one unless the older one is blocked only by its own namespace limit
    or its own quota group's cap.
    """
    ordered = sorted(waiting, key=lambda w: (w.created, w.uid))
    used = len(active)
    per_ns: dict[str, int] = {}
    for namespace in active.values():
        per_ns[namespace] = per_ns.get(namespace, 0) + 1
    per_group = group_counts(active, requesters or {}, groups_of)
    admit: set[Key] = set()
    positions: dict[Key, int] = {}
    position = 0
    for item in ordered:
        namespace = item.key[0]
        ns_full = per_namespace is not None and per_ns.get(namespace, 0) >= per_namespace
        groups = groups_of(namespace, item.requester)
        group_full = any(per_group.get(group, 0) >= cap for group, cap, _ in groups)
        if used < limit and not ns_full and not group_full:
            admit.add(item.key)
            used += 1
            per_ns[namespace] = per_ns.get(namespace, 0) + 1
            for group, _, _ in groups:
                per_group[group] = per_group.get(group, 0) + 1
            continue
        position += 1
        positions[item.key] = position
    return admit, positions


class AdmissionQueue:
    """Shared by all supervisors of one operator process."""

    def __init__(self, *, limit: int, per_namespace: int | None = None, groups_of: GroupsOf = _no_groups):
        self.limit = limit
        self.per_namespace = per_namespace
        self.groups_of = groups_of
        self._active: dict[Key, str] = {}
        self._requesters: dict[Key, str] = {}
        self._waiting: dict[Key, Waiting] = {}
        self._seeded = False
        self._turn: dict[Key, asyncio.Event] = {}  # waiting key -> set when it may be admitted now

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def seed(self, holding: Iterable[tuple[Key, str]], waiting: Iterable[Waiting]) -> None:
        """Rebuild from the index once per process (later calls are ignored). `holding`:
        (key, requester) of every task that holds a slot."""
        if self._seeded:
            return
        self._seeded = True
        for key, requester in holding:
            self._active[key] = key[0]
            self._requesters[key] = requester
        for item in waiting:
            if item.key not in self._active:
                self._waiting.setdefault(item.key, item)

    def holds(self, key: Key, requester: str = "") -> None:
        """Record that `key` holds a slot (it was admitted before this process started)."""
        self._waiting.pop(key, None)
        self._active[key] = key[0]
        self._requesters[key] = requester

    def request(self, item: Waiting) -> Admission:
        """Admit `item` now if FCFS and the limits allow it (reserving its slot), else queue it."""
        if item.key in self._active:
            return Admission(admitted=True)
        self._waiting[item.key] = item  # (its requester may have been read anew)
        admit, positions = self._order()
        # every task the FCFS rule admits now gets its slot now, oldest first, and the grants are
        # logged in that order: granting only the asker made the log (and the moment each slot
        # was taken) follow whichever supervisor happened to ask first. Also when the asker is
        # not among them: it then waits behind them, and its message counts their slots (a task
        # queued behind older ones of its requester said "0/50 active" and no quota)
        granted = sorted((self._waiting[k] for k in admit if k in self._waiting), key=lambda w: (w.created, w.uid))
        for other in granted:
            self._grant(other)
        if item.key in admit:
            return Admission(admitted=True)
        turn = self._turn.get(item.key)
        if turn is None or turn.is_set():  # woken but overtaken (e.g. by an older task): wait again
            self._turn[item.key] = asyncio.Event()
        position = positions.get(item.key)
        total = len(positions)
        message = (f"waiting for a sandbox slot: position {position} of {total} in the queue "
                   f"({len(self._active)}/{self.limit} active")
        if self.per_namespace is not None:
            message += f", at most {self.per_namespace} per namespace"
        message += ")"
        counts = group_counts(self._active, self._requesters, self.groups_of)
        for group, cap, name in self.groups_of(item.key[0], item.requester):
            if counts.get(group, 0) >= cap:
                who = f" of requester {item.requester}" if item.requester else ""
                message = (f"AgentTaskQuota {name}: {counts.get(group, 0)} of {cap} concurrent tasks{who} are "
                           f"running; {message}")
                break
        return Admission(admitted=False, position=position, queued=total, limit_message=message)

    def _grant(self, item: Waiting) -> None:
        self._waiting.pop(item.key, None)
        turn = self._turn.pop(item.key, None)
        if turn is not None:
            turn.set()  # its supervisor looks now and finds its slot
        self._active[item.key] = item.key[0]
        self._requesters[item.key] = item.requester
        _log.info("admitted to a sandbox slot (%d/%d active)", len(self._active), self.limit,
                  extra=task_fields(namespace=item.key[0], name=item.key[1], uid=item.uid))

    def _order(self) -> tuple[set[Key], dict[Key, int]]:
        return order_admissions(active=self._active, waiting=self._waiting.values(), limit=self.limit,
                                per_namespace=self.per_namespace, groups_of=self.groups_of,
                                requesters=self._requesters)

    def release(self, key: Key) -> None:
        """The task finished (or is gone): free its slot / leave the queue, and wake the waiting
        tasks that may be admitted now — only those: with N queued, waking every waiter on every
        release made each release cost N re-observations and N status writes (O(N²) per batch).
        The others refresh their queue position on their own recheck interval."""
        self._turn.pop(key, None)
        self._requesters.pop(key, None)
        freed = self._active.pop(key, None) is not None
        left = self._waiting.pop(key, None) is not None
        if not (freed or left) or not self._turn:
            return
        admit, _ = self._order()
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
