"""Auto-stop, auto-archive, auto-delete and TTL, with one "minute" lasting 0.2 s."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaNotFoundError, SandboxState

from controller.localsandbox import LocalSandboxServer

from .conftest import client, eventually
from .contract import Contract

MINUTE = 0.2


@pytest_asyncio.fixture(loop_scope="session")
async def fast(contract: Contract, tmp_path: Path) -> AsyncIterator[tuple[LocalSandboxServer, AsyncDaytona]]:
    async with LocalSandboxServer(api_key="k", root=tmp_path, minute_seconds=MINUTE,
                                  response_observer=contract.observe) as srv, client(srv) as d:
        yield srv, d


async def state_of(d: AsyncDaytona, name: str) -> str | None:
    try:
        return str((await d.get(name)).state.value)
    except DaytonaNotFoundError:
        return "gone"


def becomes(d: AsyncDaytona, name: str, state: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await state_of(d, name) == state

    return probe


async def test_auto_stop_then_auto_archive(fast: tuple[LocalSandboxServer, AsyncDaytona]) -> None:
    srv, d = fast
    sandbox = await d.create(CreateSandboxFromSnapshotParams(name="idle", auto_stop_interval=1,
                                                             auto_archive_interval=2))
    assert (await d.get("idle")).state == SandboxState.STARTED
    await eventually(becomes(d, "idle", "stopped"), timeout=5)
    await eventually(becomes(d, "idle", "archived"), timeout=5)
    assert srv.stats()["auto_stopped"] == 1
    assert srv.stats()["auto_archived"] == 1
    await sandbox.start()
    assert (await d.get("idle")).state == SandboxState.STARTED


async def test_activity_postpones_auto_stop(fast: tuple[LocalSandboxServer, AsyncDaytona]) -> None:
    _, d = fast
    sandbox = await d.create(CreateSandboxFromSnapshotParams(name="busy", auto_stop_interval=0))
    await sandbox.set_autostop_interval(3)  # 0.6 s of inactivity
    for _ in range(8):  # ~1.2 s of steady toolbox calls keeps it started
        await sandbox.process.exec("sleep 0.15")
    assert await state_of(d, "busy") == "started"
    await eventually(becomes(d, "busy", "stopped"), timeout=5)


@pytest.mark.parametrize("interval", [0, 1])
async def test_auto_delete_after_stop(fast: tuple[LocalSandboxServer, AsyncDaytona], interval: int) -> None:
    _, d = fast
    name = f"ephemeral-{interval}"
    sandbox = await d.create(CreateSandboxFromSnapshotParams(name=name, auto_delete_interval=interval))
    await sandbox.stop()  # 0 = deleted as soon as it stops; 1 = a minute after
    await eventually(becomes(d, name, "gone"), timeout=5)


async def test_auto_delete_disabled_keeps_stopped_sandbox(fast: tuple[LocalSandboxServer, AsyncDaytona]) -> None:
    srv, d = fast
    sandbox = await d.create(CreateSandboxFromSnapshotParams(name="kept", auto_delete_interval=-1,
                                                             auto_archive_interval=1000))
    await sandbox.stop()
    await eventually(becomes(d, "kept", "stopped"))
    created = srv.stats()["sandboxes_created"]
    # wait for a later sandbox's TTL to fire: by then "kept" has outlived 3+ minutes
    await d.create(CreateSandboxFromSnapshotParams(name="marker", ttl_minutes=3))
    await eventually(becomes(d, "marker", "gone"), timeout=5)
    assert await state_of(d, "kept") == "stopped"
    assert srv.stats()["sandboxes_created"] == created + 1


async def test_ttl_destroys_even_a_running_sandbox(fast: tuple[LocalSandboxServer, AsyncDaytona]) -> None:
    srv, d = fast
    sandbox = await d.create(CreateSandboxFromSnapshotParams(name="ttl", ttl_minutes=2, auto_stop_interval=0))
    assert sandbox.auto_destroy_at is not None
    await eventually(becomes(d, "ttl", "gone"), timeout=5)  # by name: gone as soon as the delete starts

    async def counted() -> bool:
        return bool(srv.stats()["ttl_expired"] >= 1)

    await eventually(counted, timeout=5)
