"""Which sandboxes the orphan sweep deletes, and the active-replica rule; the sweep's safety
rules with in-memory stand-ins for Daytona and Kubernetes (the real ones: tests/integration)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import pytest

from controller import gc, metrics, peering
from controller.daytona_rest import ListedSandbox
from controller.errors import Retryable
from controller.gc import TaskInfo, select_orphans
from controller.kube import Kube
from controller.sandboxes import Sandboxes

NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(minutes=10)


def box(name: str, uid: str | None, *, instance: str = "prod", ns: str = "a", attempt: str = "1",
        created: dt.datetime | None = OLD, state: str = "started") -> ListedSandbox:
    labels = {"agenttask.io/instance": instance, "agenttask.io/namespace": ns, "agenttask.io/attempt": attempt}
    if uid:
        labels["agenttask.io/task-uid"] = uid
    return ListedSandbox(id=f"id-{name}", name=name, labels=labels, state=state, created_at=created)


def select(boxes: list[ListedSandbox], tasks: dict[str, TaskInfo], *, namespaces: frozenset[str] | None = None
           ) -> dict[str, str]:
    return select_orphans(boxes, tasks, instance_id="prod", namespaces=namespaces, now=NOW,
                          grace=dt.timedelta(minutes=2))


def test_only_our_orphans_past_grace_are_selected() -> None:
    boxes = [
        box("orphan", "gone"),
        box("live", "u1"),
        box("young-orphan", "gone2", created=NOW - dt.timedelta(seconds=30)),
        box("other-install", "gone", instance="staging"),
        box("unlabelled", None),
        box("no-time", "gone", created=None),
    ]
    assert select(boxes, {"u1": TaskInfo("u1", 1, False)}) == {"orphan": "orphaned"}


def test_stale_attempts_and_finished_tasks() -> None:
    tasks = {"u1": TaskInfo("u1", 2, False), "u2": TaskInfo("u2", 1, True)}
    assert select([box("old-attempt", "u1", attempt="1"), box("current", "u1", attempt="2"),
                   box("leftover", "u2")], tasks) == {"old-attempt": "stale-attempt", "leftover": "finished"}


def test_unwatched_namespaces_are_not_judged() -> None:
    assert select([box("elsewhere", "gone", ns="b")], {}, namespaces=frozenset({"a"})) == {}
    assert select([box("here", "gone", ns="a")], {}, namespaces=frozenset({"a"})) == {"here": "orphaned"}


def test_active_replica_rule() -> None:
    fresh = NOW.isoformat()
    stale = (NOW - dt.timedelta(minutes=5)).isoformat()
    peers = {"me": {"priority": 10, "lastseen": fresh, "lifetime": 60},
             "low": {"priority": 5, "lastseen": fresh, "lifetime": 60},
             "dead-high": {"priority": 99, "lastseen": stale, "lifetime": 60}}
    assert peering.decide_active(peers, priority=10, now=NOW)
    assert not peering.decide_active(peers, priority=5, now=NOW)
    tie = {**peers, "twin": {"priority": 10, "lastseen": fresh, "lifetime": 60}}
    assert not peering.decide_active(tie, priority=10, now=NOW)


def test_an_orphan_is_deleted_only_when_a_second_sweep_a_grace_later_agrees() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    grace = dt.timedelta(seconds=120)
    doomed = {"at-a-1": "orphaned", "at-b-1": "orphaned"}
    confirmed, suspects = gc.confirm(doomed, {}, now=t0, grace=grace)
    assert confirmed == {} and suspects == {"at-a-1": t0, "at-b-1": t0}
    soon, kept = gc.confirm(doomed, suspects, now=t0 + dt.timedelta(seconds=60), grace=grace)
    assert soon == {} and kept == suspects  # too soon: the first sighting's time is kept
    # b's task showed up (an eventually consistent list): it stops being a suspect
    later, left = gc.confirm({"at-a-1": "orphaned"}, kept, now=t0 + grace, grace=grace)
    assert later == {"at-a-1": "orphaned"} and left == {}


# ---------------------------------------------------------------- the sweep, with stand-ins


class FakeDaytona:
    """`list_metadata` and `delete_by_id` of `Sandboxes`, recording the calls in `log`."""

    def __init__(self, boxes: list[ListedSandbox], log: list[str]):
        self.boxes, self.log = {b.id: b for b in boxes}, log
        self.in_flight = self.most_in_flight = 0

    async def list_metadata(self, labels: Mapping[str, str]) -> AsyncIterator[ListedSandbox]:
        self.log.append("list sandboxes")
        for b in list(self.boxes.values()):
            if all(b.labels.get(k) == v for k, v in labels.items()):
                yield b

    async def delete_by_id(self, sandbox_id: str, *, state: str | None = None) -> bool:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        for _ in range(3):
            await asyncio.sleep(0)  # yield to the other deletes: shows how many run at once
        self.in_flight -= 1
        self.log.append(f"delete {sandbox_id}")
        if state == "destroying":
            return False
        return self.boxes.pop(sandbox_id, None) is not None


class FakeKube:
    """`task_pages`: the tasks' bodies in pages of `limit`; `fail` raises on the page it names."""

    def __init__(self, uids: list[str], log: list[str], *, fail: int | None = None):
        self.uids, self.log, self.fail = uids, log, fail
        self.limits: list[int] = []

    async def task_pages(self, namespace: str | None = None, limit: int = 500) -> AsyncIterator[list[dict[str, Any]]]:
        self.log.append(f"list tasks in {namespace}")
        self.limits.append(limit)
        for number, start in enumerate(range(0, max(len(self.uids), 1), limit)):
            if number == self.fail:
                raise Retryable("HTTP 503 listing agenttasks", status=503)
            yield [{"metadata": {"uid": uid}, "status": {"attempts": 1}} for uid in self.uids[start:start + limit]]


