"""Chaos and bad input against the real apiserver + operator + embedded Daytona server.

Short scenarios run in CI; the long one (kill -9 twenty times over 200 tasks) is marked
`slow` (RUN_SLOW=1).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.devcluster import DevCluster

from ..conftest import Kubectl
from .harness import SandboxServer, agent_script, make_repo, operator_for, sandbox_server, wait_for
from .test_operator import get_task

TERMINAL = {"Succeeded", "Failed"}
SLEEPY_AGENT = """
import sys, time
time.sleep(float(sys.argv[1]))
print("slept", flush=True)
"""


def _create_many(kubectl: Kubectl, namespace: str, specs: dict[str, dict[str, Any]]) -> None:
    docs = [json.dumps({"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": n},
                        "spec": spec}) for n, spec in specs.items()]
    for i in range(0, len(docs), 50):
        kubectl("create", "-n", namespace, "-f", "-", input="\n".join(docs[i:i + 50]))


def _all(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(kubectl("get", "at", "-n", namespace, "-o", "json").stdout)["items"]
    return items


def _wait_all_terminal(kubectl: Kubectl, namespace: str, count: int, timeout: float) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        items = _all(kubectl, namespace)
        done = [t for t in items if (t.get("status") or {}).get("phase") in TERMINAL]
        return items if len(done) == count == len(items) else None
    return wait_for(check, timeout=timeout, what=f"{count} tasks terminal", interval=1)


def _wait_no_leaks(server: SandboxServer) -> None:
    """Every sandbox deleted, while the operator still runs: a terminal phase is written before
    the sandbox's delete, so stopping the operator right after it would leave the delete to the
    next operator start (as it does in production), which these tests do not wait for."""
    wait_for(lambda: server.stats()["sandboxes_alive"] == 0, timeout=60, what="no sandbox left alive")


def _assert_no_duplicates(server: SandboxServer, tasks: list[dict[str, Any]]) -> None:
    stats = server.stats()
    for task in tasks:
        uid = task["metadata"]["uid"]
        for attempt in range(1, int(task["status"].get("attempts") or 1) + 1):
            assert stats["creates_by_name"].get(f"at-{uid}-{attempt}", 0) <= 1, (task["metadata"]["name"], attempt)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path / "sb") as srv:
        yield srv


def test_apiserver_restart_mid_run(controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str,
                                   server: SandboxServer, tmp_path: Path) -> None:
    _, url = make_repo(tmp_path)
    agent = agent_script(tmp_path, "sleepy", SLEEPY_AGENT)
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
    try:
        _create_many(kubectl, namespace, {f"restart-{i}": {"repository": {"url": url},
                                                           "agent": {"command": [*agent, "8"]}} for i in range(8)})
        wait_for(lambda: sum((t.get("status") or {}).get("phase") == "Running" for t in _all(kubectl, namespace)) >= 4,
                 timeout=60, what="tasks running")
        controlplane.restart_apiserver()
        tasks = _wait_all_terminal(kubectl, namespace, 8, timeout=120)
        assert op.process is not None and op.process.poll() is None, "the operator survived the restart"
        _wait_no_leaks(server)
    finally:
        op.stop()
    assert all(t["status"]["phase"] == "Succeeded" for t in tasks), [t["status"].get("reason") for t in tasks]
    _assert_no_duplicates(server, tasks)


AGENT_SECONDS = 4


def when(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_daytona_fault_storm_ends_truthfully(controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str,
                                             server: SandboxServer, tmp_path: Path) -> None:
    _, url = make_repo(tmp_path)
    agent = agent_script(tmp_path, "sleepy", SLEEPY_AGENT)
    storm = {"errors": {"*": {"rate": 0.2, "status": 503}}, "rate_limit": {"rate": 0.1, "retry_after": 1}, "seed": 3}
    server.set_faults(storm)
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
    lost: dict[str, tuple[float, float | None, int]] = {}  # name -> (when lost, its runningTime, its attempt)
    stop = threading.Event()

    def weather() -> None:
        rng = random.Random(5)
        while not stop.wait(3):
            server.set_faults({**storm, "latency": {"*": 2.0}})  # a 2 s latency spike
            stop.wait(2)
            server.set_faults(storm)
            running = [t for t in _all(kubectl, namespace) if (t.get("status") or {}).get("phase") == "Running"]
            if running and len(lost) < 4:
                victim = rng.choice(running)
                name = victim["status"]["sandbox"]["name"]
                server.set_faults({**storm, "lose": [name]})
                started = victim["status"].get("runningTime")
                lost[victim["metadata"]["name"]] = (time.time(), when(started) if started else None,
                                                    int(victim["status"].get("attempts") or 1))

    thread = threading.Thread(target=weather, daemon=True)
    try:
        _create_many(kubectl, namespace, {f"storm-{i}": {"repository": {"url": url}, "backoffLimit": 1 + i % 2,
                                                         "agent": {"command": [*agent, str(AGENT_SECONDS)]}}
                                          for i in range(12)})
        thread.start()
        tasks = _wait_all_terminal(kubectl, namespace, 12, timeout=300)
        stop.set()
        thread.join(timeout=10)
        server.set_faults({})
        _wait_no_leaks(server)
    finally:
        stop.set()
        thread.join(timeout=10)
        server.set_faults({})
        op.stop()
    assert lost, "the storm lost no sandbox; the scenario did not exercise losses"
    for task in tasks:
        status, name = task["status"], task["metadata"]["name"]
        if status["phase"] == "Succeeded":
            assert status["reason"] in ("AgentSucceeded", "NoChanges")
        else:  # the only truthful failure here is running out of attempts after losses
            assert status["reason"] == "BackoffLimitExceeded", (name, status["reason"], status.get("message"))
            assert name in lost
        if name in lost and status["phase"] == "Succeeded":
            # a sandbox lost while its agent still slept (its 4 s from the start are not over) cost
            # that attempt; one lost later may have had its exit and result read already
            at, started, attempt = lost[name]
            if started is not None and at < started + AGENT_SECONDS:
                assert status["attempts"] > attempt, (name, status)
    _assert_no_duplicates(server, tasks)


# ------------------------------------------------------------------------- fuzzing

_safe_commands = st.sampled_from([["python3", "-c", "print('ok')"], ["false"], ["no-such-agent-binary-xyz"],
                                  ["python3", "-c", "import sys; sys.exit(7)"]])
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_maybe_int = st.one_of(st.integers(min_value=-5, max_value=2_000_000), _text, st.none())


_env_var = st.fixed_dictionaries({"name": st.sampled_from(["A", "1B", "AGENTTASK_X", "OK_VAR"])},
                                 optional={"value": _text})


def _specs(repo_url: str) -> st.SearchStrategy[dict[str, Any]]:
    urls = st.sampled_from([repo_url, "https://127.0.0.1:9/none.git", "http://plain.example/x.git",
                            "file:///nonexistent/repo.git", "ftp://x", ""])
    return st.fixed_dictionaries({"repository": st.fixed_dictionaries({"url": urls}, optional={
        "baseBranch": st.sampled_from(["main", "does-not-exist", "--evil", "a..b", ""]),
        "credentialsSecretRef": st.fixed_dictionaries({"name": st.sampled_from(["missing", ""])})})}, optional={
        "issue": st.fixed_dictionaries({"number": _maybe_int}, optional={"title": _text, "body": _text}),
        "prompt": _text,
        "agent": st.fixed_dictionaries({}, optional={
            "command": _safe_commands,
            "env": st.lists(_env_var, max_size=2, unique_by=lambda e: e["name"]),
            "workingDir": st.sampled_from(["/workspace/repo", "relative", "/tmp/../etc"])}),
        "sandbox": st.fixed_dictionaries({}, optional={
            "snapshot": st.sampled_from(["daytona-small", "no-such-snapshot"]), "image": st.just("python:3.12"),
            "keepOnFailure": st.booleans(), "network": st.fixed_dictionaries({"allowList": st.lists(
                st.sampled_from(["10.0.0.0/8", "nope"]), max_size=2)})}),
        "activeDeadlineSeconds": _maybe_int,
        "backoffLimit": _maybe_int,
        "ttlSecondsAfterFinished": st.one_of(st.none(), st.integers(min_value=-1, max_value=100)),
        "suspend": st.booleans(),
        "pullRequest": st.fixed_dictionaries({}, optional={"branchPrefix": st.sampled_from(["ok/", "bad prefix;"])}),
    })


def test_fuzzed_specs_are_rejected_or_explained(controlplane: DevCluster, crd: Path, kubectl: Kubectl,
                                                namespace: str, server: SandboxServer, tmp_path: Path) -> None:
    _, url = make_repo(tmp_path)
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
    accepted: list[str] = []
    counter = iter(range(10_000))

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(spec=_specs(url))
    def submit(spec: dict[str, Any]) -> None:
        name = f"fuzz-{next(counter)}"
        doc = {"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": name}, "spec": spec}
        done = kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(doc), check=False)
        if done.returncode == 0:
            accepted.append(name)
        else:  # a readable validation error from the apiserver, never a server error
            assert "is invalid" in done.stderr or "unknown field" in done.stderr or "cannot" in done.stderr, (
                spec, done.stderr)
            assert "Internal error" not in done.stderr

    try:
        submit()
        assert accepted, "hypothesis produced no valid spec"

        def explained(name: str) -> bool:
            task = get_task(kubectl, namespace, name)
            if task is None:  # deleted by a ttlSecondsAfterFinished of 0
                return True
            status = task.get("status") or {}
            conds = status.get("conditions") or []
            if task["spec"].get("suspend"):
                return status.get("phase") == "Pending" and any(c["reason"] == "Suspended" for c in conds)
            return status.get("phase") in TERMINAL and bool(conds) and bool(status.get("reason"))

        try:
            wait_for(lambda: all(explained(n) for n in accepted), timeout=180, what="every accepted task explained",
                     interval=1)
        except AssertionError:
            left = {n: (get_task(kubectl, namespace, n) or {}).get("status") for n in accepted
                    if not explained(n)}
            raise AssertionError(f"not explained: {json.dumps(left, indent=1, default=str)[:6000]}") from None
        assert op.process is not None and op.process.poll() is None
        assert '"unexpected error' not in op.logs()
    finally:
        op.stop()


# ------------------------------------------------------------------------ long run


@pytest.mark.slow
def test_kill_dash_nine_twenty_times_over_200_tasks(controlplane: DevCluster, crd: Path, kubectl: Kubectl,
                                                    namespace: str, server: SandboxServer, tmp_path: Path) -> None:
    _, url = make_repo(tmp_path)
    agent = agent_script(tmp_path, "sleepy", SLEEPY_AGENT)
    server.set_faults({"latency": {"create": 0.09, "*": 0.02}})
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path, AGENTTASK_MAX_ACTIVE_SANDBOXES="25").start()
    rng = random.Random(20)
    try:
        _create_many(kubectl, namespace, {f"k9-{i:03d}": {"repository": {"url": url},
                                                         "agent": {"command": [*agent, str(rng.uniform(0.5, 3))]}}
                                          for i in range(200)})
        for _ in range(20):
            time.sleep(rng.uniform(1.0, 5.0))
            op.kill()
            op.start()
        tasks = _wait_all_terminal(kubectl, namespace, 200, timeout=900)
        _wait_no_leaks(server)
    finally:
        op.stop()
    assert all(t["status"]["phase"] == "Succeeded" for t in tasks), {
        t["metadata"]["name"]: t["status"].get("reason") for t in tasks if t["status"]["phase"] != "Succeeded"}
    _assert_no_duplicates(server, tasks)
    assert server.stats()["max_alive"] <= 25
