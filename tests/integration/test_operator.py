"""The operator as it runs in production (`agenttask run` subprocess) on the real apiserver,
against the embedded Daytona-compatible server, with real git repositories."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.devcluster import DevCluster

from ..conftest import Kubectl
from .harness import Operator, SandboxServer, agent_script, make_repo, register_secret, sandbox_server, wait_for

CHANGE_AGENT = """
import pathlib, sys, time
print("agent: reading the issue", flush=True)
issue = pathlib.Path(__import__("os").environ["AGENTTASK_ISSUE_FILE"]).read_text()
pathlib.Path("FIX.md").write_text("fixed: " + issue.splitlines()[0] + "\\n")
print("agent: wrote FIX.md", flush=True)
"""


@pytest.fixture(scope="module")
def daytona(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path_factory.mktemp("sandboxes")) as server:
        yield server


@pytest.fixture
def operator(controlplane: DevCluster, crd: Path, daytona: SandboxServer, namespace: str,
             tmp_path: Path) -> Iterator[Operator]:
    op = Operator(kubeconfig=controlplane.kubeconfig, server=daytona, namespace=namespace,
                  log_path=tmp_path / "operator.log", instance_id=f"it-{namespace}")
    op.start()
    try:
        yield op
    finally:
        op.stop()


def create_task(kubectl: Kubectl, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": name}, "spec": spec}
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(body))


def get_task(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    done = kubectl("get", "at", name, "-n", namespace, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def wait_phase(kubectl: Kubectl, namespace: str, name: str, phases: set[str], timeout: float = 120) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        task = get_task(kubectl, namespace, name)
        return task if task and (task.get("status") or {}).get("phase") in phases else None
    return wait_for(check, timeout=timeout, what=f"{name} in {phases}")


def conditions(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in task["status"].get("conditions", [])}


def test_happy_path_pushes_a_branch_and_cleans_up(
    operator: Operator, daytona: SandboxServer, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    bare, url = make_repo(tmp_path)
    agent = agent_script(tmp_path, "agent", CHANGE_AGENT)
    create_task(kubectl, namespace, "happy", {
        "repository": {"url": url}, "issue": {"number": 12, "title": "Fix the thing", "body": "please"},
        "agent": {"command": agent}})
    seen: list[str] = []

    def progressed() -> dict[str, Any] | None:
        task = get_task(kubectl, namespace, "happy")
        phase = (task or {}).get("status", {}).get("phase")
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
        return task if phase in ("Succeeded", "Failed") else None

    task = wait_for(progressed, timeout=120, what="task to finish", interval=0.05)
    status = task["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1) + operator.logs()[-3000:]
    assert seen[-1] == "Succeeded"
    assert set(seen) <= {"Pending", "Provisioning", "Running", "Succeeded"}
    # the operator's own record of the transitions, in order (a poller can miss fast ones)
    transitions = [json.loads(line)["message"].split(":")[0] for line in operator.logs().splitlines()
                   if line.startswith("{") and json.loads(line).get("message", "").startswith("phase ")
                   and json.loads(line).get("name") == "happy"]
    # admitted at once: one write takes it to Provisioning (no separate Pending write)
    assert transitions == ["phase None -> Provisioning", "phase Provisioning -> Running",
                           "phase Running -> Succeeded"]
    # no line per watch event: kopf's "Handler 'spec_changed' succeeded." is dropped
    assert "spec_changed" not in operator.logs()
    result = status["result"]
    assert result["outcome"] == "ChangesPushed"
    assert result["branch"] == f"agenttask/12-{task['metadata']['uid'][:8]}"
    assert result["changedFiles"] == ["FIX.md"]
    pushed = subprocess.run(["git", "-C", str(bare), "rev-parse", result["branch"]], capture_output=True, text=True)
    assert pushed.stdout.strip() == result["commit"]
    content = subprocess.run(["git", "-C", str(bare), "show", f"{result['branch']}:FIX.md"], capture_output=True,
                             text=True).stdout
    assert content == "fixed: # Fix the thing\n"
    assert status["agent"]["exitCode"] == 0
    assert "agent: wrote FIX.md" in status["logTail"]
    assert status["startTime"] and status["completionTime"]
    # exactly one sandbox was ever created for this task, and it is gone
    name = status["sandbox"]["name"]
    cleaned = wait_for(lambda: (lambda t: t if t and t["status"].get("sandbox", {}).get("deleted") else None)(
        get_task(kubectl, namespace, "happy")), timeout=30, what="sandbox deletion recorded")
    cond = conditions(cleaned)
    assert (cond["Ready"]["status"], cond["Ready"]["reason"]) == ("True", "AgentSucceeded")
    assert cond["Reconciling"]["status"] == "False" and "Stalled" not in cond
    assert cond["Admitted"]["status"] == "True"
    assert (cond["SandboxReady"]["status"], cond["SandboxReady"]["reason"]) == ("False", "SandboxDeleted")
    assert cond["Complete"]["status"] == "True"
    assert cond["AgentRunning"]["status"] == "False"
    for c in cond.values():
        assert c["observedGeneration"] == cleaned["metadata"]["generation"]
        assert c["lastTransitionTime"]
    assert daytona.stats()["creates_by_name"].get(name) == 1
    assert daytona.get(name) is None
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=happy",
                     "-o", "json").stdout
    reasons = [e["reason"] for e in json.loads(events)["items"]]
    # one event per step that changed the phase: the step that creates the sandbox and starts the
    # agent says AgentStarted (not also Provisioning a moment before)
    assert sorted(reasons) == ["AgentStarted", "AgentSucceeded"], reasons


SLOW_AGENT = """
import os, sys, time
seconds = float(sys.argv[1])
start = time.monotonic()
i = 0
while time.monotonic() - start < seconds:
    print(f"tick {i}", flush=True)
    i += 1
    time.sleep(1)
