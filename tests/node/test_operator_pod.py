"""The chart, installed with helm on a real node, running the image `Dockerfile` builds: readiness,
a task end to end, the security context that really runs, rollouts, pod loss, graceful stop,
failover between two replicas, and uninstalling with tasks present.

The tests share one release and run in file order; each first brings the release to the values
it needs (`helm upgrade --install --wait`, a no-op when nothing changes).
"""

from __future__ import annotations

import calendar
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from controller.demo import DEMO_AGENT, ISSUE_BODY, make_demo_repo

from .conftest import CHART, NodeEnv

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

NS = "agenttask-system"
RELEASE = "agenttask-operator"  # the chart's full name is then the release name
TASK_NS = "tasks"
T = TypeVar("T")

# waits for a file the test creates (no timing): lets a test act while the agent runs
GATED_AGENT = """
import pathlib, time
gate = pathlib.Path({gate!r})
deadline = time.time() + 600
print("agent: waiting for the gate", flush=True)
while not gate.exists() and time.time() < deadline:
    time.sleep(0.2)
pathlib.Path("GATED.md").write_text("the gate opened\\n")
print("agent: done", flush=True)
"""


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def install(env: NodeEnv, *sets: str, strings: tuple[str, ...] = (), wait: bool = True) -> None:
    tag = env.operator_image.rsplit(":", 1)[1]
    args = ["upgrade", "--install", RELEASE, str(CHART), "--namespace", NS, "--reset-values",
            "--set", "image.registry=localhost", "--set", "image.repository=agenttask-operator",
            "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
            "--set", f"daytona.apiUrl={env.daytona_url}", "--set", "daytona.existingSecret=daytona",
            "--set", "logFormat=text", "--set", "settings.pollIntervalSeconds=1",
            "--set", "settings.peeringLifetimeSeconds=15"]
    for value in sets:
        args += ["--set", value]
    for value in strings:
        args += ["--set-string", value]
    if wait:
        args += ["--wait", "--timeout=180s"]
    done = env.helm(*args, check=False)
    if done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}\n{diagnose(env)}")


def diagnose(env: NodeEnv) -> str:
    """What the Pods say, for a failure message: phase, readiness, /readyz and the log's end."""
    lines = [env.kubectl("get", "pods", "-n", NS, "-o", "wide", check=False).stdout]
    for pod in pods(env):
        name = pod["metadata"]["name"]
        probe = env.kubectl("exec", "-n", NS, name, "-c", "operator", "--", "python", "-c", READYZ, check=False)
        log = env.kubectl("logs", "-n", NS, name, "--tail=15", check=False)
        lines += [f"== {name}: ready={ready(pod)} /readyz: {probe.stdout.strip()[:600]} {probe.stderr.strip()[:200]}",
                  log.stdout[-3000:]]
    return "\n".join(lines)


