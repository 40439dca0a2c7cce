"""The main Daytona REST API under ``/api``: sandboxes, snapshots and warm pools.

Does: translate HTTP to `SandboxStore`/`Catalog` calls and records to JSON::

    POST   /api/sandbox                      create (409 on a taken name)        -> Sandbox
    GET    /api/sandbox                      list (labels, states, id, name,    -> ListSandboxesResponse
                                              snapshots, sort, order, limit, cursor)
    GET    /api/sandbox/{idOrName}           get                                 -> Sandbox
    DELETE /api/sandbox/{idOrName}           delete (404 if unknown)             -> Sandbox (destroyed)
    POST   /api/sandbox/{idOrName}/start|stop|archive                          -> Sandbox
    PUT    /api/sandbox/{idOrName}/labels    replace labels                      -> SandboxLabels
    POST   /api/sandbox/{idOrName}/autostop|autoarchive|autodelete/{n}, /ttl/{n} -> Sandbox
    GET    /api/sandbox/{idOrName}/toolbox-proxy-url                            -> ToolboxProxyUrl
    GET    /api/snapshots?page&limit&name, GET|DELETE /api/snapshots/{idOrName},
    POST   /api/snapshots, POST /api/snapshots/{id}/activate                   -> SnapshotDto
    GET|POST /api/warm-pools, PATCH|DELETE /api/warm-pools/{id}                -> WarmPool

Every response reflects the settled state (create answers ``started``, stop ``stopped``), so
the SDK never polls. The SDK's Socket.IO event channel (``/api/socket.io/``) is not served:
it gets the JSON 404 of any unknown route, which the SDK tolerates (it falls back to
polling, which the settled states make unnecessary).

Does not: authenticate or inject faults (server middleware), or touch files/processes.
"""

from __future__ import annotations

from aiohttp import web

from .context import Handler, Route, ctx, int_param, json_body, json_response, toolbox_url
from .errors import bad_request
from .listing import page, parse_list_query
from .models import SandboxRecord, parse_create_request, sandbox_dto, sandbox_list_item, snapshot_dto

SANDBOX = "/api/sandbox/{sid}"


def _dto(request: web.Request, rec: SandboxRecord) -> web.Response:
    return json_response(sandbox_dto(rec, toolbox_url(request)))


async def create(request: web.Request) -> web.StreamResponse:
    req = parse_create_request(await json_body(request))
    rec = await ctx(request).store.create(req)
    return _dto(request, rec)


async def get(request: web.Request) -> web.StreamResponse:
    return _dto(request, ctx(request).store.get(request.match_info["sid"]))


async def list_sandboxes(request: web.Request) -> web.StreamResponse:
    q = parse_list_query(list(request.query.items()))
    items, next_cursor = page(ctx(request).store.records.values(), q)
    url = toolbox_url(request)
    return json_response({"items": [sandbox_list_item(r, url) for r in items], "nextCursor": next_cursor})


async def delete(request: web.Request) -> web.StreamResponse:
    store = ctx(request).store
    rec = await store.destroy(store.get(request.match_info["sid"]))
    return _dto(request, rec)


async def start(request: web.Request) -> web.StreamResponse:
    store = ctx(request).store
    return _dto(request, await store.start(store.get(request.match_info["sid"])))


async def stop(request: web.Request) -> web.StreamResponse:
    store = ctx(request).store
    force = request.query.get("force", "").lower() == "true"
    rec = store.get(request.match_info["sid"])
    return _dto(request, await (store.stop(rec, grace=0.0) if force else store.stop(rec)))


async def archive(request: web.Request) -> web.StreamResponse:
    store = ctx(request).store
    return _dto(request, store.archive(store.get(request.match_info["sid"])))


async def labels(request: web.Request) -> web.StreamResponse:
    store = ctx(request).store
    rec = store.get(request.match_info["sid"])
    body = await json_body(request)
    new = body.get("labels") if isinstance(body, dict) else None
    if not isinstance(new, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in new.items()):
        raise bad_request("labels must be an object of strings")
    rec.labels = dict(new)
    store.touch(rec)
    return json_response({"labels": dict(rec.labels)})


