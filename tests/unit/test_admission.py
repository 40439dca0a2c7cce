"""FCFS admission under global and per-namespace limits."""

from __future__ import annotations

import asyncio
import datetime as dt

from controller.admission import AdmissionQueue, Waiting, order_admissions

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def w(ns: str, name: str, second: int) -> Waiting:
    return Waiting(key=(ns, name), created=T0 + dt.timedelta(seconds=second), uid=f"{ns}-{name}")


def test_oldest_first_up_to_the_limit() -> None:
    waiting = [w("a", "late", 9), w("a", "early", 1), w("b", "mid", 5)]
    admit, positions = order_admissions(active={("a", "x"): "a"}, waiting=waiting, limit=3, per_namespace=None)
    assert admit == {("a", "early"), ("b", "mid")}
    assert positions == {("a", "late"): 1}


def test_namespace_limit_lets_other_namespaces_pass() -> None:
    admit, positions = order_admissions(active={("a", "x"): "a"}, waiting=[w("a", "y", 1), w("b", "z", 2)],
                                        limit=5, per_namespace=1)
    assert admit == {("b", "z")}
    assert positions == {("a", "y"): 1}


def test_queue_reserves_and_releases_slots() -> None:
    queue = AdmissionQueue(limit=1)
    first, second = w("a", "1", 1), w("a", "2", 2)
    assert queue.request(first).admitted
    waiting = queue.request(second)
    assert not waiting.admitted and waiting.position == 1
    assert "position 1 of 1" in waiting.limit_message
    queue.release(first.key)
    assert queue.request(second).admitted
    assert queue.active == 1


def test_older_waiting_task_is_not_overtaken_after_restart() -> None:
    queue = AdmissionQueue(limit=1)
    queue.seed(holding=[], waiting=[w("a", "old", 1), w("a", "new", 2)])
    assert not queue.request(w("a", "new", 2)).admitted
    assert queue.request(w("a", "old", 1)).admitted


def test_seeded_holders_count_against_the_limit() -> None:
    queue = AdmissionQueue(limit=2)
    queue.seed(holding=[(("a", "x"), ""), (("b", "y"), "")], waiting=[])
    assert not queue.request(w("c", "z", 1)).admitted


async def test_release_wakes_only_the_waiters_that_may_be_admitted() -> None:
    queue = AdmissionQueue(limit=1)
    holder, older, younger = w("a", "1", 1), w("a", "2", 2), w("a", "3", 3)
    assert queue.request(holder).admitted
    assert not queue.request(older).admitted
    assert not queue.request(younger).admitted
    queue.release(holder.key)  # before anyone waits: the wake-up must not be lost
    await asyncio.wait_for(queue.wait_for_turn(older.key, 5), 1)
    started = asyncio.get_running_loop().time()
    await queue.wait_for_turn(younger.key, 0.2)  # not its turn: sleeps the whole timeout
    assert asyncio.get_running_loop().time() - started >= 0.19
    assert not queue.request(younger).admitted
    assert queue.request(older).admitted


def test_a_quota_group_cap_blocks_only_its_own_group() -> None:
    caps = {"alice": [("q/alice", 1, "team")], "bob": [("q/bob", 1, "team")]}

    def groups_of(_ns: str, requester: str) -> list[tuple[str, int, str]]:
        return caps.get(requester, [])

    queue = AdmissionQueue(limit=10, groups_of=groups_of)
    alice1, alice2, bob1 = (Waiting(key=("a", n), created=T0 + dt.timedelta(seconds=i), uid=n, requester=r)
                            for i, (n, r) in enumerate([("al1", "alice"), ("al2", "alice"), ("bo1", "bob")]))
    assert queue.request(alice1).admitted
    blocked = queue.request(alice2)
    assert not blocked.admitted and "AgentTaskQuota team: 1 of 1 concurrent tasks of requester alice" in \
        blocked.limit_message
    assert queue.request(bob1).admitted  # the older alice2 waits on her own cap, not on bob's
    queue.release(alice1.key)
    assert queue.request(alice2).admitted


def test_a_younger_task_asking_first_grants_the_older_ones_and_says_why_it_waits() -> None:
    """Seeded waiters (older) and a younger task of the same requester asking first: the two the
    cap allows are granted at once, and the asker's message names the quota (it said "0/50
    active" and nothing of the quota, since the older ones only got their slots when they asked)."""
    def groups_of(_ns: str, requester: str) -> list[tuple[str, int, str]]:
        return [(f"q/{requester}", 2, "per-user")]

    queue = AdmissionQueue(limit=50, groups_of=groups_of)
    old1, old2, young = (Waiting(key=("a", n), created=T0 + dt.timedelta(seconds=i), uid=n, requester="alice")
                         for i, n in enumerate(["old1", "old2", "young"]))
    queue.seed([], [old1, old2])
    asked = queue.request(young)
    assert not asked.admitted and asked.position == 1
    assert queue.active == 2 and queue.queued == 1  # the older two hold their slots already
    assert asked.limit_message is not None
    assert "AgentTaskQuota per-user: 2 of 2 concurrent tasks of requester alice" in asked.limit_message
    assert "(2/50 active)" in asked.limit_message
    assert queue.request(old1).admitted and queue.request(old2).admitted  # they find their slots
