"""Why the agent's run failed, if it did: a pure decision over how it ended and what it printed.

In order:
  1. the runner stopped it at `agent.timeoutSeconds` / `agent.deadline` -> AgentTimedOut
  2. the runner stopped it because its reported cost passed maxCostUsd -> LimitReached
  3. its result says a turn or budget limit ended it                   -> LimitReached
     (`error_max_turns` / `error_max_budget_usd`, terminal reason `max_turns` / `budget_exhausted`)
  4. the model API refused the key: status 401/403, an authentication or permission error type,
     or an `authentication_failed` API-error message (also "Not logged in": no key at all)
                                                                         -> ModelAuthFailed
  5. the model API kept failing: terminal reason `api_error` with status 429, >= 500 or none at
     all (connection refused, timeouts)                                 -> ModelUnavailable
  6. `is_error` is true, or the process exited non-zero                 -> AgentFailed
  7. otherwise: no failure (None).
`is_error` is trusted over `subtype` ("success" even for API errors) and over the exit code.

This module does not run, stop or parse anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import FailureClass

_AUTH_STATUS = frozenset({401, 403})
_AUTH_TYPES = frozenset({"authentication_error", "permission_error"})
_LIMIT_SUBTYPES = {"error_max_turns": "agent.maxTurns", "error_max_budget_usd": "agent.maxCostUsd"}
_LIMIT_REASONS = {"max_turns": "agent.maxTurns", "budget_exhausted": "agent.maxCostUsd"}
_ERROR_CHARS = 1000


@dataclass(frozen=True)
class AgentEnd:
    """How the agent's process ended and what its stream said."""

    exit_code: int  # shell convention: 127 not found, 126 not executable, 128+N killed by signal N
    result: dict[str, Any] | None = None  # Claude Code's `result` event, if it printed one
    api_error: str | None = None  # the `error` of its last API-error message
    timed_out_after: float | None = None  # seconds, when the runner stopped it at its time limit
    time_limit: str | None = None  # what set that limit (agent.timeoutSeconds, agent.deadline)
    stopped_at_cost: float | None = None  # USD, when the runner stopped it for passing maxCostUsd
    start_error: str | None = None  # why it could not be started


def classify(end: AgentEnd) -> tuple[FailureClass | None, str | None]:
    """(failure class, message for result.json `error`), or (None, None) for a successful run."""
    if end.timed_out_after is not None:
        return FailureClass.AGENT_TIMED_OUT, (
            f"the agent did not finish within {end.time_limit or 'its time limit'} "
            f"({max(0.0, end.timed_out_after):.0f}s) and was stopped")
    if end.stopped_at_cost is not None:
        return FailureClass.LIMIT_REACHED, (
            f"the agent was stopped: its reported cost ${end.stopped_at_cost:.4f} passed agent.maxCostUsd")
    result = end.result or {}
    limit = _LIMIT_SUBTYPES.get(str(result.get("subtype"))) or _LIMIT_REASONS.get(str(result.get("terminal_reason")))
    if limit is not None:
        errors = result.get("errors")
        said = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else "limit reached"
        return FailureClass.LIMIT_REACHED, f"the agent reached {limit}: {_clip(said)}"
    is_error = result.get("is_error") is True
    status = result.get("api_error_status")
    said = _clip(str(result.get("result") or "").strip())
    if (is_error or end.exit_code != 0) and (
        status in _AUTH_STATUS or result.get("api_error_type") in _AUTH_TYPES
        or end.api_error == "authentication_failed"
    ):
        return FailureClass.MODEL_AUTH_FAILED, _with_status("the model API refused the credentials", status, said)
    if is_error and result.get("terminal_reason") == "api_error" and (
        status is None or status == 429 or (isinstance(status, int) and status >= 500)
    ):
        return FailureClass.MODEL_UNAVAILABLE, _with_status("the model API kept failing", status, said)
    if end.start_error is not None:
        return FailureClass.AGENT_FAILED, end.start_error
    if is_error:
        return FailureClass.AGENT_FAILED, f"the agent reported an error: {said}".removesuffix(": ")
    if end.exit_code != 0:
        return FailureClass.AGENT_FAILED, f"the agent exited with code {end.exit_code}"
    return None, None


def _with_status(text: str, status: Any, said: str) -> str:
    if isinstance(status, int):
        text += f" (HTTP {status})"
    return f"{text}: {said}" if said else text


def _clip(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS] + "…"
