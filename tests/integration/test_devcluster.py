"""`agenttask dev-cluster up/down` from the command line, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from controller.devcluster.cluster import _alive, read_state

from ..conftest import ROOT


def _agenttask(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )


def test_up_prints_kubeconfig_leaves_it_running_and_down_stops_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = _agenttask("dev-cluster", "up", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr
    lines = [line for line in up.stdout.splitlines() if line.startswith("KUBECONFIG=")]
    assert len(lines) == 1
    kubeconfig = Path(lines[0].removeprefix("KUBECONFIG="))
    assert kubeconfig.is_file()
    pids = read_state(state)["pids"]
    assert isinstance(pids, dict)
    assert set(pids) == {"etcd", "kube-apiserver"}
    try:
        # the cluster outlived the `up` process and serves requests with that kubeconfig
        kubectl = Path(str(read_state(state)["binaries"])) / "kubectl"
        got = subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", "get", "ns", "default", "-o", "name"],
                             capture_output=True, text=True, timeout=60)
        assert got.stdout.strip() == "namespace/default", got.stderr
        again = _agenttask("dev-cluster", "up", "--state-dir", str(state))
        assert again.returncode == 1
        assert "already running" in again.stderr
    finally:
        down = _agenttask("dev-cluster", "down", "--state-dir", str(state))
    assert down.returncode == 0
    assert "stopped the dev cluster" in down.stdout
    assert not any(_alive(int(p)) for p in pids.values())
    assert _agenttask("dev-cluster", "down", "--state-dir", str(state)).stdout.startswith("no dev cluster")


def test_build_is_cached_and_reports_its_directory() -> None:
    done = _agenttask("dev-cluster", "build")
    assert done.returncode == 0, done.stderr
    directory = Path(done.stdout.strip())
    assert directory.is_relative_to(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")))
    assert not directory.is_relative_to(ROOT)
    version = subprocess.run([str(directory / "kube-apiserver"), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == "Kubernetes v1.36.3"
