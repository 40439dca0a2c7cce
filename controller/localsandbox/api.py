"""The main Daytona REST API for sandboxes under ``/api/sandbox``.

Does: translate HTTP to `Actions`/`SandboxStore` calls and records to JSON::

    POST   /api/sandbox                       create (see `actions`)              -> Sandbox
    GET    /api/sandbox                       list (see `listing`)                -> ListSandboxesResponse
    GET    /api/sandbox/{idOrName}            get                                 -> Sandbox
    DELETE /api/sandbox/{idOrName}            soft delete (409 while changing)    -> Sandbox
    POST   /api/sandbox/{idOrName}/start|stop|archive                           -> Sandbox
    PUT    /api/sandbox/{idOrName}/labels     replace labels                      -> SandboxLabels
    POST   /api/sandbox/{idOrName}/autostop|autoarchive|autodelete/{n}, /ttl/{n}  -> Sandbox
    POST   /api/sandbox/{idOrName}/network-settings                              -> Sandbox
    POST   /api/sandbox/{idOrName}/public/{true|false}                           -> Sandbox
    GET    /api/sandbox/{idOrName}/toolbox-proxy-url                             -> ToolboxProxyUrl
    GET    /api/sandbox/{idOrName}/build-logs-url, /build-logs[?follow=true]     image creates: the build log

Lifecycle calls are asynchronous as in Daytona (``actions``): stop answers ``stopping``,
delete answers the renamed sandbox with desired state ``destroyed``. Snapshot, warm-pool and
volume routes are in `catalog_api`.

Does not: authenticate or inject faults (server middleware), or touch files/processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .context import Handler, Route, ctx, int_param, json_body, json_response, toolbox_url
from .errors import bad_request, not_found
from .listing import parse_list_query
from .models import SandboxRecord, parse_create_request, sandbox_dto, sandbox_list_item
from .validation import (
    resolve_auto_archive,
    resolve_auto_stop,
    validate_domain_allow_list,
    validate_network_allow_list,
)

SANDBOX = "/api/sandbox/{sid}"
BUILD_LOG_POLL = 0.1  # seconds between looks at a growing build log


def _dto(request: web.Request, rec: SandboxRecord) -> web.Response:
    return json_response(sandbox_dto(rec, toolbox_url(request)))


def _rec(request: web.Request) -> SandboxRecord:
    return ctx(request).store.get(request.match_info["sid"])


async def create(request: web.Request) -> web.StreamResponse:
    req = parse_create_request(await json_body(request))
    return json_response(await ctx(request).actions.create(req, toolbox_url(request)))


async def get(request: web.Request) -> web.StreamResponse:
    return _dto(request, _rec(request))


async def list_sandboxes(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    q = parse_list_query(list(request.query.items()))
    records = c.index.view()
    items, next_cursor = c.pages.page(records, q, generation=None if c.index.lagging else c.store.generation)
    url = toolbox_url(request)
    return json_response({"items": [sandbox_list_item(r, url) for r in items], "nextCursor": next_cursor})


async def delete(request: web.Request) -> web.StreamResponse:
    return json_response(await ctx(request).actions.delete(_rec(request), toolbox_url(request)))


async def start(request: web.Request) -> web.StreamResponse:
    return json_response(await ctx(request).actions.start(_rec(request), toolbox_url(request)))


async def stop(request: web.Request) -> web.StreamResponse:
    force = request.query.get("force", "").lower() == "true"
    return json_response(await ctx(request).actions.stop(_rec(request), toolbox_url(request), force=force))


async def archive(request: web.Request) -> web.StreamResponse:
    return json_response(await ctx(request).actions.archive(_rec(request), toolbox_url(request)))


async def labels(request: web.Request) -> web.StreamResponse:
    rec = _rec(request)
    body = await json_body(request)
    new = body.get("labels") if isinstance(body, dict) else None
    if not isinstance(new, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in new.items()):
        raise bad_request("labels must be an object of strings")
    rec.labels = dict(new)
    ctx(request).store.changed(rec)
    return json_response({"labels": dict(rec.labels)})


def _interval_handler(attr: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        c = ctx(request)
        rec = _rec(request)
        value = int_param(request, "n")
        if attr == "auto_stop":
            value = resolve_auto_stop(value)
        elif attr == "auto_archive":
            value = resolve_auto_archive(value, c.store.settings.max_auto_archive)
        elif attr == "auto_delete" and rec.gpu > 0:
            raise bad_request("GPU sandboxes must remain ephemeral")
        elif attr == "ttl_minutes" and value < 0:
            raise bad_request("TTL must be non-negative")
        setattr(rec, attr, value)
        c.store.changed(rec)
        return _dto(request, rec)

    return handler


def _optional(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise bad_request(f"{key} must be a {'boolean' if kind is bool else 'string'}")
    return value


async def network_settings(request: web.Request) -> web.StreamResponse:
    """``updateNetworkSettings``: a non-empty allow list lifts block-all; block-all clears the list."""
    c = ctx(request)
    rec = _rec(request)
    body = await json_body(request, required=False) or {}
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    block_all = _optional(body, "networkBlockAll", bool)
    allow = _optional(body, "networkAllowList", str)
    domains = _optional(body, "domainAllowList", str)
    if domains is not None:
        rec.domain_allow_list = validate_domain_allow_list(domains) if domains.strip() else None
    if block_all is not None:
        rec.network_block_all = block_all
        if block_all:
            rec.network_allow_list = None
    if allow is not None:
        if allow.strip():
            rec.network_allow_list = validate_network_allow_list(allow)
            rec.network_block_all = False
        else:
            rec.network_allow_list = None
    elif block_all is False:
        rec.network_allow_list = None
    await c.actions.apply_network(rec)
    c.store.changed(rec)
    return _dto(request, rec)


async def public(request: web.Request) -> web.StreamResponse:
    rec = _rec(request)
    flag = request.match_info["flag"].lower()
    if flag not in ("true", "false"):
        raise bad_request("isPublic must be true or false")
    rec.public = flag == "true"
    ctx(request).store.changed(rec)
    return _dto(request, rec)


async def build_logs_url(request: web.Request) -> web.StreamResponse:
    rec = _rec(request)
    if rec.build_key is None:
        raise not_found(f"Sandbox {rec.id} has no build information")
    return json_response({"url": f"{request.scheme}://{request.host}/api/sandbox/{rec.id}/build-logs"})


async def build_logs(request: web.Request) -> web.StreamResponse:
    """The build's log as text; ``follow=true`` streams it until the build has ended."""
    rec = _rec(request)
    if rec.build_key is None:
        raise not_found(f"Sandbox {rec.id} has no build information")
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    sent = 0
    follow = request.query.get("follow", "").lower() == "true"
    while True:
        lines = rec.build_log[sent:]
        sent += len(lines)
        if lines:
            await resp.write("".join(f"{line}\n" for line in lines).encode())
        if not follow or rec.state not in ("unknown", "pending_build", "building_snapshot"):
            break
        await asyncio.sleep(BUILD_LOG_POLL)
    await resp.write_eof()
    return resp


