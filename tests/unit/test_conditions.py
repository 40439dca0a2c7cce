"""Conditions derived from the status, one rule per type, as kstatus/Flux/kubectl wait read them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from controller import conditions
from controller.api import AgentTaskStatus

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def conds(**status: Any) -> dict[str, tuple[str, str | None]]:
    parsed = AgentTaskStatus.model_validate(status)
    return {c.type: (c.status.value, c.reason) for c in conditions.compute(parsed, now=NOW, generation=3)}


@pytest.mark.parametrize(("phase", "reason", "ready", "reconciling", "stalled"), [
    ("Pending", "Suspended", "False", "True", None),
    ("Queued", "QuotaExceeded", "False", "True", None),
    ("Provisioning", "Provisioning", "False", "True", None),
    ("Running", "AgentStarted", "False", "True", None),
    ("Running", "DaytonaAuthFailed", "False", "True", None),
    ("Suspended", "Suspended", "False", "True", None),
    ("Succeeded", "AgentSucceeded", "True", "False", None),
    ("Failed", "AgentFailed", "False", "False", "True"),
])
def test_generic_conditions_follow_the_phase(phase: str, reason: str, ready: str, reconciling: str,
                                             stalled: str | None) -> None:
    got = conds(phase=phase, reason=reason, message="m")
    assert got["Ready"][0] == ready
    assert got["Reconciling"] == (reconciling, reason)
    assert got.get("Stalled", (None,))[0] == stalled
    if stalled:
        assert got["Stalled"][1] == reason


def test_waiting_on_an_operator_wide_cause_shows_on_the_sandbox_condition() -> None:
    got = conds(phase="Provisioning", reason="DaytonaQuotaExceeded", message="Total CPU limit exceeded",
                startTime=NOW.isoformat(), sandbox={"name": "at-x-1", "state": "creating"})
    assert got["SandboxReady"] == ("False", "DaytonaQuotaExceeded")
    assert got["Reconciling"] == ("True", "DaytonaQuotaExceeded")
    assert got["Admitted"] == ("True", "Admitted")


def test_a_running_task_whose_sandbox_was_last_seen_started_stays_ready_while_waiting() -> None:
    got = conds(phase="Running", reason="DaytonaUnavailable", message="m",
                sandbox={"name": "at-x-1", "id": "i", "state": "started"},
                agent={"sessionId": "s", "commandId": "c"})
    assert got["SandboxReady"] == ("True", "SandboxCreated")
    assert got["AgentRunning"] == ("True", "AgentStarted")


def test_every_condition_carries_the_generation_and_keeps_its_transition_time() -> None:
    status = AgentTaskStatus.model_validate({"phase": "Running", "reason": "AgentStarted",
                                             "sandbox": {"name": "n", "id": "i", "state": "started"}})
    first = conditions.compute(status, now=NOW, generation=3)
    again = conditions.compute(status.model_copy(update={"conditions": first}), now=NOW + dt.timedelta(hours=1),
                               generation=4)
    assert all(c.observed_generation == 4 for c in again)
    assert [c.last_transition_time for c in again] == [c.last_transition_time for c in first]


def test_foreign_conditions_are_kept() -> None:
    status = AgentTaskStatus.model_validate({"phase": "Running", "conditions": [
        {"type": "example.com/Audited", "status": "True"}]})
    assert any(c.type == "example.com/Audited" for c in conditions.compute(status, now=NOW, generation=1))
