"""The automatic-lifecycle timers, as pure functions (``managers/sandbox.manager.ts`` crons).

Does: compute, for each sandbox, the next automatic action and when it is due. As in Daytona
every interval counts from ``lastActivityAt`` (which every state change and every toolbox call
moves), and only settled sandboxes (state == desired state, nothing pending) are picked:

* ``autoStopInterval`` (minutes, 0 = off): a ``started`` sandbox is stopped; an ephemeral one
  (``autoDeleteInterval`` 0) is deleted instead (``auto_stop``);
* ``autoArchiveInterval`` (minutes; stored already resolved, 0 never reaches here): a
  ``stopped`` sandbox is archived (``auto_archive``);
* ``autoDeleteInterval`` (minutes, negative = off): a ``stopped`` sandbox is deleted
  (``auto_delete``); an ``archived`` one never is;
* ``ttlMinutes`` (0 = off; not in Daytona's open-source API, kept for the SDK field): deleted
  that long after creation, whatever its state (``ttl``).

A "minute" lasts `minute_seconds` seconds so tests can run the timers fast.

Does not: perform the actions, sleep, or read clocks; callers pass `now` (monotonic).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .models import MAX_AUTO_ARCHIVE, SandboxRecord


@dataclass(frozen=True)
class Due:
    """An automatic action; `reason` is ``auto_stop``, ``auto_archive``, ``auto_delete`` or ``ttl``."""

    sandbox_id: str
    reason: str
    at: float


def next_action(rec: SandboxRecord, minute_seconds: float) -> Due | None:
    """The earliest automatic action for `rec` (monotonic time), or None."""
    if rec.desired == "destroyed" or rec.state == "destroyed":
        return None
    candidates: list[Due] = []
    if rec.ttl_minutes > 0:
        candidates.append(Due(rec.id, "ttl", rec.created_mono + rec.ttl_minutes * minute_seconds))
    settled = rec.state == rec.desired and not rec.pending
    if settled and rec.state == "started" and rec.auto_stop > 0:
        candidates.append(Due(rec.id, "auto_stop", rec.activity_mono + rec.auto_stop * minute_seconds))
    if settled and rec.state == "stopped":
        archive = rec.auto_archive if rec.auto_archive > 0 else MAX_AUTO_ARCHIVE
        candidates.append(Due(rec.id, "auto_archive", rec.activity_mono + archive * minute_seconds))
        if rec.auto_delete >= 0:
            candidates.append(Due(rec.id, "auto_delete", rec.activity_mono + rec.auto_delete * minute_seconds))
    if not candidates:
        return None
    return min(candidates, key=lambda d: d.at)


def collect_due(
    records: Iterable[SandboxRecord], now: float, minute_seconds: float
) -> tuple[list[Due], float | None]:
    """Actions due at `now`, and the time of the next not-yet-due one (None if there is none)."""
    due: list[Due] = []
    next_at: float | None = None
    for rec in records:
        action = next_action(rec, minute_seconds)
        if action is None:
            continue
        if action.at <= now:
            due.append(action)
        elif next_at is None or action.at < next_at:
            next_at = action.at
    due.sort(key=lambda d: d.at)
    return due, next_at
