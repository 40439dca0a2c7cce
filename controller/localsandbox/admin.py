"""Admin endpoints for tests and benchmarks (authenticated like everything else, never faulted).

Does::

    GET  /_admin/faults        current fault settings (see `faults` for the format)
    POST /_admin/faults        replace them; ``lose`` destroys the named sandboxes at once
                               -> {..settings.., "lost": [ids], "not_found": [names]}
    GET  /_admin/settings      transition durations, quotas, list lag, ... (see `settings`)
    POST /_admin/settings      merge the sections given -> all settings
    GET  /_admin/stats         counters, incl. per-name `first_create_at` (see `stats`)
    POST /_admin/reset-stats   zero the counters -> the new (empty) stats

Does not: change anything else about the server.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .context import Route, ServerContext, ctx, json_body, json_response
from .errors import bad_request
from .faults import parse_faults
from .settings import merge_settings


def apply_faults(c: ServerContext, obj: Any) -> dict[str, Any]:
    """Install fault settings and perform ``lose``; returns the admin response body."""
    try:
        settings, lose = parse_faults(obj)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    c.faults.replace(settings)
    lost: list[str] = []
    missing: list[str] = []
    for target in lose:
        rec = c.store.find(target)
        if rec is not None and c.store.lose(target):
            lost.append(rec.id)
        else:
            missing.append(target)
    return {**settings.to_json(), "lost": lost, "not_found": missing}


def apply_settings(c: ServerContext, obj: Any) -> dict[str, Any]:
    """Merge settings; returns all of them."""
    try:
        c.store.settings = merge_settings(c.store.settings, obj)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    c.store.changed_settings()
    return c.store.settings.to_json()


def stats_json(c: ServerContext) -> dict[str, Any]:
    """The stats body, with the isolation mode."""
    out = c.stats.snapshot()
    out["isolation"] = c.isolation.mode
    out["network"] = c.store.network.mode
    return out


async def faults_get(request: web.Request) -> web.StreamResponse:
    return json_response(ctx(request).faults.current().to_json())


async def settings_get(request: web.Request) -> web.StreamResponse:
    return json_response(ctx(request).store.settings.to_json())


async def settings_set(request: web.Request) -> web.StreamResponse:
    return json_response(apply_settings(ctx(request), await json_body(request, required=False) or {}))


async def faults_set(request: web.Request) -> web.StreamResponse:
    return json_response(apply_faults(ctx(request), await json_body(request, required=False) or {}))


async def stats(request: web.Request) -> web.StreamResponse:
    return json_response(stats_json(ctx(request)))


async def reset_stats(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    c.stats.reset()
    return json_response(stats_json(c))


ROUTES: list[Route] = [
    Route("GET", "/_admin/faults", "admin_faults_get", faults_get),
    Route("POST", "/_admin/faults", "admin_faults_set", faults_set),
    Route("GET", "/_admin/settings", "admin_settings_get", settings_get),
    Route("POST", "/_admin/settings", "admin_settings_set", settings_set),
    Route("GET", "/_admin/stats", "admin_stats", stats),
    Route("POST", "/_admin/reset-stats", "admin_reset_stats", reset_stats),
]
