"""Daytona's refusals and settings through the real Python SDK: organisation quotas and per-sandbox
maxima (create and start), interval resolution, ephemeral sandboxes, network allow-list validation,
list filters and refusals, an eventually consistent list, and the failed-auth throttler."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    DaytonaBadRequestError,
    ListSandboxesQuery,
    Resources,
    SandboxState,
)

from controller.localsandbox import LocalSandboxServer

from .conftest import client, eventually
from .contract import Contract

UPGRADE = "To increase concurrency limits, upgrade your organization's Tier by visiting {}/dashboard/limits."
PER_SANDBOX = ("Need higher resource limits per-sandbox? Contact us at support@daytona.io and let us know about "
               "your use case.")


@pytest_asyncio.fixture(loop_scope="session")
async def srv(contract: Contract, tmp_path: Path) -> AsyncIterator[LocalSandboxServer]:
    async with LocalSandboxServer(api_key="k", root=tmp_path, response_observer=contract.observe,
                                  settings={"transitions": {"*": 0}}) as s:  # fmt: skip
        yield s


async def call(s: LocalSandboxServer, method: str, path: str, body: Any = None,
               key: str | None = None) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
    headers = {"Authorization": f"Bearer {key or s.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.request(method, f"{s.api_url}{path}",
                                                                            json=body) as resp:  # fmt: skip
        return resp.status, await resp.json(), dict(resp.headers)


async def test_organisation_totals_refuse_create_and_start_with_daytonas_messages(srv: LocalSandboxServer) -> None:
    srv.set_settings(quota={"total_cpu": 2, "total_disk": 9})
    upgrade = UPGRADE.format(srv.base_url)
    async with client(srv) as d:
        first = await d.create(CreateSandboxFromSnapshotParams(name="q1"))  # 1 cpu, 3 GiB disk each
        await d.create(CreateSandboxFromSnapshotParams(name="q2"))
        with pytest.raises(DaytonaBadRequestError) as caught:
            await d.create(CreateSandboxFromSnapshotParams(name="q3"))
        assert caught.value.status_code == 400
        assert str(caught.value).endswith(f"Total CPU limit exceeded. Maximum allowed: 2.\n{upgrade}")
        await first.stop()  # a stopped sandbox frees its CPU but keeps its disk
        third = await d.create(CreateSandboxFromSnapshotParams(name="q3"))
        with pytest.raises(DaytonaBadRequestError, match="Total CPU limit exceeded"):
            await first.start()  # checked on start as well
        await third.stop()
        with pytest.raises(DaytonaBadRequestError) as caught:
            await d.create(CreateSandboxFromSnapshotParams(name="q4"))
        assert str(caught.value).endswith(
            "Total disk limit exceeded. Maximum allowed: 9GiB.\n"
            f"Consider archiving your unused Sandboxes to free up available storage.\n{upgrade}"
        )
        await third.archive()  # an archived sandbox holds nothing

        async def archived() -> bool:
            await third.refresh_data()
            return third.state == SandboxState.ARCHIVED

        await eventually(archived)
        await d.create(CreateSandboxFromSnapshotParams(name="q4"))
        srv.set_settings(quota={"total_cpu": None, "total_disk": None})
        await first.start()


async def test_per_sandbox_maxima_and_the_quota_fault(srv: LocalSandboxServer) -> None:
    srv.set_settings(quota={"max_cpu_per_sandbox": 1, "max_memory_per_sandbox": 2})
    try:
        async with client(srv) as d:
            with pytest.raises(DaytonaBadRequestError) as caught:
                await d.create(CreateSandboxFromSnapshotParams(snapshot="daytona-medium"))  # 2 cpu, 4 GiB
            assert str(caught.value).endswith(f"CPU request 2 exceeds maximum allowed per sandbox (1).\n{PER_SANDBOX}")
            with pytest.raises(DaytonaBadRequestError) as caught:
                await d.create(CreateSandboxFromImageParams(image="alpine:3", resources=Resources(cpu=1, memory=8)))
            assert "Memory request 8GB exceeds maximum allowed per sandbox (2GB)." in str(caught.value)

            srv.set_faults(quota_exhausted="memory")  # quota exhausted until released
            for _ in range(2):
                with pytest.raises(DaytonaBadRequestError, match=r"Total memory limit exceeded\. Maximum allowed: "):
                    await d.create(CreateSandboxFromSnapshotParams())
            srv.set_faults({})
            await d.create(CreateSandboxFromSnapshotParams())
    finally:
        srv.set_faults({})
        srv.set_settings(quota={"max_cpu_per_sandbox": None, "max_memory_per_sandbox": None})


async def test_intervals_resolve_as_daytona_resolves_them(srv: LocalSandboxServer) -> None:
    async with client(srv) as d:
        zero = await d.create(CreateSandboxFromSnapshotParams(auto_archive_interval=0, auto_delete_interval=-5))
        assert (zero.auto_archive_interval, zero.auto_delete_interval) == (43200, -5)  # 0 = the maximum
        big = await d.create(CreateSandboxFromSnapshotParams(auto_archive_interval=100_000))
        assert big.auto_archive_interval == 43200  # clamped
        await big.set_auto_archive_interval(0)
        await big.refresh_data()
        assert big.auto_archive_interval == 43200
        for body, message in (({"autoArchiveInterval": -1}, "Auto-archive interval must be non-negative"),
                              ({"autoStopInterval": -1}, "Auto-stop interval must be non-negative")):  # fmt: skip
            status, answer, _ = await call(srv, "POST", "/sandbox", body)
            assert (status, answer["message"]) == (400, message)

        ephemeral = await d.create(CreateSandboxFromSnapshotParams(name="ephemeral", auto_delete_interval=0))
        status, stopped, _ = await call(srv, "POST", "/sandbox/ephemeral/stop")  # stopping it deletes it
        assert (status, stopped["desiredState"]) == (200, "destroyed")
        await ephemeral.wait_for_sandbox_stop()  # the SDK counts destroyed as stopped

        status, _, _ = await call(srv, "POST", "/snapshots", {"name": "gpu-snap", "imageName": "x", "gpu": 1})
        assert status == 200
        status, answer, _ = await call(srv, "POST", "/sandbox", {"snapshot": "gpu-snap"})
        assert (status, answer["message"]) == (400, "GPU sandboxes must be ephemeral - set autoDeleteInterval to 0")


async def test_network_allow_list_is_validated_exactly(srv: LocalSandboxServer) -> None:
    ok = "10.0.0.0/8, 192.168.1.0/24"
    async with client(srv) as d:
        sandbox = await d.create(CreateSandboxFromSnapshotParams(network_allow_list=ok))
        assert sandbox.network_allow_list == ok
    cases = [
        ("10.0.0.0", 'Invalid network format: "10.0.0.0". Missing CIDR prefix length (e.g., /24)'),
        ("300.1.1.1/8", 'Invalid IP address: "300.1.1.1" in network "300.1.1.1/8". Must be a valid IPv4 address'),
        ("10.0.0.0/33", "Invalid CIDR prefix length: 10.0.0.0/33. Prefix must be between 0 and 32"),
        (",".join(f"10.0.{i}.0/24" for i in range(11)), "Network allow list cannot contain more than 10 networks"),
    ]
    for allow, message in cases:
        status, answer, _ = await call(srv, "POST", "/sandbox", {"networkAllowList": allow})
        assert (status, answer["message"]) == (400, message), allow
        status, answer, _ = await call(srv, "POST", f"/sandbox/{sandbox.id}/network-settings",
                                       {"networkAllowList": allow})  # fmt: skip
        assert (status, answer["message"]) == (400, message), allow
    status, answer, _ = await call(srv, "POST", "/sandbox", {"domainAllowList": "not a domain"})
    assert (status, answer["message"]) == (400, 'Invalid domain: "not a domain". Must be a valid domain name')


async def test_list_filters_refusals_and_default_order(srv: LocalSandboxServer) -> None:
    labels = {"t": "filters"}
    async with client(srv) as d:
        small = await d.create(CreateSandboxFromSnapshotParams(labels=labels))
        medium = await d.create(CreateSandboxFromSnapshotParams(labels=labels, snapshot="daytona-medium"))
        large = await d.create(CreateSandboxFromSnapshotParams(labels=labels, snapshot="daytona-large"))
        await small.set_labels({**labels, "touched": "yes"})  # not activity: order stays by last activity
        found = [s.id async for s in d.list(ListSandboxesQuery(labels=labels, min_cpu=2, max_cpu=2))]
        assert found == [medium.id]
        query = "labels=" + json.dumps(labels)
        for params, ids in (("minMemoryGiB=8", [large.id]), ("maxDiskGiB=3", []),
                            ("minDiskGiB=8", [large.id, medium.id]), ("sort=cpu&order=asc", [medium.id, large.id]),
                            ("", [large.id, medium.id])):  # fmt: skip
            status, body, _ = await call(srv, "GET", f"/sandbox?{query}&{params}&minCpu=2")
            assert status == 200
            assert [i["id"] for i in body["items"]] == ids, params
        status, body, _ = await call(srv, "GET", f"/sandbox?{query}&createdAtAfter=2999-01-01T00:00:00Z")
        assert body["items"] == []
    refusals = {
        "states=destroyed": "each value must be one of the following values: creating, restoring, destroying",
        "limit=0": "limit must not be less than 1",
        "limit=201": "limit must not be greater than 200",
        "minCpu=0": "minCpu must not be less than 1",
        "sort=size": "sort must be one of the following values: name, cpu, memoryGib, diskGib, lastActivityAt, "
                     "createdAt",
        "labels=%7Bnope": "Invalid labels JSON format",
        "createdAtAfter=yesterday": "createdAtAfter must be a Date instance",
    }
    for params, message in refusals.items():
        status, body, _ = await call(srv, "GET", f"/sandbox?{params}")
        assert status == 400, params
        assert body["message"].startswith(message), (params, body["message"])
    status, body, _ = await call(srv, "GET", "/sandbox?limit=0&minCpu=0")
    assert body["message"] == "limit must not be less than 1, minCpu must not be less than 1"  # all at once


async def test_list_lag_makes_the_list_eventually_consistent(srv: LocalSandboxServer) -> None:
    labels = {"t": "lag"}
    listed = f"/sandbox?labels={json.dumps(labels)}"
    srv.set_faults(list_lag=0.5)
    try:
        status, created, _ = await call(srv, "POST", "/sandbox", {"labels": labels})
        assert status == 200
        assert (await call(srv, "GET", listed))[1]["items"] == []  # not yet visible to the list
        assert (await call(srv, "GET", f"/sandbox/{created['id']}"))[0] == 200  # but GET sees it

        async def visible() -> bool:
            return len((await call(srv, "GET", listed))[1]["items"]) == 1

        await eventually(visible, timeout=10)
        await call(srv, "DELETE", f"/sandbox/{created['id']}")
        assert len((await call(srv, "GET", listed))[1]["items"]) == 1  # deleted, still listed for a while

        async def gone() -> bool:
            return (await call(srv, "GET", listed))[1]["items"] == []

        await eventually(gone, timeout=10)
    finally:
        srv.set_faults({})


async def test_failed_auth_throttler_sends_the_plain_retry_after(srv: LocalSandboxServer) -> None:
    srv.set_settings(failed_auth={"limit": 3, "ttl": 30})
    try:
        for _ in range(2):
            status, body, _ = await call(srv, "GET", "/sandbox", key="wrong")
            assert (status, body["message"]) == (401, "Unauthorized")
        status, body, headers = await call(srv, "GET", "/sandbox", key="wrong")
        assert (status, body["message"]) == (429, "ThrottlerException: Too Many Requests")
        assert headers["Retry-After"] == "30"
        assert headers["X-RateLimit-Remaining-failed-auth"] == "0"
        assert (await call(srv, "GET", "/sandbox"))[0] == 200  # a valid key is never throttled
    finally:
        srv.set_settings(failed_auth=None)
