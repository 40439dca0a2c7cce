"""The failure policy against real faults: no operator-wide fault fails a task, no destructive
step on uncertain information (issue #12's acceptance). The operator runs as `agenttask run`
on the real apiserver, against the embedded Daytona server whose faults are set over HTTP;
Kubernetes faults come from a real proxy in front of the real apiserver."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaConfig

from controller import gc
from controller.devcluster import DevCluster
from controller.errors import OperatorError, Retryable
from controller.kube import Kube
from controller.retry import RetryPolicy
from controller.sandboxes import Sandboxes
from tests.fakes.kubeproxy import KubeProxy

from ..conftest import Kubectl
from .harness import (
    ROOT,
    Operator,
    SandboxServer,
    agent_script,
    make_repo,
    operator_for,
    register_secret,
    sandbox_server,
    wait_for,
)
from .test_operator import create_task, get_task, wait_phase

SLEEPY = """
import sys, time
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 1)
open("DONE.md", "w").write("done\\n")
print("agent: done", flush=True)
"""


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with sandbox_server(tmp_path / "sandboxes") as s:
        yield s


def phases(kubectl: Kubectl, namespace: str, names: list[str]) -> dict[str, str | None]:
    return {n: ((get_task(kubectl, namespace, n) or {}).get("status") or {}).get("phase") for n in names}


def degraded(op: Operator, cause: str) -> float | None:
    match = re.search(rf'^agenttask_operator_degraded{{cause="{cause}"}} (\S+)$', op.metrics(), re.M)
    return float(match.group(1)) if match else None


def test_a_daytona_401_storm_fails_no_task_and_everything_resumes(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    _, url = make_repo(tmp_path)
    sleepy = agent_script(tmp_path, "sleepy", SLEEPY)
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
    names = [f"storm-{i}" for i in range(6)]
    try:
        for _i, name in enumerate(names[:3]):  # these run when the storm starts; the others arrive during it
            create_task(kubectl, namespace, name, {"repository": {"url": url}, "agent": {"command": [*sleepy, "20"]}})
        wait_for(lambda: all(p == "Running" for p in phases(kubectl, namespace, names[:3]).values()), timeout=60,
                 what="the first tasks to run")
        assert degraded(op, "DaytonaAuthFailed") == 0
        server.set_faults({"errors": {"*": {"rate": 1.0, "status": 401}}})  # the key was revoked
        storm_started = time.monotonic()
        for name in names[3:]:
            create_task(kubectl, namespace, name, {"repository": {"url": url}, "agent": {"command": [*sleepy, "1"]}})
        wait_for(lambda: degraded(op, "DaytonaAuthFailed") == 1, timeout=30, what="the operator to report itself "
                 "degraded")
        waiting = wait_for(lambda: (t := get_task(kubectl, namespace, names[3])) and t.get("status", {}).get(
            "reason") == "DaytonaAuthFailed" and t, timeout=30, what="a new task to say what it waits for")
        reconciling = {c["type"]: c for c in waiting["status"]["conditions"]}["Reconciling"]
        assert reconciling["status"] == "True" and reconciling["reason"] == "DaytonaAuthFailed"
        while time.monotonic() - storm_started < 60:  # the whole storm: nothing may fail meanwhile
            assert "Failed" not in phases(kubectl, namespace, names).values()
            time.sleep(2)
        server.set_faults({})  # the key is fixed
        done = [wait_phase(kubectl, namespace, n, {"Succeeded", "Failed"}, timeout=120) for n in names]
        assert [t["status"]["phase"] for t in done] == ["Succeeded"] * len(names), [
            (t["metadata"]["name"], t["status"].get("reason"), t["status"].get("message")) for t in done]
        wait_for(lambda: degraded(op, "DaytonaAuthFailed") == 0, timeout=30, what="the degraded gauge to clear")
        assert server.stats()["sandboxes_created"] == len(names)  # one sandbox each, none lost to the storm
        events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
        assert any(e["reason"] == "DaytonaAuthFailed" and e["type"] == "Warning" for e in events)
    finally:
        op.stop()


def test_a_sandbox_deleted_between_observe_and_act_costs_one_attempt(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    _, url = make_repo(tmp_path)
    sleepy = agent_script(tmp_path, "sleepy", SLEEPY)
    server.set_faults({"latency": {"upload": 5}})  # the window between the look and the act
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
    try:
        create_task(kubectl, namespace, "vanish", {"repository": {"url": url}, "agent": {"command": [*sleepy, "1"]}})
        # the upload has reached the server (it waits out its latency there): the operator holds
        # the sandbox its create returned, and loses it now, during the upload
        wait_for(lambda: server.stats()["calls"].get("upload", 0) >= 1, timeout=60, what="the upload to start")
        first = server.sandboxes()[0]["name"]
        server.set_faults({"lose": [first]})
        server.set_faults({})
        task = wait_phase(kubectl, namespace, "vanish", {"Succeeded", "Failed"}, timeout=90)
        assert task["status"]["phase"] == "Succeeded", task["status"]
        assert task["status"]["attempts"] == 2
        assert task["status"]["sandbox"]["name"].endswith("-2")
    finally:
        op.stop()


@pytest.fixture
def small_org(tmp_path: Path) -> Any:
    """An organisation whose CPU quota fits two default sandboxes (1 vCPU each), as Daytona's tiers cap it."""
    with sandbox_server(tmp_path / "small-org", extra=("--quota-cpu", "2")) as s:
        yield s


