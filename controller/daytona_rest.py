"""Daytona's generated REST client, for the calls that need no `AsyncSandbox`.

`AsyncDaytona.list` wraps every listed sandbox into an `AsyncSandbox` (toolbox API clients, an
event subscription each), and `AsyncDaytona.delete` needs one. For the orphan sweep over
thousands of sandboxes that wrapping was most of the time and memory, so `sandboxes.Sandboxes`
calls the SDK's own generated `SandboxApi` for those two calls instead. This module holds what
that takes:

- `sandbox_api(client)`: the `SandboxApi` the `AsyncDaytona` client already holds (its
  authentication headers, organisation header and HTTP session included) — the one place the
  operator reaches a private attribute of the SDK;
- `rest(call)`: awaits a generated-client call and raises its errors as the SDK's own
  `DaytonaError`s (status, headers, the error envelope's message, code and source), so that
  `sandboxes.translate` judges them exactly as it judges the SDK's;
- `list_page`: one page of the sandbox list as `ListedSandbox`es (the metadata a listing keeps
  of each), read straight from the JSON; `delete`: the delete by id, its answer not parsed.

It does not retry, count, log or translate into the operator's errors: `sandboxes.Sandboxes`
does all of that, as for every other call.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
from daytona import AsyncDaytona, DaytonaError
from daytona.common.errors import create_daytona_error
from daytona_api_client_async import SandboxApi
from daytona_api_client_async.exceptions import ApiException, OpenApiException
from daytona_api_client_async.rest import RESTResponse

from .errors import Fatal

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ListedSandbox:
    """What a metadata-only listing knows of one sandbox: enough to judge and delete it, nothing
    to act inside it with (`Sandboxes.find` gives an `AsyncSandbox` for that)."""

    id: str
    name: str
    labels: Mapping[str, str]
    state: str
    created_at: dt.datetime | None


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 timestamp as an aware datetime (UTC when it names no zone); None when absent
    or unparseable."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _listed(item: Any) -> ListedSandbox:
    """The `ListedSandbox` of one item of a list page's JSON (ValueError when it is not one)."""
    sandbox_id, name, labels = item["id"], item["name"], item.get("labels") or {}
    if not (isinstance(sandbox_id, str) and isinstance(name, str) and isinstance(labels, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())):
        raise ValueError("not a sandbox")
    return ListedSandbox(id=sandbox_id, name=name, labels=labels, state=str(item.get("state") or "unknown"),
                         created_at=parse_time(item.get("createdAt")))


def parse_page(raw: bytes) -> tuple[list[ListedSandbox], str | None]:
    """(the sandboxes, the next page's cursor or None) of a `GET /sandbox` page's JSON body.
    Raises `DaytonaError` naming no values when the body is not such a page (no `items` list, an
    item without a string id or name, labels that are not strings): never a short page."""
    try:
        body = json.loads(raw)
        items, cursor = body["items"], body.get("nextCursor")
        if not isinstance(items, list) or not (cursor is None or isinstance(cursor, str)):
            raise ValueError("not a page")
        return [_listed(item) for item in items], cursor or None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DaytonaError("unexpected response from Daytona: not a page of sandboxes") from exc


async def list_page(api: SandboxApi, *, labels: str, cursor: str | None, limit: int,
                    timeout: float | None) -> tuple[list[ListedSandbox], str | None]:
    """One page of the sandboxes carrying `labels` (JSON): `parse_page` of the answer.

    The same request, authentication and HTTP session as the generated client's `list_sandboxes`
    (its `_without_preload_content` variant), but the body is read as plain JSON for the five
    fields a `ListedSandbox` keeps: building the SDK's model of every item was most of the
    client's work in a sweep over thousands of sandboxes. An error status raises the generated
    client's own `ApiException` (its status, reason, headers and body), as `list_sandboxes` would."""
    return parse_page(await _body(await api.list_sandboxes_without_preload_content(
        labels=labels, cursor=cursor, limit=limit, _request_timeout=timeout)))


async def delete(api: SandboxApi, sandbox_id: str, *, timeout: float | None) -> bytes:
    """Ask Daytona to delete the sandbox `sandbox_id` (`SandboxApi.delete_sandbox`); the answer's
    body, unparsed (the SDK's model of the sandbox in it is not built: nobody reads it). An error
    status raises the generated client's own `ApiException`, as `delete_sandbox` would."""
    return await _body(await api.delete_sandbox_without_preload_content(sandbox_id, _request_timeout=timeout))


async def _body(response: Any) -> bytes:
    """The body of a generated-client `..._without_preload_content` answer (an aiohttp response,
    released here); an error status raises `ApiException` with its status, reason, headers and
    body, exactly what the generated method itself raises."""
    async with response:
        raw: bytes = await response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=RESTResponse(response), body=raw.decode("utf-8", errors="replace"))
    return raw


def sandbox_api(client: AsyncDaytona) -> SandboxApi:
    """The generated `SandboxApi` that `client` holds, authenticated and on its HTTP session.

    `AsyncDaytona` keeps it in the private attribute `_sandbox_api` throughout the SDK range the
    project pins (`daytona>=0.226.1,<0.300`, pyproject.toml; its own `list`, `get` and `create`
    call it there). tests/unit/test_daytona_rest.py fails when a release renames it; at run time
    a rename raises `Fatal` naming this function (the sweep then aborts and says so) instead of
    an `AttributeError` deep in a call. Does not build a `SandboxApi` of its own: that would need
    a second API client, its own credentials and session.
    """
    api = getattr(client, "_sandbox_api", None)
    if not isinstance(api, SandboxApi):
        raise Fatal("this daytona SDK has no AsyncDaytona._sandbox_api (controller/daytona_rest.py:sandbox_api "
                    "needs updating for it)", reason="SdkMismatch")
    return api


def _envelope(body: Any) -> tuple[str | None, str | None, str | None]:
    """(message, code, source) of Daytona's JSON error body, each None when absent."""
    try:
        data = json.loads(body) if isinstance(body, str | bytes) and body else None
    except ValueError:
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    message = data.get("message") if isinstance(data.get("message"), str) else data.get("error")
    code = data.get("code") if isinstance(data.get("code"), str) else data.get("error_code")
    source = data.get("source")
    return (message if isinstance(message, str) else None, code if isinstance(code, str) else None,
            source if isinstance(source, str) else None)


def sdk_error(exc: OpenApiException) -> DaytonaError:
    """The SDK's error for an error of its generated client, as `AsyncDaytona`'s methods raise it
    (the HTTP status picks the subclass; the headers keep any Retry-After)."""
    status = getattr(exc, "status", None)
    message, code, source = _envelope(getattr(exc, "body", None))
    text = message or str(getattr(exc, "reason", None) or type(exc).__name__)
    headers = getattr(exc, "headers", None)
    return create_daytona_error(text, status_code=status if isinstance(status, int) else None,
                                headers=dict(headers) if isinstance(headers, Mapping) else None,
                                code=code, source=source)


async def rest(call: Awaitable[T]) -> T:
    """`await call` (a `SandboxApi` method's coroutine) with its errors raised as `DaytonaError`:
    HTTP errors as `sdk_error` says; a response the SDK's models refuse as a plain `DaytonaError`
    naming only how many fields were wrong (never their values). Transport errors and timeouts
    pass through unchanged, as `sandboxes.translate` reads them directly."""
    try:
        return await call
    except OpenApiException as exc:
        raise sdk_error(exc) from exc
    except pydantic.ValidationError as exc:
        raise DaytonaError(f"unexpected response from Daytona: {exc.error_count()} invalid field(s) "
                           f"in {exc.title}") from exc
