"""Shared fixtures: the real local control plane (session-scoped) and a namespace per test.

The control plane is `controller.devcluster.DevCluster`: real etcd + kube-apiserver processes
on loopback, built once into the user's cache. It starts only when a test asks for it, and the
session fails if any of its processes outlives the session.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.devcluster import DevCluster
from controller.devcluster.cluster import _alive

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "agenttask.yaml"
QUOTA_CRD = ROOT / "crds" / "agenttaskquota.yaml"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set RUN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    cluster = DevCluster(state_dir=tmp_path_factory.mktemp("controlplane"), owned=True)
    started = time.monotonic()
    cluster.start()
    print(f"\ncontrol plane ready in {time.monotonic() - started:.1f}s at {cluster.server}")
    pids = list(cluster.pids().values())
    try:
        yield cluster
        _scan_for_secrets(cluster)
    finally:
        cluster.stop()
        left = [p for p in pids if _alive(p)]
        assert not left, f"control-plane processes still running after the session: {left}"


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def kubectl(controlplane: DevCluster) -> Kubectl:
    def run(*args: str, check: bool = True, input: str | None = None,
            kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(controlplane.kubectl), f"--kubeconfig={kubeconfig or controlplane.kubeconfig}", *args],
            capture_output=True, text=True, input=input, timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    return run


@pytest.fixture(scope="session")
def crd(controlplane: DevCluster, kubectl: Kubectl) -> Path:
    kubectl("apply", "--server-side", "-f", str(CRD), "-f", str(QUOTA_CRD))
    controlplane.wait_established("agenttasks.agenttask.io", "agenttaskquotas.agenttask.io")
    return CRD


@pytest.fixture
def namespace(kubectl: Kubectl) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    return name


def _scan_for_secrets(cluster: DevCluster) -> None:
    """No secret value a test gave the operator appears in anything it emitted all session:
    its logs, its final metrics, and every event and AgentTask status left in the cluster."""
    from .integration.harness import EMITTED, SECRETS

    if not SECRETS:
        return
    texts = [path.read_text(errors="replace") for path in EMITTED if path.exists()]
    kubectl = [str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}"]
    for kind in ("events", "agenttasks"):
        done = subprocess.run([*kubectl, "get", kind, "-A", "-o", "json"], capture_output=True, text=True,
                              timeout=120)
        if done.returncode == 0:
            texts.append(done.stdout)
    leaks = sorted({secret for secret in SECRETS for text in texts if secret in text})
    assert not leaks, f"{len(leaks)} secret value(s) appeared in operator output during the session"
