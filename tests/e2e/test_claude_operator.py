"""The default agent end to end: an AgentTask with no agent command runs the real Claude Code
(pinned, from npm) through the real runner in the embedded server's sandbox, driven by the
operator on the real apiserver; the model is the project's fake Messages API.

What a user sees is asserted: the fix pushed, the test run in the logs, `status.usage` holding
exactly the tokens the model reported and Claude Code's cost estimate, the failure reason of a
bad key (fast), and a permission denial in the status.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.devcluster import DevCluster
from tests.fakes.anthropic import FakeAnthropic, say, use
from tests.runner.claude_support import API_KEY, RUN_TESTS, TESTS
from tests.runner.conftest import claude_bin as _claude_bin

from ..conftest import Kubectl
from ..integration.harness import (
    Operator,
    SandboxServer,
    make_repo,
    operator_for,
    register_secret,
    sandbox_server,
    wait_for,
)
from ..integration.test_operator import create_task, get_task, wait_phase
from .githubflow import LoopThread

APP = "def save():\n    raise RuntimeError('boom')\n"
FIX = "sed -i \"s/    raise RuntimeError('boom')/    return True/\" src/app.py"
claude_bin = _claude_bin


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path / "sandboxes") as s:
        yield s


@pytest.fixture
def operator(controlplane: DevCluster, crd: Path, server: SandboxServer, namespace: str,
             tmp_path: Path) -> Iterator[Operator]:
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
    yield op
    op.stop()


def fake(loop: LoopThread, script: list[Any]) -> FakeAnthropic:
    api = FakeAnthropic(script, api_key=API_KEY)
    loop.run(api.__aenter__())
    return api


def spec(url: str, api: FakeAnthropic, claude: Path, **agent: Any) -> dict[str, Any]:
    return {"repository": {"url": url}, "issue": {"number": 42, "title": "save() raises"}, "agent": {
        "env": [{"name": "ANTHROPIC_BASE_URL", "value": api.url},
                {"name": "PATH", "value": f"{claude.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
                {"name": "ANTHROPIC_API_KEY", "valueFrom": {"secretKeyRef": {"name": "model-key", "key": "key"}}}],
        **agent}}


def model_key(kubectl: Kubectl, namespace: str, value: str) -> None:
    kubectl("create", "secret", "generic", "model-key", "-n", namespace, f"--from-literal=key={value}")


def test_claude_code_fixes_runs_the_tests_and_reports_its_usage(
    operator: Operator, kubectl: Kubectl, namespace: str, tmp_path: Path, loop: LoopThread, claude_bin: Path,
) -> None:
    register_secret(API_KEY)
    model_key(kubectl, namespace, API_KEY)
    bare, url = make_repo(tmp_path, files={**TESTS, "src/app.py": APP, "README.md": "# app\n"})
    api = fake(loop, [use("Bash", command=FIX, description="Fix save()"),
                      use("Bash", command=RUN_TESTS, description="Run the tests"),
                      say("Fixed save(); the tests pass.")])
    try:
        create_task(kubectl, namespace, "claude", spec(url, api, claude_bin, maxTurns=10, maxCostUsd=5))
        task = wait_phase(kubectl, namespace, "claude", {"Succeeded", "Failed"}, timeout=180)
    finally:
        loop.run(api.__aexit__(None, None, None))
    status = task["status"]
    assert status["phase"] == "Succeeded", status
    assert "Ran 1 test" in "\n".join(r.text for r in api.tool_results())  # the Bash tool ran the tests
    assert "Run the tests" in status["logTail"] or "unittest" in status["logTail"]
    total = api.usage_total()
    usage = status["usage"]
    assert usage["tokens"] == {"inputTokens": total.input_tokens, "outputTokens": total.output_tokens,
                               "cacheReadInputTokens": total.cache_read_input_tokens,
                               "cacheCreationInputTokens": total.cache_creation_input_tokens}
    assert usage["costUsd"] == pytest.approx(status["result"]["agent"]["costUsd"]) and usage["costUsd"] > 0
    assert usage["turns"] == status["result"]["agent"]["numTurns"] >= 3
    assert usage["sandboxSeconds"] > 0 and usage["attempts"][0]["attempt"] == 1
    fixed = subprocess.run(["git", "-C", str(bare), "show", f"{status['result']['branch']}:src/app.py"],
                           capture_output=True, text=True, check=True).stdout
    assert "return True" in fixed
    wide = kubectl("get", "at", "claude", "-n", namespace, "-o", "wide").stdout
    assert "COST" in wide.splitlines()[0] and f"{usage['costUsd']}"[:4] in wide


def test_a_bad_model_key_fails_fast_with_the_auth_reason(
    operator: Operator, kubectl: Kubectl, namespace: str, tmp_path: Path, loop: LoopThread, claude_bin: Path,
) -> None:
    wrong = register_secret("sk-ant-api03-wrong-key-0000000000000000")
    model_key(kubectl, namespace, wrong)
    _, url = make_repo(tmp_path, files={**TESTS, "src/app.py": APP})
    api = fake(loop, [say("never reached")])
    try:
        create_task(kubectl, namespace, "badkey", spec(url, api, claude_bin))
        running = wait_for(lambda: (t := get_task(kubectl, namespace, "badkey")) and (t.get("status") or {}).get(
            "runningTime") and t, timeout=90, what="the agent to start")
        failed = wait_phase(kubectl, namespace, "badkey", {"Failed", "Succeeded"}, timeout=90)
    finally:
        loop.run(api.__aexit__(None, None, None))
    assert failed["status"]["phase"] == "Failed"
    assert failed["status"]["reason"] == "ModelAuthFailed", failed["status"]
    started = dt.datetime.fromisoformat(running["status"]["runningTime"])
    ended = dt.datetime.fromisoformat(failed["status"]["completionTime"])
    assert (ended - started).total_seconds() < 30


def test_a_permission_denial_is_visible_in_the_status(
    operator: Operator, kubectl: Kubectl, namespace: str, tmp_path: Path, loop: LoopThread, claude_bin: Path,
) -> None:
    register_secret(API_KEY)
    model_key(kubectl, namespace, API_KEY)
    _, url = make_repo(tmp_path, files={**TESTS, "src/app.py": APP})
    api = fake(loop, [use("Bash", command=RUN_TESTS, description="Run the tests"),
                      say("I was not allowed to run the tests.")])
    try:
        create_task(kubectl, namespace, "denied", spec(url, api, claude_bin, allowedTools=["Read", "Edit"]))
        task = wait_phase(kubectl, namespace, "denied", {"Failed", "Succeeded"}, timeout=180)
    finally:
        loop.run(api.__aexit__(None, None, None))
    denials = task["status"]["result"]["agent"]["permissionDenials"]
    assert [d["tool"] for d in denials] == ["Bash"], task["status"]
    assert "unittest" in denials[0]["input"]


def test_a_quotas_per_task_cost_cap_stops_the_agent_mid_run(
    operator: Operator, kubectl: Kubectl, namespace: str, tmp_path: Path, loop: LoopThread, claude_bin: Path,
) -> None:
    import json

    from tests.fakes.anthropic import Usage

    register_secret(API_KEY)
    model_key(kubectl, namespace, API_KEY)
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTaskQuota", "metadata": {"name": "cheap"},
        "spec": {"maxCostUsdPerTask": 0.05}}))
    _, url = make_repo(tmp_path, files={**TESTS, "src/app.py": APP})
    expensive = Usage(input_tokens=20_000, output_tokens=500)  # ~ $0.09 a turn at list prices
    api = fake(loop, [use("Bash", command="echo one", description="one", usage=expensive),
                      use("Bash", command="echo two", description="two", usage=expensive),
                      use("Bash", command="echo three", description="three", usage=expensive),
                      say("done", usage=expensive)])
    try:
        create_task(kubectl, namespace, "capped", spec(url, api, claude_bin))
        task = wait_phase(kubectl, namespace, "capped", {"Failed", "Succeeded"}, timeout=180)
    finally:
        loop.run(api.__aexit__(None, None, None))
    status = task["status"]
    assert status["phase"] == "Failed" and status["reason"] == "LimitReached", status
    assert len(api.message_requests()) < 4  # stopped before the script ran out
    assert status["usage"]["costUsd"] > 0.05 * 0.5
