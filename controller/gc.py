"""The orphan sweep: deletes sandboxes of this installation whose AgentTask is gone.

`select_orphans` is the pure rule and `confirm` the pure two-sweep rule; `Sweeper.sweep` does
the I/O: it lists every sandbox carrying this installation's `agenttask.io/instance` label (all
pages) FIRST and the AgentTasks SECOND — a sandbox is only ever created for a task that already
exists, so a task missing from the second list really is gone. Sandboxes younger than the grace
period are left alone anyway.

Memory stays bounded by what the rule needs: the sandbox listing is metadata only
(`Sandboxes.list_metadata`: id, name, labels, state and creation time of each, no SDK sandbox
objects), and the tasks are read `TASK_PAGE_SIZE` at a time keeping only a `TaskInfo` of each.

Destructive steps act only on confirmed information:
- if any listing fails or is partial (an error on any page, a 404 for the task list), the sweep
  aborts before deciding anything (`agenttask_gc_runs_total{outcome="aborted"}` and a log line);
- a sandbox is deleted only when two sweeps at least the grace period apart both found it
  orphaned (the first sweep only records it as a suspect); suspects live in memory, so a restart
  merely delays a deletion by one sweep;
- `dry_run` logs and counts what would be deleted and deletes nothing.
Confirmed orphans are deleted by id from the listing (no lookup first), `delete_concurrency` at
a time (setting `gc_delete_concurrency`); a delete that fails is logged and the orphan is judged
again by the next sweeps.

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
from .daytona_rest import ListedSandbox
from .errors import OperatorError
from .kube import Kube
from .sandboxes import LABEL_ATTEMPT, LABEL_INSTANCE, LABEL_NAMESPACE, LABEL_UID, Sandboxes

log = logging.getLogger(__name__)
# AgentTasks per list request: a task may carry an issue body of up to 1 MiB, so a page of 500
# could be hundreds of MiB of JSON at once; 100 bounds that at about 100 MiB in the worst case
# and costs a few more round trips (one per 100 tasks) in the usual one.
TASK_PAGE_SIZE = 100


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
    sandboxes: Iterable[ListedSandbox],
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
                 grace_seconds: float, delete_concurrency: int, dry_run: bool = False):
        self.sandboxes, self.kube = sandboxes, kube
        self.instance_id, self.namespaces = instance_id, namespaces
        self.grace = dt.timedelta(seconds=grace_seconds)
        self.dry_run = dry_run
        self.delete_concurrency = max(1, delete_concurrency)
        self.suspects: dict[str, dt.datetime] = {}

    async def _listings(self) -> tuple[list[ListedSandbox], dict[str, TaskInfo]]:
        """(the sandboxes, the tasks by uid), sandboxes first. Of each sandbox only its listed
        metadata is kept, of each task only `TaskInfo` (one page of bodies at a time). Raises the
        first listing error; never returns a partial listing."""
        found = [box async for box in self.sandboxes.list_metadata({LABEL_INSTANCE: self.instance_id})]
        tasks: dict[str, TaskInfo] = {}
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]  # None: all namespaces
        for ns in scopes:
            async for page in self.kube.task_pages(ns, limit=TASK_PAGE_SIZE):
                for body in page:
                    info = _task_info(body)
                    tasks[info.uid] = info
        return found, tasks

    async def sweep(self, *, now: dt.datetime) -> SweepReport:
        """One sweep; raises the listing's error when a listing fails (nothing is deleted then)."""
        report = SweepReport()
        try:
            found, tasks = await self._listings()
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
        boxes = {box.name: box for box in found if box.name in confirmed}
        await self._delete_all([(boxes[name], reason) for name, reason in sorted(confirmed.items())], report)
        metrics.GC_RUNS.labels("ok").inc()
        return report

    async def _delete_all(self, doomed: list[tuple[ListedSandbox, str]], report: SweepReport) -> None:
        """Delete `doomed` (sandbox, reason), `delete_concurrency` at a time, recording each outcome
        in `report`. A failed delete is logged, not raised: the others go on."""
        gate = asyncio.Semaphore(self.delete_concurrency)

        async def delete(box: ListedSandbox, reason: str) -> None:
            async with gate:
                try:
                    if await self.sandboxes.delete_by_id(box.id, state=box.state):
                        report.deleted[box.name] = reason
                        metrics.GC_DELETIONS.labels(reason).inc()
                        log.info("gc: deleted sandbox %s (%s)", box.name, reason)
                    else:
                        report.already_gone += 1
                except OperatorError as exc:
                    log.warning("gc: could not delete %s now: %s", box.name, exc)

        await asyncio.gather(*(delete(box, reason) for box, reason in doomed))
