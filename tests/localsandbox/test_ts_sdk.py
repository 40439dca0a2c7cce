"""The real TypeScript SDK (``@daytonaio/sdk``, pinned by ``ts/package-lock.json`` and installed by
``hack/tools.sh daytona-sdk``) against the embedded server, run with node: lifecycle rules, refusals,
faults and the toolbox, each script judged from the JSON it prints. Every script must also exit on
its own soon after its last line: the SDK's Socket.IO connection may not keep node alive (against a
server without the gateway it retried for about three minutes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from controller.localsandbox import LocalSandboxServer

from .contract import Contract

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).with_name("ts")
EXIT_DEADLINE = 20.0  # seconds from the script's last line to node's exit (generous: a loaded machine)


@pytest.fixture(scope="session")
def ts_sdk() -> str:
    """The SDK's ESM entry point, installed into the cache first if it is missing."""
    subprocess.run([str(ROOT / "hack" / "tools.sh"), "daytona-sdk"], check=True, cwd=ROOT, timeout=1200)
    out = subprocess.run([str(ROOT / "hack" / "tools.sh"), "paths"], check=True, cwd=ROOT, capture_output=True,
                         text=True).stdout  # fmt: skip
    path = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)["DAYTONA_SDK"]
    assert os.path.isfile(path), path
    return path


@pytest_asyncio.fixture(loop_scope="session")
async def ts_server(contract: Contract, tmp_path: Path) -> AsyncIterator[LocalSandboxServer]:
    async with LocalSandboxServer(api_key="ts-key", root=tmp_path, response_observer=contract.observe) as srv:
        yield srv


async def run_script(name: str, sdk: str, srv: LocalSandboxServer, timeout: float = 240,
                     **extra: str) -> dict[str, Any]:  # fmt: skip
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "DAYTONA_SDK": sdk,
           "DAYTONA_API_URL": srv.api_url, "DAYTONA_API_KEY": srv.api_key, **extra}  # fmt: skip
    proc = await asyncio.create_subprocess_exec("node", str(SCRIPTS / name), env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        lines: list[bytes] = []
        deadline = time.monotonic() + timeout
        while line := await asyncio.wait_for(proc.stdout.readline(), max(1.0, deadline - time.monotonic())):
            lines.append(line)
            if line.startswith(b"{"):
                break
        printed = time.monotonic()
        assert lines and lines[-1].startswith(b"{"), (b"".join(lines) + await proc.stderr.read()).decode()
        await asyncio.wait_for(proc.wait(), EXIT_DEADLINE)  # exits on its own, promptly
        print(f"\n{name}: node exited {time.monotonic() - printed:.2f} s after its last line")
        assert proc.returncode == 0, (await proc.stderr.read()).decode()
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_typescript_sdk_lifecycle_refusals_and_faults(ts_sdk: str, ts_server: LocalSandboxServer) -> None:
    seen = await run_script("lifecycle.mjs", ts_sdk, ts_server)
    assert seen["done"]
    assert seen["createdState"] == "started"
    conflict = seen["stopWhileStopping"]
    assert (conflict["conflict"], conflict["status"]) == (True, 409)
    assert "Sandbox state change in progress" in conflict["message"]
    assert seen["stoppedState"] == "stopped"
    stopped = seen["stopStopped"]
    assert (stopped["badRequest"], stopped["status"]) == (True, 400)
    assert "Sandbox is not in a stoppable state" in stopped["message"]
    assert (seen["restartedState"], seen["exec"]) == ("started", "from-ts\n")
    assert seen["getByNameAfterDelete"]["status"] == 404
    assert seen["renamed"].startswith("DESTROYED_ts-walk_")
    assert seen["failedCreate"]["status"] == 400
    assert "Sandbox failed to start: injected fault" in seen["failedCreate"]["message"]
    assert seen["failedBuild"]["raised"]
    assert "build_failed" in seen["failedBuild"]["message"].lower()
    assert "CPU request 4 exceeds maximum allowed per sandbox (1)." in seen["perSandbox"]["message"]
    assert "Missing CIDR prefix length" in seen["badAllowList"]["message"]
    assert seen["autoArchive"] == 43200
    assert seen["listedWithMinCpu2"] == []
    limited = seen["rateLimited"]
    assert (limited["rateLimited"], limited["status"]) == (True, 429)
    assert limited["headers"].get("retry-after-sandbox-create") == "2"
    assert "retry-after" not in limited["headers"]
    assert ts_server.stats()["calls"]["socketio"] >= 1  # it did use the event channel


async def test_typescript_sdk_toolbox(ts_sdk: str, ts_server: LocalSandboxServer, tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    seen = await run_script("toolbox.mjs", ts_sdk, ts_server, GIT_ORIGIN=str(origin))
    assert seen["done"]
    assert seen["carried"] == "BAR /\n"  # export and cd carried over in the session shell
    assert seen["input"] == "typed\ngot typed\n"
    assert seen["codeRun"] == "a+b\n"
    assert seen["interpreter"] == "40\n"
    assert seen["search"] == ["/home/daytona/docs/a.txt"]
    assert seen["find"] == [1, 2]
    assert seen["replaced"] == "omega\nbeta omega\n"
    assert (seen["gitCommit"], seen["gitBranch"]) == (40, "main")
    assert (seen["ptyExit"], seen["ptySize"]) == (5, True)
    assert seen["volumeState"] == "pending_create"
