"""The webhook handler in-process (aiohttp test server) with a recording stand-in for Kubernetes."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controller.errors import Fatal, Retryable
from controller.github.events import TaskDefaults, TriggerConfig, sign
from controller.github.webhook import PATH, WebhookHandler
from controller.kube import Conflict

from .test_github_events import comment_payload, payload

SECRET = b"unit-webhook-secret-value"
LIMIT = 64 * 1024


class FakeKube:
    def __init__(self) -> None:
        self.created: dict[str, dict[str, Any]] = {}
        self.fail: Exception | None = None

    async def create_task(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.fail is not None:
            raise self.fail
        name = body["metadata"]["name"]
        if name in self.created:
            raise Conflict("already exists", status=409)
        self.created[name] = body
        return body


@pytest.fixture
async def setup() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], FakeKube]]:
    kube = FakeKube()
    handler = WebhookHandler(
        secret=SECRET, kube=kube, max_body_bytes=LIMIT,
        triggers=TriggerConfig(label="agenttask", on_open=False, phrase="/agenttask run",
                               allowed_associations=frozenset({"OWNER", "MEMBER", "COLLABORATOR"})),
        defaults=TaskDefaults(namespace="agents", credentials_secret="github-token"))
    app = web.Application()
    app.router.add_routes(handler.routes())
    async with TestClient(TestServer(app)) as client:
        yield client, kube


def headers(body: bytes, event: str = "issues", *, signature: str | None = "sign",
            delivery: str = "d-1") -> dict[str, str]:
    out = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json"}
    if signature == "sign":
        out["X-Hub-Signature-256"] = sign(SECRET, body)
    elif signature is not None:
        out["X-Hub-Signature-256"] = signature
    return out


Setup = tuple[TestClient[web.Request, web.Application], FakeKube]


async def post(client: TestClient[web.Request, web.Application], body: bytes, **kwargs: Any) -> tuple[int, Any]:
    resp = await client.post(PATH, data=body, headers=headers(body, **kwargs))
    text = await resp.text()
    return resp.status, (json.loads(text) if text else None)


async def test_trigger_creates_once_and_redelivery_is_202(setup: Setup) -> None:
    client, kube = setup
    body = json.dumps(payload()).encode()
    status, answer = await post(client, body)
    assert status == 202 and answer["created"] is True and answer["namespace"] == "agents"
    assert list(kube.created) == [answer["task"]]
    status, again = await post(client, body, delivery="d-2")
    assert status == 202 and again == {**answer, "created": False}
    assert len(kube.created) == 1
    assert kube.created[answer["task"]]["spec"]["audit"]["deliveryId"] == "d-1"


async def test_signature_missing_or_forged_is_401(setup: Setup) -> None:
    client, kube = setup
    body = json.dumps(payload()).encode()
    assert (await post(client, body, signature=None))[0] == 401
    assert (await post(client, body, signature=sign(b"wrong", body)))[0] == 401
    status, answer = await post(client, body, signature="sha256=" + "0" * 64)
    assert status == 401 and "error" in answer
    assert kube.created == {}


async def test_oversized_body_is_413_before_anything_else(setup: Setup) -> None:
    client, kube = setup
    body = b"{" + b" " * LIMIT + b"}"
    status, answer = await post(client, body)
    assert status == 413 and "error" in answer

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(LIMIT // 1024 + 2):
            yield b" " * 1024

    resp = await client.post(PATH, data=chunks(), headers={"X-GitHub-Event": "issues"})
    assert resp.status == 413
    assert kube.created == {}


async def test_malformed_json_and_wrong_shapes_are_400(setup: Setup) -> None:
    client, kube = setup
    for body in (b"{not json", b"\xff\xfe{}", json.dumps({"action": "opened"}).encode()):
        status, answer = await post(client, body)
        assert status == 400 and "error" in answer, body
    assert (await post(client, b"{}", event=""))[0] == 400
    assert kube.created == {}


async def test_ping_unknown_and_ignored_events(setup: Setup) -> None:
    client, kube = setup
    assert (await post(client, b'{"zen": "hi"}', event="ping")) == (200, {"ok": True, "event": "ping"})
    assert (await post(client, b"{}", event="push"))[0] == 204
    resp = await client.post(PATH, data=(b := json.dumps(payload("closed")).encode()), headers=headers(b))
    assert resp.status == 204 and resp.headers["X-AgentTask-Ignored"]
    assert kube.created == {}


async def test_comment_trigger(setup: Setup) -> None:
    client, kube = setup
    status, answer = await post(client, json.dumps(comment_payload()).encode(), event="issue_comment")
    assert status == 202
    assert kube.created[answer["task"]]["spec"]["audit"]["requestedBy"] == "maintainer"


async def test_apiserver_errors_map_to_422_and_503(setup: Setup) -> None:
    client, kube = setup
    body = json.dumps(payload()).encode()
    kube.fail = Fatal("HTTP 422: spec.repository.url: must start with https://", status=422)
    assert (await post(client, body))[0] == 422
    kube.fail = Retryable("HTTP 503", status=503)
    assert (await post(client, body))[0] == 503


async def test_payload_and_secret_are_never_logged(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    client, _ = setup
    doc = payload()
    doc["issue"]["body"] = "BODY-MARKER-7f3a"
    doc["issue"]["title"] = "TITLE-MARKER-99c1"
    caplog.set_level(logging.DEBUG)
    body = json.dumps(doc).encode()
    await post(client, body)
    await post(client, body, signature="sha256=" + "1" * 64)
    await post(client, b"{bad BODY-MARKER-7f3a")
    text = caplog.text
    assert "BODY-MARKER-7f3a" not in text and "TITLE-MARKER-99c1" not in text
    assert SECRET.decode() not in text
    assert "Acme/widgets#42" in text  # what is logged: repository, issue, outcome
