"""Asynchronous lifecycle as Daytona has it, through the real Python SDK (async and sync) and raw HTTP:
transitional states, 409 state change in progress, 400 on stop-of-stopped / archive-of-archived,
soft delete, failed creates, image builds and ``build_failed``, and the faults that force each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaBadRequestError,
    DaytonaConfig,
    DaytonaConflictError,
    DaytonaError,
    DaytonaNotFoundError,
    SandboxState,
)

from controller.localsandbox import LocalSandboxServer

from .conftest import client, eventually
from .contract import Contract

SLOW = 0.4  # seconds every transition lasts in these tests


@pytest_asyncio.fixture(loop_scope="session")
async def slow(contract: Contract, tmp_path: Path) -> AsyncIterator[LocalSandboxServer]:
    async with LocalSandboxServer(api_key="k", root=tmp_path, response_observer=contract.observe,
                                  settings={"transitions": {"*": SLOW}}) as srv:  # fmt: skip
        yield srv


async def call(srv: LocalSandboxServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {srv.api_key}"}) as http, http.request(
        method, f"{srv.api_url}{path}", json=body
    ) as resp:
        return resp.status, await resp.json()


async def settles(srv: LocalSandboxServer, ref: str, state: str) -> None:
    async def probe() -> bool:
        status, body = await call(srv, "GET", f"/sandbox/{ref}")
        return status == 200 and body["state"] == state

    await eventually(probe, timeout=10)


def assert_conflict(status: int, body: Any, path: str) -> None:
    assert status == 409
    assert body == {"path": path, "timestamp": body["timestamp"], "statusCode": 409, "error": "Conflict",
                    "message": "Sandbox state change in progress"}  # fmt: skip


async def test_transitions_answer_409_while_in_flight_and_400_when_already_there(slow: LocalSandboxServer) -> None:
    status, created = await call(slow, "POST", "/sandbox", {"name": "walk"})
    assert (status, created["state"], created["desiredState"]) == (200, "creating", "started")  # as inserted
    _, got = await call(slow, "GET", "/sandbox/walk")
    assert got["state"] == "started"  # the create request returned once it had started

    status, stopping = await call(slow, "POST", "/sandbox/walk/stop")
    assert (status, stopping["state"], stopping["desiredState"]) == (200, "stopping", "stopped")
    for method, path in (("POST", "/sandbox/walk/stop"), ("POST", "/sandbox/walk/start"),
                         ("POST", "/sandbox/walk/archive"), ("DELETE", "/sandbox/walk")):  # fmt: skip
        status, body = await call(slow, method, path)
        assert_conflict(status, body, f"/api{path}")
    await settles(slow, "walk", "stopped")
    status, body = await call(slow, "POST", "/sandbox/walk/stop")
    assert (status, body["message"]) == (400, "Sandbox is not in a stoppable state")

    status, archiving = await call(slow, "POST", "/sandbox/walk/archive")
    assert (status, archiving["state"], archiving["desiredState"]) == (200, "archiving", "archived")
    status, body = await call(slow, "POST", "/sandbox/walk/archive")
    assert_conflict(status, body, "/api/sandbox/walk/archive")
    await settles(slow, "walk", "archived")
    status, body = await call(slow, "POST", "/sandbox/walk/archive")
    assert (status, body["message"]) == (400, "Sandbox is not stopped")

    status, restoring = await call(slow, "POST", "/sandbox/walk/start")  # from archived: answered at once
    assert (status, restoring["state"], restoring["desiredState"]) == (200, "archived", "started")
    _, got = await call(slow, "GET", "/sandbox/walk")
    assert got["state"] == "restoring"
    await settles(slow, "walk", "started")
    status, again = await call(slow, "POST", "/sandbox/walk/start")
    assert (status, again["state"]) == (200, "started")  # starting a started sandbox is a no-op


async def test_sdk_waits_through_transitions_and_sees_conflicts(slow: LocalSandboxServer) -> None:
    async with client(slow) as d:
        sandbox = await d.create(CreateSandboxFromSnapshotParams(name="sdk-walk"))
        assert sandbox.state == SandboxState.STARTED
        stopping = asyncio.ensure_future(sandbox.stop())
        await settles(slow, "sdk-walk", "stopping")
        with pytest.raises(DaytonaConflictError, match="Sandbox state change in progress"):
            await (await d.get("sdk-walk")).stop()
        await stopping
        assert sandbox.state == SandboxState.STOPPED
        with pytest.raises(DaytonaBadRequestError, match="Sandbox is not in a stoppable state"):
            await sandbox.stop()
        await sandbox.start()
        assert sandbox.state == SandboxState.STARTED
        assert (await sandbox.process.exec("echo up")).result == "up\n"


async def test_sync_sdk_sees_the_same_rules(slow: LocalSandboxServer) -> None:
    await asyncio.to_thread(sync_walk, slow)  # the server runs on this loop: the sync SDK gets a thread


def sync_walk(slow: LocalSandboxServer) -> None:
    d = Daytona(DaytonaConfig(api_url=slow.api_url, api_key=slow.api_key))
    sandbox = d.create(CreateSandboxFromSnapshotParams(name="sync-walk"))
    assert sandbox.state == SandboxState.STARTED
    sandbox.stop()
    assert sandbox.state == SandboxState.STOPPED
    with pytest.raises(DaytonaBadRequestError, match="not in a stoppable state"):
        sandbox.stop()
    sandbox.archive()
    with pytest.raises(DaytonaConflictError):
        sandbox.archive()
    d.delete(sandbox, wait=True)
    with pytest.raises(DaytonaNotFoundError):
        d.get(sandbox.id)


async def test_delete_is_soft_the_name_is_free_at_once_and_get_by_id_answers_until_destroyed(
    slow: LocalSandboxServer,
) -> None:
    status, created = await call(slow, "POST", "/sandbox", {"name": "soft", "labels": {"t": "soft"}})
    assert status == 200
    status, deleted = await call(slow, "DELETE", "/sandbox/soft")
    assert status == 200
    assert (deleted["state"], deleted["desiredState"]) == ("destroying", "destroyed")
    assert deleted["name"].startswith("DESTROYED_soft_")
    status, by_id = await call(slow, "GET", f"/sandbox/{created['id']}")
    assert (status, by_id["state"], by_id["name"]) == (200, "destroying", deleted["name"])
    status, _ = await call(slow, "GET", "/sandbox/soft")
    assert status == 404  # renamed: the old name finds nothing
    status, again = await call(slow, "POST", "/sandbox", {"name": "soft"})  # and is free for a new sandbox
    assert status == 200
    assert again["id"] != created["id"]

    async def destroyed() -> bool:
        return (await call(slow, "GET", f"/sandbox/{created['id']}"))[0] == 404

    await eventually(destroyed, timeout=10)
    status, listed = await call(slow, "GET", "/sandbox?labels=%7B%22t%22%3A%22soft%22%7D")
    assert listed["items"] == []


async def test_failed_create_answers_400_and_the_sandbox_stays_in_error(slow: LocalSandboxServer) -> None:
    slow.set_faults(errors={"create": {"rate": 1, "state": "error"}})
    async with client(slow) as d:
        with pytest.raises(DaytonaBadRequestError) as caught:
            await d.create(CreateSandboxFromSnapshotParams(name="doomed"))
        assert caught.value.status_code == 400
        assert "Sandbox failed to start: injected fault: sandbox failed to start" in str(caught.value)
        slow.set_faults({})
        doomed = await d.get("doomed")
        assert (doomed.state, doomed.error_reason) == (SandboxState.ERROR, "injected fault: sandbox failed to start")
        with pytest.raises(DaytonaBadRequestError, match="Sandbox is in an errored state"):
            await doomed.stop()
        await doomed.delete(wait=True)


async def test_image_creates_build_once_and_can_end_in_build_failed(slow: LocalSandboxServer) -> None:
    async with client(slow) as d:
        building = asyncio.ensure_future(d.create(CreateSandboxFromImageParams(image="python:3.12-slim")))

        async def seen_building() -> bool:
            status, body = await call(slow, "GET", "/sandbox?states=building_snapshot")
            return status == 200 and len(body["items"]) == 1

        await eventually(seen_building, timeout=10)
        built = await building
        assert built.state == SandboxState.STARTED
        assert (built.cpu, built.memory, built.disk) == (1, 1, 3)  # createFromBuildInfo's defaults
        assert slow.stats()["images_built"] == 1
        await d.create(CreateSandboxFromImageParams(image="python:3.12-slim"))  # the same image: no rebuild
        assert slow.stats()["images_built"] == 1

        slow.set_faults(build_failures={"count": 1, "reason": "failed to pull base image"})
        with pytest.raises(DaytonaError, match=r"(?i)entered error state: .*build_failed"):
            await d.create(CreateSandboxFromImageParams(image="node:22"))
        assert slow.faults()["build_failures"]["count"] == 0  # that was the next one
        await d.create(CreateSandboxFromImageParams(image="node:22"))  # and the one after builds
        assert slow.stats()["images_built"] == 2

        status, body = await call(slow, "POST", "/sandbox", {"snapshot": "daytona-small", "cpu": 2})
        assert (status, body["message"]) == (400, "Cannot specify Sandbox resources when using a snapshot")
        status, body = await call(slow, "POST", "/sandbox", {"snapshot": "daytona-small",
                                                             "buildInfo": {"dockerfileContent": "FROM x"}})  # fmt: skip
        assert (status, body["message"]) == (400, "Cannot specify a snapshot when using a build info entry")


async def test_state_conflict_fault_answers_409_for_its_window(slow: LocalSandboxServer) -> None:
    slow.set_settings(transitions={"*": 0})
    try:
        async with client(slow) as d:
            sandbox = await d.create(CreateSandboxFromSnapshotParams(name="conflicted"))
            slow.set_faults(state_conflict={"ops": ["stop"], "seconds": 0.5})
            with pytest.raises(DaytonaConflictError, match="Sandbox state change in progress"):
                await sandbox.stop()

            async def stops() -> bool:  # once the window is over, the same call goes through
                try:
                    await sandbox.stop()
                except DaytonaConflictError:
                    return False
                return True

            await eventually(stops, timeout=10, interval=0.1)
            assert sandbox.state == SandboxState.STOPPED
            assert slow.stats()["errors_injected"] >= 1
    finally:
        slow.set_faults({})
        slow.set_settings(transitions={"*": SLOW})
