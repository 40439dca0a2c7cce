"""The Daytona adapter's connection pool holds a log stream per running agent and still serves
every other call: a stream keeps its pooled connection for as long as its agent runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller import sandboxes
from controller.sandboxes import Sandboxes, SandboxSpec

from .harness import SandboxServer, sandbox_server

STREAMS = 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path / "sandboxes") as srv:
        yield srv


def spec(name: str) -> SandboxSpec:
    return SandboxSpec(name=name, labels={}, env={}, snapshot=None, image=None, cpu=None, memory=None, disk=None,
                       auto_stop_minutes=15, auto_delete_minutes=30, ttl_minutes=None, network_block_all=False,
                       network_allow_list=())


async def _until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout:.0f}s")
        await asyncio.sleep(0.1)


def test_calls_go_through_while_as_many_agents_as_admitted_stream_their_logs(
        server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # scaled down: one connection beside the streams instead of REQUEST_CONNECTIONS
    monkeypatch.setattr(sandboxes, "REQUEST_CONNECTIONS", 1)

    async def run() -> None:
        boxes = Sandboxes.connect(api_url=server.api_url, api_key=server.api_key, streams=STREAMS)
        followers: list[asyncio.Task[None]] = []
        try:
            sandbox, _ = await boxes.ensure(spec("pooled"))
            for i in range(STREAMS):
                command = await boxes.start_command(sandbox, f"agent-{i}", "sleep 60")
                followers.append(asyncio.create_task(
                    boxes.follow_logs(sandbox, f"agent-{i}", command, lambda _: None)))
            await _until(lambda: server.stats()["calls"].get("command_logs_follow", 0) >= STREAMS, timeout=30,
                         what="every log stream open")
            # every stream holds a connection now; a look-up and a new sandbox still get through
            assert await asyncio.wait_for(boxes.find("pooled"), timeout=15) is not None
            other, created = await asyncio.wait_for(boxes.ensure(spec("another")), timeout=15)
            assert created and other.name == "another"
            assert not any(f.done() for f in followers)  # (the agents still run)
        finally:
            for f in followers:
                f.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
            for name in ("pooled", "another"):
                await boxes.delete_if_exists(name)
            await boxes.close()

    asyncio.run(run())
