"""A local fake of the Anthropic Messages API that plays a scripted conversation, for tests (aiohttp).

`FakeAnthropic(script, api_key=...)` serves `POST /v1/messages` on a free 127.0.0.1 port, streamed
as server-sent events the way Anthropic streams them (`message_start`, `ping`,
`content_block_start` / `content_block_delta` / `content_block_stop`, `message_delta` with the
usage, `message_stop`), or as one JSON message when the request does not ask for a stream, plus
`POST /v1/messages/count_tokens`. Point Claude Code at it with `ANTHROPIC_BASE_URL=<url>`.

The script is a list of steps, one per model turn: a `Turn` (text and/or tool calls, with the
usage it reports) or a `Fail` (an HTTP error in Anthropic's shape). Which step answers is decided
by the conversation itself: the number of assistant messages already in `messages`, so Claude
Code's own retries of a failed call get the same step again. A `Fail` with `times` answers that
many attempts and then lets the conversation go on to the next step.

It is strict where the real API is strict: the key (`x-api-key`, or `Authorization: Bearer` for
`ANTHROPIC_AUTH_TOKEN`) must match (401 `authentication_error` otherwise), the body must be a JSON
object with `model`, `max_tokens` and non-empty `messages` whose roles are `user`, `assistant` or
`system` (Claude Code sends `system` entries inside `messages`), and every `tool_use` must be
answered by a `tool_result` in the next user message (400 `invalid_request_error` otherwise).
Every request is recorded without its credentials; `usage_total()` adds up the usage the fake
reported, so tests can compare it with what the runner extracted.

It does not model token counting, prompt caching, thinking blocks, rate-limit headers or any
endpoint other than the two above (those answer 404 `not_found_error`, so a test can tell that
Claude Code made no other call).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.server import LocalServer

DEFAULT_MODEL = "claude-opus-5-5"
_SECRET_HEADERS = frozenset({"x-api-key", "authorization", "cookie"})
_ROLES = frozenset({"user", "assistant", "system"})


@dataclass(frozen=True)
class Usage:
    """What one model call reports; the defaults are non-zero in every kind so sums are checkable."""

    input_tokens: int = 1200
    output_tokens: int = 80
    cache_read_input_tokens: int = 300
    cache_creation_input_tokens: int = 150

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )

    def to_json(self, *, output_tokens: int | None = None) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
        }


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Turn:
    """One assistant message: text and tool calls in order; `delay` seconds before it starts."""

    content: tuple[str | ToolCall, ...]
    usage: Usage = Usage()
    delay: float = 0.0

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(isinstance(c, ToolCall) for c in self.content) else "end_turn"


@dataclass
class Fail:
    """An HTTP error in Anthropic's shape; `times=None` answers it forever."""

    status: int
    kind: str = "api_error"
    message: str = "Internal server error"
    times: int | None = None


Step = Turn | Fail


def say(text: str, *, usage: Usage = Usage(), delay: float = 0.0) -> Turn:
    """A final answer: one text block, `end_turn`."""
    return Turn((text,), usage=usage, delay=delay)


def use(name: str, *, text: str | None = None, usage: Usage = Usage(), delay: float = 0.0, **tool_input: Any) -> Turn:
    """One tool call (optionally after a short text), `stop_reason: tool_use`."""
    content: tuple[str | ToolCall, ...] = (ToolCall(name, tool_input),)
    return Turn(((text,) if text else ()) + content, usage=usage, delay=delay)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # case-insensitive, without x-api-key / Authorization / Cookie
    json: Any


@dataclass(frozen=True)
class ToolResult:
    tool_use_id: str
    text: str
    is_error: bool


@dataclass
class _State:
    answered: dict[int, int] = field(default_factory=dict)  # step -> Fail answers given


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": _id("req_")},
        status=status, headers={"request-id": _id("req_")},
    )


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(b.get("text", "")) for b in _blocks(content) if b.get("type") == "text")


