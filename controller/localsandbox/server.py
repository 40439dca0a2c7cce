"""`LocalSandboxServer`: the embedded Daytona-compatible server as an async context manager.

Usage::

    async with LocalSandboxServer(api_key="k", minute_seconds=0.5,
                                  faults={"latency": {"create": 0.05}}) as srv:
        daytona = AsyncDaytona(DaytonaConfig(api_url=srv.api_url, api_key=srv.api_key))
        ...
        srv.stats(); srv.set_faults({...}); srv.lose("sandbox-name")

Does: assemble the aiohttp application (main API under ``/api``, the Socket.IO gateway at
``/api/socket.io/`` (see `events`), toolbox under ``/toolbox/{id}``, admin under ``/_admin``)
behind one middleware that, in order, authenticates (``Authorization: Bearer <key>``, else 401
in the API error shape; with the ``failed_auth`` setting, too many bad keys from one client
answer 429 with a plain ``Retry-After``, as Daytona's failed-auth throttler does; the Socket.IO
endpoint authenticates inside its handshake instead), counts the call under its operation name,
applies injected faults (latency, 429 + ``Retry-After-<throttler>``, 409 state change in
progress, errors before or after the operation), turns `ApiError`/unknown routes/crashes into
JSON errors in Daytona's shape, and finally hands every response to the optional
`response_observer` (tests use it to validate bodies against the SDK's generated models). It
probes the isolation mode once at start and logs it (never the API key).

Does not: import anything from the rest of ``controller`` or from the Daytona SDK.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from . import admin, api, catalog_api, coderun, fileops, files, gitops, interpreter, pty, toolbox
from .actions import Actions
from .catalog import Catalog
from .containers import Containers
from .context import CONTEXT, Handler, Route, ServerContext
from .errors import ApiError, api_error_body, state_change_in_progress
from .events import PATH as SOCKETIO_PATH
from .events import EventGateway
from .faults import INTERNAL_OPS, FaultInjector, Faults
from .isolation import Isolation, choose_isolation
from .layout import remove_tree
from .listindex import ListIndex
from .network import Network
from .network import probe as network_probe
from .settings import Settings, merge_settings
from .stats import Stats
from .store import SandboxStore
from .throttle import FailedAuthTracker

log = logging.getLogger("controller.localsandbox")

T = TypeVar("T")
DEFAULT_ORG = "00000000-0000-4000-8000-000000000000"
ALL_ROUTES: list[Route] = [*api.ROUTES, *catalog_api.ROUTES, *toolbox.ROUTES, *coderun.ROUTES, *interpreter.ROUTES,
                           *files.ROUTES, *fileops.ROUTES, *gitops.ROUTES,
                           *pty.ROUTES, *admin.ROUTES]


@dataclass(frozen=True)
class ObservedResponse:
    """One response as the observer sees it. `body` is the parsed JSON (None if not JSON)."""

    op: str
    method: str
    path: str
    status: int
    content_type: str
    body: Any
    raw: bytes
    streamed: bool


ResponseObserver = Callable[[ObservedResponse], None]


def _retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _error_response(err: ApiError, request: web.Request) -> web.Response:
    resp = web.json_response(err.body(request.path_qs, request.method), status=err.status)
    resp.headers.update(err.headers)
    return resp


class _Middleware:
    def __init__(self, c: ServerContext, ops: dict[int, str], observer: ResponseObserver | None) -> None:
        self._c = c
        self._ops = ops
        self._observer = observer
        self._failed_auth = FailedAuthTracker()

    def op_of(self, request: web.Request) -> str:
        op = self._ops.get(id(request.match_info.route), "unknown")
        if op == "command_logs" and request.query.get("follow", "").lower() == "true":
            return "command_logs_follow"
        return op

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._c.api_key.encode())

    async def _guarded(self, request: web.Request, handler: Handler, op: str) -> web.StreamResponse:
        if op == "socketio":  # the SDKs authenticate inside the Socket.IO handshake, not with a header
            self._c.stats.call(op)
            return await handler(request)
        if not self._authorized(request):
            self._c.stats.bump("unauthorized")
            limit = self._c.store.settings.failed_auth
            blocked = self._failed_auth.failed(request.remote or "", limit) if limit else None
            if blocked is not None:
                self._c.stats.bump("rate_limited")
                raise ApiError(429, "ThrottlerException: Too Many Requests", headers=blocked)
            raise ApiError(401, "Unauthorized")
        self._c.stats.call(op)
        decision = self._c.faults.decide(op) if op not in INTERNAL_OPS else None
        if decision is not None:
            if decision.latency:
                await asyncio.sleep(decision.latency)
            if decision.retry_after is not None:
                self._c.stats.bump("rate_limited")
                header = f"Retry-After-{decision.throttler}"
                raise ApiError(429, "ThrottlerException: Too Many Requests",
                               headers={header: _retry_after(decision.retry_after)})  # fmt: skip
            if decision.conflict:
                self._c.stats.bump("errors_injected")
                raise state_change_in_progress()
            if decision.error is not None and not decision.error.after:
                self._c.stats.bump("errors_injected")
                raise ApiError(decision.error.status, f"injected fault: {op} failed")
        resp = await handler(request)
        if decision is not None and decision.error is not None and decision.error.after and not resp.prepared:
            self._c.stats.bump("errors_injected")
            raise ApiError(decision.error.status, f"injected fault: {op} failed after it was carried out")
        return resp

    @web.middleware
    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        op = self.op_of(request)
        try:
            resp = await self._guarded(request, handler, op)
        except ApiError as err:
            resp = _error_response(err, request)
        except ConnectionResetError:
            raise  # the client went away mid-response: nothing left to answer
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = f"Cannot {request.method} {request.path}" if exc.status in (404, 405) else exc.reason
            resp = web.json_response(api_error_body(exc.status, message, request.path_qs), status=exc.status)
        except Exception:
            log.exception("localsandbox: %s %s failed", request.method, request.path)
            resp = web.json_response(api_error_body(500, "An unexpected error occurred.", request.path_qs), status=500)
        if self._observer is not None:
            self._observe(request, op, resp)
        return resp

    def _observe(self, request: web.Request, op: str, resp: web.StreamResponse) -> None:
        assert self._observer is not None
        raw = b""
        body: Any = None
        streamed = resp.prepared or not isinstance(resp, web.Response)
        if isinstance(resp, web.Response) and isinstance(resp.body, bytes | bytearray):
            raw = bytes(resp.body)
            if resp.content_type == "application/json" and raw:
                body = json.loads(raw)
        try:
            self._observer(ObservedResponse(op, request.method, request.path, resp.status,
                                            resp.content_type, body, raw, streamed))  # fmt: skip
        except Exception:
            log.exception("localsandbox: response observer failed")


def build_app(c: ServerContext, events: EventGateway, observer: ResponseObserver | None = None) -> web.Application:
    """The aiohttp application serving every route for context `c`."""
    ops: dict[int, str] = {}
    mw = _Middleware(c, ops, observer)
    app = web.Application(middlewares=[mw.__call__], client_max_size=64 * 1024 * 1024)
    app[CONTEXT] = c
    socketio_routes = [Route(m, SOCKETIO_PATH, "socketio", events.sio.handle_request) for m in ("GET", "POST")]
    for route in [*socketio_routes, *ALL_ROUTES]:
        registered = app.router.add_route(route.method, route.path, route.handler)
        ops[id(registered)] = route.op
    return app


def _prepare_root(root: str | None) -> str:
    """The absolute root directory, created if needed (a fresh temp dir when None)."""
    if root is None:
        return tempfile.mkdtemp(prefix="localsandbox-")
    os.makedirs(root, exist_ok=True)
    return os.path.abspath(root)


_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - mapping, not binding


class LocalSandboxServer:
    """The embedded server; see the module docstring.

    `faults` takes the JSON form documented in `faults` (or a `Faults`); `seed` seeds the
    fault RNG; `isolation` is ``auto``/``plain``/``bwrap``/``container`` (`podman_env`: the
    environment podman runs with in container mode, e.g. the project's own store); `root` defaults to a temporary
    directory removed on exit; `minute_seconds` is how long one lifecycle "minute" lasts.
    """

    def __init__(
        self,
        api_key: str | None = None,
        root: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        minute_seconds: float = 60.0,
        faults: Mapping[str, Any] | Faults | None = None,
        seed: int | None = None,
        isolation: str = "plain",
        response_observer: ResponseObserver | None = None,
        organization_id: str = DEFAULT_ORG,
        target: str = "local",
        access_log: bool = False,
        settings: Mapping[str, Any] | Settings | None = None,
        podman_env: Mapping[str, str] | None = None,
        bwrap: str | None = None,
    ) -> None:
        if minute_seconds <= 0:
            raise ValueError("minute_seconds must be positive")
        self._settings = settings if isinstance(settings, Settings) else merge_settings(Settings(), settings)
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.host = host
        self.port = port
        self.minute_seconds = minute_seconds
        self._root_arg = os.fspath(root) if root is not None else None
        self._initial_faults = faults
        self._seed = seed
        self._isolation_arg = isolation
        self._observer = response_observer
        self._org = organization_id
        self._target = target
        self._access_log = access_log
        self._podman_env = podman_env
        self._bwrap = bwrap
        self._containers: Containers | None = None
        self._runner: web.AppRunner | None = None
        self._ctx: ServerContext | None = None
        self._events: EventGateway | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.root = ""
        self.isolation: Isolation | None = None

    # lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve (returns once listening)."""
        self._loop = asyncio.get_running_loop()
        self.root = _prepare_root(self._root_arg)
        self.isolation = await asyncio.to_thread(functools.partial(choose_isolation, self._isolation_arg,
                                                                   bwrap=self._bwrap))  # fmt: skip
        injector = FaultInjector(seed=self._seed)
        stats = Stats()
        catalog = Catalog(self.root, self._org, self._target, injector)
        network = Network(await asyncio.to_thread(network_probe), os.path.join(self.root, ".network"))
        if self.isolation.mode == "container":
            self._containers = Containers(self.root, self._podman_env)
            stale = await self._containers.remove_all()  # a crashed server's, same root
            if stale:
                log.warning("localsandbox: removed %d containers a previous server left in %s", stale, self.root)
        store = SandboxStore(self.root, minute_seconds=self.minute_seconds, isolation=self.isolation,
                             faults=injector, stats=stats, catalog=catalog, org_id=self._org,
                             target=self._target, settings=self._settings, network=network,
                             containers=self._containers)  # fmt: skip
        actions = Actions(store, catalog, lambda: f"{self.base_url}/dashboard")
        index = ListIndex(store.records, lambda: injector.faults.list_lag if injector.faults.list_lag is not None
                          else store.settings.list_lag)  # fmt: skip
        self._events = EventGateway(self.api_key)
        store.listeners += [index.on_change, self._events.on_change]
        self._ctx = ServerContext(store, catalog, injector, stats, self.isolation, self.api_key, actions, index)
        if self._initial_faults is not None:
            if isinstance(self._initial_faults, Faults):
                injector.replace(self._initial_faults)
            else:
                admin.apply_faults(self._ctx, dict(self._initial_faults))
        app = build_app(self._ctx, self._events, self._observer)
        self._runner = web.AppRunner(app, access_log=log if self._access_log else None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1])
        store.start_timers()
        log.info("localsandbox: serving %s (%s, network=%s, root %s)", self.api_url, self.isolation.describe(),
                 network.mode, self.root)  # fmt: skip

    async def stop(self) -> None:
        """Kill every sandbox process, stop serving, remove what the server created."""
        if self._events is not None:
            await self._events.close()
        if self._ctx is not None:
            await self._ctx.store.close()
            await self._ctx.catalog.close()
        if self._containers is not None:
            await self._containers.remove_all()
            self._containers = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._root_arg is None and self.root:
            remove_tree(self.root)

    async def __aenter__(self) -> LocalSandboxServer:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (a wildcard bind address is reported as loopback)."""
        host = _WILDCARDS.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The Daytona ``api_url``: ``http://HOST:PORT/api``."""
        return f"{self.base_url}/api"

    @property
    def toolbox_url(self) -> str:
        """The advertised ``toolboxProxyUrl`` for local clients."""
        return f"{self.base_url}/toolbox"

    # admin -----------------------------------------------------------------------------

    def _context(self) -> ServerContext:
        if self._ctx is None:
            raise RuntimeError("server is not started")
        return self._ctx

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's event loop (directly when already on it)."""
        self._context()
        loop = self._loop
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is None or current is loop:
            return fn()

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=60)

    def stats(self) -> dict[str, Any]:
        """The same counters as ``GET /_admin/stats``."""
        return self._on_loop(lambda: admin.stats_json(self._context()))

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._on_loop(self._context().stats.reset)

    def set_faults(self, faults: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Replace the fault settings (JSON form, or keyword arguments of the same names).

        Returns what ``POST /_admin/faults`` returns; raises `ApiError` (400) on bad settings.
        """
        spec = {**dict(faults or {}), **kwargs}
        return self._on_loop(lambda: admin.apply_faults(self._context(), spec))

    def faults(self) -> dict[str, Any]:
        """The current fault settings."""
        return self._on_loop(lambda: self._context().faults.current().to_json())

    def set_settings(self, settings: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Merge settings (JSON form of `settings`, or keyword arguments); returns them all."""
        spec = {**dict(settings or {}), **kwargs}
        return self._on_loop(lambda: admin.apply_settings(self._context(), spec))

    def settings(self) -> dict[str, Any]:
        """The current settings."""
        return self._on_loop(lambda: self._context().store.settings.to_json())

    def lose(self, sandbox_id_or_name: str) -> bool:
        """Destroy a sandbox behind the client's back; False if there is no such sandbox.

        Safe to call from other threads (it runs on the server's loop).
        """
        return self._on_loop(lambda: self._context().store.lose(sandbox_id_or_name))


__all__ = ["LocalSandboxServer", "ObservedResponse", "ResponseObserver", "build_app"]
