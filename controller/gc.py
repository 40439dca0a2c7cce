"""The orphan sweep: deletes sandboxes of this installation whose AgentTask is gone.

`select_orphans` is the pure rule and `confirm` the pure two-sweep rule; `Sweeper.sweep` does
the I/O: it lists every sandbox carrying this installation's `agenttask.io/instance` label (all
pages) FIRST and the AgentTasks SECOND — a sandbox is only ever created for a task that already
exists, so a task missing from the second list really is gone. Sandboxes younger than the grace
period are left alone anyway.

Destructive steps act only on confirmed information:
- if any listing fails or is partial (an error on any page, a 404 for the task list), the sweep
  aborts before deciding anything (`agenttask_gc_runs_total{outcome="aborted"}` and a log line);
- a sandbox is deleted only when two sweeps at least the grace period apart both found it
  orphaned (the first sweep only records it as a suspect); suspects live in memory, so a restart
  merely delays a deletion by one sweep;
- `dry_run` logs and counts what would be deleted and deletes nothing.
Confirmed orphans are deleted a few at a time (`DELETE_CONCURRENCY`).

Never touched: sandboxes of another installation, sandboxes without our labels, sandboxes of
namespaces this operator does not watch. Deleting is idempotent (404 = already gone), so two
overlapping sweeps delete each orphan once between them and raise nothing.

Sweeps run only on the active replica (`peering.is_active`), so they pause with the rest of
the operator on a standby.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import metrics
from .errors import OperatorError
from .kube import Kube
from .sandboxes import LABEL_ATTEMPT, LABEL_INSTANCE, LABEL_NAMESPACE, LABEL_UID, Sandboxes

log = logging.getLogger(__name__)
# Deletes in flight at once: one after the other, 1000 orphans were 1000 sequential round trips
# of a get and a delete; a few at a time stays far below Daytona's rate limits.
DELETE_CONCURRENCY = 8


@dataclass(frozen=True)
class SandboxInfo:
    name: str
    labels: Mapping[str, str]
    created_at: dt.datetime | None


@dataclass(frozen=True)
class TaskInfo:
    uid: str
    attempt: int
    finished_and_cleaned: bool


@dataclass
class SweepReport:
    seen: int = 0
    deleted: dict[str, str] = field(default_factory=dict)  # name -> reason
    already_gone: int = 0
    suspected: dict[str, str] = field(default_factory=dict)  # seen orphaned once: deleted next time
    would_delete: dict[str, str] = field(default_factory=dict)  # dry run


def select_orphans(
    sandboxes: Iterable[SandboxInfo],
    tasks: Mapping[str, TaskInfo],
    *,
    instance_id: str,
    namespaces: frozenset[str] | None,
    now: dt.datetime,
    grace: dt.timedelta,
) -> dict[str, str]:
    """name -> reason for every sandbox the sweep should delete."""
    doomed: dict[str, str] = {}
    for box in sandboxes:
        labels = box.labels
        if labels.get(LABEL_INSTANCE) != instance_id or LABEL_UID not in labels:
            continue
        if namespaces is not None and labels.get(LABEL_NAMESPACE) not in namespaces:
            continue
        if box.created_at is None or now - box.created_at < grace:
            continue
        task = tasks.get(labels[LABEL_UID])
        if task is None:
            doomed[box.name] = "orphaned"
            continue
        try:
            attempt = int(labels.get(LABEL_ATTEMPT, "0"))
        except ValueError:
            continue
        if attempt and attempt < task.attempt:
            doomed[box.name] = "stale-attempt"
        elif task.finished_and_cleaned:
            doomed[box.name] = "finished"
    return doomed


def _task_info(body: Mapping[str, Any]) -> TaskInfo:
    status = body.get("status") or {}
    sandbox = status.get("sandbox") or {}
    finished = status.get("phase") in ("Succeeded", "Failed") and bool(sandbox.get("deleted"))
    return TaskInfo(uid=body["metadata"]["uid"], attempt=int(status.get("attempts") or 0),
                    finished_and_cleaned=finished)


def _parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def confirm(doomed: Mapping[str, str], suspects: Mapping[str, dt.datetime], *, now: dt.datetime,
            grace: dt.timedelta) -> tuple[dict[str, str], dict[str, dt.datetime]]:
    """(confirmed orphans to delete now, the suspects to remember). An orphan is confirmed when a
    sweep at least `grace` earlier also found it; a sandbox no longer orphaned stops being a suspect."""
    confirmed = {name: reason for name, reason in doomed.items()
                 if name in suspects and now - suspects[name] >= grace}
    remembered = {name: suspects.get(name, now) for name in doomed if name not in confirmed}
    return confirmed, remembered


class Sweeper:
    """The orphan sweep of one operator process (it remembers the suspects between sweeps)."""

    def __init__(self, *, sandboxes: Sandboxes, kube: Kube, instance_id: str, namespaces: list[str],
                 grace_seconds: float, dry_run: bool = False):
        self.sandboxes, self.kube = sandboxes, kube
        self.instance_id, self.namespaces = instance_id, namespaces
        self.grace = dt.timedelta(seconds=grace_seconds)
        self.dry_run = dry_run
        self.suspects: dict[str, dt.datetime] = {}

    async def _listings(self) -> tuple[list[SandboxInfo], dict[str, TaskInfo], dict[str, Any]]:
        """(the sandboxes, the tasks by uid, the listed SDK sandboxes of the previous sweep's
        suspects). Memory stays bounded: of each sandbox only its name, labels and creation time
        are kept, of each task only `TaskInfo` (one page of bodies at a time); the SDK objects
        kept are those of the suspects, the only sandboxes this sweep can delete, so that their
        delete needs no second lookup."""
        found: list[SandboxInfo] = []
        handles: dict[str, Any] = {}
        async for box in self.sandboxes.list_labelled({LABEL_INSTANCE: self.instance_id}):
            found.append(SandboxInfo(name=box.name, labels=dict(box.labels or {}),
                                     created_at=_parse_time(box.created_at)))  # fmt: skip
            if box.name in self.suspects:
                handles[box.name] = box
        tasks: dict[str, TaskInfo] = {}
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]  # None: all namespaces
        for ns in scopes:
            async for page in self.kube.task_pages(ns):
                for body in page:
                    info = _task_info(body)
                    tasks[info.uid] = info
        return found, tasks, handles

    async def sweep(self, *, now: dt.datetime) -> SweepReport:
        """One sweep; raises the listing's error when a listing fails (nothing is deleted then)."""
        report = SweepReport()
        try:
            found, tasks, handles = await self._listings()
        except OperatorError as exc:
            metrics.GC_RUNS.labels("aborted").inc()
            log.warning("gc: sweep aborted, nothing deleted: a listing failed: %s", exc)
            raise
        report.seen = len(found)
        doomed = select_orphans(found, tasks, instance_id=self.instance_id,
                                namespaces=frozenset(self.namespaces) if self.namespaces else None,
                                now=now, grace=self.grace)
        confirmed, self.suspects = confirm(doomed, self.suspects, now=now, grace=self.grace)
        report.suspected = {name: doomed[name] for name in self.suspects}
        metrics.GC_SUSPECTS.set(len(self.suspects))
        if self.dry_run:
            report.would_delete = confirmed
            for name, reason in sorted(confirmed.items()):
                log.info("gc (dry run): would delete sandbox %s (%s)", name, reason)
            metrics.GC_RUNS.labels("dry_run").inc()
            return report
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def delete(name: str, reason: str) -> None:
            async with gate:
                try:
                    if await self.sandboxes.delete_if_exists(handles.get(name, name)):
                        report.deleted[name] = reason
                        metrics.GC_DELETIONS.labels(reason).inc()
                        log.info("gc: deleted sandbox %s (%s)", name, reason)
                    else:
                        report.already_gone += 1
                except OperatorError as exc:
                    log.warning("gc: could not delete %s now: %s", name, exc)

        await asyncio.gather(*(delete(name, reason) for name, reason in sorted(confirmed.items())))
        metrics.GC_RUNS.labels("ok").inc()
        return report