print("agent: done", flush=True)
"""

FAIL_AGENT = """
import sys
print("agent: about to fail", flush=True)
print("agent: last words", flush=True)
sys.exit(3)
"""


def test_failure_long_run_and_deadline_side_by_side(
    operator: Operator, daytona: SandboxServer, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """Three tasks at once: an agent exiting 3, a 90 s agent, and a 300 s agent with a 20 s deadline."""
    _, url = make_repo(tmp_path)
    slow = agent_script(tmp_path, "slow", SLOW_AGENT)
    create_task(kubectl, namespace, "fails", {"repository": {"url": url},
                                              "agent": {"command": agent_script(tmp_path, "fail", FAIL_AGENT)}})
    create_task(kubectl, namespace, "long", {"repository": {"url": url}, "agent": {"command": [*slow, "90"]}})
    create_task(kubectl, namespace, "deadline", {"repository": {"url": url}, "activeDeadlineSeconds": 20,
                                                 "agent": {"command": [*slow, "300"]}})

    failed = wait_phase(kubectl, namespace, "fails", {"Failed", "Succeeded"}, timeout=60)["status"]
    assert failed["phase"] == "Failed"
    assert failed["reason"] == "AgentFailed"
    assert conditions({"status": failed})["Failed"]["reason"] == "AgentFailed"
    assert failed["agent"]["exitCode"] == 3
    assert "agent: last words" in failed["logTail"]
    assert "code 3" in failed["message"]

    # the long-running task shows progress in its log tail while it runs
    running = wait_for(lambda: (t := get_task(kubectl, namespace, "long")) and t["status"].get("phase") == "Running"
                       and "tick 5" in (t["status"].get("logTail") or "") and t, timeout=60,
                       what="log tail updated while running")
    assert running["status"]["phase"] == "Running"

    deadline = wait_phase(kubectl, namespace, "deadline", {"Failed", "Succeeded"}, timeout=60)["status"]
    assert deadline["phase"] == "Failed"
    assert deadline["reason"] == "DeadlineExceeded"
    import datetime as dt
    started = dt.datetime.fromisoformat(deadline["startTime"])
    finished = dt.datetime.fromisoformat(deadline["completionTime"])
    # the runner stops the agent a little before the deadline (a quarter of it, at most a minute) to
    # report in time; the operator's own deadline is the backstop
    assert 15 <= (finished - started).total_seconds() <= 20 + 5
    wait_for(lambda: daytona.get(deadline["sandbox"]["name"]) is None, timeout=15, what="deadline sandbox deleted")

    long = wait_phase(kubectl, namespace, "long", {"Failed", "Succeeded"}, timeout=150)["status"]
    assert long["phase"] == "Succeeded", long
    assert "agent: done" in long["logTail"]
    assert long["result"]["outcome"] == "NoChanges"
    assert (dt.datetime.fromisoformat(long["completionTime"]) - dt.datetime.fromisoformat(long["runningTime"])
            ).total_seconds() >= 90
    assert daytona.get(long["sandbox"]["name"]) is None or wait_for(
        lambda: daytona.get(long["sandbox"]["name"]) is None, timeout=15, what="long sandbox deleted")


LOSE_ONCE_AGENT = """
import json, os, pathlib, time
ctx = pathlib.Path(os.environ["AGENTTASK_CONTEXT_DIR"])
attempt = json.loads((ctx / "task.json").read_text())["task"]["attempt"]
print(f"agent: attempt {attempt}", flush=True)
if attempt == 1:
    time.sleep(120)
