"""Claude Code's `--output-format stream-json` read line by line: readable progress and the result.

`StreamParser.feed(line)` takes one stdout line (bytes) and returns the readable progress lines
it stands for: the session start, each assistant text, each tool call (`→ Bash: pytest -q`),
each tool result clipped to `RESULT_LINES` lines / `RESULT_CHARS` characters (`←`), model API
retries, permission denials and the final tally. Lines that are not JSON are passed through
as they are. The parser keeps only what the result needs — the last `result` event, the model
named at start-up, the last assistant text and the last API error — never the stream itself.

`report()` turns the `result` event into `AgentReport`, the `agent` object of result.json; it is
None when the stream never had a result (the agent crashed or was stopped). Trust `is_error`,
not `subtype`: an API error still says `"subtype": "success"`.

This module is pure: it does not read pipes, redact, or write anywhere (the caller redacts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PREFIX = "agent:"
TEXT_CHARS = 2000
RESULT_LINES = 20
RESULT_CHARS = 1500
INPUT_CHARS = 300
DENIAL_INPUT_CHARS = 500
MAX_DENIALS = 50
_MAX_PENDING_TOOLS = 256


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cacheReadInputTokens": self.cache_read_input_tokens,
            "cacheCreationInputTokens": self.cache_creation_input_tokens,
        }


@dataclass(frozen=True)
class Denial:
    tool: str
    input: str  # the tool input as JSON, clipped


@dataclass(frozen=True)
class AgentReport:
    """What Claude Code said about its run (result.json `agent`); cost is its own list-price estimate."""

    is_error: bool
    session_id: str | None
    num_turns: int | None
    duration_ms: int | None
    model: str | None
    models: tuple[str, ...]
    cost_usd: float | None
    usage: Usage
    permission_denials: tuple[Denial, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "isError": self.is_error,
            "sessionId": self.session_id,
            "numTurns": self.num_turns,
            "durationMs": self.duration_ms,
            "model": self.model,
            "models": list(self.models),
            "costUsd": self.cost_usd,
            "usage": self.usage.to_json(),
            "permissionDenials": [{"tool": d.tool, "input": d.input} for d in self.permission_denials],
        }


@dataclass
class StreamParser:
    result: dict[str, Any] | None = None  # the last `result` event
    init_model: str | None = None
    session_id: str | None = None
    last_text: str = ""
    api_error: str | None = None  # the `error` of the last API-error message (e.g. authentication_failed)
    _tools: dict[str, str] = field(default_factory=dict)  # tool_use_id -> tool name, until its result

    @property
    def cost_seen(self) -> float | None:
        """The highest cost the agent has reported so far (only `result` events carry one)."""
        return _number(self.result.get("total_cost_usd")) if self.result else None

    def feed(self, line: bytes) -> list[str]:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text.strip():
            return []
        try:
            event = json.loads(text)
        except ValueError:
            return [text]
        if not isinstance(event, dict):
            return [text]
        kind = event.get("type")
        if kind == "system":
            return self._system(event)
        if kind == "assistant":
            return self._assistant(event)
        if kind == "user":
            return self._user(event)
        if kind == "result":
            self.result = event
            self.session_id = _str(event.get("session_id")) or self.session_id
            return [self._tally(event)]
        return []  # stream_event, rate-limit and other bookkeeping events

    def report(self) -> AgentReport | None:
        event = self.result
        if event is None:
            return None
        model_usage = event.get("modelUsage")
        models = tuple(sorted(
            (m for m in model_usage if isinstance(m, str)),
            key=lambda m: -(_number(_dict(model_usage[m]).get("costUSD")) or 0.0),
        )) if isinstance(model_usage, dict) else ()
        usage = _dict(event.get("usage"))
        denials = event.get("permission_denials")
        return AgentReport(
            is_error=event.get("is_error") is True,
            session_id=_str(event.get("session_id")) or self.session_id,
            num_turns=_int(event.get("num_turns")),
            duration_ms=_int(event.get("duration_ms")),
            model=self.init_model or (models[0] if models else None),
            models=models,
            cost_usd=_number(event.get("total_cost_usd")),
            usage=Usage(
                input_tokens=_int(usage.get("input_tokens")) or 0,
                output_tokens=_int(usage.get("output_tokens")) or 0,
                cache_read_input_tokens=_int(usage.get("cache_read_input_tokens")) or 0,
                cache_creation_input_tokens=_int(usage.get("cache_creation_input_tokens")) or 0,
            ),
            permission_denials=tuple(
                Denial(tool=_str(d.get("tool_name")) or "?",
                       input=_clip(_json(d.get("tool_input")), DENIAL_INPUT_CHARS))
                for d in (denials if isinstance(denials, list) else [])[:MAX_DENIALS] if isinstance(d, dict)
            ),
        )

    def summary(self) -> str:
        """The agent's answer: the result text, else its last assistant text."""
        text = _str(self.result.get("result")) if self.result else None
        return text if text is not None else self.last_text

    # ------------------------------------------------------------------ event kinds

    def _system(self, event: dict[str, Any]) -> list[str]:
        subtype = event.get("subtype")
        if subtype == "init":
            self.init_model = _str(event.get("model")) or self.init_model
            self.session_id = _str(event.get("session_id")) or self.session_id
            servers = [
                f"{_str(s.get('name')) or '?'} ({_str(s.get('status')) or '?'})"
                for s in event.get("mcp_servers") or [] if isinstance(s, dict)
            ]
            parts = [
                f"session {self.session_id}",
                f"model {self.init_model}",
                f"permission mode {_str(event.get('permissionMode'))}",
                f"claude-code {_str(event.get('claude_code_version'))}",
            ]
            if servers:
                parts.append("MCP servers " + ", ".join(servers))
            return [f"{PREFIX} started: " + ", ".join(parts)]
        if subtype == "api_retry":
            status = event.get("error_status")
            delay = (_number(event.get("retry_delay_ms")) or 0.0) / 1000
            return [f"{PREFIX} model API error {status if status is not None else '(no response)'} "
                    f"({_str(event.get('error')) or 'unknown'}); retry {event.get('attempt')}/"
                    f"{event.get('max_retries')} in {delay:.1f}s"]
        if subtype == "permission_denied":
            return [f"{PREFIX} permission denied: {_str(event.get('tool_name')) or '?'}: "
                    f"{_clip(_str(event.get('message')) or '', INPUT_CHARS)}"]
        return []

    def _assistant(self, event: dict[str, Any]) -> list[str]:
        message = _dict(event.get("message"))
        if event.get("error") is not None:
            self.api_error = _str(event.get("error"))
        lines: list[str] = []
        for block in _blocks(message.get("content")):
            if block.get("type") == "text":
                text = _str(block.get("text")) or ""
                if text.strip():
                    self.last_text = text
                    lines += [f"{PREFIX} {line}" for line in _clip(text, TEXT_CHARS).splitlines() if line.strip()]
            elif block.get("type") == "tool_use":
                name = _str(block.get("name")) or "?"
                if len(self._tools) < _MAX_PENDING_TOOLS:
                    self._tools[str(block.get("id"))] = name
                lines.append(f"{PREFIX} → {name}: {_describe(name, _dict(block.get('input')))}")
        return lines

    def _user(self, event: dict[str, Any]) -> list[str]:
        lines: list[str] = []
        for block in _blocks(_dict(event.get("message")).get("content")):
            if block.get("type") != "tool_result":
                continue
            name = self._tools.pop(str(block.get("tool_use_id")), "tool")
            content = block.get("content")
            text = content if isinstance(content, str) else "\n".join(
                _str(b.get("text")) or "" for b in _blocks(content) if b.get("type") == "text")
            marker = " (error)" if block.get("is_error") is True else ""
            body = _head(text, lines=RESULT_LINES, chars=RESULT_CHARS).splitlines() or [""]
            lines.append(f"{PREFIX} ← {name}{marker}: {body[0]}")
            lines += [f"{PREFIX}   {line}" for line in body[1:]]
        return lines

    def _tally(self, event: dict[str, Any]) -> str:
        usage = _dict(event.get("usage"))
        cost = _number(event.get("total_cost_usd"))
        seconds = (_number(event.get("duration_ms")) or 0.0) / 1000
        state = "error" if event.get("is_error") is True else "ok"
        reason = _str(event.get("terminal_reason")) or _str(event.get("subtype")) or ""
        return (f"{PREFIX} finished ({state}, {reason}): {event.get('num_turns')} turns, {seconds:.1f}s, "
                f"cost ${cost if cost is not None else 0:.4f} (estimate); tokens in {usage.get('input_tokens', 0)}, "
                f"out {usage.get('output_tokens', 0)}, cache read {usage.get('cache_read_input_tokens', 0)}, "
                f"cache write {usage.get('cache_creation_input_tokens', 0)}")


# ------------------------------------------------------------------------- helpers


def _describe(tool: str, tool_input: dict[str, Any]) -> str:
    """The part of a tool call a reader wants: the command, the file, or the input as JSON."""
    for key in ("command", "file_path", "path", "pattern", "url", "description"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return _clip(" ".join(value.split()), INPUT_CHARS)
    return _clip(_json(tool_input), INPUT_CHARS)


def _head(text: str, *, lines: int, chars: int) -> str:
    kept = text.splitlines()
    head = "\n".join(kept[:lines])
    clipped = _clip(head, chars)
    if len(kept) > lines or clipped != head:
        clipped += f"\n… ({len(kept)} lines, {len(text)} characters in all)"
    return clipped


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
