"""Which sandboxes the orphan sweep deletes, and the active-replica rule."""

from __future__ import annotations

import datetime as dt

from controller import gc, peering
from controller.gc import SandboxInfo, TaskInfo, select_orphans

NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(minutes=10)


def box(name: str, uid: str | None, *, instance: str = "prod", ns: str = "a", attempt: str = "1",
        created: dt.datetime | None = OLD) -> SandboxInfo:
    labels = {"agenttask.io/instance": instance, "agenttask.io/namespace": ns, "agenttask.io/attempt": attempt}
    if uid:
        labels["agenttask.io/task-uid"] = uid
    return SandboxInfo(name=name, labels=labels, created_at=created)


def select(boxes: list[SandboxInfo], tasks: dict[str, TaskInfo], *, namespaces: frozenset[str] | None = None
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