pathlib.Path("DONE.md").write_text(f"attempt {attempt}\\n")
"""


def test_lost_sandbox_starts_a_new_attempt_and_backoff_limit_ends_it(
    operator: Operator, daytona: SandboxServer, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    _, url = make_repo(tmp_path)
    agent = agent_script(tmp_path, "lose", LOSE_ONCE_AGENT)
    create_task(kubectl, namespace, "retry", {"repository": {"url": url}, "agent": {"command": agent}})
    create_task(kubectl, namespace, "nolimit", {"repository": {"url": url}, "backoffLimit": 0,
                                                "agent": {"command": agent}})
    for name in ("retry", "nolimit"):
        task = wait_phase(kubectl, namespace, name, {"Running"}, timeout=60)
        daytona.set_faults({"lose": [task["status"]["sandbox"]["name"]]})

    retried = wait_phase(kubectl, namespace, "retry", {"Succeeded", "Failed"}, timeout=90)
    status = retried["status"]
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] == 2
    assert status["sandbox"]["name"].endswith("-2")
    assert conditions(retried)["Ready"]["status"] == "True"
    uid = retried["metadata"]["uid"]
    created = daytona.stats()["creates_by_name"]
    assert created.get(f"at-{uid}-1") == 1
    assert created.get(f"at-{uid}-2") == 1

    limited = wait_phase(kubectl, namespace, "nolimit", {"Succeeded", "Failed"}, timeout=60)["status"]
    assert limited["phase"] == "Failed"
    assert limited["reason"] == "BackoffLimitExceeded"
    assert "backoffLimit 0" in limited["message"]
    assert limited["attempts"] == 1


def test_daytona_errors_and_rate_limits_are_retried_without_duplicates(
    operator: Operator, daytona: SandboxServer, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    _, url = make_repo(tmp_path)
    agent = agent_script(tmp_path, "agent", CHANGE_AGENT)
    daytona.set_faults({"errors": {"*": {"rate": 0.3, "status": 503}, "create": {"rate": 0.3, "status": 500,
                                                                                "after": True}},
                        "rate_limit": {"rate": 0.15, "retry_after": 1}, "seed": 11})
    names = [f"storm-{i}" for i in range(6)]
    try:
        for i, name in enumerate(names):
            create_task(kubectl, namespace, name, {"repository": {"url": url}, "issue": {"number": i + 1},
                                                   "agent": {"command": agent}})
        finished = [wait_phase(kubectl, namespace, n, {"Succeeded", "Failed"}, timeout=240) for n in names]
    finally:
        daytona.set_faults({})
    stats = daytona.stats()
    assert stats["errors_injected"] > 0 and stats["rate_limited"] > 0
    for task in finished:
        assert task["status"]["phase"] == "Succeeded", task["status"]
        assert task["status"]["attempts"] == 1
        uid = task["metadata"]["uid"]
        assert stats["creates_by_name"].get(f"at-{uid}-1") == 1
    assert "agenttask_daytona_requests_total" in operator.metrics()
    assert 'outcome="retryable"' in operator.metrics()


def test_operator_killed_mid_run_resumes_without_duplicates(
    operator: Operator, daytona: SandboxServer, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    bare, url = make_repo(tmp_path)
    slow_change = agent_script(tmp_path, "slowchange", """
