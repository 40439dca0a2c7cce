"""Fault injection as the SDK sees it: 429 + Retry-After, 5xx, latency, error state, lost sandboxes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from daytona import (
    AsyncSandbox,
    CreateSandboxFromSnapshotParams,
    DaytonaBadRequestError,
    DaytonaInternalServerError,
    DaytonaNotFoundError,
    DaytonaRateLimitError,
    DaytonaServiceUnavailableError,
    SessionExecuteRequest,
)

from controller.localsandbox import LocalSandboxServer

from .conftest import client, eventually, process_gone, sandbox_path
from .contract import Contract


@pytest_asyncio.fixture(loop_scope="session")
async def faulty(contract: Contract, tmp_path: Path) -> AsyncIterator[LocalSandboxServer]:
    async with LocalSandboxServer(api_key="k", root=tmp_path, response_observer=contract.observe, seed=1) as srv:
        yield srv


async def admin(srv: LocalSandboxServer, method: str, path: str, body: object = None) -> dict[str, object]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {srv.api_key}"}) as http, http.request(
        method, f"{srv.base_url}{path}", json=body
    ) as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, object] = await resp.json()
        return data


async def background_pid(sandbox: AsyncSandbox, session: str, command_id: str) -> int:
    """The pid a ``... & echo $!`` command printed."""

    async def printed() -> int | None:
        out = (await sandbox.process.get_session_command_logs(session, command_id)).stdout.strip()
        return int(out) if out else None

    return await eventually(printed)


async def test_rate_limit_is_a_429_with_the_throttlers_header(faulty: LocalSandboxServer) -> None:
    async with client(faulty) as d:
        sandbox = await d.create(CreateSandboxFromSnapshotParams(name="rl"))
        faulty.set_faults(rate_limit={"rate": 1, "retry_after": 3, "ops": ["get", "create", "stop"]})
        for call, throttler in ((d.get("rl"), "authenticated"),
                                (d.create(CreateSandboxFromSnapshotParams(name="rl2")), "sandbox-create"),
                                (sandbox.stop(), "sandbox-lifecycle")):  # fmt: skip
            with pytest.raises(DaytonaRateLimitError) as caught:
                await call
            assert caught.value.status_code == 429
            assert str(caught.value).endswith("ThrottlerException: Too Many Requests")
            headers = {k.lower(): v for k, v in (caught.value.headers or {}).items()}
            # NestJS' throttler names the header after the throttler; plain Retry-After only on failed auth
            assert headers[f"retry-after-{throttler}"] == "3"
            assert "retry-after" not in headers
        await sandbox.process.exec("true")  # other operations are not limited
        assert faulty.stats()["rate_limited"] == 3
        faulty.set_faults({})
        assert (await d.get("rl")).id == sandbox.id


async def test_server_errors_before_and_after_the_operation(faulty: LocalSandboxServer) -> None:
    async with client(faulty) as d:
        faulty.set_faults(errors={"create": {"rate": 1, "status": 503}, "get": {"rate": 1, "status": 500}})
        with pytest.raises(DaytonaServiceUnavailableError):
            await d.create(CreateSandboxFromSnapshotParams(name="never"))
        with pytest.raises(DaytonaInternalServerError):
            await d.get("never")
        assert "never" not in faulty.stats()["creates_by_name"]

        # "after": the create happened, only the answer was lost
        faulty.set_faults(errors={"create": {"rate": 1, "status": 503, "after": True}})
        with pytest.raises(DaytonaServiceUnavailableError):
            await d.create(CreateSandboxFromSnapshotParams(name="happened"))
        faulty.set_faults({})
        assert (await d.get("happened")).state == "started"
        assert faulty.stats()["creates_by_name"]["happened"] == 1

        # a sandbox that fails to start: the create itself answers Daytona's 400
        faulty.set_faults(errors={"create": {"rate": 1, "state": "error"}})
        with pytest.raises(DaytonaBadRequestError, match="Sandbox failed to start: injected fault") as failed:
            await d.create(CreateSandboxFromSnapshotParams(name="broken"))
        assert failed.value.status_code == 400
        faulty.set_faults({})
        broken = await d.get("broken")
        assert broken.state == "error"
        assert broken.error_reason == "injected fault: sandbox failed to start"
        await broken.delete(wait=True)
        with pytest.raises(DaytonaNotFoundError):
            await d.get(broken.id)
        assert faulty.stats()["errors_injected"] == 3


async def test_latency_is_injected_per_operation(faulty: LocalSandboxServer) -> None:
    async with client(faulty) as d:
        started = time.monotonic()
        await d.create(CreateSandboxFromSnapshotParams(name="fast"))
        baseline = time.monotonic() - started
        current = await admin(faulty, "POST", "/_admin/faults", {"latency": {"create": 0.4, "*": 0.15}})
        assert current["latency"] == {"create": 0.4, "*": 0.15}
        assert (await admin(faulty, "GET", "/_admin/faults"))["latency"] == {"create": 0.4, "*": 0.15}
        started = time.monotonic()
        slow = await d.create(CreateSandboxFromSnapshotParams(name="slow"))
        create_latency = time.monotonic() - started
        started = time.monotonic()
        await slow.process.exec("true")
        exec_latency = time.monotonic() - started
        await admin(faulty, "POST", "/_admin/faults", {})
        print(f"\ncreate latency: baseline {baseline * 1000:.1f} ms, injected {create_latency * 1000:.1f} ms")
        assert baseline < 0.3
        assert create_latency >= 0.4  # "create" only, not "*" on top
        assert create_latency < 0.4 + 0.3
        assert exec_latency >= 0.15


async def test_lost_sandbox_is_gone_and_its_processes_killed(faulty: LocalSandboxServer) -> None:
    async with client(faulty) as d:
        victims: dict[str, tuple[AsyncSandbox, int]] = {}
        for name in ("lost-http", "lost-python"):
            sandbox = await d.create(CreateSandboxFromSnapshotParams(name=name))
            await sandbox.process.create_session("s")
            cmd = await sandbox.process.execute_session_command(
                "s", SessionExecuteRequest(command="sleep 1000 & echo $!; wait", run_async=True)
            )

            victims[name] = (sandbox, await background_pid(sandbox, "s", cmd.cmd_id))

        result = await admin(faulty, "POST", "/_admin/faults", {"lose": ["lost-http", "nobody"]})
        assert result["lost"] == [victims["lost-http"][0].id]
        assert result["not_found"] == ["nobody"]
        assert faulty.lose("lost-python") is True
        assert faulty.lose("lost-python") is False

        for name, (sandbox, sleeper) in victims.items():
            with pytest.raises(DaytonaNotFoundError):
                await d.get(name)
            with pytest.raises(DaytonaNotFoundError):
                await sandbox.process.exec("true")

            async def gone(pid: int = sleeper) -> bool:
                return process_gone(pid)

            await eventually(gone, timeout=5)
            assert not Path(sandbox_path(faulty, sandbox.id)).exists()
        stats = await admin(faulty, "GET", "/_admin/stats")
        assert stats["lost"] == 2
        reset = await admin(faulty, "POST", "/_admin/reset-stats")
        assert reset["lost"] == 0
        assert reset["calls"] == {}


def test_admin_methods_work_from_another_thread(tmp_path: Path) -> None:
    """The server on its own loop in a thread; `lose`/`stats`/`set_faults` called from here."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with LocalSandboxServer(api_key="k", root=tmp_path) as srv:
            box.update(srv=srv, stop=asyncio.Event(), loop=asyncio.get_running_loop())
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    srv: LocalSandboxServer = box["srv"]
    try:
        request = urllib.request.Request(
            srv.api_url + "/sandbox", data=json.dumps({"name": "threaded"}).encode(), method="POST",
            headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            created = json.load(resp)
        assert created["state"] == "creating"  # Daytona answers the sandbox as inserted
        srv.set_faults(latency={"get": 0.01})
        assert srv.faults()["latency"] == {"get": 0.01}
        assert srv.lose("threaded") is True
        assert srv.stats()["lost"] == 1
        assert not Path(sandbox_path(srv, created["id"])).exists()
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
    assert not thread.is_alive()
