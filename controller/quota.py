"""AgentTaskQuota: caps on what the tasks of a namespace (or of each requester) may use. Pure.

A quota applies to a task when it is in the quota's namespace and, if the quota names a
`requester`, the task's `spec.audit.requestedBy` is that requester. With `perRequester`, every
requester is capped separately (tasks without a requester share the requester ""). Caps:

- `maxConcurrentTasks`: admitted tasks at once — enforced inside the FCFS admission order as a
  group limit (`groups()`), like the per-namespace limit: a task blocked only by its group's cap
  does not hold up other groups.
- `windows[]`: per rolling window (the last `duration`), the agents' cost estimate and the
  sandbox hours of the tasks that finished in it, plus the sandbox hours of those still running.
  A task whose group used up a window's cap waits (`budget()`: reason `BudgetExceeded`) until
  enough usage has left the window; nothing already running is stopped by a window cap.
- `maxCostUsdPerTask`: the runner stops the agent at that cost (`task_cost_cap()`).

`report()` computes a quota's status (used and remaining per requester). Usage of a task counts
at its completion time (cost is known only then); a finished task's usage stays in the window
for `duration` after it finished.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_DURATION = re.compile(r"^([0-9]+)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BUDGET_EXCEEDED = "BudgetExceeded"


@dataclass(frozen=True)
class Window:
    label: str
    seconds: float
    max_cost_usd: float | None
    max_sandbox_hours: float | None


@dataclass(frozen=True)
class Quota:
    namespace: str
    name: str
    requester: str | None
    per_requester: bool
    max_concurrent: int | None
    max_cost_per_task: float | None
    windows: tuple[Window, ...]
    generation: int = 1

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Quota:
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        windows = []
        for w in spec.get("windows") or []:
            match = _DURATION.match(str(w.get("duration", "")))
            if match is None:
                continue  # the CRD refuses these; an old object is ignored rather than crashing
            windows.append(Window(label=match.group(0), seconds=int(match.group(1)) * _UNIT[match.group(2)],
                                  max_cost_usd=_number(w.get("maxCostUsd")),
                                  max_sandbox_hours=_number(w.get("maxSandboxHours"))))
        concurrent = spec.get("maxConcurrentTasks")
        return cls(namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
                   requester=spec.get("requester") or None, per_requester=bool(spec.get("perRequester")),
                   max_concurrent=concurrent if isinstance(concurrent, int) else None,
                   max_cost_per_task=_number(spec.get("maxCostUsdPerTask")), windows=tuple(windows),
                   generation=int(meta.get("generation") or 1))

    def applies(self, namespace: str, requester: str) -> bool:
        return namespace == self.namespace and (self.requester is None or self.requester == requester)

    def group(self, requester: str) -> str:
        """The key of the group a requester's tasks are capped in."""
        scope = requester if self.per_requester else (self.requester or "*")
        return f"{self.namespace}/{self.name}/{scope}"


@dataclass(frozen=True)
class Use:
    """What one task used (from the kopf index of tasks)."""

    namespace: str
    requester: str
    active: bool  # holds (or held until now) a sandbox slot
    running_since: dt.datetime | None  # admission time of an unfinished task
    finished_at: dt.datetime | None
    cost_usd: float
    sandbox_seconds: float


@dataclass(frozen=True)
class Block:
    reason: str
    message: str
    retry_after: float


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _in_group(quota: Quota, use: Use, requester: str) -> bool:
    if not quota.applies(use.namespace, use.requester):
        return False
    return not quota.per_requester or use.requester == requester


def _window_use(quota: Quota, window: Window, uses: Iterable[Use], requester: str,
                now: dt.datetime) -> tuple[float, float, float | None]:
    """(cost USD, sandbox hours, seconds until the oldest counted finished use leaves the window)."""
    start = now - dt.timedelta(seconds=window.seconds)
    cost = seconds = 0.0
    leaves: float | None = None
    for use in uses:
        if not _in_group(quota, use, requester):
            continue
        if use.finished_at is not None:
            if use.finished_at < start:
                continue
            cost += use.cost_usd
            seconds += use.sandbox_seconds
            left = (use.finished_at - start).total_seconds()
            leaves = left if leaves is None else min(leaves, left)
        elif use.running_since is not None:
            seconds += max((now - max(use.running_since, start)).total_seconds(), 0.0)
    return cost, seconds / 3600, leaves


def budget(*, namespace: str, requester: str, quotas: Iterable[Quota], uses: Iterable[Use],
           now: dt.datetime) -> Block | None:
    """Why a task of `requester` in `namespace` may not start now (a window cap is used up), or None."""
    pool = list(uses)
    for quota in sorted(quotas, key=lambda q: q.name):
        if not quota.applies(namespace, requester):
            continue
        for window in quota.windows:
            cost, hours, leaves = _window_use(quota, window, pool, requester, now)
            who = f"requester {requester or '(none)'}" if quota.per_requester or quota.requester else "the namespace"
            over = []
            if window.max_cost_usd is not None and cost >= window.max_cost_usd:
                over.append(f"${cost:.4f} of ${window.max_cost_usd:g} agent cost")
            if window.max_sandbox_hours is not None and hours >= window.max_sandbox_hours:
                over.append(f"{hours:.4f} of {window.max_sandbox_hours:g} sandbox hours")
            if over:
                wait = leaves if leaves is not None else min(window.seconds, 60.0)
                return Block(reason=BUDGET_EXCEEDED, retry_after=max(wait, 1.0), message=(
                    f"AgentTaskQuota {quota.name}: {who} used {' and '.join(over)} in the last {window.label}; "
                    f"the task starts when the window allows (in about {max(wait, 1.0):.0f}s)"))
    return None


def groups(*, namespace: str, requester: str, quotas: Iterable[Quota]) -> list[tuple[str, int, str]]:
    """(group key, concurrent cap, quota name) of every concurrency cap on such a task."""
    return [(q.group(requester), q.max_concurrent, q.name) for q in sorted(quotas, key=lambda q: q.name)
            if q.max_concurrent is not None and q.applies(namespace, requester)]


def task_cost_cap(*, namespace: str, requester: str, quotas: Iterable[Quota]) -> float | None:
    caps = [q.max_cost_per_task for q in quotas if q.max_cost_per_task is not None and q.applies(namespace, requester)]
    return min(caps) if caps else None


def report(quota: Quota, uses: Iterable[Use], now: dt.datetime) -> list[dict[str, Any]]:
    """`status.usage` of a quota: per requester (one entry "" without perRequester)."""
    pool = [u for u in uses if quota.applies(u.namespace, u.requester)]
    requesters = sorted({u.requester for u in pool}) if quota.per_requester else [quota.requester or ""]
    out = []
    for requester in requesters:
        entry: dict[str, Any] = {"requester": requester, "concurrentTasks": sum(
            1 for u in pool if u.active and (not quota.per_requester or u.requester == requester))}
        windows = []
        for window in quota.windows:
            cost, hours, _ = _window_use(quota, window, pool, requester, now)
            doc: dict[str, Any] = {"duration": window.label, "costUsd": round(cost, 6),
                                   "sandboxHours": round(hours, 4)}
            if window.max_cost_usd is not None:
                doc["remainingCostUsd"] = round(max(window.max_cost_usd - cost, 0.0), 6)
            if window.max_sandbox_hours is not None:
                doc["remainingSandboxHours"] = round(max(window.max_sandbox_hours - hours, 0.0), 4)
            windows.append(doc)
        entry["windows"] = windows
        out.append(entry)
    return out
