"""What a task consumed: sandbox time and size, agent tokens, cost and turns. Pure.

An attempt's usage is recorded once, when it ends (the agent exited, the attempt was lost, the
task failed or was cancelled): its sandbox seconds run from the sandbox's creation (as Daytona
reports it) to that moment, minus the time the task spent suspended; tokens, cost and turns come
from the agent's own report in result.json (Claude Code's list-price estimate, not a bill).
The task's totals are the sum over its attempts; cpu/memory/disk are those of the last sandbox.
"""

from __future__ import annotations

import datetime as dt

from .api import AttemptUsage, Result, SandboxStatus, TokenUsage, Usage


def _add(a: TokenUsage, b: TokenUsage) -> TokenUsage:
    return TokenUsage(input_tokens=a.input_tokens + b.input_tokens, output_tokens=a.output_tokens + b.output_tokens,
                      cache_read_input_tokens=a.cache_read_input_tokens + b.cache_read_input_tokens,
                      cache_creation_input_tokens=a.cache_creation_input_tokens + b.cache_creation_input_tokens)


def attempt_usage(*, attempt: int, sandbox: SandboxStatus | None, result: Result | None, now: dt.datetime,
                  suspended_seconds: float = 0) -> AttemptUsage:
    seconds = 0.0
    if sandbox is not None and sandbox.created_at is not None:
        seconds = max((now - sandbox.created_at).total_seconds() - suspended_seconds, 0.0)
    report = result.agent if result is not None else None
    return AttemptUsage(
        attempt=attempt, sandbox_seconds=round(seconds, 1),
        cpu=sandbox.cpu if sandbox else None, memory=sandbox.memory if sandbox else None,
        disk=sandbox.disk if sandbox else None,
        tokens=(report.usage if report and report.usage else TokenUsage()),
        cost_usd=round(report.cost_usd or 0.0, 6) if report else 0.0,
        turns=(report.num_turns or 0) if report else 0)


def record(previous: Usage | None, entry: AttemptUsage) -> Usage:
    """`previous` with `entry` recorded (replacing an earlier record of the same attempt)."""
    kept = [a for a in (previous.attempts if previous else ()) if a.attempt != entry.attempt]
    attempts = tuple(sorted([*kept, entry], key=lambda a: a.attempt))
    tokens = TokenUsage()
    for a in attempts:
        tokens = _add(tokens, a.tokens)
    return Usage(sandbox_seconds=round(sum(a.sandbox_seconds for a in attempts), 1), cpu=entry.cpu,
                 memory=entry.memory, disk=entry.disk, tokens=tokens,
                 cost_usd=round(sum(a.cost_usd for a in attempts), 6), turns=sum(a.turns for a in attempts),
                 attempts=attempts)