def _interval_handler(attr: str, minimum: int | None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        store = ctx(request).store
        rec = store.get(request.match_info["sid"])
        value = int_param(request, "n")
        if minimum is not None and value < minimum:
            raise bad_request(f"interval must be >= {minimum}")
        setattr(rec, attr, value if value >= 0 or attr != "auto_delete" else -1)
        store.changed()
        return _dto(request, rec)

    return handler


async def toolbox_proxy_url(request: web.Request) -> web.StreamResponse:
    ctx(request).store.get(request.match_info["sid"])
    return json_response({"url": toolbox_url(request)})


# snapshots -------------------------------------------------------------------------------


def _page_params(request: web.Request) -> tuple[int, int]:
    try:
        page_no = int(request.query.get("page") or 1)
        limit = int(request.query.get("limit") or 100)
    except ValueError as exc:
        raise bad_request("page and limit must be integers") from exc
    if page_no < 1 or not 1 <= limit <= 200:
        raise bad_request("page must be >= 1 and limit between 1 and 200")
    return page_no, limit


async def snapshot_list(request: web.Request) -> web.StreamResponse:
    page_no, limit = _page_params(request)
    return json_response(ctx(request).catalog.list_snapshots(page_no, limit, request.query.get("name")))


async def snapshot_get(request: web.Request) -> web.StreamResponse:
    return json_response(snapshot_dto(ctx(request).catalog.get_snapshot(request.match_info["snap"])))


async def snapshot_create(request: web.Request) -> web.StreamResponse:
    return json_response(snapshot_dto(ctx(request).catalog.create_snapshot(await json_body(request))))


async def snapshot_delete(request: web.Request) -> web.StreamResponse:
    catalog = ctx(request).catalog
    catalog.delete_snapshot(catalog.get_snapshot(request.match_info["snap"]))
    return web.Response(status=200)


async def snapshot_activate(request: web.Request) -> web.StreamResponse:
    snap = ctx(request).catalog.get_snapshot(request.match_info["snap"])
    snap.state = "active"
    return json_response(snapshot_dto(snap))


# warm pools ------------------------------------------------------------------------------


async def warm_pool_list(request: web.Request) -> web.StreamResponse:
    catalog = ctx(request).catalog
    return json_response([catalog.pool_json(p) for p in catalog.pools.values()])


async def warm_pool_create(request: web.Request) -> web.StreamResponse:
    catalog = ctx(request).catalog
    return json_response(catalog.pool_json(catalog.create_pool(await json_body(request))), status=201)


async def warm_pool_update(request: web.Request) -> web.StreamResponse:
    catalog = ctx(request).catalog
    pool = catalog.update_pool(request.match_info["pool"], await json_body(request))
    return json_response(catalog.pool_json(pool))


async def warm_pool_delete(request: web.Request) -> web.StreamResponse:
    ctx(request).catalog.delete_pool(request.match_info["pool"])
    return web.Response(status=204)


ROUTES: list[Route] = [
    Route("POST", "/api/sandbox", "create", create),
    Route("GET", "/api/sandbox", "list", list_sandboxes),
    Route("GET", SANDBOX, "get", get),
    Route("DELETE", SANDBOX, "delete", delete),
    Route("POST", SANDBOX + "/start", "start", start),
    Route("POST", SANDBOX + "/stop", "stop", stop),
    Route("POST", SANDBOX + "/archive", "archive", archive),
    Route("PUT", SANDBOX + "/labels", "labels", labels),
    Route("POST", SANDBOX + "/autostop/{n}", "autostop", _interval_handler("auto_stop", 0)),
    Route("POST", SANDBOX + "/autoarchive/{n}", "autoarchive", _interval_handler("auto_archive", 0)),
    Route("POST", SANDBOX + "/autodelete/{n}", "autodelete", _interval_handler("auto_delete", None)),
    Route("POST", SANDBOX + "/ttl/{n}", "ttl", _interval_handler("ttl_minutes", 0)),
    Route("GET", SANDBOX + "/toolbox-proxy-url", "toolbox_url", toolbox_proxy_url),
    Route("GET", "/api/snapshots", "snapshot_list", snapshot_list),
    Route("POST", "/api/snapshots", "snapshot_create", snapshot_create),
    Route("GET", "/api/snapshots/{snap}", "snapshot_get", snapshot_get),
    Route("DELETE", "/api/snapshots/{snap}", "snapshot_delete", snapshot_delete),
    Route("POST", "/api/snapshots/{snap}/activate", "snapshot_activate", snapshot_activate),
    Route("GET", "/api/warm-pools", "warm_pool_list", warm_pool_list),
    Route("POST", "/api/warm-pools", "warm_pool_create", warm_pool_create),
    Route("PATCH", "/api/warm-pools/{pool}", "warm_pool_update", warm_pool_update),
    Route("DELETE", "/api/warm-pools/{pool}", "warm_pool_delete", warm_pool_delete),
]
