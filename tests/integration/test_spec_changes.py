"""What users change on a live task: suspend/resume (the same sandbox, the workspace kept),
cancel (the record kept, the sandbox gone), and what they may not change (CEL transition
rules on the real apiserver)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from controller.devcluster import DevCluster

from ..conftest import Kubectl
from .harness import SandboxServer, agent_script, make_repo, operator_for, sandbox_server, wait_for
from .test_operator import create_task, get_task, wait_phase

RESUMABLE = """
import pathlib, time
mark = pathlib.Path("BEFORE.md")
if mark.exists():
    print("agent: resumed and found:", mark.read_text().strip(), flush=True)
    pathlib.Path("AFTER.md").write_text("after the resume\\n")
else:
    mark.write_text("written before the suspension\\n")
    print("agent: wrote BEFORE.md, working", flush=True)
    time.sleep(600)
"""
QUICK = """
print("agent: quick", flush=True)
open("QUICK.md", "w").write("quick\\n")
"""


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with sandbox_server(tmp_path / "sandboxes") as s:
        yield s


def patch_spec(kubectl: Kubectl, namespace: str, name: str, spec: dict[str, Any], *,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    return kubectl("patch", "at", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}),
                   check=check)


def status_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return ((get_task(kubectl, namespace, name) or {}).get("status") or {})


def test_suspend_and_resume_keep_the_workspace_and_the_sandbox(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    bare, url = make_repo(tmp_path)
    resumable = agent_script(tmp_path, "resumable", RESUMABLE)
    quick = agent_script(tmp_path, "quick", QUICK)
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path,
                      AGENTTASK_MAX_ACTIVE_SANDBOXES="1").start()
    try:
        create_task(kubectl, namespace, "long", {"repository": {"url": url}, "agent": {"command": resumable}})
        wait_for(lambda: "wrote BEFORE.md" in status_of(kubectl, namespace, "long").get("logTail", ""),
                 timeout=60, what="the agent's first run to write its file")
        create_task(kubectl, namespace, "other", {"repository": {"url": url}, "agent": {"command": quick}})
        assert status_of(kubectl, namespace, "other").get("phase") in (None, "Queued")  # the one slot is taken

        patch_spec(kubectl, namespace, "long", {"suspend": True})
        suspended = wait_phase(kubectl, namespace, "long", {"Suspended"}, timeout=60)
        box = suspended["status"]["sandbox"]["name"]
        wait_for(lambda: (server.get(box) or {}).get("state") == "stopped", timeout=60,
                 what="the suspended task's sandbox to be stopped")
        conds = {c["type"]: c for c in suspended["status"]["conditions"]}
        assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == ("True", "Suspended")
        assert suspended["status"]["observedGeneration"] == suspended["metadata"]["generation"]
        # its slot is free: the queued task runs meanwhile
        assert wait_phase(kubectl, namespace, "other", {"Succeeded", "Failed"}, timeout=90)["status"]["phase"] == \
            "Succeeded"

        patch_spec(kubectl, namespace, "long", {"suspend": False})
        done = wait_phase(kubectl, namespace, "long", {"Succeeded", "Failed"}, timeout=120)
    finally:
        op.stop()
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert "resumed and found: written before the suspension" in status["logTail"]
    assert status["resumes"] == 1 and status["suspendedSeconds"] > 0
    assert status["attempts"] == 1 and server.stats()["creates_by_name"].get(box) == 1  # one sandbox throughout
    pushed = subprocess.run(["git", "-C", str(bare), "show", "--stat", "--format=", status["result"]["branch"]],
                            capture_output=True, text=True, check=True).stdout
    assert "BEFORE.md" in pushed and "AFTER.md" in pushed


def test_cancel_keeps_the_record_and_deletes_the_sandbox(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str, server: SandboxServer, tmp_path: Path
) -> None:
    _, url = make_repo(tmp_path)
    resumable = agent_script(tmp_path, "resumable", RESUMABLE)
    op = operator_for(controlplane.kubeconfig, server, namespace, tmp_path).start()
    try:
        create_task(kubectl, namespace, "doomed", {"repository": {"url": url}, "agent": {"command": resumable}})
        wait_for(lambda: "wrote BEFORE.md" in status_of(kubectl, namespace, "doomed").get("logTail", ""),
                 timeout=60, what="the agent to run")
        box = status_of(kubectl, namespace, "doomed")["sandbox"]["name"]
        patch_spec(kubectl, namespace, "doomed", {"cancel": True})
        failed = wait_phase(kubectl, namespace, "doomed", {"Failed", "Succeeded"}, timeout=60)
        wait_for(lambda: server.get(box) is None, timeout=60, what="the cancelled task's sandbox to be deleted")
        undo = patch_spec(kubectl, namespace, "doomed", {"cancel": False}, check=False)
    finally:
        op.stop()
    assert failed["status"]["phase"] == "Failed" and failed["status"]["reason"] == "Cancelled"
    assert "wrote BEFORE.md" in failed["status"]["logTail"]  # the record and the logs stay
    assert get_task(kubectl, namespace, "doomed") is not None
    assert undo.returncode != 0 and "spec.cancel cannot be unset" in undo.stderr


def test_the_spec_is_frozen_once_admitted_except_what_may_change(
    controlplane: DevCluster, crd: Path, kubectl: Kubectl, namespace: str
) -> None:
    create_task(kubectl, namespace, "frozen", {"repository": {"url": "https://example.test/r.git"},
                                               "prompt": "first", "issue": {"number": 1}})
    assert patch_spec(kubectl, namespace, "frozen", {"prompt": "edited before admission"}).returncode == 0
    kubectl("patch", "at", "frozen", "-n", namespace, "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": {"phase": "Running", "startTime": "2026-12-01T00:00:00Z"}}))
    for change, field in [({"prompt": "edited after"}, "spec.prompt"), ({"issue": {"number": 2}}, "spec.issue"),
                          ({"repository": {"url": "https://example.test/other.git"}}, "spec.repository"),
                          ({"agent": {"command": ["sh"]}}, "spec.agent"),
                          ({"sandbox": {"snapshot": "x"}}, "spec.sandbox")]:
        refused = patch_spec(kubectl, namespace, "frozen", change, check=False)
        assert refused.returncode != 0, change
        assert f"{field}: Forbidden: {field} cannot change once the task was admitted" in refused.stderr
    allowed = patch_spec(kubectl, namespace, "frozen", {"suspend": True, "activeDeadlineSeconds": 120,
                                                        "ttlSecondsAfterFinished": 60, "backoffLimit": 5})
    assert allowed.returncode == 0
