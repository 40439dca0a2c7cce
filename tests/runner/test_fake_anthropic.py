"""The fake Messages API itself: the stream is shaped like Anthropic's, and it is strict where the API is."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.fakes.anthropic import Fail, FakeAnthropic, Usage, say, use

KEY = "sk-ant-fake-key"


def body(*messages: dict[str, Any], stream: bool = True) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 1024, "stream": stream, "messages": list(messages)}


async def post(api: FakeAnthropic, payload: Any, *, key: str = KEY) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(
        f"{api.url}/v1/messages?beta=true", json=payload, headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
    ) as response:
        return response.status, await response.text()


def events(sse: str) -> list[tuple[str, dict[str, Any]]]:
    parsed = []
    for block in sse.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        parsed.append((lines["event"], json.loads(lines["data"])))
    return parsed


async def test_a_tool_call_streams_as_anthropic_streams_it() -> None:
    usage = Usage(10, 20, 30, 40)
    async with FakeAnthropic([use("Read", text="Looking.", usage=usage, file_path="/x")], api_key=KEY) as api:
        status, text = await post(api, body({"role": "system", "content": "env"}, {"role": "user", "content": "hi"}))

    assert status == 200
    stream = events(text)
    assert [name for name, _ in stream] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    start = stream[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["usage"]["output_tokens"] == 1
    assert stream[5][1]["content_block"]["name"] == "Read"
    assert json.loads(stream[6][1]["delta"]["partial_json"]) == {"file_path": "/x"}
    delta = stream[8][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"input_tokens": 10, "cache_creation_input_tokens": 40,
                              "cache_read_input_tokens": 30, "output_tokens": 20}
    assert api.usage_total() == usage
    assert "x-api-key" not in api.requests[0].headers


async def test_without_stream_it_answers_one_message() -> None:
    async with FakeAnthropic([say("Done.")], api_key=KEY) as api:
        status, text = await post(api, body({"role": "user", "content": "hi"}, stream=False))

    assert status == 200
    message = json.loads(text)
    assert message["content"] == [{"type": "text", "text": "Done."}]
    assert message["stop_reason"] == "end_turn"


@pytest.mark.parametrize(("payload", "problem"), [
    (body(), "at least one message"),
    (body({"role": "tool", "content": "x"}), "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}, "model: Field required"),
    (body({"role": "user", "content": "x"},
          {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
          {"role": "user", "content": "no result"}), "`tool_use` ids were found without `tool_result` blocks"),
])
async def test_malformed_requests_are_refused(payload: dict[str, Any], problem: str) -> None:
    async with FakeAnthropic([say("x")], api_key=KEY) as api:
        status, text = await post(api, payload)

    assert status == 400
    error = json.loads(text)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert problem in error["error"]["message"]
    assert api.reported == []


async def test_a_wrong_key_is_refused_and_scripted_failures_answer_their_times() -> None:
    async with FakeAnthropic([Fail(529, "overloaded_error", "Overloaded", times=1), say("back")], api_key=KEY) as api:
        denied = await post(api, body({"role": "user", "content": "hi"}), key="sk-wrong")
        failed = await post(api, body({"role": "user", "content": "hi"}))
        retried = await post(api, body({"role": "user", "content": "hi"}))

    assert denied[0] == 401 and json.loads(denied[1])["error"]["type"] == "authentication_error"
    assert failed[0] == 529 and json.loads(failed[1])["error"]["type"] == "overloaded_error"
    assert retried[0] == 200 and "back" in retried[1]
    assert not api.overrun


async def test_the_step_follows_the_conversation_and_an_overrun_is_flagged() -> None:
    async with FakeAnthropic([say("first")], api_key=KEY) as api:
        status, text = await post(api, body({"role": "user", "content": "a"},
                                            {"role": "assistant", "content": "first"},
                                            {"role": "user", "content": "b"}))

    assert status == 200
    assert "has no step 2" in text
    assert api.overrun
