"""The metadata listing and the delete by id (`Sandboxes.list_metadata`, `delete_by_id`) through
the SDK's generated REST client: the SDK still holds that client where `daytona_rest` reaches
it, and its answers and errors mean what the SDK's own would. The generated client's HTTP
answers come from in-memory stand-ins here; the real wire: tests/integration/test_lifecycle.py."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from daytona import AsyncDaytona, DaytonaConfig
from daytona_api_client_async import SandboxApi

from controller import daytona_rest, metrics
from controller.errors import Cause, Fatal, OperatorError, OperatorWide, Retryable
from controller.retry import RetryPolicy
from controller.sandboxes import Sandboxes


@pytest_asyncio.fixture(loop_scope="session")
async def client() -> AsyncIterator[AsyncDaytona]:
    daytona = AsyncDaytona(DaytonaConfig(api_url="http://127.0.0.1:9/api", api_key="test-key"))  # never called
    try:
        yield daytona
    finally:
        await daytona.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def api(client: AsyncDaytona) -> SandboxApi:
    return daytona_rest.sandbox_api(client)


@pytest.fixture
def boxes(client: AsyncDaytona) -> Sandboxes:
    return Sandboxes(client, policy=RetryPolicy(attempts=3, base=0.0))


class Answer:
    """What a generated `..._without_preload_content` method returns: an aiohttp response."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        self.status, self.reason, self.headers = status, "OK" if status < 300 else "Refused", headers or {}
        self._raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.released = False

    async def read(self) -> bytes:
        return self._raw

    async def __aenter__(self) -> Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.released = True


def refusal(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, {"statusCode": status, "message": message}, headers)


def item(n: int, state: str = "started") -> dict[str, Any]:
    return {"id": f"id-{n}", "name": f"at-{n}-1", "labels": {"agenttask.io/instance": "prod", "n": str(n)},
            "state": state, "createdAt": "2026-01-01T00:00:00.000Z", "cpu": 1, "toolboxProxyUrl": "http://x"}


class Pages:
    """`SandboxApi.list_sandboxes_without_preload_content`: page i holds `pages[i]`, its cursor
    is str(i); `errors[i]` are answered, one per call, before page i is."""

    def __init__(self, pages: list[list[dict[str, Any]]], errors: dict[int, list[Answer]] | None = None):
        self.pages, self.errors = pages, errors or {}
        self.calls: list[dict[str, Any]] = []
        self.answers: list[Answer] = []

    async def __call__(self, **kwargs: Any) -> Answer:
        self.calls.append(kwargs)
        index = int(kwargs["cursor"] or 0)
        if self.errors.get(index):
            answer = self.errors[index].pop(0)
        else:
            last = index == len(self.pages) - 1
            answer = Answer(200, {"items": self.pages[index], "nextCursor": None if last else str(index + 1)})
        self.answers.append(answer)
        return answer