def pods(env: NodeEnv) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = env.kubectl_json("get", "pods", "-n", NS, "-l",
                                                   f"app.kubernetes.io/instance={RELEASE}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def ready_pods(env: NodeEnv, count: int, *, not_named: str = "") -> list[dict[str, Any]] | None:
    """Exactly `count` Pods, all Ready (and none called `not_named`), else None."""
    current = pods(env)
    if len(current) == count and all(ready(p) and p["metadata"]["name"] != not_named for p in current):
        return current
    return None


def in_pod(env: NodeEnv, pod: str, code: str) -> str:
    return env.kubectl("exec", "-n", NS, pod, "-c", "operator", "--", "python", "-c", code).stdout


READYZ = """
import json, urllib.request, urllib.error
try:
    r = urllib.request.urlopen("http://127.0.0.1:8080/readyz", timeout=10); print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""


def readyz(env: NodeEnv, pod: str) -> tuple[int, dict[str, Any]]:
    status, _, body = in_pod(env, pod, READYZ).strip().partition(" ")
    return int(status), json.loads(body)


@pytest.fixture(scope="module")
def env(node_env: NodeEnv) -> NodeEnv:
    node_env.kubectl("create", "namespace", NS)
    node_env.kubectl("create", "namespace", TASK_NS)
    node_env.kubectl("create", "secret", "generic", "daytona", "-n", NS,
                     f"--from-literal=api-key={node_env.daytona.api_key}")
    return node_env


@pytest.fixture(scope="module")
def repo(env: NodeEnv) -> Path:
    return make_demo_repo(env.work / "repos")


def create_task(env: NodeEnv, name: str, repo: Path, agent: list[str]) -> str:
    body = {"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
            "spec": {"repository": {"url": f"file://{repo}"},
                     "issue": {"number": 1, "title": "Greeting has a typo", "body": ISSUE_BODY},
                     "agent": {"command": agent}}}
    env.kubectl("create", "-n", TASK_NS, "-f", "-", input=json.dumps(body))
    uid: str = env.kubectl_json("get", "at", name, "-n", TASK_NS)["metadata"]["uid"]
    return uid


def task(env: NodeEnv, name: str) -> dict[str, Any]:
    return env.kubectl_json("get", "at", name, "-n", TASK_NS)


def wait_phase(env: NodeEnv, name: str, phases: set[str], timeout: float = 180) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        current = task(env, name)
        return current if current.get("status", {}).get("phase") in phases else None
    return wait_for(check, timeout=timeout, what=f"task {name} in {phases}")


def creates(env: NodeEnv, uid: str) -> int:
    return sum(n for name, n in env.daytona.stats()["creates_by_name"].items() if name.startswith(f"at-{uid}"))


def gated(env: NodeEnv, name: str) -> tuple[list[str], Path]:
    gate = env.work / f"gate-{name}"
    return ["python3", "-c", GATED_AGENT.format(gate=str(gate))], gate


# ------------------------------------------------------------------------------------- tests


def test_ready_only_once_the_operator_reaches_the_api(env: NodeEnv) -> None:
    # a Pod whose service environment points kopf nowhere: Running, never Ready
    install(env, strings=("extraEnv[0].name=KUBERNETES_SERVICE_PORT", "extraEnv[0].value=1"), wait=False)
    pod = wait_for(lambda: next((p for p in pods(env) if p["status"].get("phase") == "Running"), None),
                   timeout=120, what="the operator Pod Running")
    name = pod["metadata"]["name"]

    def probe_failed() -> bool:
        events = env.kubectl_json("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={name}")
        return any(e["reason"] == "Unhealthy" and "Readiness probe failed" in e["message"] and "503" in e["message"]
                   for e in events["items"])
    wait_for(probe_failed, timeout=120, what="kubelet's readiness probe failing with 503")
    status, body = readyz(env, name)
    assert status == 503 and body["ready"] is False
    assert "https://10.96.0.1:1" in body["reason"], body  # kopf's own connection, from the service env
    assert not ready(env.kubectl_json("get", "pod", name, "-n", NS))

    # the standard service environment: Ready, and /readyz says why
    install(env)
    (pod,) = wait_for(lambda: ready_pods(env, 1), timeout=60, what="one Ready operator Pod")
    status, body = readyz(env, pod["metadata"]["name"])
    assert (status, body) == (200, {"ready": True, "reason": "watching"})
    logs = env.kubectl("logs", "-n", NS, pod["metadata"]["name"]).stdout
    assert "Activity 'agenttask-login' succeeded" in logs


def test_a_task_applied_with_kubectl_succeeds(env: NodeEnv, repo: Path) -> None:
    install(env)
    uid = create_task(env, "fix-greeting", repo, ["python3", "-c", DEMO_AGENT])
    final = wait_phase(env, "fix-greeting", {"Succeeded", "Failed"})
    assert final["status"]["phase"] == "Succeeded", final["status"]
    result = final["status"]["result"]
    assert result["outcome"] == "ChangesPushed" and result["changedFiles"] == ["greet.py"]
    branches = subprocess.run(["git", "-C", str(repo), "branch", "--list", result["branch"]], capture_output=True,
                              text=True, check=True).stdout
    assert result["branch"] in branches
    assert creates(env, uid) == 1
    wait_for(lambda: not env.daytona.sandboxes({"agenttask.io/task-uid": uid}) or None, timeout=60,
             what="the finished task's sandbox deleted")


SECURITY = """
import os, pathlib
status = dict(l.split(":", 1) for l in pathlib.Path("/proc/self/status").read_text().splitlines())
try:
    open("/opt/venv/x", "w"); root = "writable"
except OSError as e:
    root = e.strerror
pathlib.Path("/tmp/probe").write_text("ok")
print(os.getuid(), os.getgid(), status["CapEff"].strip(), status["NoNewPrivs"].strip(), status["Seccomp"].strip(),
      root.replace(" ", "_"))
"""


def test_the_charts_security_context_is_what_runs(env: NodeEnv) -> None:
    install(env)
    (pod,) = pods(env)
    uid, gid, caps, no_new_privs, seccomp, root = in_pod(env, pod["metadata"]["name"], SECURITY).split()
    assert (uid, gid) == ("10001", "10001")
    assert caps == "0000000000000000"  # capabilities: drop ALL
    assert no_new_privs == "1"  # allowPrivilegeEscalation: false
    assert seccomp == "2"  # seccompProfile RuntimeDefault: a filter is installed
    assert root == "Read-only_file_system"  # readOnlyRootFilesystem; /tmp (emptyDir) is writable


def test_helm_upgrade_rolls_the_pod_and_a_running_task_survives(env: NodeEnv, repo: Path) -> None:
    install(env)
    (old,) = pods(env)
    agent, gate = gated(env, "upgrade")
    uid = create_task(env, "during-upgrade", repo, agent)
    wait_phase(env, "during-upgrade", {"Running"})
    install(env, "settings.logTailBytes=8192")  # a changed value: a new ReplicaSet
    (new,) = wait_for(lambda: ready_pods(env, 1, not_named=old["metadata"]["name"]), timeout=120,
                      what="the rolled Pod")
    gate.touch()
    final = wait_phase(env, "during-upgrade", {"Succeeded", "Failed"})
    assert final["status"]["phase"] == "Succeeded", final["status"]
    assert creates(env, uid) == 1, "the new Pod adopted the sandbox instead of creating another"
    # the old Pod is gone: the new one saw the agent finish (text logs carry no object names)
    assert "phase Running -> Succeeded" in env.kubectl("logs", "-n", NS, new["metadata"]["name"]).stdout


def test_a_deleted_pod_is_replaced_and_the_new_one_adopts_the_task(env: NodeEnv, repo: Path) -> None:
    install(env)
    (old,) = pods(env)
    agent, gate = gated(env, "delete")
    uid = create_task(env, "during-delete", repo, agent)
    wait_phase(env, "during-delete", {"Running"})
    env.kubectl("delete", "pod", "-n", NS, old["metadata"]["name"], "--wait=true")
    (new,) = wait_for(lambda: ready_pods(env, 1, not_named=old["metadata"]["name"]), timeout=120,
                      what="the replacement Pod")
    gate.touch()
    final = wait_phase(env, "during-delete", {"Succeeded", "Failed"})
    assert final["status"]["phase"] == "Succeeded", final["status"]
    assert creates(env, uid) == 1
    assert "phase Running -> Succeeded" in env.kubectl("logs", "-n", NS, new["metadata"]["name"]).stdout


def test_sigterm_stops_the_operator_gracefully_within_the_grace_period(env: NodeEnv) -> None:
    install(env)
    (pod,) = pods(env)
    name = pod["metadata"]["name"]
    grace = env.kubectl_json("get", "pod", name, "-n", NS)["spec"]["terminationGracePeriodSeconds"]
    sent = time.time()
    env.kubectl("exec", "-n", NS, name, "-c", "operator", "--", "sh", "-c", "kill -TERM 1")

    def terminated() -> dict[str, Any] | None:
        statuses = env.kubectl_json("get", "pod", name, "-n", NS)["status"].get("containerStatuses", [])
        last = statuses[0].get("lastState", {}).get("terminated") if statuses else None
        return last if last else None
    last = wait_for(terminated, timeout=grace + 60, what="the container's termination record")
    assert last["exitCode"] == 0, last  # it stopped by itself: kubelet did not have to kill it
    finished = calendar.timegm(time.strptime(last["finishedAt"], "%Y-%m-%dT%H:%M:%SZ"))
    assert finished - sent <= grace, f"stopped {finished - sent:.0f}s after SIGTERM, grace is {grace}s"
    previous = env.kubectl("logs", "-n", NS, name, "--previous").stdout
    assert "Activity 'shutdown' succeeded" in previous
    wait_for(lambda: ready_pods(env, 1), timeout=120, what="the restarted container Ready")


def peering_active(env: NodeEnv) -> str | None:
    """The pod name of the replica kopf peering made active (the highest priority alive)."""
    done = env.kubectl("get", "clusterkopfpeering", "agenttask-operator", "-o", "json", check=False)
    if done.returncode != 0:
        return None
    peers = json.loads(done.stdout).get("status", {})
    names = {p["metadata"]["name"] for p in pods(env)}
    def pod_of(peer_id: str) -> str:  # kopf's ids: user@hostname/started/random; a Pod's hostname is its name
        return peer_id.split("@", 1)[-1].split("/", 1)[0]
    alive = {pod_of(pid): info for pid, info in peers.items() if pod_of(pid) in names}
    if len(alive) < 2:
        return None
    return max(alive.items(), key=lambda item: item[1]["priority"])[0]


def test_two_replicas_one_active_and_failover_when_it_goes(env: NodeEnv, repo: Path) -> None:
    install(env, "replicaCount=2")
    wait_for(lambda: ready_pods(env, 2), timeout=180,
             what="two Ready replicas (the standby is Ready too: it watches and can take over)")
    active = wait_for(lambda: peering_active(env), timeout=60, what="both replicas in the peering object")
    standby = next(p["metadata"]["name"] for p in pods(env) if p["metadata"]["name"] != active)
    wait_for(lambda: re.search(r"Pausing operations in favour of", env.kubectl("logs", "-n", NS, standby).stdout),
             timeout=60, what="the standby pausing in favour of the active replica")
    env.kubectl("delete", "pod", "-n", NS, active, "--wait=true")
    # the standby resumes as soon as the active replica's peering record is gone (it removes it
    # when it stops), not only when the Deployment's replacement Pod arrives
    wait_for(lambda: "Resuming operations" in env.kubectl("logs", "-n", NS, standby).stdout, timeout=120,
             what="the standby taking over")
    uid = create_task(env, "after-failover", repo, ["python3", "-c", DEMO_AGENT])
    final = wait_phase(env, "after-failover", {"Succeeded", "Failed"})
    assert final["status"]["phase"] == "Succeeded", final["status"]
    assert creates(env, uid) == 1


def test_uninstall_with_tasks_present_as_documented(env: NodeEnv, repo: Path) -> None:
    install(env)
    agent, _gate = gated(env, "uninstall")  # never opened: the task is running when it is deleted
    uid = create_task(env, "running-at-uninstall", repo, agent)
    wait_phase(env, "running-at-uninstall", {"Running"})
    assert env.daytona.sandboxes({"agenttask.io/task-uid": uid})
    # docs/install.md: delete the AgentTasks while the operator runs (its finalizer deletes the
    # sandboxes), then uninstall the release
    env.kubectl("delete", "agenttasks", "--all", "--all-namespaces", "--wait=true", "--timeout=120s")
    env.helm("uninstall", RELEASE, "--namespace", NS, "--wait", "--timeout=120s")
    assert env.kubectl_json("get", "agenttasks", "--all-namespaces")["items"] == []
    assert env.daytona.sandboxes() == [], "a sandbox outlived its task"
    assert env.daytona.stats()["sandboxes_alive"] == 0
    wait_for(lambda: not pods(env) or None, timeout=120, what="the operator Pods gone")
    # Helm keeps the CRD (crds/), so the API stays; a task created now just waits for an operator
    env.kubectl("get", "crd", "agenttasks.agenttask.io")
