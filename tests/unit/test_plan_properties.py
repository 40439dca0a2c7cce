"""Property-based tests of the reconcile plan: arbitrary sequences of observations.

Invariants, whatever the world does:
- never a second CreateSandbox for an attempt whose sandbox has already been observed;
- a finished task whose sandbox is still there (and not kept) always gets it deleted;
- a terminal phase is never left;
- attempts never exceed backoffLimit + 1.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller import plan
from controller.api import AgentTask, Result
from controller.plan import Admission, CommandObs, Observation, SandboxObs

UID = "11111111-2222-3333-4444-555555555555"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CONFIG = plan.PlanConfig(default_deadline_seconds=600, default_keep_for_seconds=60, poll_interval_seconds=1,
                         max_poll_interval_seconds=5, log_tail_interval_seconds=1)
STATES = ["creating", "started", "stopped", "error", "destroyed", "archived", "starting", "build_failed"]


def observations() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "sandbox": st.one_of(st.none(), st.sampled_from(STATES)),
        "command": st.one_of(st.none(), st.just("running"), st.integers(min_value=0, max_value=3)),
        "admitted": st.booleans(),
        "outcome": st.sampled_from([None, "NoChanges", "PullRequestOpened"]),
        "advance": st.integers(min_value=0, max_value=120),
    })


def _observe(task: AgentTask, raw: dict[str, Any]) -> Observation:
    attempt = max(task.status.attempts, 1)
    sandbox = None
    if raw["sandbox"] is not None:
        name = plan.sandbox_name(UID, attempt)  # the supervisor looks the current attempt up by name
        if task.status.phase is not None and task.status.phase.terminal and task.status.sandbox:
            name = task.status.sandbox.name or name
        sandbox = SandboxObs(id=f"id-{name}", name=name, state=raw["sandbox"])
    command = None
    if sandbox is not None and sandbox.state == "started" and raw["command"] is not None:
        command = CommandObs(id="cmd", exit_code=None if raw["command"] == "running" else raw["command"])
    result = Result(outcome=raw["outcome"]) if command is not None and command.exit_code is not None else None
    return Observation(sandbox=sandbox, command=command, session_exists=command is not None, result=result,
                       admission=Admission(admitted=raw["admitted"], position=1, queued=1, limit_message="queued"))


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(observations(), min_size=1, max_size=40),
       backoff_limit=st.integers(min_value=0, max_value=3),
       keep=st.booleans(),
       deadline=st.one_of(st.none(), st.integers(min_value=30, max_value=900)))
def test_plan_invariants(steps: list[dict[str, Any]], backoff_limit: int, keep: bool, deadline: int | None) -> None:
    spec: dict[str, Any] = {"repository": {"url": "https://example.test/r.git"}, "backoffLimit": backoff_limit,
                            "sandbox": {"keepOnFailure": keep}}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    body: dict[str, Any] = {"metadata": {"name": "t", "namespace": "n", "uid": UID, "generation": 1,
                                         "creationTimestamp": START.isoformat()},
                            "spec": spec, "status": {}}
    now = START
    observed: set[str] = set()  # sandbox names seen by the plan (recorded id)
    was_terminal = None
    for raw in steps:
        now += dt.timedelta(seconds=raw["advance"])
        task = AgentTask.from_body(body)
        obs = _observe(task, raw)
        decision = plan.decide(task, obs, now=now, config=CONFIG)
        status = decision.status

        for action in decision.actions:
            if isinstance(action, plan.CreateSandbox):
                assert action.name not in observed, f"second sandbox for attempt {action.attempt}"
        if was_terminal is not None:
            assert status.phase == was_terminal, "a terminal phase was left"
            box = task.status.sandbox
            if (obs.sandbox is not None and box is not None and not box.deleted and box.retain_until is None):
                assert any(isinstance(a, plan.DeleteSandbox) for a in decision.actions), "finished sandbox kept"
        assert status.attempts <= backoff_limit + 1
        if status.phase is not None and status.phase.terminal:
            was_terminal = status.phase

        if status.sandbox is not None and status.sandbox.id is not None and status.sandbox.name:
            observed.add(status.sandbox.name)
        body["status"] = status.dump()
