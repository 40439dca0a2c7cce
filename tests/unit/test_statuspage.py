"""The status page renders the in-memory views escaped and redacted, without the apiserver."""

from __future__ import annotations

import datetime as dt
import json
from html.parser import HTMLParser

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controller.api import AgentTask
from controller.statuspage import TaskView, age, render, rows, status_routes, task_view

NOW = dt.datetime(2025, 1, 2, 12, 0, tzinfo=dt.UTC)


def make(name: str, *, created: dt.datetime, phase: str = "Running", **status: object) -> AgentTask:
    return AgentTask.model_validate({
        "metadata": {"name": name, "namespace": "ns", "uid": "u", "creationTimestamp": created.isoformat()},
        "spec": {"repository": {"url": "https://github.com/acme/widgets.git"}, "issue": {"number": 3}},
        "status": {"phase": phase, **status},
    })


class Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "tr" and "data-task" in values:
            self.rows.append({k: v or "" for k, v in values.items()})
        if tag == "a":
            self.links.append(values.get("href") or "")
        if tag == "script":
            self.scripts += 1


def test_views_are_redacted_and_html_is_escaped() -> None:
    hostile = make("evil", created=NOW - dt.timedelta(minutes=5), phase="Failed",
                   message="<script>alert(1)</script> token ghp_" + "a" * 36,
                   result={"pullRequestUrl": "javascript:alert(1)"},
                   lastError='"><img src=x onerror=alert(1)>',
                   sandbox={"id": "sb-1", "state": "started"})
    good = make("good", created=NOW - dt.timedelta(hours=2), phase="Succeeded",
                result={"pullRequestUrl": "https://github.com/acme/widgets/pull/4", "outcome": "PullRequestOpened"})
    views = {("ns", "evil"): [task_view(hostile)], ("ns", "good"): [task_view(good)]}
    page = render(rows(views), NOW)
    assert "ghp_" not in page and "***" in page
    assert "<script>" not in page and "<img" not in page
    parser = Cells()
    parser.feed(page)
    assert [r["data-task"] for r in parser.rows] == ["ns/evil", "ns/good"]  # newest first
    assert parser.links == ["https://github.com/acme/widgets/pull/4"]  # no javascript: link
    assert parser.scripts == 0
    assert ">5m<" in page and ">2h<" in page


def test_age() -> None:
    assert age(None, NOW) == "-"
    assert age(NOW - dt.timedelta(seconds=42), NOW) == "42s"
    assert age(NOW - dt.timedelta(days=3, hours=4), NOW) == "3d"


async def test_routes_serve_html_and_json_from_the_index() -> None:
    index: dict[tuple[str, str], list[TaskView]] = {}
    app = web.Application()
    app.router.add_routes(status_routes(index, clock=lambda: NOW))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/status")
        assert resp.status == 200 and "No AgentTasks" in await resp.text()
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        index[("ns", "a")] = [task_view(make("a", created=NOW - dt.timedelta(seconds=3), sandbox={"id": "sb-9"}))]
        resp = await client.get("/api/tasks")
        [doc] = json.loads(await resp.text())["tasks"]
        assert doc["name"] == "a" and doc["sandbox_id"] == "sb-9" and doc["age"] == "3s"
        assert doc["issue"] == "acme/widgets#3"


def test_usage_and_issue_link_are_shown_escaped() -> None:
    task = AgentTask.model_validate({
        "metadata": {"name": "paid", "namespace": "ns", "uid": "u", "creationTimestamp": NOW.isoformat()},
        "spec": {"repository": {"url": "https://github.com/acme/widgets.git"},
                 "issue": {"number": 3, "url": "https://github.com/acme/widgets/issues/3"}},
        "status": {"phase": "Succeeded"}})
    usage = {"agent": {"costUsd": 0.42, "tokens": {"input": 1200}}, "sandboxSeconds": 90, "note": "<b>x</b>"}
    view = task_view(task, usage=usage)
    assert view.usage == "agent.costUsd 0.42, agent.tokens.input 1200, sandboxSeconds 90, note <b>x</b>"
    page = render([view], NOW)
    parser = Cells()
    parser.feed(page)
    assert parser.links == ["https://github.com/acme/widgets/issues/3"]
    assert "agent.costUsd 0.42" in page and "<b>x</b>" not in page
    assert task_view(task).usage is None