async def toolbox_proxy_url(request: web.Request) -> web.StreamResponse:
    _rec(request)
    return json_response({"url": toolbox_url(request)})


ROUTES: list[Route] = [
    Route("POST", "/api/sandbox", "create", create),
    Route("GET", "/api/sandbox", "list", list_sandboxes),
    Route("GET", SANDBOX, "get", get),
    Route("DELETE", SANDBOX, "delete", delete),
    Route("POST", SANDBOX + "/start", "start", start),
    Route("POST", SANDBOX + "/stop", "stop", stop),
    Route("POST", SANDBOX + "/archive", "archive", archive),
    Route("PUT", SANDBOX + "/labels", "labels", labels),
    Route("POST", SANDBOX + "/autostop/{n}", "autostop", _interval_handler("auto_stop")),
    Route("POST", SANDBOX + "/autoarchive/{n}", "autoarchive", _interval_handler("auto_archive")),
    Route("POST", SANDBOX + "/autodelete/{n}", "autodelete", _interval_handler("auto_delete")),
    Route("POST", SANDBOX + "/ttl/{n}", "ttl", _interval_handler("ttl_minutes")),
    Route("POST", SANDBOX + "/network-settings", "network_settings", network_settings),
    Route("POST", SANDBOX + "/public/{flag}", "public", public),
    Route("GET", SANDBOX + "/toolbox-proxy-url", "toolbox_url", toolbox_proxy_url),
    Route("GET", SANDBOX + "/build-logs-url", "build_logs_url", build_logs_url),
    Route("GET", SANDBOX + "/build-logs", "build_logs", build_logs),
]
