"""The real-node tier (marker `node`): one dev-cluster node per session (`NodeCluster`), the
operator image built by `agenttask images build` and imported into its containerd, and the
embedded sandbox server running inside the node's network namespace, where the operator Pod
reaches it at the node address. Host-side, tests use kubectl and helm through the node's
loopback bridge, and the sandbox server's admin API through another.

When the session ends the node is stopped and the session fails if anything is left behind
(`leftovers.py`). Needs root and the packages of ./hack/node-deps.sh.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.devcluster.node import NodeCluster, missing_tools, read_node_state
from controller.images.build import ensure_image

from ..chart.conftest import tool_path
from ..integration.harness import SandboxServer, register_secret
from .leftovers import leftovers, snapshot

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "agenttask-operator"
SANDBOX_PORT = 8901

Run = Callable[..., subprocess.CompletedProcess[str]]


def require_node_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.fail("the node tier needs root (network namespaces, mounts, cgroups), as kubelet does")
    if missing := missing_tools():
        pytest.fail(f"the node tier needs {', '.join(missing)}: run ./hack/node-deps.sh")


@dataclass(repr=False)  # no tokens in assertion messages
class NodeEnv:
    node: NodeCluster
    operator_image: str
    daytona: SandboxServer
    daytona_url: str  # as Pods reach it
    helm_bin: Path
    work: Path

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.node.kubectl), f"--kubeconfig={self.node.kubeconfig}", *args],
                              capture_output=True, text=True, input=input, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def kubectl_json(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.kubectl(*args, "-o", "json").stdout)
        return data

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.helm_bin), *args, f"--kubeconfig={self.node.kubeconfig}"],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="session")
def node_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeEnv]:
    require_node_prerequisites()
    helm = tool_path("helm")
    work = tmp_path_factory.mktemp("node")
    started = time.monotonic()
    operator = ensure_image("operator", log=print)
    how = f"built in {operator.seconds:.0f}s" if operator.built else "cached"
    print(f"\noperator image {operator.ref}: {operator.size / 1e6:.0f} MB ({how})")
    before = snapshot()
    node = NodeCluster(state_dir=work / "state", owned=True, images=(operator.ref,))
    node.start(log=print)
    recorded = read_node_state(node.state_dir)
    print(f"node ready {time.monotonic() - started:.0f}s after the session asked for it")
    try:
        key = register_secret(secrets.token_hex(16))
        proc = node.spawn("sandbox-server", [
            sys.executable, "-m", "controller.cli", "sandbox-server", "--host", node.node_ip,
            "--port", str(SANDBOX_PORT), "--root", str(work / "sandboxes")], env={"DAYTONA_API_KEY": key})
        host_port = node.bridge(SANDBOX_PORT, name="sandbox-bridge")
        daytona = SandboxServer(proc, f"http://127.0.0.1:{host_port}/api", key, work / "sandboxes")  # type: ignore[arg-type]
        _wait_http(lambda: daytona.stats(), timeout=60, what="the sandbox server inside the node")
        yield NodeEnv(node=node, operator_image=operator.ref, daytona=daytona,
                      daytona_url=f"http://{node.node_ip}:{SANDBOX_PORT}/api", helm_bin=helm, work=work)
    finally:
        recorded = read_node_state(node.state_dir) or recorded
        stopping = time.monotonic()
        node.stop()
        print(f"\nnode stopped in {time.monotonic() - stopping:.0f}s")
        left = leftovers(node.state_dir, recorded, before)
        assert not left, f"the node left things behind: {left}"


def _wait_http(call: Callable[[], Any], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            call()
            return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last}")
