"""The runner's result.json, parsed into the status `Result` (strings capped and redacted).

The runner (controller/runner/result.py) writes every key; this parser still treats each one
as optional and untrusted: the file comes from inside the sandbox, where the agent could have
rewritten it. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import logs
from .api import AgentReport, Denial, Result, TokenUsage

_MAX_DENIALS = 20


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _agent(raw: Any) -> AgentReport | None:
    if not isinstance(raw, Mapping):
        return None
    found = raw.get("usage")
    usage: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    tokens = TokenUsage(**{k: _int(usage.get(camel)) or 0 for k, camel in (
        ("input_tokens", "inputTokens"), ("output_tokens", "outputTokens"),
        ("cache_read_input_tokens", "cacheReadInputTokens"),
        ("cache_creation_input_tokens", "cacheCreationInputTokens"))})
    cost = raw.get("costUsd")
    denials = [d for d in raw.get("permissionDenials") or [] if isinstance(d, Mapping)][:_MAX_DENIALS]
    return AgentReport(
        is_error=raw.get("isError") if isinstance(raw.get("isError"), bool) else None,
        session_id=logs.redact(str(raw["sessionId"]))[:128] if raw.get("sessionId") else None,
        num_turns=_int(raw.get("numTurns")), duration_ms=_int(raw.get("durationMs")),
        model=logs.redact(str(raw["model"]))[:128] if raw.get("model") else None,
        cost_usd=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0 else None,
        usage=tokens,
        permission_denials=tuple(Denial(tool=logs.redact(str(d.get("tool") or "?"))[:128],
                                        input=logs.redact(str(d.get("input") or ""))[:512] or None)
                                 for d in denials))


def parse_result(raw: Mapping[str, Any] | None) -> Result | None:
    if not raw:
        return None

    def text(key: str, limit: int = 2048) -> str | None:
        value = raw.get(key)
        return logs.redact(str(value))[:limit] if value not in (None, "") else None

    files = raw.get("changedFiles")
    changed = tuple(logs.redact(str(f))[:512] for f in files[:200]) if isinstance(files, list) else None
    return Result(outcome=text("outcome", 64), branch=text("branch", 255), commit=text("commit", 64),
                  pull_request_url=text("pullRequestUrl"), summary=text("summary", 4096), changed_files=changed,
                  failure_class=text("failureClass", 64), agent_exit_code=_int(raw.get("agentExitCode")),
                  error=text("error", 1024), agent=_agent(raw.get("agent")))
