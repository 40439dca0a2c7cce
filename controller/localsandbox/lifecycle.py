"""The sandbox state machine and the automatic-lifecycle timers, as pure functions.

Does: say which state changes are legal
(creating -> started -> stopping -> stopped -> starting -> started, stopped -> archived,
any -> destroying -> destroyed, creating/starting/stopping -> error), and compute, for each
sandbox, the next automatic action and when it is due:

* ``autoStopInterval`` (minutes, 0 = off): a ``started`` sandbox with no activity for that
  long is stopped (activity = create, start, and every toolbox call);
* ``autoArchiveInterval`` (minutes, 0 = the maximum, 30 days): a stopped sandbox is archived;
* ``autoDeleteInterval`` (minutes, negative = off, 0 = as soon as it stops): a stopped or
  archived sandbox is destroyed;
* ``ttlMinutes`` (0 = off): destroyed that long after creation, whatever its state.

A "minute" lasts `minute_seconds` seconds so tests can run the timers fast.

Does not: perform the actions, sleep, or read clocks; callers pass `now` (monotonic).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .models import MAX_AUTO_ARCHIVE, SandboxRecord

TRANSITIONS: dict[str, frozenset[str]] = {
    "creating": frozenset({"started", "error", "destroying"}),
    "started": frozenset({"stopping", "destroying", "error"}),
    "stopping": frozenset({"stopped", "error", "destroying"}),
    "stopped": frozenset({"starting", "archived", "destroying"}),
    "archived": frozenset({"starting", "destroying"}),
    "starting": frozenset({"started", "error", "destroying"}),
    "error": frozenset({"destroying"}),
    "destroying": frozenset({"destroyed"}),
    "destroyed": frozenset(),
}

# States in which toolbox (process, files, git) calls are served.
RUNNING_STATES = frozenset({"started"})


class TransitionError(ValueError):
    """A state change the state machine does not allow."""


def check_transition(current: str, new: str) -> None:
    """Raise `TransitionError` unless `current -> new` is legal."""
    if new not in TRANSITIONS.get(current, frozenset()):
        raise TransitionError(f"cannot go from {current} to {new}")


@dataclass(frozen=True)
class Due:
    """An automatic action: `action` is ``stop``, ``archive`` or ``destroy``."""

    sandbox_id: str
    action: str
    reason: str  # auto_stop | auto_archive | auto_delete | ttl
    at: float


def next_action(rec: SandboxRecord, minute_seconds: float) -> Due | None:
    """The earliest automatic action for `rec` (monotonic time), or None."""
    candidates: list[Due] = []
    if rec.ttl_minutes > 0 and rec.state not in ("destroying", "destroyed"):
        candidates.append(Due(rec.id, "destroy", "ttl", rec.created_mono + rec.ttl_minutes * minute_seconds))
    if rec.state == "started" and rec.auto_stop > 0:
        at = rec.activity_mono + rec.auto_stop * minute_seconds
        candidates.append(Due(rec.id, "stop", "auto_stop", at))
    if rec.state in ("stopped", "archived") and rec.stopped_mono is not None:
        if rec.auto_delete >= 0:
            at = rec.stopped_mono + rec.auto_delete * minute_seconds
            candidates.append(Due(rec.id, "destroy", "auto_delete", at))
        if rec.state == "stopped":
            archive = rec.auto_archive if rec.auto_archive > 0 else MAX_AUTO_ARCHIVE
            at = rec.stopped_mono + archive * minute_seconds
            candidates.append(Due(rec.id, "archive", "auto_archive", at))
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
