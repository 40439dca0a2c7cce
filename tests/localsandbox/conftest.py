"""Fixtures for the embedded sandbox server tests: a shared in-process server whose every
response is checked against the SDK's models, and SDK clients pointed at it.

Tests that need their own settings (a short `minute_seconds`, faults) start their own
`LocalSandboxServer` with `contract.observe` as observer; `_no_contract_drift` fails any test
during which a response broke the contract.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psutil
import pytest
import pytest_asyncio
from daytona import AsyncDaytona, DaytonaConfig

from controller.localsandbox import LocalSandboxServer

from .contract import Contract, uncovered_operations

API_KEY = "test-key-0123456789"
T = TypeVar("T")


@pytest.fixture(scope="session")
def contract() -> Iterator[Contract]:
    c = Contract()
    yield c
    if os.environ.get("LOCALSANDBOX_CONTRACT_REPORT"):
        seen = {r.op for r in c.seen}
        print("\noperations never observed:", sorted(uncovered_operations(seen)))


@pytest.fixture(autouse=True)
def _no_contract_drift(contract: Contract) -> Iterator[None]:
    before = len(contract.failures)
    yield
    new = contract.failures[before:]
    assert not new, "responses drifted from the SDK models:\n" + "\n".join(new)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def server(contract: Contract, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalSandboxServer]:
    root = tmp_path_factory.mktemp("sandboxes")
    async with LocalSandboxServer(api_key=API_KEY, root=root, response_observer=contract.observe) as srv:
        yield srv


def client(srv: LocalSandboxServer, api_key: str | None = None) -> AsyncDaytona:
    """An SDK client for `srv`, configured exactly as the operator does it."""
    return AsyncDaytona(DaytonaConfig(api_url=srv.api_url, api_key=api_key or srv.api_key))


@pytest_asyncio.fixture(loop_scope="session")
async def daytona(server: LocalSandboxServer) -> AsyncIterator[AsyncDaytona]:
    async with client(server) as d:
        yield d


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll `probe` until it returns something truthy or `timeout` passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def process_gone(pid: int) -> bool:
    """True if `pid` no longer runs (gone, or a zombie nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def sandbox_path(srv: LocalSandboxServer, sandbox_id: str, *parts: str) -> str:
    return os.path.join(srv.root, sandbox_id, *parts)


def labels_for(test: str, **extra: Any) -> dict[str, str]:
    return {"test": test, **{k: str(v) for k, v in extra.items()}}