def sweeper(daytona: FakeDaytona, kube: FakeKube, *, concurrency: int = 4, dry_run: bool = False) -> gc.Sweeper:
    return gc.Sweeper(sandboxes=cast(Sandboxes, daytona), kube=cast(Kube, kube), instance_id="prod",
                      namespaces=["a"], grace_seconds=60, delete_concurrency=concurrency, dry_run=dry_run)


def counted(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("agenttask_gc_runs_total", {"outcome": outcome}) or 0.0


def test_a_sweep_lists_sandboxes_first_and_deletes_orphans_only_when_a_second_sweep_agrees() -> None:
    log: list[str] = []
    owned = [f"u{i}" for i in range(250)]
    orphans = [box(f"orphan-{i}", f"gone-{i}") for i in range(10)]
    daytona = FakeDaytona([box(f"owned-{i}", uid) for i, uid in enumerate(owned)] + orphans
                          + [box("elsewhere", "gone-x", instance="staging")], log)
    kube = FakeKube(owned, log)
    sweep = sweeper(daytona, kube)
    first = asyncio.run(sweep.sweep(now=NOW))
    assert log == ["list sandboxes", "list tasks in a"]  # tasks second: a task missing there really is gone
    assert first.deleted == {} and len(first.suspected) == 10 and first.seen == 260
    assert kube.limits == [gc.TASK_PAGE_SIZE]  # task bodies may be large: small pages
    too_soon = asyncio.run(sweep.sweep(now=NOW + dt.timedelta(seconds=30)))
    assert too_soon.deleted == {} and not any(line.startswith("delete") for line in log)
    second = asyncio.run(sweep.sweep(now=NOW + dt.timedelta(seconds=60)))
    assert second.deleted == {f"orphan-{i}": "orphaned" for i in range(10)}
    assert sorted(daytona.boxes) == sorted([f"id-owned-{i}" for i in range(250)] + ["id-elsewhere"])
    assert daytona.most_in_flight == 4  # the configured concurrency, reached and never exceeded


def test_a_failed_task_listing_aborts_the_sweep_and_deletes_nothing() -> None:
    log: list[str] = []
    daytona = FakeDaytona([box("orphan", "gone")] + [box(f"owned-{i}", f"u{i}") for i in range(150)], log)
    good, broken = FakeKube([f"u{i}" for i in range(150)], log), FakeKube([f"u{i}" for i in range(150)], log, fail=1)
    sweep = sweeper(daytona, good)
    asyncio.run(sweep.sweep(now=NOW))  # the orphan is a suspect now
    sweep.kube = cast(Kube, broken)  # the second page of tasks fails: the tasks on it look gone
    aborted = counted("aborted")
    with pytest.raises(Retryable):
        asyncio.run(sweep.sweep(now=NOW + dt.timedelta(minutes=5)))
    assert counted("aborted") == aborted + 1
    assert "id-orphan" in daytona.boxes and not any(line.startswith("delete") for line in log)


def test_dry_run_deletes_nothing_and_a_destroying_orphan_is_left_to_daytona() -> None:
    log: list[str] = []
    boxes = [box("orphan", "gone"), box("going", "gone-2", state="destroying")]
    dry = sweeper(FakeDaytona(boxes, log), FakeKube([], log), dry_run=True)
    asyncio.run(dry.sweep(now=NOW))
    report = asyncio.run(dry.sweep(now=NOW + dt.timedelta(minutes=5)))
    assert report.would_delete == {"orphan": "orphaned", "going": "orphaned"} and report.deleted == {}
    assert not any(line.startswith("delete") for line in log)
    real = sweeper(FakeDaytona(boxes, log), FakeKube([], log))
    asyncio.run(real.sweep(now=NOW))
    report = asyncio.run(real.sweep(now=NOW + dt.timedelta(minutes=5)))
    assert report.deleted == {"orphan": "orphaned"} and report.already_gone == 1