def test_an_exhausted_organisation_quota_makes_tasks_wait_not_fail(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, small_org: SandboxServer, tmp_path: Path
) -> None:
    """Five tasks, room for two sandboxes: the other creates get Daytona's 400 "Total CPU limit
    exceeded"; those tasks wait saying so, the operator reports itself degraded, and each starts
    once a finished task's sandbox is deleted and frees its CPU."""
    _, url = make_repo(tmp_path)
    sleepy = agent_script(tmp_path, "sleepy", SLEEPY)
    op = operator_for(controlplane.kubeconfig, small_org, namespace, tmp_path).start()
    names = [f"quota-{i}" for i in range(5)]
    try:
        for name in names:
            create_task(kubectl, namespace, name, {"repository": {"url": url}, "agent": {"command": [*sleepy, "6"]}})
        waiting = wait_for(lambda: next((t for n in names if (t := get_task(kubectl, namespace, n))
                                         and (t.get("status") or {}).get("reason") == "DaytonaQuotaExceeded"), None),
                           timeout=60, what="a task to wait for the organisation's quota")
        reconciling = {c["type"]: c for c in waiting["status"]["conditions"]}["Reconciling"]
        assert (reconciling["status"], reconciling["reason"]) == ("True", "DaytonaQuotaExceeded")
        assert "Total CPU limit exceeded" in reconciling["message"]
        wait_for(lambda: degraded(op, "DaytonaQuotaExceeded") == 1, timeout=30, what="the degraded gauge")
        done = [wait_phase(kubectl, namespace, n, {"Succeeded", "Failed"}, timeout=180) for n in names]
    finally:
        op.stop()
    assert [t["status"]["phase"] for t in done] == ["Succeeded"] * len(names), [
        (t["metadata"]["name"], t["status"].get("reason"), t["status"].get("message")) for t in done]
    assert all(t["status"]["attempts"] == 1 for t in done)  # a refused create is no lost attempt
    stats = small_org.stats()
    # One create per task succeeded. (No bound on `max_alive`: as on Daytona, a sandbox that is
    # destroying no longer counts toward the CPU quota, so a third create may succeed while the
    # previous task's sandbox still exists; the server's quota check is unit-tested.)
    assert stats["sandboxes_created"] == len(names)
    assert stats["calls"].get("create", 0) > len(names)  # the refusals were real, and retried


