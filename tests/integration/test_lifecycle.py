"""Lifecycle at scale on the real apiserver + embedded server: orphan sweep, TTL, retention,
quota queue across restarts, warm pools, two replicas with failover."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
import uuid
from pathlib import Path

import aiohttp
from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaConfig

from controller import gc
from controller.devcluster import DevCluster
from controller.kube import Kube
from controller.sandboxes import Sandboxes

from ..conftest import ROOT, Kubectl
from .harness import Operator, SandboxServer, agent_script, make_repo, operator_for, sandbox_server, wait_for
from .test_operator import conditions, create_task, get_task, wait_phase

QUICK_AGENT = """
import pathlib, sys, time
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
print("quick agent done", flush=True)
"""


def when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _create_raw(server: SandboxServer, name: str, labels: dict[str, str]) -> None:
    async with AsyncDaytona(DaytonaConfig(api_url=server.api_url, api_key=server.api_key)) as client:
        await client.create(CreateSandboxFromSnapshotParams(name=name, labels=labels), timeout=30)


def test_orphan_sweep_deletes_only_our_orphans(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    with sandbox_server(tmp_path / "sb") as server:
        instance = f"it-{namespace}"
        orphan_uid = str(uuid.uuid4())
        asyncio.run(_create_raw(server, "orphan-1", {"agenttask.io/instance": instance,
                                                     "agenttask.io/namespace": namespace,
                                                     "agenttask.io/task-uid": orphan_uid}))
        asyncio.run(_create_raw(server, "other-install", {"agenttask.io/instance": "someone-else",
                                                          "agenttask.io/namespace": namespace,
                                                          "agenttask.io/task-uid": str(uuid.uuid4())}))
        asyncio.run(_create_raw(server, "unlabelled", {"team": "x"}))
        _, url = make_repo(tmp_path)
        slow = agent_script(tmp_path, "slow", QUICK_AGENT)
        op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path, AGENTTASK_GC_INTERVAL_SECONDS="1",
                           AGENTTASK_GC_GRACE_SECONDS="0").start()
        try:
            wait_for(lambda: server.get("orphan-1") is None, timeout=30, what="the sweep to delete orphan-1")
            # the counter moves just after the delete call returns: poll, do not race it
            wait_for(lambda: 'agenttask_gc_deletions_total{reason="orphaned"} 1.0' in op.metrics(), timeout=10,
                     what="the deletion to be counted")
            create_task(kubectl, namespace, "forced", {"repository": {"url": url},
                                                       "agent": {"command": [*slow, "300"]}})
            task = wait_phase(kubectl, namespace, "forced", {"Running"}, timeout=60)
            forced_box = task["status"]["sandbox"]["name"]
            op.stop()
            # force-remove the task without its finalizer running, as `kubectl patch` users do
            kubectl("patch", "at", "forced", "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
            kubectl("delete", "at", "forced", "-n", namespace, "--wait=true")
            assert server.get(forced_box) is not None
            op.start()
            wait_for(lambda: server.get(forced_box) is None, timeout=30,
                     what="the sweep to delete the force-removed task's sandbox")
            assert server.get("other-install") is not None
            assert server.get("unlabelled") is not None
            wait_for(lambda: 'agenttask_gc_deletions_total{reason="orphaned"} 1.0' in op.metrics(), timeout=10,
                     what="the deletion to be counted")
            assert 'agenttask_gc_runs_total{outcome="ok"}' in op.metrics()
        finally:
            op.stop()

        # two sweepers at once (two replicas briefly both active): each orphan is deleted once, nothing
        # raises; the first round only marks suspects, the second (a grace later) deletes
        for i in range(3):
            asyncio.run(_create_raw(server, f"orphan-again-{i}", {"agenttask.io/instance": instance,
                                                                  "agenttask.io/namespace": namespace,
                                                                  "agenttask.io/task-uid": str(uuid.uuid4())}))
        before = server.stats()["sandboxes_deleted"]

        async def two_sweeps() -> tuple[list[gc.SweepReport], list[gc.SweepReport]]:
            kube = await Kube.connect(str(controlplane.kubeconfig))
            boxes = Sandboxes.connect(api_url=server.api_url, api_key=server.api_key)
            try:
                sweepers = [gc.Sweeper(sandboxes=boxes, kube=kube, instance_id=instance, namespaces=[namespace],
                                       grace_seconds=0, delete_concurrency=4) for _ in range(2)]
                now = dt.datetime.now(dt.UTC)
                first = list(await asyncio.gather(*(s.sweep(now=now) for s in sweepers)))
                second = list(await asyncio.gather(*(s.sweep(now=now) for s in sweepers)))
                return first, second
            finally:
                await boxes.close()

        marked, reports = asyncio.run(two_sweeps())
        assert [r.deleted for r in marked] == [{}, {}]
        assert all(len(r.suspected) == 3 for r in marked)
        deleted = [name for r in reports for name in r.deleted]
        assert sorted(set(deleted)) == [f"orphan-again-{i}" for i in range(3)]
        assert server.stats()["sandboxes_deleted"] - before == 3
        assert server.get("other-install") is not None


def test_a_sweep_over_many_pages_deletes_only_orphans_by_id_without_lookups(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """More sandboxes than one list page holds: the sweep reads every page (metadata only), keeps
    every sandbox of an existing task, deletes the orphans by id (no lookup) once two sweeps agree."""
    with sandbox_server(tmp_path / "sb") as server:
        instance = f"pages-{namespace}"
        uids = []
        for name in ("kept-a", "kept-b"):  # never supervised here: only their existence counts
            create_task(kubectl, namespace, name, {"repository": {"url": "https://example.invalid/r.git"}})
            task = get_task(kubectl, namespace, name)
            assert task is not None
            uids.append(task["metadata"]["uid"])

        def labels(uid: str, instance: str = instance) -> dict[str, str]:
            return {"agenttask.io/instance": instance, "agenttask.io/namespace": namespace,
                    "agenttask.io/task-uid": uid, "agenttask.io/attempt": "1"}

        owned = [(f"owned-{i:03d}", labels(uids[i % 2])) for i in range(420)]
        orphans = [(f"orphan-{i:02d}", labels(str(uuid.uuid4()))) for i in range(25)]
        strangers = [(f"stranger-{i}", labels(str(uuid.uuid4()), "someone-else")) for i in range(5)]
        asyncio.run(_create_many(server, owned + orphans + strangers))
        before = server.stats()["calls"]

        async def two_sweeps() -> tuple[gc.SweepReport, gc.SweepReport]:
            kube = await Kube.connect(str(controlplane.kubeconfig))
            boxes = Sandboxes.connect(api_url=server.api_url, api_key=server.api_key)
            try:
                sweeper = gc.Sweeper(sandboxes=boxes, kube=kube, instance_id=instance, namespaces=[namespace],
                                     grace_seconds=0, delete_concurrency=8)
                now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
                return await sweeper.sweep(now=now), await sweeper.sweep(now=now)
            finally:
                await boxes.close()

        first, second = asyncio.run(two_sweeps())
        calls = {op: n - before.get(op, 0) for op, n in server.stats()["calls"].items()}
        assert (first.seen, first.deleted, len(first.suspected)) == (445, {}, 25)
        assert second.deleted == {name: "orphaned" for name, _ in orphans}
        assert all(server.get(name) is not None for name, _ in owned + strangers)
        assert all(server.get(name) is None for name, _ in orphans)
        assert (calls.get("list"), calls.get("get", 0), calls.get("delete")) == (6, 0, 25)  # 3 pages a sweep


async def _create_many(server: SandboxServer, specs: list[tuple[str, dict[str, str]]]) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {server.api_key}"}) as http:
        gate = asyncio.Semaphore(16)

        async def one(name: str, labels: dict[str, str]) -> None:
            async with gate, http.post(f"{server.api_url}/sandbox", json={"name": name, "labels": labels}) as resp:
                assert resp.status < 300, await resp.text()

        await asyncio.gather(*(one(name, labels) for name, labels in specs))


def test_ttl_deletes_finished_tasks_and_retention_deletes_kept_sandboxes(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    with sandbox_server(tmp_path / "sb") as server:
        _, url = make_repo(tmp_path)
        quick = agent_script(tmp_path, "quick", QUICK_AGENT)
        failing = agent_script(tmp_path, "failing", "raise SystemExit(2)\n")
        op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
        try:
            create_task(kubectl, namespace, "short-lived", {"repository": {"url": url}, "ttlSecondsAfterFinished": 5,
                                                            "agent": {"command": quick}})
            create_task(kubectl, namespace, "kept", {"repository": {"url": url}, "agent": {"command": failing},
                                                     "sandbox": {"keepOnFailure": True, "keepForSeconds": 8}})
            kept = wait_phase(kubectl, namespace, "kept", {"Failed"}, timeout=60)["status"]
            name = kept["sandbox"]["name"]
            assert kept["reason"] == "AgentFailed"
            assert kept["sandbox"]["retainUntil"]
            box = wait_for(lambda: (b := server.get(name)) and b["state"] == "stopped" and b, timeout=20,
                           what="the kept sandbox to be stopped")
            assert box["state"] == "stopped"
            # Daytona's own auto-delete (counted from the stop) is pushed past the retention: 1 min + margin
            assert box["autoDeleteInterval"] == 1 + 30

            done = wait_phase(kubectl, namespace, "short-lived", {"Succeeded"}, timeout=60)
            finished_at = when(done["status"]["completionTime"])
            wait_for(lambda: get_task(kubectl, namespace, "short-lived") is None, timeout=30,
                     what="the finished task to be deleted by its TTL")
            gone_after = (dt.datetime.now(dt.UTC) - finished_at).total_seconds()
            assert 5 <= gone_after <= 15

            wait_for(lambda: server.get(name) is None, timeout=30, what="the kept sandbox to be deleted")
            assert time.time() >= when(kept["sandbox"]["retainUntil"]).timestamp() - 1
            # the operator records it at its next look (the sandbox can be gone a moment before that)
            wait_for(lambda: ((get_task(kubectl, namespace, "kept") or {}).get("status", {}).get("sandbox") or {})
                     .get("deleted") is True, timeout=30, what="the kept sandbox's deletion recorded")
        finally:
            op.stop()


def test_global_limit_queue_order_and_restart(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    with sandbox_server(tmp_path / "sb") as server:
        _, url = make_repo(tmp_path)
        agent = agent_script(tmp_path, "agent", QUICK_AGENT)
        op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path,
                          AGENTTASK_MAX_ACTIVE_SANDBOXES="5").start()
        names = [f"q-{i:02d}" for i in range(40)]
        try:
            docs = [json.dumps({"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": n},
                                "spec": {"repository": {"url": url}, "agent": {"command": [*agent, "1.5"]}}})
                    for n in names]
            for i in range(0, 40, 4):  # a few per second: creation timestamps have one-second resolution
                kubectl("create", "-n", namespace, "-f", "-", input="\n".join(docs[i:i + 4]))
                time.sleep(0.3)
            queued = wait_for(lambda: [t for n in names[10:] if (t := get_task(kubectl, namespace, n))
                                       and t.get("status", {}).get("phase") == "Queued"] or None,
                              timeout=60, what="queued tasks")
            sample = queued[0]["status"]
            assert conditions(queued[0])["Admitted"]["reason"] == "QuotaExceeded"
            assert "position" in sample["message"] and sample["queuePosition"] >= 1
            wait_for(lambda: sum(1 for n in names if (get_task(kubectl, namespace, n) or {}).get("status", {})
                                 .get("phase") == "Succeeded") >= 12, timeout=120, what="a third to finish")
            op.kill()
            op.start()
            finished = [wait_phase(kubectl, namespace, n, {"Succeeded", "Failed"}, timeout=240) for n in names]
            op.wait_slots_released()
        finally:
            op.stop()
        stats = server.stats()
        assert stats["max_alive"] <= 5
        assert all(t["status"]["phase"] == "Succeeded" for t in finished)
        assert stats["sandboxes_created"] == 40
        # FCFS: a task created in an earlier second was never admitted after one created later. The
        # admission order is the order of the operator's "admitted" log lines (written as each slot is
        # granted), not startTime: tasks admitted in the same round write their status in any order.
        order: dict[str, int] = {}
        for line in op.logs().splitlines():
            if line.startswith("{") and (entry := json.loads(line)).get("message", "").startswith("admitted "):
                order.setdefault(entry["name"], len(order))
        assert set(order) == set(names)
        created = {t["metadata"]["name"]: when(t["metadata"]["creationTimestamp"]) for t in finished}
        for earlier, later in itertools.permutations(names, 2):
            if created[earlier] < created[later]:
                assert order[earlier] < order[later], (earlier, later)


def test_warm_pool_serves_first_tasks_then_falls_back(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    faults = json.dumps({"latency": {"create": 0.8, "pool_create": 0.01}})
    with sandbox_server(tmp_path / "sb", extra=("--faults", faults)) as server:
        _, url = make_repo(tmp_path)
        agent = agent_script(tmp_path, "agent", QUICK_AGENT)
        op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path,
                          AGENTTASK_WARM_POOLS='{"daytona-small": 3}', AGENTTASK_GC_INTERVAL_SECONDS="60").start()
        try:
            wait_for(lambda: [p for p in server._request("GET", "/api/warm-pools")
                              if p["snapshot"] == "daytona-small" and p["currentSize"] >= 3] or None,
                     timeout=60, what="the warm pool to fill")
            # a refill sleeps the create latency it reads when it starts: the refill the first
            # claim starts sleeps 600 s, so the pool stays empty for the rest of the test
            # (a shorter refill let a slow machine serve a fourth task warm)
            server.set_faults({"latency": {"create": 600, "pool_create": 0.01}})
            spec = {"repository": {"url": url}, "sandbox": {"snapshot": "daytona-small"},
                    "agent": {"command": agent}}
            for i in range(3):
                create_task(kubectl, namespace, f"warm-{i}", spec)
            wait_for(lambda: server.stats()["pool_hits"] >= 3 or None, timeout=90,
                     what="the first three tasks to be served from the pool")
            server.set_faults({"latency": {"create": 0.8, "pool_create": 0.01}})  # the cold creates
            for i in range(3, 6):
                create_task(kubectl, namespace, f"warm-{i}", spec)
            done = [wait_phase(kubectl, namespace, f"warm-{i}", {"Succeeded", "Failed"}, timeout=90) for i in range(6)]
        finally:
            text = op.metrics()
            op.stop()
        assert all(t["status"]["phase"] == "Succeeded" for t in done)
        stats = server.stats()
        assert stats["pool_hits"] == 3
        assert stats["pool_misses"] == 3
        assert 'agenttask_warm_pool_requests_total{result="hit"}' in text
        assert 'agenttask_warm_pool_requests_total{result="miss"}' in text
        assert 'agenttask_time_to_running_seconds_count{path="warm-pool"}' in text
        assert 'agenttask_time_to_running_seconds_count{path="cold"}' in text


def test_two_replicas_one_active_and_failover(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "kopf-peering.yaml"))
    controlplane.wait_established("kopfpeerings.kopf.dev")
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "agenttask-operator"}}))
    with sandbox_server(tmp_path / "sb") as server:
        _, url = make_repo(tmp_path)
        agent = agent_script(tmp_path, "agent", QUICK_AGENT)
        env = {"AGENTTASK_STANDALONE": "false", "AGENTTASK_PEERING_LIFETIME_SECONDS": "8"}
        replicas = [operator_for(controlplane.kubeconfig, server, namespace, tmp_path, f"replica-{i}", **env).start()
                    for i in range(2)]
        try:
            for i in range(4):
                create_task(kubectl, namespace, f"ha-{i}", {"repository": {"url": url},
                                                            "agent": {"command": [*agent, "6"]}})
            wait_for(lambda: all((get_task(kubectl, namespace, f"ha-{i}") or {}).get("status", {}).get("phase")
                                 == "Running" for i in range(4)), timeout=60, what="all tasks running")

            def supervising(op: Operator) -> bool:
                return "phase Provisioning -> Running" in op.logs()

            active = [op for op in replicas if supervising(op)]
            assert len(active) == 1, "exactly one replica may reconcile"
            standby = next(op for op in replicas if op is not active[0])
            active[0].kill()
            done = [wait_phase(kubectl, namespace, f"ha-{i}", {"Succeeded", "Failed"}, timeout=120) for i in range(4)]
        finally:
            for op in replicas:
                op.stop()
        assert all(t["status"]["phase"] == "Succeeded" for t in done)
        assert "Running -> Succeeded" in standby.logs()
        created = server.stats()["creates_by_name"]
        for task in done:
            assert created.get(f"at-{task['metadata']['uid']}-1") == 1
            assert task["status"]["attempts"] == 1