def requests(operation: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("agenttask_daytona_requests_total",
                                              {"operation": operation, "outcome": outcome})
    return value or 0.0


def test_the_sdk_still_holds_the_generated_sandbox_client_where_we_reach_it(client: AsyncDaytona) -> None:
    """Fails when a daytona release renames `AsyncDaytona._sandbox_api` or the parameters the
    operator passes to the two methods: update controller/daytona_rest.py with it."""
    api = daytona_rest.sandbox_api(client)
    assert isinstance(api, SandboxApi)
    listing = inspect.signature(api.list_sandboxes_without_preload_content).parameters
    assert {"labels", "cursor", "limit", "_request_timeout"} <= set(listing)
    deleting = inspect.signature(api.delete_sandbox_without_preload_content).parameters
    assert next(iter(deleting)) == "sandbox_id_or_name" and "_request_timeout" in deleting
    with pytest.raises(Fatal, match="_sandbox_api"):
        daytona_rest.sandbox_api(SimpleNamespace())  # type: ignore[arg-type]


async def test_listing_follows_every_page_and_keeps_only_metadata(
        boxes: Sandboxes, api: SandboxApi, monkeypatch: pytest.MonkeyPatch) -> None:
    pages = Pages([[item(0), item(1)], [item(2, "destroying")], [item(3)]])
    monkeypatch.setattr(api, "list_sandboxes_without_preload_content", pages)
    before = requests("list", "ok")
    found = [b async for b in boxes.list_metadata({"agenttask.io/instance": "prod"}, page_size=2)]
    assert [(b.id, b.name, b.state) for b in found] == [
        ("id-0", "at-0-1", "started"), ("id-1", "at-1-1", "started"), ("id-2", "at-2-1", "destroying"),
        ("id-3", "at-3-1", "started")]
    assert found[0].labels == {"agenttask.io/instance": "prod", "n": "0"}
    assert found[0].created_at is not None and found[0].created_at.isoformat() == "2026-01-01T00:00:00+00:00"
    assert [c["cursor"] for c in pages.calls] == [None, "1", "2"]
    assert all(json.loads(c["labels"]) == {"agenttask.io/instance": "prod"} and c["limit"] == 2 for c in pages.calls)
    assert all(a.released for a in pages.answers)
    assert requests("list", "ok") == before + 3  # one request per page


async def test_a_transient_error_on_a_later_page_is_retried_on_that_page(
        boxes: Sandboxes, api: SandboxApi, monkeypatch: pytest.MonkeyPatch) -> None:
    throttled = refusal(429, "ThrottlerException: Too Many Requests", {"Retry-After-authenticated": "0"})
    pages = Pages([[item(0)], [item(1)]], errors={1: [throttled]})
    monkeypatch.setattr(api, "list_sandboxes_without_preload_content", pages)
    found = [b.id async for b in boxes.list_metadata({"agenttask.io/instance": "prod"})]
    assert found == ["id-0", "id-1"]
    assert [c["cursor"] for c in pages.calls] == [None, "1", "1"]


async def test_an_error_on_any_page_ends_the_listing_with_that_error(
        boxes: Sandboxes, api: SandboxApi, monkeypatch: pytest.MonkeyPatch) -> None:
    down = [refusal(503, "Service Unavailable") for _ in range(3)]
    monkeypatch.setattr(api, "list_sandboxes_without_preload_content", Pages([[item(0)], [item(1)]], {1: down}))
    found: list[str] = []

    async def collect() -> None:
        async for b in boxes.list_metadata({"agenttask.io/instance": "prod"}):
            found.append(b.id)

    with pytest.raises(Retryable, match=r"daytona list failed \(HTTP 503\): Service Unavailable"):
        await collect()
    assert found == ["id-0"]  # the caller saw the first page, then the error: never a quiet end
    unauthorized = Pages([[item(0)]], errors={0: [refusal(401, "Unauthorized")]})
    monkeypatch.setattr(api, "list_sandboxes_without_preload_content", unauthorized)
    with pytest.raises(OperatorWide):
        [b async for b in boxes.list_metadata({})]
    assert Cause.DAYTONA_AUTH in boxes.health.active()  # reported like every other call


@pytest.mark.parametrize("body", [b"<html>proxy error</html>", {"items": None}, {"items": [{"id": "x"}]},
                                  {"items": [{**item(0), "labels": {"a": 1}}]}, {"items": [], "nextCursor": 7}])
async def test_a_body_that_is_not_a_page_is_an_error_naming_no_values(
        boxes: Sandboxes, api: SandboxApi, monkeypatch: pytest.MonkeyPatch, body: Any) -> None:
    async def answer(**kwargs: Any) -> Answer:
        return Answer(200, body)

    monkeypatch.setattr(api, "list_sandboxes_without_preload_content", answer)
    with pytest.raises(OperatorError, match="not a page of sandboxes") as raised:
        [b async for b in boxes.list_metadata({})]
    assert "proxy error" not in str(raised.value)


async def test_a_caller_that_stops_early_leaves_no_request_behind(
        boxes: Sandboxes, api: SandboxApi, monkeypatch: pytest.MonkeyPatch) -> None:
    pages = Pages([[item(0)], [item(1)], [item(2)]])
    monkeypatch.setattr(api, "list_sandboxes_without_preload_content", pages)
    listing = boxes.list_metadata({})
    assert (await anext(listing)).id == "id-0"
    await listing.aclose()
    await asyncio.sleep(0)  # let the cancelled request for the next page settle
    assert len(pages.calls) <= 2


async def test_delete_by_id(boxes: Sandboxes, api: SandboxApi, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    answers = [Answer(200, item(0, "destroying")), refusal(404, "Sandbox with ID or name id-1 not found"),
               refusal(409, "Sandbox state change in progress"), Answer(200, item(2, "destroying"))]

    async def delete(sandbox_id: str, **kwargs: Any) -> Answer:
        asked.append(sandbox_id)
        return answers.pop(0)

    monkeypatch.setattr(api, "delete_sandbox_without_preload_content", delete)
    assert await boxes.delete_by_id("id-0") is True
    assert await boxes.delete_by_id("id-1") is False  # 404: already gone
    assert await boxes.delete_by_id("id-2", state="started") is True  # a 409 in progress is waited out
    assert await boxes.delete_by_id("id-3", state="destroying") is False  # Daytona is on it: no request
    assert await boxes.delete_by_id("id-4", state="destroyed") is False
    assert asked == ["id-0", "id-1", "id-2", "id-2"]


async def test_errors_keep_what_the_server_said(
        boxes: Sandboxes, api: SandboxApi, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(sandbox_id: str, **kwargs: Any) -> Answer:
        return refusal(429, "ThrottlerException: Too Many Requests", {"Retry-After-sandbox-lifecycle": "120"})

    monkeypatch.setattr(api, "delete_sandbox_without_preload_content", refuse)
    with pytest.raises(Retryable) as raised:  # longer than the policy waits in place: raised at once
        await boxes.delete_by_id("id-0")
    assert raised.value.status == 429 and raised.value.retry_after == 120.0
    assert "Too Many Requests" in str(raised.value)
