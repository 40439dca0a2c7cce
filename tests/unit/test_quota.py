"""AgentTaskQuota rules: which quotas apply, window budgets, concurrency groups, per-task cost, status."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller import quota
from controller.quota import Quota, Use

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def q(name: str = "team", **spec: Any) -> Quota:
    return Quota.from_body({"metadata": {"namespace": "ns", "name": name, "generation": 3}, "spec": spec})


def done(requester: str, *, ago: float, cost: float = 0.0, seconds: float = 0.0, ns: str = "ns") -> Use:
    return Use(namespace=ns, requester=requester, active=False, running_since=None,
               finished_at=NOW - dt.timedelta(seconds=ago), cost_usd=cost, sandbox_seconds=seconds)


def running(requester: str, *, since: float) -> Use:
    return Use(namespace="ns", requester=requester, active=True, running_since=NOW - dt.timedelta(seconds=since),
               finished_at=None, cost_usd=0.0, sandbox_seconds=0.0)


def test_parsing_and_which_tasks_a_quota_applies_to() -> None:
    one = q(requester="alice", windows=[{"duration": "24h", "maxCostUsd": 10}, {"duration": "90m",
                                                                              "maxSandboxHours": 2}])
    assert [(w.label, w.seconds) for w in one.windows] == [("24h", 86400), ("90m", 5400)]
    assert one.applies("ns", "alice") and not one.applies("ns", "bob") and not one.applies("other", "alice")
    assert q().applies("ns", "") and q().applies("ns", "bob")


def test_a_used_up_cost_window_blocks_until_the_oldest_use_leaves_it() -> None:
    quotas = [q(perRequester=True, windows=[{"duration": "1h", "maxCostUsd": 1.0}])]
    uses = [done("alice", ago=3000, cost=0.6), done("alice", ago=600, cost=0.5), done("bob", ago=10, cost=5)]
    block = quota.budget(namespace="ns", requester="alice", quotas=quotas, uses=uses, now=NOW)
    assert block is not None and block.reason == "BudgetExceeded"
    assert "requester alice used $1.1000 of $1 agent cost in the last 1h" in block.message
    assert block.retry_after == 600  # the 3000 s old one leaves the hour in 600 s
    assert quota.budget(namespace="ns", requester="carol", quotas=quotas, uses=uses, now=NOW) is None
    later = NOW + dt.timedelta(seconds=601)
    assert quota.budget(namespace="ns", requester="alice", quotas=quotas, uses=uses, now=later) is None


def test_sandbox_hours_count_running_tasks_too() -> None:
    quotas = [q(windows=[{"duration": "24h", "maxSandboxHours": 1}])]
    uses = [done("a", ago=100, seconds=1800), running("b", since=1900)]
    block = quota.budget(namespace="ns", requester="z", quotas=quotas, uses=uses, now=NOW)
    assert block is not None and "the namespace used 1.0278 of 1 sandbox hours" in block.message


def test_concurrency_groups_per_requester_or_shared() -> None:
    per = q("per", perRequester=True, maxConcurrentTasks=2)
    shared = q("shared", maxConcurrentTasks=5)
    assert quota.groups(namespace="ns", requester="alice", quotas=[per, shared]) == [
        ("ns/per/alice", 2, "per"), ("ns/shared/*", 5, "shared")]
    assert quota.groups(namespace="other", requester="alice", quotas=[per]) == []


def test_the_lowest_per_task_cost_cap_wins() -> None:
    quotas = [q("a", maxCostUsdPerTask=2.0), q("b", maxCostUsdPerTask=0.5, requester="bob")]
    assert quota.task_cost_cap(namespace="ns", requester="bob", quotas=quotas) == 0.5
    assert quota.task_cost_cap(namespace="ns", requester="alice", quotas=quotas) == 2.0
    assert quota.task_cost_cap(namespace="x", requester="bob", quotas=quotas) is None


def test_report_shows_used_and_remaining_per_requester() -> None:
    per = q(perRequester=True, maxConcurrentTasks=2, windows=[{"duration": "24h", "maxCostUsd": 10}])
    uses = [done("alice", ago=60, cost=2.5), running("alice", since=30), done("bob", ago=60, cost=1)]
    report = {e["requester"]: e for e in quota.report(per, uses, NOW)}
    assert report["alice"]["concurrentTasks"] == 1
    assert report["alice"]["windows"] == [{"duration": "24h", "costUsd": 2.5, "sandboxHours": 0.0083,
                                           "remainingCostUsd": 7.5}]
    assert report["bob"]["windows"][0]["remainingCostUsd"] == 9
