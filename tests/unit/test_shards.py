"""The pure rules of sharded mode: which shard a task is, how limits split, what a replica does with a Lease."""

from __future__ import annotations

import uuid

import pytest

from controller.settings import Settings
from controller.shards import LeaseView, Move, ShardingMisconfigured, decide, ordinal_of, placement, shard_of, share


def test_a_task_keeps_its_shard_and_the_shards_are_even() -> None:
    uids = [str(uuid.UUID(int=i * 7919 + 13)) for i in range(4000)]
    counts = [0, 0, 0, 0]
    for uid in uids:
        assert shard_of(uid, 4) == shard_of(uid, 4)
        counts[shard_of(uid, 4)] += 1
    assert all(900 <= c <= 1100 for c in counts), counts
    assert {shard_of(uid, 1) for uid in uids} == {0}


@pytest.mark.parametrize(("limit", "shards"), [(50, 1), (50, 2), (50, 3), (7, 7), (10, 4)])
def test_the_shares_add_up_to_the_limit_and_differ_by_at_most_one(limit: int, shards: int) -> None:
    parts = [share(limit, shards, i) for i in range(shards)]
    assert sum(parts) == limit
    assert max(parts) - min(parts) <= 1 and min(parts) >= 1


def test_more_shards_than_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="must not exceed max_active_sandboxes"):
        Settings(shards=4, max_active_sandboxes=3)


def test_a_statefulset_pod_name_gives_the_ordinal() -> None:
    assert ordinal_of("agenttask-operator-2") == 2
    assert ordinal_of("agenttask-operator-7f9c-x2b") is None  # a Deployment's pod
    assert ordinal_of(None) is None


def test_placement_says_what_to_set() -> None:
    common = {"shards": 3, "lease_namespace": None, "pod_namespace": "ops", "namespaces": []}
    assert placement(pod_name="agenttask-operator-1", replica_id="x", **common) == (1, "ops")
    assert placement(pod_name=None, replica_id="it/shard-2", **common) == (2, "ops")
    with pytest.raises(ShardingMisconfigured, match="StatefulSet pod"):
        placement(pod_name="operator-abc", replica_id="host/12", **common)
    with pytest.raises(ShardingMisconfigured, match="ordinal 5 is not one of the 3 shards"):
        placement(pod_name="agenttask-operator-5", replica_id="x", **common)
    with pytest.raises(ShardingMisconfigured, match="AGENTTASK_LEASE_NAMESPACE"):
        placement(shards=2, pod_name=None, replica_id="r-0", lease_namespace=None, pod_namespace=None, namespaces=[])
    assert placement(shards=2, pod_name=None, replica_id="r-0", lease_namespace=None, pod_namespace=None,
                     namespaces=["team-a"]) == (0, "team-a")


def _lease(holder: str = "", wanted_by: str = "") -> LeaseView:
    return LeaseView(holder=holder, wanted_by=wanted_by, resource_version="1")


@pytest.mark.parametrize(("lease", "home", "expired", "move"), [
    (None, True, False, Move.CREATE),
    (None, False, False, Move.WAIT),  # only the home replica creates a shard's Lease
    (_lease("me"), True, False, Move.RENEW),
    (_lease("me"), False, False, Move.RENEW),  # fostered, nobody asked for it
    (_lease("me", wanted_by="home"), False, False, Move.RELEASE),  # its home replica is back
    (_lease("me", wanted_by="me"), True, False, Move.RENEW),
    (_lease("", wanted_by="me"), True, False, Move.ACQUIRE),  # given back to us
    (_lease("peer"), True, False, Move.REQUEST),  # ours, held by a live foster
    (_lease("peer", wanted_by="me"), True, False, Move.WAIT),  # asked already
    (_lease("peer"), True, True, Move.ACQUIRE),  # the foster died
    (_lease("peer"), False, False, Move.WAIT),  # a live peer's shard
    (_lease("peer"), False, True, Move.ACQUIRE),  # a dead peer's shard
    (_lease("", wanted_by="home"), False, False, Move.WAIT),  # given back to its home: not ours to take
    (_lease("", wanted_by="home"), False, True, Move.ACQUIRE),  # ...unless its home never came for it
    (_lease(""), False, False, Move.ACQUIRE),  # released on shutdown: the next replica goes on at once
])
def test_what_a_replica_does_with_a_lease(lease: LeaseView | None, home: bool, expired: bool, move: Move) -> None:
    assert decide(lease, me="me", home=home, expired=expired) is move