def _problem(body: Any) -> str | None:
    """Why the real API would answer 400 to this body, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
        if not isinstance(message.get("content"), str | list):
            return f"messages.{i}.content: Field required"
    conversation = [m for m in messages if m["role"] != "system"]
    for i, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        ids = {b.get("id") for b in _blocks(message["content"]) if b.get("type") == "tool_use"}
        if not ids:
            continue
        following = conversation[i + 1] if i + 1 < len(conversation) else None
        answered = set() if following is None or following["role"] != "user" else {
            b.get("tool_use_id") for b in _blocks(following["content"]) if b.get("type") == "tool_result"}
        if not ids <= answered:
            return (f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {', '.join(sorted(str(x) for x in ids - answered))}")
    return None


class FakeAnthropic(LocalServer):
    """`async with FakeAnthropic([use("Read", file_path=...), say("done")], api_key=KEY) as api:`"""

    def __init__(self, script: list[Step], *, api_key: str, model: str = DEFAULT_MODEL) -> None:
        super().__init__()
        self.script = list(script)
        self.api_key = api_key
        self.model = model
        self.requests: list[RecordedRequest] = []
        self.reported: list[Usage] = []  # usage of every turn actually streamed
        self.overrun = False  # a request came after the script's last step
        self._state = _State()
        self._tool_ids = itertools.count(1)

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        return app

    # ------------------------------------------------------------------------ reading

    def usage_total(self) -> Usage:
        total = Usage(0, 0, 0, 0)
        for usage in self.reported:
            total = total + usage
        return total

    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    def tool_results(self) -> list[ToolResult]:
        """Every tool result Claude Code sent back, in order (from the last request: it holds them all)."""
        requests = [r for r in self.message_requests() if isinstance(r.json, dict)]
        if not requests:
            return []
        results = []
        for message in requests[-1].json.get("messages", []):
            if not isinstance(message, dict) or message.get("role") != "user":
                continue
            for block in _blocks(message.get("content")):
                if block.get("type") == "tool_result":
                    content = block.get("content")
                    text = content if isinstance(content, str) else _text_of(content)
                    results.append(ToolResult(str(block.get("tool_use_id")), text, bool(block.get("is_error"))))
        return results

    # ----------------------------------------------------------------------- serving

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(RecordedRequest(
            method=request.method, path=request.path, query=dict(request.query),
            headers=CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _SECRET_HEADERS),
            json=body,
        ))
        key = request.headers.get("x-api-key")
        scheme, _, bearer = (request.headers.get("Authorization") or "").partition(" ")
        presented = key if key is not None else (bearer.strip() if scheme.lower() == "bearer" else None)
        if presented is None or not secrets.compare_digest(presented.encode(), self.api_key.encode()):
            return _error(401, "authentication_error", "invalid x-api-key")
        try:
            response: web.StreamResponse = await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return _error(404, "not_found_error", f"{request.method} {request.path} not found")
        return response

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = self.requests[-1].json
        return web.json_response({"input_tokens": len(json.dumps(body)) // 4})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = self.requests[-1].json
        problem = _problem(body)
        if problem is not None:
            return _error(400, "invalid_request_error", problem)
        index = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        step = self._step(index)
        if isinstance(step, Fail):
            return _error(step.status, step.kind, step.message)
        if step.delay:
            await asyncio.sleep(step.delay)
        message = self._message(step)
        self.reported.append(step.usage)
        if not body.get("stream"):
            return web.json_response(message)
        return await self._stream(request, step, message)

    def _step(self, index: int) -> Step:
        """The step for the `index`-th model call, skipping Fails that have answered their `times`."""
        position = 0
        for i, step in enumerate(self.script):
            if isinstance(step, Fail):
                given = self._state.answered.get(i, 0)
                if (step.times is None or given < step.times) and position == index:
                    self._state.answered[i] = given + 1
                    return step
                continue  # a Fail answers in place of a turn; it does not take a position
            if position == index:
                return step
            position += 1
        self.overrun = True
        return say(f"(the fake Messages API has no step {index + 1} in its script)")

    def _message(self, turn: Turn) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for item in turn.content:
            if isinstance(item, ToolCall):
                content.append({"type": "tool_use", "id": f"toolu_{next(self._tool_ids):04d}{secrets.token_hex(8)}",
                                "name": item.name, "input": item.input})
            else:
                content.append({"type": "text", "text": item})
        return {
            "id": _id("msg_"), "type": "message", "role": "assistant", "model": self.model, "content": content,
            "stop_reason": turn.stop_reason, "stop_sequence": None, "usage": turn.usage.to_json(),
        }

    async def _stream(self, request: web.Request, turn: Turn, message: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "request-id": _id("req_"),
        })
        await response.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        start = {**message, "content": [], "stop_reason": None, "usage": turn.usage.to_json(output_tokens=1)}
        await send("message_start", {"type": "message_start", "message": start})
        await send("ping", {"type": "ping"})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                await send("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}})
                text = block["text"]
                for chunk in (text[i:i + 40] for i in range(0, len(text), 40)):
                    await send("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "text_delta", "text": chunk}})
            else:
                await send("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {**block, "input": {}}})
                partial = json.dumps(block["input"])
                for chunk in (partial[i:i + 40] for i in range(0, len(partial), 40)):
                    await send("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "input_json_delta", "partial_json": chunk}})
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        await send("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": turn.stop_reason, "stop_sequence": None},
                                     "usage": turn.usage.to_json()})
        await send("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response
