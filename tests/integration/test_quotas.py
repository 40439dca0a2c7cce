"""AgentTaskQuota on the real apiserver: per-requester concurrency, budgets over rolling windows
that roll over, and the quota's status showing used and remaining."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.devcluster import DevCluster

from ..conftest import Kubectl
from .harness import SandboxServer, agent_script, make_repo, operator_for, sandbox_server, wait_for
from .test_operator import get_task, wait_phase

SLEEPY = """
import sys, time
time.sleep(float(sys.argv[1]))
print("agent: done", flush=True)
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path / "sandboxes") as s:
        yield s


def apply(kubectl: Kubectl, namespace: str, doc: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


def task_doc(name: str, url: str, agent: list[str], seconds: float, requester: str) -> dict[str, Any]:
    return {"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
            "spec": {"repository": {"url": url}, "agent": {"command": [*agent, str(seconds)]},
                     "audit": {"requestedBy": requester}}}


def quota_doc(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTaskQuota", "metadata": {"name": name}, "spec": spec}


class PeakSampler:
    """Samples the embedded server's live sandboxes per requester label; keeps the peak of each."""

    def __init__(self, server: SandboxServer):
        self.server, self.samples = server, 0
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            counts: dict[str, int] = {}
            for box in self.server.sandboxes():
                if box.get("state") in ("started", "starting", "creating") and not box["name"].startswith("DESTROYED"):
                    who = (box.get("labels") or {}).get("agenttask.io/requested-by", "")
                    counts[who] = counts.get(who, 0) + 1
            for who, count in counts.items():
                self.peaks[who] = max(self.peaks.get(who, 0), count)
            self.samples += 1
            time.sleep(0.1)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_per_requester_concurrency_cap_holds_under_twenty_tasks(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    _, url = make_repo(tmp_path)
    sleepy = agent_script(tmp_path, "sleepy", SLEEPY)
    apply(kubectl, namespace, quota_doc("per-user", perRequester=True, maxConcurrentTasks=2))
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
    names = [f"{who}-{i}" for who in ("alice", "bob") for i in range(10)]
    try:
        with PeakSampler(server) as sampler:
            kubectl("create", "-n", namespace, "-f", "-", input="\n".join(
                json.dumps(task_doc(n, url, sleepy, 2, n.split("-")[0])) for n in names))
            queued = wait_for(lambda: next((t for n in names if (t := get_task(kubectl, namespace, n)) and (
                t.get("status") or {}).get("phase") == "Queued"), None), timeout=60, what="a queued task")
            done = [wait_phase(kubectl, namespace, n, {"Succeeded", "Failed"}, timeout=240) for n in names]
        op.wait_slots_released()  # a leaked slot (a supervisor cancelled before releasing it) would stall the queue
        status = json.loads(kubectl("get", "atq", "per-user", "-n", namespace, "-o", "json").stdout).get("status", {})
    finally:
        op.stop()
    assert [t["status"]["phase"] for t in done] == ["Succeeded"] * len(names)
    assert sampler.samples > 20 and sampler.peaks.get("alice", 0) <= 2 and sampler.peaks.get("bob", 0) <= 2, (
        sampler.peaks)
    assert max(sampler.peaks.values()) == 2  # the cap was reached, not merely never tested
    assert "AgentTaskQuota per-user" in queued["status"]["message"]
    assert {u["requester"] for u in status.get("usage", [])} == {"alice", "bob"}


def test_a_budget_window_queues_tasks_until_it_rolls_over(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    _, url = make_repo(tmp_path)
    sleepy = agent_script(tmp_path, "sleepy", SLEEPY)
    # 2 s of sandbox time per 20 s window for carol
    apply(kubectl, namespace, quota_doc("carol", requester="carol",
                                        windows=[{"duration": "20s", "maxSandboxHours": 2 / 3600}]))
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
    try:
        apply(kubectl, namespace, task_doc("first", url, sleepy, 3, "carol"))
        first = wait_phase(kubectl, namespace, "first", {"Succeeded", "Failed"}, timeout=90)
        assert first["status"]["usage"]["sandboxSeconds"] >= 2
        apply(kubectl, namespace, task_doc("second", url, sleepy, 0.1, "carol"))
        apply(kubectl, namespace, task_doc("other", url, sleepy, 0.1, "dave"))  # not capped
        waiting = wait_for(lambda: (t := get_task(kubectl, namespace, "second")) and (t.get("status") or {}).get(
            "reason") == "BudgetExceeded" and t, timeout=60, what="the second task to wait on the budget")
        assert "AgentTaskQuota carol: requester carol used" in waiting["status"]["message"]
        assert wait_phase(kubectl, namespace, "other", {"Succeeded"}, timeout=90)
        def used_up() -> list[dict[str, Any]] | None:
            usage = (json.loads(kubectl("get", "atq", "carol", "-n", namespace, "-o", "json").stdout)
                     .get("status") or {}).get("usage") or []
            return usage if usage and usage[0]["windows"][0].get("remainingSandboxHours") == 0 else None

        used = wait_for(used_up, timeout=30, what="the quota's status to show the window used up")
        assert used[0]["requester"] == "carol" and used[0]["windows"][0]["sandboxHours"] >= 2 / 3600
        second = wait_phase(kubectl, namespace, "second", {"Succeeded", "Failed"}, timeout=90)
    finally:
        op.stop()
    assert second["status"]["phase"] == "Succeeded"
    rolled = dt.datetime.fromisoformat(first["status"]["completionTime"]) + dt.timedelta(seconds=20)
    assert dt.datetime.fromisoformat(second["status"]["startTime"]) >= rolled - dt.timedelta(seconds=1)
