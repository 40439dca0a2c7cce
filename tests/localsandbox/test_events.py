"""The Socket.IO gateway at ``/api/socket.io/`` as the SDKs' client (python-socketio, websocket only)
sees it: token in the handshake, refused without it, and the organisation's sandbox events."""

from __future__ import annotations

from typing import Any

import pytest
import socketio
from daytona import CreateSandboxFromSnapshotParams

from controller.localsandbox import LocalSandboxServer

from .conftest import client, eventually


async def connect(srv: LocalSandboxServer, token: str) -> tuple[socketio.AsyncClient, list[tuple[str, Any]]]:
    sio = socketio.AsyncClient(reconnection=False)
    got: list[tuple[str, Any]] = []
    for event in ("sandbox.created", "sandbox.state.updated", "sandbox.desired-state.updated"):
        sio.on(event, lambda data, event=event: got.append((event, data)))
    await sio.connect(srv.base_url, socketio_path="/api/socket.io/", transports=["websocket"],
                      auth={"token": token})  # fmt: skip
    return sio, got


async def test_events_follow_a_sandbox_through_its_states(server: LocalSandboxServer) -> None:
    sio, got = await connect(server, server.api_key)
    try:
        async with client(server) as d:
            sandbox = await d.create(CreateSandboxFromSnapshotParams(name="evented"))
            await sandbox.stop()

            def states() -> list[str]:
                return [data["newState"] for event, data in got
                        if event == "sandbox.state.updated" and data["sandbox"]["id"] == sandbox.id]  # fmt: skip

            async def stopped() -> bool:
                return "stopped" in states()

            await eventually(stopped)
            assert states()[-3:] == ["started", "stopping", "stopped"]
            created = [data for event, data in got if event == "sandbox.created" and data["id"] == sandbox.id]
            assert created and created[0]["name"] == "evented"
            desired = [data["newDesiredState"] for event, data in got
                       if event == "sandbox.desired-state.updated" and data["sandbox"]["id"] == sandbox.id]  # fmt: skip
            assert desired == ["stopped"]
            update = next(data for event, data in got if event == "sandbox.state.updated")
            assert update["sandbox"]["toolboxProxyUrl"] == server.toolbox_url  # the host this client used
    finally:
        await sio.disconnect()


async def test_a_wrong_token_is_refused_in_the_handshake(server: LocalSandboxServer) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    refused: list[Any] = []
    sio.on("connect_error", refused.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(server.base_url, socketio_path="/api/socket.io/", transports=["websocket"],
                          auth={"token": "not-the-key"})  # fmt: skip
    assert refused == [{"message": "Unauthorized"}]  # as Daytona's gateway answers: the client gives up
