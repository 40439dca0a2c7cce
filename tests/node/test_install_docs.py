"""docs/install.md's "Try it on a local node", run as written: images, `dev-cluster up --node`,
helm install, a task to Succeeded, then `dev-cluster down`, after which nothing of the node is
left (processes, mounts, cgroups, namespace, fixed-path directories, kernel tunables)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from controller.devcluster.node import read_node_state

from .conftest import ROOT, require_node_prerequisites
from .leftovers import leftovers, snapshot

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]


def blocks() -> dict[str, str]:
    text = (ROOT / "docs" / "install.md").read_text()
    return dict(re.findall(r"<!-- test: ([\w-]+) -->\n```sh\n(.*?)```", text, re.S))


def run_block(script: str, work: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTTASK_", "DAYTONA_", "KUBECONFIG"))}
    env["WORK"] = str(work)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1500)


def test_try_it_on_a_local_node_as_documented(tmp_path: Path) -> None:
    require_node_prerequisites()
    docs = blocks()
    before = snapshot()
    state_dir = tmp_path / "node"
    recorded: dict[str, object] = {}
    try:
        up = run_block(docs["local-node"], tmp_path)
        recorded = read_node_state(state_dir)
        assert up.returncode == 0, f"the documented commands failed:\n{up.stdout[-3000:]}\n{up.stderr[-5000:]}"
        assert re.search(r"agenttask-node\s+Ready", up.stdout), up.stdout
        # the last command: the pushed branch's log, the agent's commit on top of the initial one
        log = up.stdout.strip().splitlines()[-2:]
        assert "Greeting has a typo" in log[0] and log[1].endswith(" initial"), up.stdout[-2000:]
    finally:
        recorded = recorded or read_node_state(state_dir)
        down = run_block(docs["local-node-down"], tmp_path)
    assert down.returncode == 0, down.stderr
    assert recorded, "the node recorded no state"
    left = leftovers(state_dir, dict(recorded), before)
    assert not left, f"`dev-cluster down` left things behind: {left}"
