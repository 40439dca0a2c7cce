"""Sharded mode on the real apiserver: two replicas share the tasks by UID, each task is
reconciled exactly once, a killed replica's shard (and the agents running in it) is taken over,
and the shard goes back to its replica when it returns (issue #16's scale-out)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from controller.devcluster import DevCluster
from controller.shards import lease_name, shard_of

from ..conftest import Kubectl
from .harness import Operator, SandboxServer, agent_script, make_repo, operator_for, sandbox_server, wait_for
from .test_failure_policy import SLEEPY
from .test_operator import create_task, get_task, wait_phase

LEASE_SECONDS = 4


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with sandbox_server(tmp_path / "sandboxes") as s:
        yield s


def _shard_operator(kubeconfig: Path, server: SandboxServer, namespace: str, tmp_path: Path, ordinal: int) -> Operator:
    return operator_for(kubeconfig, server, namespace, tmp_path, name=f"shard-{ordinal}",
                        AGENTTASK_SHARDS="2",  # the replica id it-<ns>/shard-<ordinal> says which is its shard
                        AGENTTASK_SHARD_LEASE_SECONDS=str(LEASE_SECONDS), AGENTTASK_LEASE_NAMESPACE=namespace,
                        AGENTTASK_MAX_ACTIVE_SANDBOXES="20")


def _holds(kubectl: Kubectl, namespace: str, op: Operator, shard: int) -> bool:
    """`op` holds shard `shard`'s Lease (as `kubectl get lease` shows it)."""
    got = kubectl("get", "lease", lease_name(op.instance_id, shard), "-n", namespace, "-o", "json", check=False)
    holder = (json.loads(got.stdout).get("spec") or {}).get("holderIdentity") if got.returncode == 0 else None
    return bool(holder == op.env()["AGENTTASK_REPLICA_ID"])


def _started_by(op: Operator) -> list[str]:
    """Tasks whose agent this replica started (its log's `agent started` lines)."""
    return [json.loads(line).get("name") for line in op.logs().splitlines()
            if line.startswith("{") and json.loads(line).get("message") == "agent started"]


def _owned(op: Operator) -> float:
    match = re.search(r"^agenttask_shards_owned (\S+)$", op.metrics(), re.M)
    assert match, "agenttask_shards_owned is not exported"
    return float(match.group(1))


def _create_until_both_shards(kubectl: Kubectl, namespace: str, prefix: str, spec: dict[str, Any],
                              each: int) -> dict[str, int]:
    """Create tasks until each shard has at least `each` of them (UIDs are the apiserver's): name -> shard."""
    shards: dict[str, int] = {}
    while min([list(shards.values()).count(s) for s in (0, 1)]) < each:
        assert len(shards) < 40, f"the UIDs of {len(shards)} tasks never filled both shards: {shards}"
        name = f"{prefix}-{len(shards)}"
        create_task(kubectl, namespace, name, spec)
        task = get_task(kubectl, namespace, name)
        assert task is not None
        shards[name] = shard_of(task["metadata"]["uid"], 2)
    return shards


def test_two_shards_reconcile_every_task_once_and_take_over_a_lost_shard(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    _, url = make_repo(tmp_path)
    sleepy = agent_script(tmp_path, "sleepy", SLEEPY)
    ops = [_shard_operator(controlplane.kubeconfig, server, namespace, tmp_path, i) for i in (0, 1)]
    try:
        for op in ops:
            op.start()
        for shard, op in enumerate(ops):
            wait_for(lambda op=op, shard=shard: _holds(kubectl, namespace, op, shard),
                     timeout=30, what=f"shard {shard}'s lease held by its replica")
        # 1. both shards work; each task is started by its shard's replica, once
        first = _create_until_both_shards(kubectl, namespace, "long", {"repository": {"url": url},
                                                                       "agent": {"command": [*sleepy, "12"]}}, each=3)
        for name in first:
            wait_phase(kubectl, namespace, name, {"Running"}, timeout=90)
        for shard, op in enumerate(ops):
            assert sorted(_started_by(op)) == sorted(n for n, s in first.items() if s == shard)

        # 2. replica 1 dies while its agents run: replica 0 takes its shard over and adopts them
        ops[1].kill()
        wait_for(lambda: _holds(kubectl, namespace, ops[0], 1),
                 timeout=LEASE_SECONDS * 6, what="shard 1 taken over by replica 0")
        done = {n: wait_phase(kubectl, namespace, n, {"Succeeded", "Failed"}, timeout=120) for n in first}
        assert {n: t["status"]["phase"] for n, t in done.items()} == {n: "Succeeded" for n in first}
        assert _owned(ops[0]) == 2
        stats = server.stats()
        assert stats["commands_started"] == len(first), stats  # adopted, never started again
        for task in done.values():
            assert stats["creates_by_name"].get(task["status"]["sandbox"]["name"]) == 1

        # 3. replica 1 is back: it asks for its shard, gets it, and reconciles its new tasks
        ops[1].start()
        wait_for(lambda: _holds(kubectl, namespace, ops[1], 1),
                 timeout=LEASE_SECONDS * 6, what="shard 1 handed back to replica 1")
        wait_for(lambda: _owned(ops[0]) == 1, timeout=10, what="replica 0 owning only its own shard")
        before = [_started_by(op) for op in ops]
        second = _create_until_both_shards(kubectl, namespace, "short", {"repository": {"url": url},
                                                                         "agent": {"command": [*sleepy, "1"]}}, each=2)
        finished = [wait_phase(kubectl, namespace, n, {"Succeeded", "Failed"}, timeout=120) for n in second]
        assert [t["status"]["phase"] for t in finished] == ["Succeeded"] * len(second)
        for shard, op in enumerate(ops):
            new = _started_by(op)[len(before[shard]):]
            assert sorted(new) == sorted(n for n, s in second.items() if s == shard)
        assert server.stats()["commands_started"] == len(first) + len(second)
        for op in ops:
            op.wait_slots_released()

        # 4. tasks deleted while their agents run: each one's owner deletes its sandbox; the other
        # replica (whose kopf also holds the shared finalizer) never lets the object go before that
        third = _create_until_both_shards(kubectl, namespace, "doomed", {"repository": {"url": url},
                                                                         "agent": {"command": [*sleepy, "60"]}}, each=1)
        boxes = [wait_phase(kubectl, namespace, n, {"Running"}, timeout=90)["status"]["sandbox"]["name"] for n in third]
        kubectl("delete", "at", *third, "-n", namespace, "--wait=true", "--timeout=60s")
        assert [server.get(box) for box in boxes] == [None] * len(boxes)
        assert "Removing the finalizer" not in ops[0].logs() + ops[1].logs()
    finally:
        for op in ops:
            op.stop()
