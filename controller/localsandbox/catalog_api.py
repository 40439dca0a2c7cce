"""Snapshot, warm-pool and volume routes of the main API.

Does::

    GET    /api/snapshots?page&limit&name, GET|DELETE /api/snapshots/{idOrName},
    POST   /api/snapshots, POST /api/snapshots/{id}/activate                   -> SnapshotDto
    GET|POST /api/warm-pools, PATCH|DELETE /api/warm-pools/{id}                -> WarmPool
    GET    /api/volumes, POST /api/volumes {name}                              -> VolumeDto[] / VolumeDto
    GET    /api/volumes/{id}, GET /api/volumes/by-name/{name}                  -> VolumeDto (404 unknown)
    DELETE /api/volumes/{id}   400 unless ready/error, 409 while a sandbox uses it (see `volumes`)
    GET|POST /api/volumes, GET|DELETE /api/volumes/{id}, GET /api/volumes/by-name/{name} -> VolumeDto

Warm pools are not in Daytona's open-source API (the SDK has them); they keep the embedded
server's own behaviour, described in `catalog`.

Does not: authenticate or inject faults (server middleware).
"""

from __future__ import annotations

from aiohttp import web

from .context import Route, ctx, json_body, json_response
from .errors import bad_request, not_found
from .models import snapshot_dto
from .volumes import VolumeRecord, Volumes


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


# volumes ---------------------------------------------------------------------------------


def _volumes(request: web.Request) -> Volumes:
    return ctx(request).catalog.volumes


def _get(request: web.Request, key: str, by_name: bool = False) -> VolumeRecord:
    value = request.match_info[key]
    vol = _volumes(request).find(value)
    if vol is None or (not by_name and vol.id != value) or (by_name and vol.name != value):
        raise not_found(f"Volume with {'name' if by_name else 'ID'} {value} not found")
    return vol


async def list_volumes(request: web.Request) -> web.StreamResponse:
    return json_response([v.to_json() for v in _volumes(request).records.values()])


async def create_volume(request: web.Request) -> web.StreamResponse:
    body = await json_body(request, required=False) or {}
    name = body.get("name") if isinstance(body, dict) else None
    if name is not None and not isinstance(name, str):
        raise bad_request("name must be a string")
    seconds = ctx(request).store.settings.duration("creating")
    return json_response(_volumes(request).create(name, seconds).to_json())


async def get_volume(request: web.Request) -> web.StreamResponse:
    return json_response(_get(request, "volume").to_json())


async def get_by_name(request: web.Request) -> web.StreamResponse:
    return json_response(_get(request, "name", by_name=True).to_json())


async def delete_volume(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    vol = _get(request, "volume")
    user = next((r.name for r in c.store.records.values()
                 if r.desired != "destroyed" and any(m["volumeId"] == vol.id for m in r.volumes)), None)  # fmt: skip
    _volumes(request).delete(vol, user, c.store.settings.duration("destroying"))
    return web.Response(status=200)


VOLUME_ROUTES: list[Route] = [
    Route("GET", "/api/volumes", "volume_list", list_volumes),
    Route("POST", "/api/volumes", "volume_create", create_volume),
    Route("GET", "/api/volumes/by-name/{name}", "volume_get_by_name", get_by_name),
    Route("GET", "/api/volumes/{volume}", "volume_get", get_volume),
    Route("DELETE", "/api/volumes/{volume}", "volume_delete", delete_volume),
]


ROUTES: list[Route] = [
    Route("GET", "/api/snapshots", "snapshot_list", snapshot_list),
    Route("POST", "/api/snapshots", "snapshot_create", snapshot_create),
    Route("GET", "/api/snapshots/{snap}", "snapshot_get", snapshot_get),
    Route("DELETE", "/api/snapshots/{snap}", "snapshot_delete", snapshot_delete),
    Route("POST", "/api/snapshots/{snap}/activate", "snapshot_activate", snapshot_activate),
    Route("GET", "/api/warm-pools", "warm_pool_list", warm_pool_list),
    Route("POST", "/api/warm-pools", "warm_pool_create", warm_pool_create),
    Route("PATCH", "/api/warm-pools/{pool}", "warm_pool_update", warm_pool_update),
    Route("DELETE", "/api/warm-pools/{pool}", "warm_pool_delete", warm_pool_delete),
    *VOLUME_ROUTES,
]
