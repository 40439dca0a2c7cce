"""The Socket.IO notification gateway the SDKs subscribe to (``/api/socket.io/``).

Does: serve Socket.IO (Engine.IO 4, websocket transport only) at ``/api/socket.io/`` with
python-socketio, as Daytona's ``NotificationGateway`` does
(``apps/api/src/notification/gateways/notification.gateway.ts``): the client authenticates with
``auth: {token: <api key>}`` inside the handshake (a wrong or missing token is refused with
``Unauthorized``, so the client stops at once instead of retrying), then receives the
organisation's sandbox events: ``sandbox.created`` (the sandbox DTO),
``sandbox.state.updated`` (``{sandbox, oldState, newState}``) and
``sandbox.desired-state.updated`` (``{sandbox, oldDesiredState, newDesiredState}``). Each client
gets DTOs whose ``toolboxProxyUrl`` uses the host it connected to, since the SDKs adopt that
URL from events. Events are only built while someone is connected.

Does not: authenticate HTTP requests (server middleware) or keep event history.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

import socketio

from .models import SandboxRecord, sandbox_dto
from .states import display_state

log = logging.getLogger("controller.localsandbox")
PATH = "/api/socket.io/"


class EventGateway:
    """The Socket.IO server; `on_change` is a `SandboxStore` listener."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key
        self.sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"], logger=False,
                                        engineio_logger=False, cors_allowed_origins="*")  # fmt: skip
        self._hosts: dict[str, str] = {}  # sid -> host the client connected to
        self._tasks: set[asyncio.Task[None]] = set()
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._api_key.encode()):
            raise socketio.exceptions.ConnectionRefusedError("Unauthorized")
        scheme = environ.get("wsgi.url_scheme", "http")
        host = f"{scheme}://{environ.get('HTTP_HOST', '127.0.0.1')}"
        self._hosts[sid] = host
        await self.sio.enter_room(sid, host)

    async def _disconnect(self, sid: str, *_: Any) -> None:
        self._hosts.pop(sid, None)

    @property
    def connected(self) -> int:
        """How many clients are connected."""
        return len(self._hosts)

    def on_change(self, event: str, rec: SandboxRecord, old: str | None, new: str | None) -> None:
        """Forward a store change to every connected client (nothing to do when none is)."""
        if not self._hosts or event not in ("sandbox.created", "sandbox.state.updated",
                                           "sandbox.desired-state.updated"):  # fmt: skip
            return
        for host in set(self._hosts.values()):
            dto = sandbox_dto(rec, f"{host}/toolbox")
            if event == "sandbox.created":
                payload: dict[str, Any] = dto
            elif event == "sandbox.state.updated":
                payload = {"sandbox": dto, "oldState": display_state(old or "", rec.desired),
                           "newState": dto["state"]}  # fmt: skip
            else:
                payload = {"sandbox": dto, "oldDesiredState": old, "newDesiredState": new}
            task = asyncio.get_running_loop().create_task(self.sio.emit(event, payload, room=host))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Disconnect every client."""
        for sid in list(self._hosts):
            try:
                await self.sio.disconnect(sid)
            except Exception:  # the client may already be gone
                log.debug("localsandbox: socket.io disconnect of %s failed", sid, exc_info=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
