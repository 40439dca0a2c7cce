"""What health tooling makes of AgentTasks the operator ran (docs/health.md, every row of its table):
kstatus with the real `sigs.k8s.io/cli-utils` library (hack/kstatus, built once into the tools
cache), the docs' Argo CD health check in a real Lua 5.1 interpreter (Argo CD's dialect), and
`kubectl wait` with the real kubectl. The objects are read from the apiserver, never made up."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.devcluster import DevCluster

from ..chart.conftest import tool_path
from ..conftest import Kubectl
from .harness import Operator, SandboxServer, agent_script, make_repo, operator_for, sandbox_server, wait_for
from .test_operator import CHANGE_AGENT, FAIL_AGENT, SLOW_AGENT, create_task, get_task, wait_phase

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "health.md"
LUA_HARNESS = """
local cjson = require "cjson"
obj = cjson.decode(io.read("*a"))
local check = assert(loadstring(io.open(arg[1]):read("*a")))
local hs = check()
io.write(cjson.encode({status = hs.status, message = hs.message}))
"""


def argocd_check() -> str:
    """The Lua health check exactly as docs/health.md shows it."""
    text = DOC.read_text()
    block = re.search(r"resource\.customizations\.health\.agenttask\.io_AgentTask: \|\n(.*?)\n```", text, re.S)
    assert block, "the Argo CD health check is missing from docs/health.md"
    return textwrap.dedent(block.group(1))


@pytest.fixture(scope="module")
def daytona(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path_factory.mktemp("health-sandboxes")) as server:
        yield server


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl) -> str:
    name = f"health-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    return name


@pytest.fixture(scope="module")
def operator(controlplane: DevCluster, crd: Path, daytona: SandboxServer, ns: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = operator_for(controlplane.kubeconfig, daytona, ns, tmp_path_factory.mktemp("health-operator"))
    op.start()
    try:
        yield op
    finally:
        op.stop()


class Verdicts:
    def __init__(self, tmp: Path):
        self.kstatus = tool_path("kstatus")
        self.lua = shutil.which("lua5.1")
        assert self.lua, "lua5.1 missing: run hack/system-deps.sh (Debian packages lua5.1, lua-cjson)"
        self.check = tmp / "agenttask_health.lua"
        self.check.write_text(argocd_check())
        self.harness = tmp / "harness.lua"
        self.harness.write_text(LUA_HARNESS)

    def of(self, obj: dict[str, Any]) -> tuple[str, str]:
        """(kstatus status, Argo CD health status) of one object."""
        ks = subprocess.run([str(self.kstatus)], input=json.dumps(obj), capture_output=True, text=True, timeout=30)
        assert ks.returncode == 0, ks.stderr
        argo = subprocess.run([str(self.lua), str(self.harness), str(self.check)], input=json.dumps(obj),
                              capture_output=True, text=True, timeout=30)
        assert argo.returncode == 0, argo.stderr
        health = json.loads(argo.stdout)
        assert health["message"], "the check always says why"
        return json.loads(ks.stdout)["status"], health["status"]


def test_kstatus_argocd_and_kubectl_wait_agree_with_the_phase(
    operator: Operator, controlplane: DevCluster, kubectl: Kubectl, ns: str, tmp_path: Path
) -> None:
    verdicts = Verdicts(tmp_path)
    _, url = make_repo(tmp_path)

    def task(name: str, script: str, *args: str, **spec: Any) -> None:
        create_task(kubectl, ns, name, {"repository": {"url": url},
                                        "agent": {"command": [*agent_script(tmp_path, name, script), *args]}, **spec})

    task("held", CHANGE_AGENT, suspend=True, issue={"number": 2, "title": "held"})
    task("ok", CHANGE_AGENT, issue={"number": 1, "title": "health"})
    task("broken", FAIL_AGENT)
    task("long", SLOW_AGENT, "300")
    kube = [str(controlplane.kubectl), f"--kubeconfig={controlplane.kubeconfig}", "-n", ns, "wait"]

    def wait(*args: str, timeout: str = "120s") -> subprocess.Popen[str]:
        return subprocess.Popen([*kube, *args, f"--timeout={timeout}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    # started before the tasks finish, as a pipeline would
    ready = wait("--for=condition=Ready", "at/ok")
    succeeded = wait("--for=jsonpath={.status.phase}=Succeeded", "at/ok")
    stalled = wait("--for=condition=Stalled", "at/broken")
    finished = wait("--for=condition=Reconciling=false", "at/broken")
    for proc in (ready, succeeded, stalled, finished):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, (proc.args, out, err)
        assert "condition met" in out, out

    ok = wait_phase(kubectl, ns, "ok", {"Succeeded"})
    broken = wait_phase(kubectl, ns, "broken", {"Failed"})
    running = wait_phase(kubectl, ns, "long", {"Running"}, timeout=90)
    held = wait_phase(kubectl, ns, "held", {"Pending"})
    assert verdicts.of(ok) == ("Current", "Healthy")
    assert verdicts.of(broken) == ("Failed", "Degraded")
    assert verdicts.of(running) == ("InProgress", "Progressing")
    assert verdicts.of(held) == ("InProgress", "Suspended")

    # a failed task never becomes Ready: the wait times out with a non-zero exit
    never = wait("--for=condition=Ready", "at/broken", timeout="3s")
    out, err = never.communicate(timeout=60)
    assert never.returncode != 0 and "timed out" in err, (out, err)

    kubectl("patch", "at", "long", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    suspended = wait_phase(kubectl, ns, "long", {"Suspended"}, timeout=60)
    assert verdicts.of(suspended) == ("InProgress", "Suspended")
    kubectl("patch", "at", "long", "-n", ns, "--type=merge", "-p", '{"spec":{"cancel":true}}')
    cancelled = wait_phase(kubectl, ns, "long", {"Failed"}, timeout=60)
    assert cancelled["status"]["reason"] == "Cancelled"
    assert verdicts.of(cancelled) == ("Failed", "Degraded")

    # a spec change the operator has not observed yet reads as in progress
    unobserved = json.loads(json.dumps(running))
    unobserved["metadata"]["generation"] = int(running["metadata"]["generation"]) + 1
    assert verdicts.of(unobserved) == ("InProgress", "Progressing")
    final = wait_for(lambda: get_task(kubectl, ns, "held"), timeout=10, what="held")
    assert final["status"]["phase"] == "Pending"


def fresh_task(kubectl: Kubectl, tmp_path: Path) -> dict[str, Any]:
    """An AgentTask as a GitOps tool sees it right after applying it: no operator watches its namespace."""
    unwatched = f"unwatched-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", unwatched)
    create_task(kubectl, unwatched, "fresh", {"repository": {"url": "https://example.invalid/r.git"}})
    task = get_task(kubectl, unwatched, "fresh")
    # nothing wrote a status: it reads as the schema's default, which says "not observed yet"
    assert task is not None and task.get("status") == {"observedGeneration": 0}, task.get("status")
    return task


def test_argocd_says_progressing_before_the_operator_wrote_a_status(
    crd: Path, kubectl: Kubectl, tmp_path: Path
) -> None:
    assert Verdicts(tmp_path).of(fresh_task(kubectl, tmp_path))[1] == "Progressing"


def test_kstatus_says_in_progress_before_the_operator_wrote_a_status(
    crd: Path, kubectl: Kubectl, tmp_path: Path
) -> None:
    assert Verdicts(tmp_path).of(fresh_task(kubectl, tmp_path))[0] == "InProgress"
