"""The operator's HTTP port: /healthz, /readyz (what it means: `readiness.py`) and /metrics (more
routes are added by the webhook and the status page). Runs on every replica, active or standby.

Deliberately not kopf's liveness endpoint: one server, one port, for everything the pod exposes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import REGISTRY


class ReadyVerdict(Protocol):
    @property
    def ready(self) -> bool: ...
    @property
    def reason(self) -> str: ...


class HttpServer:
    def __init__(self, *, host: str, port: int, ready: Callable[[], Awaitable[ReadyVerdict]],
                 alive: Callable[[], tuple[bool, Mapping[str, str]]] = lambda: (True, {})):
        self.host, self.port = host, port
        self._ready = ready
        self._alive = alive
        self.app = web.Application(client_max_size=2 * 1024 * 1024)
        self.app.router.add_get("/healthz", self._health)
        self.app.router.add_get("/readyz", self._readiness)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None

    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        """Register more routes (webhook, status page); only before `start()`."""
        self.app.router.add_routes(routes)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, _: web.Request) -> web.Response:
        ok, problems = self._alive()
        return web.json_response({"status": "ok" if ok else "wedged", "problems": dict(problems)},
                                 status=200 if ok else 500)

    async def _readiness(self, _: web.Request) -> web.Response:
        verdict = await self._ready()
        return web.json_response({"ready": verdict.ready, "reason": verdict.reason},
                                 status=200 if verdict.ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
