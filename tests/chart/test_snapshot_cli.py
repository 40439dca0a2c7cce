"""`agenttask snapshot create/list/delete` through the official Daytona SDK, against the embedded
Daytona-compatible server (`agenttask sandbox-server`): how the agent image becomes the
snapshot that the chart's `settings.defaultSnapshot` names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli import main

from ..integration.harness import SandboxServer, sandbox_server

KEY = "snapshot-cli-key-4411"


@pytest.fixture(scope="module")
def daytona(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path_factory.mktemp("snapshot-cli"), api_key=KEY) as server:
        yield server


@pytest.fixture
def connected(daytona: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    for name in list(os.environ):
        if name.startswith(("DAYTONA_", "AGENTTASK_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DAYTONA_API_URL", daytona.api_url)
    monkeypatch.setenv("DAYTONA_API_KEY", daytona.api_key)
    return daytona


def test_create_list_delete(connected: SandboxServer, capsys: pytest.CaptureFixture[str]) -> None:
    image = "registry.example.com/agenttask-agent:0.1.0"
    assert main(["snapshot", "create", "--name", "agenttask-agent", "--image", image,
                 "--cpu", "2", "--memory", "4", "--disk", "10"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"snapshot agenttask-agent active (image {image}, id ")
    assert "settings.defaultSnapshot=agenttask-agent" in err
    stored = connected._request("GET", "/api/snapshots/agenttask-agent")
    assert (stored["imageName"], stored["cpu"], stored["mem"], stored["disk"], stored["state"]) == (
        image, 2, 4, 10, "active")

    # a second create is a conflict, unless --exists-ok (idempotent install scripts)
    assert main(["snapshot", "create", "--name", "agenttask-agent", "--image", image]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["snapshot", "create", "--name", "agenttask-agent", "--image", image, "--exists-ok"]) == 0
    capsys.readouterr()

    assert main(["snapshot", "list", "-o", "json"]) == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert listed["agenttask-agent"]["image"] == image
    assert listed["agenttask-agent"]["memory"] == 4
    assert main(["snapshot", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "STATE", "IMAGE", "CPU", "MEMORY", "DISK"]
    assert ["agenttask-agent", "active", image, "2", "4", "10"] in [row.split() for row in table]

    assert main(["snapshot", "delete", "agenttask-agent"]) == 0
    assert capsys.readouterr().out == "snapshot agenttask-agent deleted\n"
    assert main(["snapshot", "delete", "agenttask-agent"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["snapshot", "delete", "agenttask-agent", "--missing-ok"]) == 0
    capsys.readouterr()
    stats = connected.stats()
    assert json.dumps(stats).count("snapshot_create") >= 1, stats


def test_bad_key_fails_without_printing_it(connected: SandboxServer, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "wrong-key-do-not-print-5521"
    monkeypatch.setenv("DAYTONA_API_KEY", wrong)
    assert main(["snapshot", "list"]) == 1
    out, err = capsys.readouterr()
    assert "HTTP 401" in err
    assert wrong not in out + err


def test_console_script(connected: SandboxServer, tmp_path: Path) -> None:
    """The installed `agenttask` entry point, as a user types it."""
    agenttask = Path(sys.executable).parent / "agenttask"
    done = subprocess.run([str(agenttask), "snapshot", "create", "--name", "from-shell", "--image", "busybox:1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("snapshot from-shell active")
    assert KEY not in done.stdout + done.stderr
