"""Main-API behaviour through the SDK and raw HTTP: auth, errors, listing, state changes,
snapshots and warm pools."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    DaytonaAuthenticationError,
    DaytonaConflictError,
    DaytonaNotFoundError,
    ListSandboxesQuery,
    SandboxState,
    SessionExecuteRequest,
)
from daytona_api_client_async.exceptions import ConflictException

from controller.localsandbox import LocalSandboxServer

from .conftest import client, eventually, process_gone, sandbox_path
from .contract import Contract
from .test_faults import background_pid


async def raw(srv: LocalSandboxServer, method: str, path: str, *, key: str | None = "default",
              **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    headers = {} if key is None else {"Authorization": f"Bearer {srv.api_key if key == 'default' else key}"}
    async with aiohttp.ClientSession() as http, http.request(
        method, srv.base_url + path, headers=headers, **kwargs
    ) as resp:
        text = await resp.text()
        body = json.loads(text) if text and resp.content_type == "application/json" else text
        return resp.status, body, dict(resp.headers)


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_every_request_needs_the_api_key(server: LocalSandboxServer) -> None:
    before = server.stats()["unauthorized"]
    for method, path in [("GET", "/api/sandbox"), ("POST", "/api/sandbox"), ("GET", "/toolbox/x/process/session"),
                         ("GET", "/_admin/stats"), ("POST", "/_admin/faults"), ("GET", "/nowhere")]:
        for key in (None, "wrong-key"):
            status, body, _ = await raw(server, method, path, key=key)
            assert status == 401, (method, path)
            assert body["statusCode"] == 401
            assert body["error"] == "Unauthorized"
            assert body["message"]
    assert server.stats()["unauthorized"] - before == 12
    async with client(server, api_key="not-the-key") as d:
        with pytest.raises(DaytonaAuthenticationError):
            await d.get("anything")


async def test_error_shapes_for_conflict_not_found_and_unknown_routes(
    server: LocalSandboxServer, daytona: AsyncDaytona
) -> None:
    sandbox_name = name("dup")
    await daytona.create(CreateSandboxFromSnapshotParams(name=sandbox_name))
    with pytest.raises(DaytonaConflictError):
        await daytona.create(CreateSandboxFromSnapshotParams(name=sandbox_name))
    status, body, _ = await raw(server, "POST", "/api/sandbox", json={"name": sandbox_name})
    assert (status, body["statusCode"], body["error"]) == (409, 409, "Conflict")
    assert sandbox_name in body["message"]
    assert server.stats()["creates_by_name"][sandbox_name] == 1


async def test_stats_record_when_each_name_was_first_created(
    server: LocalSandboxServer, daytona: AsyncDaytona
) -> None:
    sandbox_name = name("timed")
    before = time.time()
    await daytona.create(CreateSandboxFromSnapshotParams(name=sandbox_name))
    first = server.stats()["first_create_at"][sandbox_name]
    assert before <= first <= time.time()
    await daytona.delete(await daytona.get(sandbox_name))
    await daytona.create(CreateSandboxFromSnapshotParams(name=sandbox_name))
    stats = server.stats()
    assert stats["creates_by_name"][sandbox_name] == 2
    assert stats["first_create_at"][sandbox_name] == first  # the first create, not the latest
    server.reset_stats()
    assert server.stats()["first_create_at"] == {}

    status, body, _ = await raw(server, "DELETE", "/api/sandbox/no-such-sandbox?x=1")
    assert status == 404
    # Daytona's AllExceptionsFilter shape: the request URL with its query, an ISO timestamp
    assert body == {"path": "/api/sandbox/no-such-sandbox?x=1", "timestamp": body["timestamp"], "statusCode": 404,
                    "error": "Not Found", "message": "Sandbox with ID or name no-such-sandbox not found"}  # fmt: skip
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).timestamp() == pytest.approx(
        time.time(), abs=60)
    status, body, _ = await raw(server, "GET", "/api/no/such/route")
    assert status == 404
    assert body["error"] == "Not Found"
    status, body, _ = await raw(server, "POST", "/api/sandbox", data=b"{not json")
    assert status == 400
    assert body["error"] == "Bad Request"
    with pytest.raises(DaytonaNotFoundError):
        await daytona.get("no-such-sandbox")


async def test_list_filters_and_cursor_pages(server: LocalSandboxServer, daytona: AsyncDaytona) -> None:
    labels = {"test": "list", "run": uuid.uuid4().hex[:8]}
    made = await asyncio.gather(
        *(daytona.create(CreateSandboxFromSnapshotParams(name=name("ls"), labels=labels)) for _ in range(7))
    )
    await made[0].stop()
    query = json.dumps(labels)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    stamps: list[str] = []
    while True:
        params = {"labels": query, "limit": "3", "sort": "createdAt", **({"cursor": cursor} if cursor else {})}
        status, body, _ = await raw(server, "GET", "/api/sandbox", params=params)
        assert status == 200
        pages += 1
        seen += [item["id"] for item in body["items"]]
        stamps += [item["createdAt"] for item in body["items"]]
        assert "nextCursor" in body
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(s.id for s in made)
    assert stamps == sorted(stamps, reverse=True)  # newest first
    status, body, _ = await raw(server, "GET", "/api/sandbox", params={"labels": query})
    activity = [item["lastActivityAt"] for item in body["items"]]
    assert activity == sorted(activity, reverse=True)  # Daytona's default order: lastActivityAt desc
    assert body["items"][0]["id"] == made[0].id  # the stop was the latest activity

    stopped = [s async for s in daytona.list(ListSandboxesQuery(labels=labels, states=[SandboxState.STOPPED]))]
    assert [s.id for s in stopped] == [made[0].id]
    status, body, _ = await raw(server, "GET", "/api/sandbox",
                                params=[("labels", query), ("states", "stopped"), ("states", "started")])
    assert len(body["items"]) == 7
    assert [s async for s in daytona.list(ListSandboxesQuery(labels={**labels, "run": "other"}))] == []
    status, _, _ = await raw(server, "GET", "/api/sandbox", params={"limit": "500"})
    assert status == 400


async def test_a_change_between_two_pages_shows_on_the_next_page(server: LocalSandboxServer,
                                                                  daytona: AsyncDaytona) -> None:
    """The list reuses its ordering between pages (listing.PageCache) only while nothing changed."""
    labels = {"test": "pages", "run": uuid.uuid4().hex[:8]}
    made = [await daytona.create(CreateSandboxFromSnapshotParams(name=name("pg"), labels=labels)) for _ in range(6)]

    async def page(cursor: str | None) -> tuple[list[str], str | None]:
        params = {"labels": json.dumps(labels), "limit": "3", **({"cursor": cursor} if cursor else {})}
        status, body, _ = await raw(server, "GET", "/api/sandbox", params=params)
        assert status == 200
        return [item["id"] for item in body["items"]], body["nextCursor"]

    first, cursor = await page(None)  # by lastActivityAt, newest first: the last three created
    assert first == [s.id for s in reversed(made[3:])]
    await made[0].stop()  # its activity is now the newest: it moves before the cursor
    status, _, _ = await raw(server, "PUT", f"/api/sandbox/{made[1].id}/labels", json={"labels": {"other": "x"}})
    assert status == 200
    second, cursor = await page(cursor)
    assert (second, cursor) == ([made[2].id], None)


async def test_state_changes_labels_and_toolbox_gate(server: LocalSandboxServer, daytona: AsyncDaytona) -> None:
    sandbox = await daytona.create(CreateSandboxFromSnapshotParams(name=name("st"), labels={"a": "1"}))
    new = await sandbox.set_labels({"b": "2"})
    assert new == {"b": "2"}
    assert (await daytona.get(sandbox.id)).labels == {"b": "2"}

    await sandbox.stop()
    assert sandbox.state == SandboxState.STOPPED
    with pytest.raises(DaytonaConflictError, match="not running"):
        await sandbox.process.exec("true")
    await sandbox.start()
    assert sandbox.state == SandboxState.STARTED
    assert (await sandbox.process.exec("echo back")).result == "back\n"

    await sandbox.set_ttl(0)
    status, body, _ = await raw(server, "GET", f"/api/sandbox/{sandbox.id}/toolbox-proxy-url")
    assert (status, body) == (200, {"url": server.toolbox_url})
    await sandbox.set_autostop_interval(0)
    await sandbox.set_auto_delete_interval(-1)
    await sandbox.set_auto_archive_interval(60)
    await sandbox.refresh_data()
    assert (sandbox.auto_stop_interval, sandbox.auto_delete_interval, sandbox.auto_archive_interval) == (0, -1, 60)
    await sandbox.stop()
    await sandbox.archive()  # answered `archiving`; `archived` a transition later

    async def archived() -> bool:
        await sandbox.refresh_data()
        return sandbox.state == SandboxState.ARCHIVED

    await eventually(archived)
    await sandbox.start()
    assert sandbox.state == SandboxState.STARTED


async def test_delete_kills_process_groups_and_removes_the_directory(
    server: LocalSandboxServer, daytona: AsyncDaytona
) -> None:
    sandbox = await daytona.create(CreateSandboxFromSnapshotParams(name=name("del")))
    await sandbox.process.create_session("s")
    cmd = await sandbox.process.execute_session_command(
        "s", SessionExecuteRequest(command="sleep 1000 & echo $!; wait", run_async=True)
    )

    sleeper = await background_pid(sandbox, "s", cmd.cmd_id)
    assert not process_gone(sleeper)
    assert os.getpgid(sleeper) != os.getpgid(0)  # its own process group, not the server's
    directory = sandbox_path(server, sandbox.id)
    assert os.path.isdir(directory)
    await sandbox.delete()

    async def gone() -> bool:
        return process_gone(sleeper)

    await eventually(gone, timeout=5)

    async def removed() -> bool:
        return not os.path.exists(directory)

    await eventually(removed, timeout=5)
    async def not_found() -> bool:
        try:
            await daytona.get(sandbox.id)
        except DaytonaNotFoundError:
            return True
        return False

    await eventually(not_found, timeout=5)


async def test_snapshots_and_warm_pools(contract: Contract, tmp_path: Any) -> None:
    async with LocalSandboxServer(api_key="k", root=tmp_path, response_observer=contract.observe,
                                  faults={"latency": {"create": 0.3}}) as srv, client(srv) as d:
        page = await d.snapshot.list()
        assert {"daytona-small", "daytona-medium", "daytona-large"} <= {s.name for s in page.items}
        snap = await d.snapshot.create(CreateSnapshotParams(name="warm", image="python:3.12-slim"))
        assert snap.state == "active"
        assert (await d.snapshot.get("warm")).id == snap.id
        await d.snapshot.activate("warm")

        pool = await d.warm_pool.create("warm", pool=2)
        assert pool.pool == 2
        assert pool.snapshot == "warm"
        with pytest.raises(ConflictException):  # the SDK does not wrap warm-pool errors
            await d.warm_pool.create("warm", pool=1)

        async def filled() -> bool:
            return [p.current_size for p in await d.warm_pool.list()] == [2]

        await eventually(filled, timeout=5)
        started = time.monotonic()
        hit = await d.create(CreateSandboxFromSnapshotParams(name="from-pool", snapshot="warm"))
        pool_latency = time.monotonic() - started
        started = time.monotonic()
        miss = await d.create(CreateSandboxFromSnapshotParams(name="cold", snapshot="daytona-small"))
        cold_latency = time.monotonic() - started
        assert pool_latency < 0.2 <= 0.3 <= cold_latency, (pool_latency, cold_latency)
        assert srv.stats()["pool_hits"] == 1
        assert (await hit.process.exec("echo warm")).result == "warm\n"
        assert hit.snapshot == "warm"
        assert miss.cpu == 1

        # a create with env is not served from the pool (Daytona's rule)
        await d.create(CreateSandboxFromSnapshotParams(name="with-env", snapshot="warm", env_vars={"A": "1"}))
        assert srv.stats()["pool_misses"] == 1
        await eventually(filled, timeout=5)  # refilled behind the claim
        updated = await d.warm_pool.update(pool.id, 0)
        assert updated.pool == 0
        assert updated.current_size == 0
        await d.warm_pool.delete(pool.id)
        assert await d.warm_pool.list() == []
        await d.snapshot.delete("warm")
        with pytest.raises(DaytonaNotFoundError):
            await d.snapshot.get("warm")
        status, body, _ = await raw(srv, "POST", "/api/sandbox", json={"snapshot": "warm"})
        assert status == 400
        assert "not found" in body["message"]
