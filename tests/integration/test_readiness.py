"""`/readyz` of the real operator process means "kopf reaches the API": unready (with the reason)
while the apiserver cannot be reached through kopf's login, ready once it can."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.devcluster import DevCluster

from ..conftest import Kubectl
from ..fakes.tcpforward import TcpForwarder
from .harness import Operator, SandboxServer, free_port, sandbox_server, wait_for


@pytest.fixture(scope="module")
def daytona(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path_factory.mktemp("sandboxes")) as server:
        yield server


def readyz(op: Operator) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.http_port}/readyz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ready_only_once_kopf_reaches_the_api(controlplane: DevCluster, crd: Path, daytona: SandboxServer,
                                              kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    # the operator's kubeconfig points at a port where the apiserver appears only later
    port = free_port()
    config = json.loads(controlplane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    op = Operator(kubeconfig=kubeconfig, server=daytona, namespace=namespace, log_path=tmp_path / "operator.log",
                  instance_id=f"it-{namespace}")
    op.start()  # /healthz answers: the process is alive
    try:
        status, body = wait_for(lambda: (r := readyz(op)) and "unreachable" in r[1]["reason"] and r,
                                timeout=60, what="/readyz reporting the unreachable API")
        assert status == 503 and body["ready"] is False
        assert f"https://127.0.0.1:{port}" in body["reason"]
        with TcpForwarder(listen_port=port, target=("127.0.0.1", controlplane.apiserver_port)):
            status, body = wait_for(lambda: (r := readyz(op))[0] == 200 and r, timeout=90, what="/readyz 200")
            assert body == {"ready": True, "reason": "watching"}
            # and kopf really is watching through that connection: it reconciles a task
            task = {"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": "t"},
                    "spec": {"repository": {"url": "file:///nonexistent.git"}, "issue": {"number": 1, "title": "x"},
                             "agent": {"command": ["true"]}}}
            kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(task))
            wait_for(lambda: kubectl("get", "at", "t", "-n", namespace, "-o", "jsonpath={.status.phase}").stdout,
                     timeout=60, what="the operator to set a phase")
            op.stop()
    finally:
        op.stop()
