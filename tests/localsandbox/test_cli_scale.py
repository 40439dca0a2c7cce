"""The standalone server (``agenttask sandbox-server``) as a subprocess: its one-line handshake,
fault flags, clean shutdown, and 500 sandboxes created and listed through the SDK."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    DaytonaConfig,
    DaytonaServiceUnavailableError,
    ListSandboxesQuery,
)

AGENTTASK = str(Path(sys.executable).parent / "agenttask")
KEY = "cli-test-key"
N = 500
SEQUENTIAL = 100
CONCURRENCY = 50


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, api_url: str) -> None:
        self.proc, self.api_url = proc, api_url
        self.base_url = api_url.removesuffix("/api")

    async def admin(self, path: str) -> dict[str, Any]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http, http.get(
            self.base_url + path
        ) as resp:
            data: dict[str, Any] = await resp.json()
            return data


@asynccontextmanager
async def serve(root: Path, *flags: str) -> AsyncIterator[Served]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAYTONA_API_KEY", "LOCALSANDBOX_API_KEY")}
    proc = await asyncio.create_subprocess_exec(
        AGENTTASK, "sandbox-server", "--port", "0", "--api-key", KEY, "--root", str(root), *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("DAYTONA_API_URL=http://127.0.0.1:"), line
        assert line.rstrip().endswith("/api")
        yield Served(proc, line.strip().split("=", 1)[1])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    rest, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert rest == b"", "the server printed more than its one stdout line"
    assert "isolation=plain" in err.decode()  # the default everywhere, bubblewrap installed or not
    assert KEY not in err.decode()


async def test_cli_handshake_fault_and_setting_flags_and_shutdown(tmp_path: Path) -> None:
    async with serve(tmp_path, "--latency", "create=0.3", "--latency", "*=0.01",
                     "--error-rate", "list=1:503", "--seed", "3", "--transition-seconds", "0",
                     "--transition", "stopping=0.2", "--quota-cpu", "2", "--max-memory-per-sandbox", "4",
                     "--list-lag", "0.5", "--failed-auth", "5:30") as served:
        faults = await served.admin("/_admin/faults")
        assert faults["latency"] == {"create": 0.3, "*": 0.01}
        settings = await served.admin("/_admin/settings")
        assert settings["transitions"]["stopping"] == 0.2
        assert settings["transitions"]["creating"] == 0
        assert settings["quota"]["total_cpu"] == 2
        assert settings["quota"]["max_memory_per_sandbox"] == 4
        assert (settings["list_lag"], settings["failed_auth"]) == (0.5, {"limit": 5, "ttl": 30})
        async with AsyncDaytona(DaytonaConfig(api_url=served.api_url, api_key=KEY)) as d:
            started = time.monotonic()
            sandbox = await d.create(CreateSandboxFromSnapshotParams(name="cli"))
            assert time.monotonic() - started >= 0.3
            with pytest.raises(DaytonaServiceUnavailableError):
                [s async for s in d.list()]
            assert (await sandbox.process.exec("echo ok")).result == "ok\n"
        assert (tmp_path / sandbox.id).is_dir()
    assert os.listdir(tmp_path) == []  # sandboxes and logs removed on shutdown


async def test_cli_requires_an_api_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DAYTONA_API_KEY", "LOCALSANDBOX_API_KEY")}
    proc = await asyncio.create_subprocess_exec(
        AGENTTASK, "sandbox-server", "--port", "0", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert out == b""
    assert b"API key is required" in err


async def test_500_sandboxes_created_and_listed(tmp_path: Path) -> None:
    labels = {"scale": uuid.uuid4().hex[:8]}
    async with serve(tmp_path) as served, AsyncDaytona(DaytonaConfig(api_url=served.api_url, api_key=KEY)) as d:
        gate = asyncio.Semaphore(CONCURRENCY)
        one_at_a_time: list[float] = []
        loaded: list[float] = []

        async def create(i: int, into: list[float]) -> str:
            async with gate:
                started = time.monotonic()
                sandbox = await d.create(CreateSandboxFromSnapshotParams(name=f"scale-{i}", labels=labels))
                into.append(time.monotonic() - started)
                return sandbox.id

        ids = [await create(i, one_at_a_time) for i in range(SEQUENTIAL)]
        wall = time.monotonic()
        ids += await asyncio.gather(*(create(i, loaded) for i in range(SEQUENTIAL, N)))
        wall = time.monotonic() - wall
        listed = [s.id async for s in d.list(ListSandboxesQuery(labels=labels, limit=200))]
        stats = await served.admin("/_admin/stats")
        rss = psutil.Process(served.proc.pid).memory_info().rss
        seq, con = statistics.quantiles(one_at_a_time, n=100), statistics.quantiles(loaded, n=100)
        print(
            f"\n{N} sandboxes via the SDK: create p50 {seq[49] * 1000:.1f} ms / p95 {seq[94] * 1000:.1f} ms "
            f"one at a time ({SEQUENTIAL}); p50 {con[49] * 1000:.1f} ms / p95 {con[94] * 1000:.1f} ms with "
            f"{CONCURRENCY} in flight ({N - SEQUENTIAL} in {wall:.1f} s); server RSS at {N}: {rss / 2**20:.1f} MiB; "
            f"listed in {stats['calls']['list']} pages"
        )
        assert sorted(listed) == sorted(ids)
        assert len(set(ids)) == N
        assert stats["sandboxes_alive"] == N
        assert stats["max_alive"] == N
        assert stats["calls"]["list"] == 3
        assert rss < 400 * 2**20