import pathlib, time
for i in range(8):
    print(f"working {i}", flush=True)
    time.sleep(1)
pathlib.Path("RESULT.md").write_text("done\\n")
""")
    create_task(kubectl, namespace, "survivor", {"repository": {"url": url}, "issue": {"number": 5},
                                                 "agent": {"command": slow_change}})
    wait_phase(kubectl, namespace, "survivor", {"Running"}, timeout=60)
    operator.kill()
    operator.start()
    task = wait_phase(kubectl, namespace, "survivor", {"Succeeded", "Failed"}, timeout=90)
    status = task["status"]
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] == 1
    uid = task["metadata"]["uid"]
    assert daytona.stats()["creates_by_name"] == {**daytona.stats()["creates_by_name"], f"at-{uid}-1": 1}
    branches = subprocess.run(["git", "-C", str(bare), "branch", "--list", "agenttask/*"], capture_output=True,
                              text=True).stdout.split()
    assert branches == [status["result"]["branch"]]
    log = subprocess.run(["git", "-C", str(bare), "log", "--oneline", status["result"]["branch"]],
                         capture_output=True, text=True).stdout.splitlines()
    assert len(log) == 2  # the initial commit and exactly one agent commit


def test_deleting_a_running_task_deletes_its_sandbox(
    operator: Operator, daytona: SandboxServer, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    _, url = make_repo(tmp_path)
    slow = agent_script(tmp_path, "slow", SLOW_AGENT)
    create_task(kubectl, namespace, "doomed", {"repository": {"url": url}, "agent": {"command": [*slow, "300"]}})
    task = wait_phase(kubectl, namespace, "doomed", {"Running"}, timeout=60)
    name = task["status"]["sandbox"]["name"]
    assert daytona.get(name) is not None
    assert task["metadata"]["finalizers"] == ["agenttask.io/sandbox-cleanup"]
    kubectl("delete", "at", "doomed", "-n", namespace, "--wait=true", "--timeout=60s")
    assert get_task(kubectl, namespace, "doomed") is None
    assert daytona.get(name) is None


def test_secret_values_never_leak(
    operator: Operator, daytona: SandboxServer, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    secret_value = register_secret("s3cr3t-Agent-Value-7f1e2d")
    token_value = register_secret("tok-Repo-Token-9a8b7c6d")
    kubectl("create", "secret", "generic", "agent-key", "-n", namespace, f"--from-literal=key={secret_value}")
    kubectl("create", "secret", "generic", "repo-token", "-n", namespace, f"--from-literal=token={token_value}")
    _, url = make_repo(tmp_path)
    leaky = agent_script(tmp_path, "leaky", """
import os
print("agent sees key:", os.environ.get("AGENT_KEY"), flush=True)
print("and in the middle", os.environ.get("AGENT_KEY", "")[:8], "of a line", flush=True)
raise SystemExit(1)
""")
    create_task(kubectl, namespace, "leaky", {
        "repository": {"url": url, "credentialsSecretRef": {"name": "repo-token"}},
        "agent": {"command": leaky, "env": [{"name": "AGENT_KEY", "valueFrom": {"secretKeyRef": {
            "name": "agent-key", "key": "key"}}}]}})
    create_task(kubectl, namespace, "missing", {"repository": {"url": url}, "agent": {
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}})
    task = wait_phase(kubectl, namespace, "leaky", {"Failed", "Succeeded"}, timeout=60)
    assert "agent sees key: ***" in task["status"]["logTail"]
    missing = wait_phase(kubectl, namespace, "missing", {"Failed", "Succeeded"}, timeout=60)["status"]
    assert missing["reason"] == "SecretNotFound"
    assert "nope" in missing["message"]
    emitted = "\n".join([
        operator.logs(),
        kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        kubectl("get", "at", "-n", namespace, "-o", "json").stdout,
        operator.metrics(),
    ])
    assert secret_value not in emitted
    assert token_value not in emitted
