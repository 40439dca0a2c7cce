"""The read-only status page: `GET /status` (server-rendered HTML) and `GET /api/tasks` (JSON).

Data source: the operator's in-memory view of AgentTasks — the kopf index `task_views` in
`handlers.py`, which kopf keeps current from its watch stream (and drops deleted objects
from). A page view therefore costs no apiserver request. `task_view()` turns an AgentTask into a
`TaskView` once, at indexing time; every text in it went through `logs.redact`, and the HTML
escapes every value (links only for http(s) URLs). No JavaScript; the page refreshes itself
every 10 s with a meta tag.

It shows what `kubectl get at -o wide` would, plus links (the issue, the pull request), the usage
(`status.usage`, when the operator recorded it; shown generically as `key value` pairs) and the
last error. It has
no authentication: expose the operator's port only inside the cluster (see docs/github.md).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from . import logs
from .api import AgentTask

REFRESH_SECONDS = 10
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class TaskView:
    namespace: str
    name: str
    phase: str
    reason: str | None
    message: str | None
    sandbox_id: str | None
    sandbox_state: str | None
    created: dt.datetime | None
    result_url: str | None
    outcome: str | None
    last_error: str | None
    issue: str | None
    requested_by: str | None
    issue_url: str | None = None
    usage: str | None = None


def _text(value: object, limit: int = 2048) -> str | None:
    return None if value in (None, "") else logs.redact(str(value))[:limit]


def usage_text(usage: object, limit: int = 256) -> str | None:
    """`status.usage` in one line: `key value` pairs, nested keys joined with a dot."""
    if not isinstance(usage, Mapping) or not usage:
        return None
    parts: list[str] = []

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, bool | int | float | str):
            parts.append(f"{prefix} {value}")

    walk("", usage)
    return _text(", ".join(parts), limit)


def task_view(task: AgentTask, *, usage: object = None) -> TaskView:
    """The status-page row of a task (redacted); `usage` is the raw `status.usage`, if any."""
    status, spec = task.status, task.spec
    result, sandbox = status.result, status.sandbox
    issue = None
    if spec.issue is not None:
        repo = spec.repository.url.removesuffix(".git").rstrip("/").rsplit("/", 2)[-2:]
        issue = f"{'/'.join(repo)}#{spec.issue.number}"
    return TaskView(
        namespace=task.metadata.namespace, name=task.metadata.name,
        phase=status.phase.value if status.phase else "Pending",
        reason=_text(status.reason, 64), message=_text(status.message),
        sandbox_id=_text(sandbox.id if sandbox else None, 128),
        sandbox_state=_text(sandbox.state if sandbox else None, 64),
        created=task.metadata.creation_timestamp,
        result_url=_text(result.pull_request_url if result else None),
        outcome=_text(result.outcome if result else None, 64),
        last_error=_text(status.last_error), issue=_text(issue, 512),
        requested_by=_text(spec.audit.requested_by, 255),
        issue_url=_text(spec.issue.url if spec.issue else None, 512), usage=usage_text(usage),
    )


def age(created: dt.datetime | None, now: dt.datetime) -> str:
    """kubectl-style age: 42s, 5m, 3h, 2d."""
    if created is None:
        return "-"
    seconds = max(0, int((now - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def rows(index: Mapping[Any, Iterable[TaskView]]) -> list[TaskView]:
    """All views in the index, newest first."""
    found = [item for values in list(index.values()) for item in list(values)]
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(found, key=lambda v: (v.created or oldest, v.namespace, v.name), reverse=True)


def as_json(items: Iterable[TaskView], now: dt.datetime) -> list[dict[str, Any]]:
    out = []
    for item in items:
        doc = asdict(item)
        doc["created"] = item.created.isoformat() if item.created else None
        doc["age"] = age(item.created, now)
        out.append(doc)
    return out


def _cell(value: str | None, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return f"<td{klass}>{html.escape(value) if value else '-'}</td>"


def _link(url: str | None, fallback: str | None, *, label: str | None = None) -> str:
    if not url:
        return _cell(fallback)
    if not url.lower().startswith(("https://", "http://")):
        return _cell(label or url)
    shown = label or (f"PR #{url.rsplit('/', 1)[-1]}" if "/pull/" in url else url)
    return f'<td><a href="{html.escape(url, quote=True)}" rel="noopener noreferrer">{html.escape(shown)}</a></td>'


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:20px;margin:0 0 4px}
p.meta{color:#59636e;margin:0 0 16px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #d1d9e0;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td{white-space:nowrap}
td.msg{white-space:normal;min-width:280px;overflow-wrap:anywhere}
.err{color:#a40e26}
.phase{font-weight:600;border-radius:10px;padding:1px 8px;display:inline-block}
.Succeeded{background:#dafbe1;color:#116329}.Failed{background:#ffebe9;color:#a40e26}
.Running,.Provisioning{background:#ddf4ff;color:#0550ae}.Pending,.Queued{background:#fff8c5;color:#7d4e00}
"""


def render(items: list[TaskView], now: dt.datetime) -> str:
    """The whole HTML page."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.phase] = counts.get(item.phase, 0) + 1
    summary = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(counts.items())) or "no tasks"
    body = []
    for item in items:
        phase = html.escape(item.phase)
        text = html.escape(item.message or "-")
        if item.last_error:
            text += f'<br><span class="err">last error: {html.escape(item.last_error)}</span>'
        body.append(
            f'<tr data-task="{html.escape(item.namespace)}/{html.escape(item.name)}" data-phase="{phase}">'
            f"{_cell(item.namespace)}{_cell(item.name)}"
            f'<td><span class="phase {phase}">{phase}</span></td>'
            f"{_cell(item.reason)}{_link(item.issue_url, item.issue, label=item.issue)}"
            f"{_cell(item.sandbox_id)}{_cell(item.sandbox_state)}"
            f'{_cell(age(item.created, now))}{_link(item.result_url, item.outcome)}<td class="msg">{text}</td>'
            f'<td class="msg">{html.escape(item.usage or "-")}</td></tr>')
    if not body:
        body.append('<tr><td colspan="11">No AgentTasks.</td></tr>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>AgentTask status</title><style>{_STYLE}</style></head><body>"
        f"<h1>AgentTasks</h1><p class=\"meta\">{len(items)} task(s) &mdash; {summary} &mdash; "
        f"rendered {html.escape(now.strftime('%Y-%m-%d %H:%M:%S UTC'))}</p>"
        "<table><thead><tr><th>Namespace</th><th>Name</th><th>Phase</th><th>Reason</th><th>Issue</th>"
        "<th>Sandbox</th><th>State</th><th>Age</th><th>Result</th><th>Message / last error</th><th>Usage</th>"
        "</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></body></html>\n")


def status_routes(index: Mapping[Any, Iterable[TaskView]],
           clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> list[web.RouteDef]:
    """`/status` and `/api/tasks` over a live index of `TaskView`s."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=render(rows(index), clock()), content_type="text/html",
                            headers=_SECURITY_HEADERS)

    async def api(_: web.Request) -> web.Response:
        return web.json_response({"tasks": as_json(rows(index), clock())}, headers=_SECURITY_HEADERS)

    return [web.get("/status", page), web.get("/api/tasks", api)]