def test_409_on_stop_and_delete_during_transitions_fails_nothing(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """Daytona answers 409 "Sandbox state change in progress" to a lifecycle call while the sandbox is
    in transition. With slow transitions (2 s) and every stop and delete refused with 409 for 15 s,
    a task that finishes (delete), one that is suspended (stop) and resumed, and one that fails
    with keepOnFailure (stop) all end as their own outcome says, and no sandbox is left behind."""
    _, url = make_repo(tmp_path)
    sleepy = agent_script(tmp_path, "sleepy", SLEEPY)
    failing = agent_script(tmp_path, "failing", "import sys\nprint('agent: giving up', flush=True)\nsys.exit(3)\n")
    slow = ("--transition", "stopping=2", "--transition", "destroying=2", "--transition", "starting=2")
    with sandbox_server(tmp_path / "slow", extra=slow) as server:
        op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
        try:
            create_task(kubectl, namespace, "finishes", {"repository": {"url": url},
                                                        "agent": {"command": [*sleepy, "1"]}})
            create_task(kubectl, namespace, "paused", {"repository": {"url": url},
                                                      "agent": {"command": [*sleepy, "30"]}})
            create_task(kubectl, namespace, "kept", {"repository": {"url": url}, "sandbox": {"keepOnFailure": True},
                                                    "agent": {"command": failing}})
            wait_for(lambda: phases(kubectl, namespace, ["paused"])["paused"] == "Running", timeout=60,
                     what="the task to suspend to run")
            server.set_faults({"state_conflict": {"ops": ["stop", "delete"], "seconds": 15}})
            kubectl("patch", "at", "paused", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
            finished = wait_phase(kubectl, namespace, "finishes", {"Succeeded", "Failed"}, timeout=60)
            kept = wait_phase(kubectl, namespace, "kept", {"Succeeded", "Failed"}, timeout=60)
            suspended = wait_phase(kubectl, namespace, "paused", {"Suspended", "Failed"}, timeout=90)
            kubectl("patch", "at", "paused", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
            resumed = wait_phase(kubectl, namespace, "paused", {"Succeeded", "Failed"}, timeout=120)
            kept_box = kept["status"]["sandbox"]["name"]
            wait_for(lambda: (server.get(kept_box) or {}).get("state") == "stopped", timeout=60,
                     what="the kept sandbox to be stopped once the 409s end")
            wait_for(lambda: server.stats()["sandboxes_alive"] == 1, timeout=60,
                     what="every sandbox but the kept one deleted once the 409s end")
            stats = server.stats()
        finally:
            server.set_faults({})
            op.stop()
    assert finished["status"]["phase"] == "Succeeded", finished["status"]
    assert (kept["status"]["phase"], kept["status"]["reason"]) == ("Failed", "AgentFailed"), kept["status"]
    assert suspended["status"]["phase"] == "Suspended", suspended["status"]
    assert resumed["status"]["phase"] == "Succeeded", resumed["status"]
    assert all(t["status"]["attempts"] == 1 for t in (finished, kept, resumed))
    assert stats["errors_injected"] > 0  # the 409s were answered, and waited out
    assert stats["calls"]["delete"] > 2 and stats["calls"]["stop"] > 2


async def _create_orphans(server: SandboxServer, instance: str, namespace: str, n: int) -> None:
    async with AsyncDaytona(DaytonaConfig(api_url=server.api_url, api_key=server.api_key)) as client:
        for i in range(n):
            await client.create(CreateSandboxFromSnapshotParams(name=f"orphan-{i}", labels={
                "agenttask.io/instance": instance, "agenttask.io/namespace": namespace,
                "agenttask.io/task-uid": str(uuid.uuid4())}))


def test_a_task_listing_that_fails_deletes_nothing(
    controlplane: DevCluster, crd: Path, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    instance = f"gc-{namespace}"
    asyncio.run(_create_orphans(server, instance, namespace, 3))
    with KubeProxy(controlplane) as proxy:
        kubeconfig = proxy.kubeconfig(tmp_path / "proxied.kubeconfig")

        async def sweeps(rounds: int) -> list[gc.SweepReport | OperatorError]:
            kube = await Kube.connect(str(kubeconfig))
            boxes = Sandboxes.connect(api_url=server.api_url, api_key=server.api_key)
            sweeper = gc.Sweeper(sandboxes=boxes, kube=kube, instance_id=instance, namespaces=[namespace],
                                 grace_seconds=0, delete_concurrency=4)
            results: list[gc.SweepReport | OperatorError] = []
            try:
                for _ in range(rounds):
                    try:
                        results.append(await sweeper.sweep(now=dt.datetime.now(dt.UTC)))
                    except OperatorError as exc:
                        results.append(exc)
            finally:
                await boxes.close()
            return results

        # the apiserver answers the task list with 404 (say, the CRD is being reinstalled)
        proxy.fault("GET", r"/apis/agenttask\.io/v1alpha1/namespaces/[^/]+/agenttasks(\?|$)", status=404)
        failed = asyncio.run(sweeps(3))
        assert all(isinstance(r, OperatorError) for r in failed), failed
        assert all(server.get(f"orphan-{i}") is not None for i in range(3))
        assert any(status == 404 for _, _, status in proxy.requests)

        proxy.clear()  # the listing works again: the orphans go, after two sweeps agree
        first, second = asyncio.run(sweeps(2))
        assert isinstance(first, gc.SweepReport) and first.deleted == {} and len(first.suspected) == 3
        assert isinstance(second, gc.SweepReport) and sorted(second.deleted) == [f"orphan-{i}" for i in range(3)]


def test_a_daytona_listing_that_fails_deletes_nothing(
    controlplane: DevCluster, crd: Path, namespace: str, server: SandboxServer
) -> None:
    instance = f"gc-{namespace}"
    asyncio.run(_create_orphans(server, instance, namespace, 3))

    async def sweeps(rounds: int) -> list[gc.SweepReport | OperatorError]:
        kube = await Kube.connect(str(controlplane.kubeconfig))
        boxes = Sandboxes.connect(api_url=server.api_url, api_key=server.api_key, policy=RetryPolicy(attempts=2))
        sweeper = gc.Sweeper(sandboxes=boxes, kube=kube, instance_id=instance, namespaces=[namespace],
                             grace_seconds=0, delete_concurrency=4)
        results: list[gc.SweepReport | OperatorError] = []
        try:
            for _ in range(rounds):
                try:
                    results.append(await sweeper.sweep(now=dt.datetime.now(dt.UTC)))
                except OperatorError as exc:
                    results.append(exc)
        finally:
            await boxes.close()
        return results

    first = asyncio.run(sweeps(1))  # the orphans become suspects
    server.set_faults({"errors": {"list": {"rate": 1.0, "status": 503}}})
    try:
        failed = asyncio.run(sweeps(2))
    finally:
        server.set_faults({})
    assert isinstance(first[0], gc.SweepReport) and len(first[0].suspected) == 3
    assert all(isinstance(r, Retryable) and r.status == 503 for r in failed), failed
    assert all(server.get(f"orphan-{i}") is not None for i in range(3))
    assert server.stats()["calls"].get("delete", 0) == 0


def test_two_replicas_active_at_once_start_each_task_once(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    """Peering is advisory: here both replicas are forced active (standalone) on the same tasks."""
    _, url = make_repo(tmp_path)
    sleepy = agent_script(tmp_path, "sleepy", SLEEPY)
    server.set_faults({"latency": {"*": 0.05, "create": 0.3}})  # widen every race window
    ops = [operator_for(controlplane.kubeconfig, server, namespace, tmp_path, name=f"replica-{i}") for i in (1, 2)]
    names = [f"twin-{i}" for i in range(8)]
    try:
        for op in ops:
            op.start()
        for name in names:
            create_task(kubectl, namespace, name, {"repository": {"url": url}, "agent": {"command": [*sleepy, "2"]}})
        done = [wait_phase(kubectl, namespace, n, {"Succeeded", "Failed"}, timeout=180) for n in names]
    finally:
        for op in ops:
            op.stop()
    assert [t["status"]["phase"] for t in done] == ["Succeeded"] * len(names)
    stats = server.stats()
    for task in done:
        assert stats["creates_by_name"].get(task["status"]["sandbox"]["name"]) == 1
    assert stats["commands_started"] == len(names), stats  # one agent start per task, across both replicas
    started = [json.loads(line).get("name") for op in ops for line in op.logs().splitlines()
               if line.startswith("{") and json.loads(line).get("message") == "agent started"]
    assert sorted(started) == sorted(names)


def test_an_adopted_agent_that_prints_its_secret_never_leaks_it(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    secret = register_secret(f"adopted-Secret-{uuid.uuid4().hex[:12]}")
    kubectl("create", "secret", "generic", "agent-key", "-n", namespace, f"--from-literal=key={secret}")
    _, url = make_repo(tmp_path)
    chatty = agent_script(tmp_path, "chatty", """
import os, sys, time
for i in range(int(sys.argv[1])):
    print("tick", i, "key=" + os.environ["AGENT_KEY"], flush=True)
    time.sleep(0.5)
""")
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
    try:
        create_task(kubectl, namespace, "chatty", {"repository": {"url": url}, "agent": {
            "command": [*chatty, "30"],
            "env": [{"name": "AGENT_KEY", "valueFrom": {"secretKeyRef": {"name": "agent-key", "key": "key"}}}]}})
        wait_phase(kubectl, namespace, "chatty", {"Running"}, timeout=60)
        op.kill()  # a crash: the new process knows nothing, and replays the agent's output from the start
        op.start()
        task = wait_phase(kubectl, namespace, "chatty", {"Succeeded", "Failed"}, timeout=120)
        page = urllib.request.urlopen(f"http://127.0.0.1:{op.http_port}/status", timeout=10).read().decode()
        api = urllib.request.urlopen(f"http://127.0.0.1:{op.http_port}/api/tasks", timeout=10).read().decode()
        emitted = "\n".join([op.logs(), page, api, op.metrics(), kubectl("get", "at", "-n", namespace, "-o",
                                                                         "json").stdout,
                             kubectl("get", "events", "-n", namespace, "-o", "json").stdout])
    finally:
        op.stop()
    assert task["status"]["phase"] == "Succeeded"
    assert "key=***" in task["status"]["logTail"]
    assert secret not in emitted


def test_without_the_peering_crd_the_operator_refuses_to_start_and_says_why(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    kubectl("delete", "crd", "kopfpeerings.kopf.dev", "--ignore-not-found", "--wait=true")  # tests apply it
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path, AGENTTASK_STANDALONE="false",
                      AGENTTASK_PEERING_NAME="agenttask-operator")
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "run", "--namespace", namespace],
                          env=op.env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "not starting" in proc.stderr and "kopfpeerings.kopf.dev is not installed" in proc.stderr
    assert "--standalone" in proc.stderr


def test_without_its_peering_object_yet_the_operator_stands_by_until_it_exists(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    """A fresh `helm install --wait` starts the replicas before the chart's post-install hook
    creates the peering object (Helm runs hooks once the Deployment is Ready): the replicas must
    start, say so, stand by (and be Ready, like any standby), and begin once the object appears."""
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "kopf-peering.yaml"))
    controlplane.wait_established("kopfpeerings.kopf.dev")
    _, url = make_repo(tmp_path)
    create_task(kubectl, namespace, "waits", {"repository": {"url": url},
                                              "agent": {"command": agent_script(tmp_path, "a", SLEEPY)}})
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path, AGENTTASK_STANDALONE="false",
                      AGENTTASK_PEERING_NAME="agenttask-operator", AGENTTASK_PEERING_LIFETIME_SECONDS="8").start()
    try:
        wait_for(lambda: "does not exist yet" in op.logs(), timeout=30, what="the warning about the peering object")
        wait_for(op.ready, timeout=30, what="the standing-by operator to be Ready")
        waiting = get_task(kubectl, namespace, "waits") or {}
        # paused: the task that was there before the operator started is untouched
        assert waiting.get("status") == {"observedGeneration": 0} and not waiting["metadata"].get("finalizers"), \
            waiting
        kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "agenttask-operator"}}))
        done = wait_phase(kubectl, namespace, "waits", {"Succeeded", "Failed"}, timeout=90)
    finally:
        op.stop()
    assert done["status"]["phase"] == "Succeeded", done["status"]
