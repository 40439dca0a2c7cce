"""Shared per-server state handed to request handlers, and small request helpers.

Does: bundle the store, actions, list index and page cache, catalog, fault injector, stats and isolation
mode of one server in a `ServerContext` stored on the aiohttp application; describe routes (`Route`: method, path,
operation name, handler); read JSON bodies (400 on malformed JSON); and work out the
``toolboxProxyUrl`` to advertise (from the Host the client used, so it is reachable by
whoever asked).

Does not: define any endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .actions import Actions
from .catalog import Catalog
from .errors import ApiError, bad_request
from .faults import FaultInjector
from .isolation import Isolation
from .listindex import ListIndex
from .listing import PageCache
from .stats import Stats
from .store import SandboxStore

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ServerContext:
    """Everything handlers share."""

    store: SandboxStore
    catalog: Catalog
    faults: FaultInjector
    stats: Stats
    isolation: Isolation
    api_key: str
    actions: Actions
    index: ListIndex
    pages: PageCache = field(default_factory=PageCache)


CONTEXT: web.AppKey[ServerContext] = web.AppKey("localsandbox_context", ServerContext)


@dataclass(frozen=True)
class Route:
    """One endpoint: `op` names it in stats and fault settings."""

    method: str
    path: str
    op: str
    handler: Handler


def ctx(request: web.Request) -> ServerContext:
    """The `ServerContext` of the server handling `request`."""
    return request.app[CONTEXT]


def toolbox_url(request: web.Request) -> str:
    """The toolbox base URL clients should use (``http://HOST:PORT/toolbox``)."""
    return f"{request.scheme}://{request.host}/toolbox"


async def json_body(request: web.Request, *, required: bool = True) -> Any:
    """The request's JSON body; 400 if it is not JSON (or missing when `required`)."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise bad_request("request body is required")
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from exc


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response."""
    return web.json_response(data, status=status)


def int_param(request: web.Request, name: str) -> int:
    """An integer path parameter (400 if it is not one)."""
    try:
        return int(request.match_info[name])
    except ValueError as exc:
        raise ApiError(400, f"{name} must be an integer") from exc
