"""State table of the reconcile decision: every phase x every observation."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from controller import conditions, plan
from controller.api import AgentTask, AgentTaskStatus, ConditionStatus, Phase, Result
from controller.plan import (
    Admission,
    CommandObs,
    CreateSandbox,
    DeleteSandbox,
    KeepSandbox,
    Observation,
    SandboxObs,
    StartAgent,
)

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
UID = "0b6f1c1e-1111-2222-3333-444455556666"
CONFIG = plan.PlanConfig(default_deadline_seconds=3600, default_keep_for_seconds=600, poll_interval_seconds=2,
                         max_poll_interval_seconds=15, log_tail_interval_seconds=10)


def task(status: dict[str, Any] | None = None, **spec: Any) -> AgentTask:
    body = {
        "metadata": {"name": "t", "namespace": "ns", "uid": UID, "generation": 2, "resourceVersion": "7",
                     "creationTimestamp": (NOW - dt.timedelta(minutes=1)).isoformat()},
        "spec": {"repository": {"url": "https://example.test/r.git"}, **spec},
        "status": status or {},
    }
    return AgentTask.from_body(body)


def derived(status: dict[str, Any]) -> dict[str, Any]:
    """`status` with the conditions the plan would have derived for it (what a real task carries)."""
    parsed = AgentTaskStatus.model_validate(status)
    return parsed.model_copy(update={"conditions": conditions.compute(
        parsed, now=NOW - dt.timedelta(minutes=1), generation=2)}).dump()


def running_status(attempt: int = 1, **extra: Any) -> dict[str, Any]:
    name = plan.sandbox_name(UID, attempt)
    return derived({"phase": "Running", "reason": "AgentStarted", "attempts": attempt,
                    "startTime": (NOW - dt.timedelta(minutes=1)).isoformat(),
                    "runningTime": (NOW - dt.timedelta(seconds=30)).isoformat(),
                    "sandbox": {"id": "sb1", "name": name, "state": "started"},
                    "agent": {"sessionId": plan.session_id(attempt), "commandId": "c1"}, **extra})


def started(attempt: int = 1, state: str = "started") -> SandboxObs:
    return SandboxObs(id="sb1", name=plan.sandbox_name(UID, attempt), state=state)


def decide(t: AgentTask, obs: Observation, *, now: dt.datetime = NOW) -> plan.Decision:
    return plan.decide(t, obs, now=now, config=CONFIG)


def cond(decision: plan.Decision, type_: str) -> tuple[str, str | None]:
    c = decision.status.condition(type_)
    assert c is not None, f"no {type_} condition"
    return c.status.value, c.reason


# ------------------------------------------------------------------- Pending / Queued


def test_new_task_admitted_at_once_is_provisioning_in_one_write() -> None:
    d = decide(task(), Observation(admission=Admission(admitted=True)))
    assert d.status.phase == Phase.PROVISIONING
    assert cond(d, "Admitted") == ("True", "Admitted")
    assert cond(d, "Reconciling") == ("True", "Provisioning")
    assert d.actions == plan.launch(plan.sandbox_name(UID, 1), 1, "agenttask-1")
    assert d.status.intent is not None and d.status.intent.action == "CreateSandbox"


def test_new_task_over_the_limit_is_queued_at_once() -> None:
    d = decide(task(), Observation(admission=Admission(admitted=False, position=1, queued=1, limit_message="full")))
    assert d.status.phase == Phase.QUEUED
    assert cond(d, "Admitted") == ("False", "QuotaExceeded")
    assert d.actions == ()


def test_pending_task_admitted_goes_provisioning_and_creates_sandbox() -> None:
    d = decide(task({"phase": "Pending"}), Observation(admission=Admission(admitted=True)))
    assert d.status.phase == Phase.PROVISIONING
    assert d.status.attempts == 1
    assert d.status.start_time == NOW
    assert d.actions == plan.launch(plan.sandbox_name(UID, 1), 1, "agenttask-1")
    assert cond(d, "Admitted") == ("True", "Admitted")
    assert d.status.observed_generation == 2
    assert d.status.sandbox is not None and d.status.sandbox.id is None  # requested, not yet observed


def test_pending_task_over_quota_is_queued_with_position() -> None:
    d = decide(task({"phase": "Pending"}), Observation(admission=Admission(admitted=False, position=3, queued=7,
                                                        limit_message="position 3 of 7")))
    assert d.status.phase == Phase.QUEUED
    assert d.status.queue_position == 3
    assert cond(d, "Admitted") == ("False", "QuotaExceeded")
    assert d.actions == ()
    assert d.requeue_after == CONFIG.queue_recheck_seconds


def test_queued_tasks_far_back_recheck_less_often() -> None:
    def requeue(position: int) -> float | None:
        return decide(task({"phase": "Queued"}), Observation(admission=Admission(
            admitted=False, position=position, queued=1000, limit_message=f"position {position}"))).requeue_after

    assert requeue(1) == requeue(10) == CONFIG.queue_recheck_seconds
    assert requeue(50) == 5 * CONFIG.queue_recheck_seconds
    assert requeue(950) == CONFIG.queue_recheck_max_seconds


@pytest.mark.parametrize("phase", [None, "Pending", "Queued"])
def test_suspended_task_is_held_pending(phase: str | None) -> None:
    t = task({"phase": phase} if phase else None, suspend=True)
    d = decide(t, Observation(admission=Admission(admitted=True)))
    assert d.status.phase == Phase.PENDING
    assert cond(d, "Admitted") == ("False", "Suspended")
    assert d.actions == ()


def test_queued_task_admitted_when_slot_frees() -> None:
    d = decide(task({"phase": "Queued", "queuePosition": 1}), Observation(admission=Admission(admitted=True)))
    assert d.status.phase == Phase.PROVISIONING
    assert d.status.queue_position is None


# ------------------------------------------------------------------------ Provisioning


def provisioning(**extra: Any) -> dict[str, Any]:
    return {"phase": "Provisioning", "attempts": 1, "startTime": NOW.isoformat(),
            "sandbox": {"name": plan.sandbox_name(UID, 1), "state": "creating"}, **extra}


def test_provisioning_without_sandbox_creates_it_again_same_attempt() -> None:
    """A create that failed (or never happened) is retried under the same deterministic name."""
    d = decide(task(provisioning()), Observation())
    assert d.actions == plan.launch(plan.sandbox_name(UID, 1), 1, "agenttask-1")
    assert d.status.attempts == 1


def test_provisioning_sandbox_still_creating_waits() -> None:
    d = decide(task(provisioning()), Observation(sandbox=started(state="creating")))
    assert d.actions == ()
    assert d.status.sandbox is not None and d.status.sandbox.id == "sb1"
    assert d.status.phase == Phase.PROVISIONING


def test_provisioning_sandbox_started_starts_agent() -> None:
    d = decide(task(provisioning()), Observation(sandbox=started(), session_exists=False))
    assert d.actions == (StartAgent(sandbox_id="sb1", session_id="agenttask-1", attempt=1),)
    assert cond(d, "SandboxReady") == ("True", "SandboxCreated")


def test_command_running_moves_to_running() -> None:
    d = decide(task(provisioning()), Observation(sandbox=started(), command=CommandObs("c1", None)))
    assert d.status.phase == Phase.RUNNING
    assert cond(d, "AgentRunning") == ("True", "AgentStarted")
    assert d.status.agent is not None and d.status.agent.command_id == "c1"
    assert d.status.running_time == NOW
    assert d.actions == ()


def test_running_time_is_when_the_operator_started_the_agent() -> None:
    started_at = NOW - dt.timedelta(seconds=3)
    d = decide(task(provisioning()), Observation(sandbox=started(), command=CommandObs("c1", None),
                                                 agent_started=started_at))
    assert d.status.phase == Phase.RUNNING
    assert d.status.running_time == started_at


def test_agent_that_finished_before_it_was_seen_running_still_has_a_running_time() -> None:
    started_at = NOW - dt.timedelta(seconds=3)
    d = decide(task(provisioning()), Observation(sandbox=started(), command=CommandObs("c1", 0),
                                                 agent_started=started_at))
    assert d.status.phase == Phase.SUCCEEDED
    assert d.status.running_time == started_at
    adopted = decide(task(provisioning()), Observation(sandbox=started(), command=CommandObs("c1", 0)))
    assert adopted.status.running_time is None  # started by someone else: unknown, not guessed


def test_confirmed_sandbox_missing_once_is_looked_at_again() -> None:
    t = task({**provisioning(), "sandbox": {"id": "sb1", "name": plan.sandbox_name(UID, 1)}})
    d = decide(t, Observation(misses=1))
    assert d.actions == ()
    assert d.status.attempts == 1
    assert d.requeue_after == CONFIG.missing_recheck_seconds


def test_confirmed_sandbox_missing_twice_is_a_lost_attempt() -> None:
    t = task({**provisioning(), "sandbox": {"id": "sb1", "name": plan.sandbox_name(UID, 1)}})
    d = decide(t, Observation(misses=2))
    assert d.status.attempts == 2
    assert d.status.reason == "SandboxLost"
    assert d.actions == (DeleteSandbox(name=plan.sandbox_name(UID, 1), reason="lost"),
                         CreateSandbox(name=plan.sandbox_name(UID, 2), attempt=2),
                         StartAgent(sandbox_id="", session_id="agenttask-2", attempt=2))


# ----------------------------------------------------------------------------- Running


def test_running_command_still_running_polls_with_growing_interval() -> None:
    d = decide(task(running_status()), Observation(sandbox=started(), command=CommandObs("c1", None)))
    assert d.status.phase == Phase.RUNNING
    assert d.actions == ()
    assert d.requeue_after is not None and 2 <= d.requeue_after <= 15


def test_running_exit_zero_succeeds_and_deletes_sandbox() -> None:
    result = Result(outcome="PullRequestOpened", branch="agenttask/1-x", commit="abc", pull_request_url="http://pr/1")
    d = decide(task(running_status()), Observation(sandbox=started(), command=CommandObs("c1", 0), result=result))
    assert d.status.phase == Phase.SUCCEEDED
    assert cond(d, "Complete") == ("True", "AgentSucceeded")
    assert cond(d, "AgentRunning") == ("False", "AgentExited")
    assert d.status.result == result
    assert d.status.completion_time == NOW
    assert d.actions == (DeleteSandbox(name=plan.sandbox_name(UID, 1), reason="finished"),)
    # Daytona deletes asynchronously: the slot is held until the sandbox is seen gone, so the
    # admission limit bounds the sandboxes that exist, destroying ones included
    assert not d.release_slot
    done = task(running_status()).model_copy(update={"status": d.status})
    assert d.requeue_after == 0.25  # the slot waits for the sandbox to go: look again soon
    destroying = decide(done, Observation(sandbox=started(state="destroying")))
    assert not destroying.release_slot and destroying.requeue_after == 0.25
    later = decide(done, Observation(sandbox=started(state="destroying")), now=NOW + dt.timedelta(seconds=4))
    assert later.requeue_after == 1.0  # then less often, up to the poll interval
    much_later = decide(done, Observation(sandbox=started(state="destroying")), now=NOW + dt.timedelta(minutes=5))
    assert much_later.requeue_after == CONFIG.poll_interval_seconds
    gone = decide(done, Observation(misses=1))
    assert gone.release_slot and gone.status.sandbox is not None and gone.status.sandbox.deleted


def test_running_exit_zero_without_changes_reports_no_changes() -> None:
    d = decide(task(running_status()), Observation(sandbox=started(), command=CommandObs("c1", 0),
                                                   result=Result(outcome="NoChanges")))
    assert d.status.phase == Phase.SUCCEEDED
    assert d.status.reason == "NoChanges"


def test_running_exit_nonzero_fails_agent_failed_with_exit_code() -> None:
    d = decide(task(running_status()), Observation(sandbox=started(), command=CommandObs("c1", 3), log_tail="boom"))
    assert d.status.phase == Phase.FAILED
    assert cond(d, "Failed") == ("True", "AgentFailed")
    assert d.status.agent is not None and d.status.agent.exit_code == 3
    assert d.status.log_tail == "boom"
    assert "code 3" in (d.status.message or "")
    assert isinstance(d.actions[0], DeleteSandbox)


def test_agent_failure_with_keep_on_failure_stops_and_retains() -> None:
    t = task(running_status(), sandbox={"keepOnFailure": True, "keepForSeconds": 120})
    d = decide(t, Observation(sandbox=started(), command=CommandObs("c1", 1)))
    # Daytona's own auto-delete (counted from the stop) is pushed past the retention
    assert d.actions == (KeepSandbox(name=plan.sandbox_name(UID, 1),
                                     delete_after_minutes=2 + CONFIG.safety_margin_minutes),)
    assert d.status.sandbox is not None and d.status.sandbox.retain_until == NOW + dt.timedelta(seconds=120)
    assert d.release_slot


def test_a_kept_sandbox_whose_stop_did_not_happen_is_stopped_again() -> None:
    """The stop answered 409 (state change in progress) or the operator restarted after the
    Failed write: the next steps ask again until the sandbox is seen stopping or stopped."""
    t = task(running_status(), sandbox={"keepOnFailure": True, "keepForSeconds": 600})
    failed = decide(t, Observation(sandbox=started(), command=CommandObs("c1", 1)))
    after = t.model_copy(update={"status": failed.status})
    later = NOW + dt.timedelta(seconds=60)
    again = decide(after, Observation(sandbox=started(state="started")), now=later)
    assert again.actions == (KeepSandbox(name=plan.sandbox_name(UID, 1),
                                         delete_after_minutes=9 + CONFIG.safety_margin_minutes),)
    assert again.requeue_after is not None and again.requeue_after <= CONFIG.poll_interval_seconds
    for state in ("stopping", "stopped"):
        settled = decide(after, Observation(sandbox=started(state=state)), now=later)
        assert settled.actions == () and settled.requeue_after == pytest.approx(540)


@pytest.mark.parametrize("state", ["stopped", "error", "build_failed", "destroyed", "archived"])
def test_running_sandbox_in_dead_state_is_lost(state: str) -> None:
    d = decide(task(running_status()), Observation(sandbox=started(state=state)))
    assert d.status.reason == "SandboxLost"
    assert d.status.attempts == 2
    assert cond(d, "SandboxReady") == ("False", "SandboxLost")
    assert cond(d, "AgentRunning") == ("False", "SandboxLost")


def test_running_sandbox_gone_is_lost() -> None:
    d = decide(task(running_status()), Observation(misses=2))
    assert d.status.attempts == 2
    assert d.status.phase == Phase.PROVISIONING
    assert d.status.agent is None


def test_running_command_vanished_is_lost() -> None:
    d = decide(task(running_status()), Observation(sandbox=started(), session_exists=False))
    assert d.status.reason == "SandboxLost"


def test_lost_beyond_backoff_limit_fails() -> None:
    t = task(running_status(attempt=1), backoffLimit=0)
    d = decide(t, Observation(misses=2))
    assert d.status.phase == Phase.FAILED
    assert d.status.reason == "BackoffLimitExceeded"
    assert cond(d, "Failed") == ("True", "BackoffLimitExceeded")


def test_lost_within_backoff_limit_counts_attempts() -> None:
    t = task(running_status(attempt=3), backoffLimit=3)
    d = decide(t, Observation(misses=2))
    assert d.status.attempts == 4
    t4 = task(running_status(attempt=4), backoffLimit=3)
    assert decide(t4, Observation(misses=2)).status.reason == "BackoffLimitExceeded"


def test_deadline_exceeded_fails_and_deletes_sandbox() -> None:
    t = task({**running_status(), "startTime": (NOW - dt.timedelta(seconds=21)).isoformat()},
             activeDeadlineSeconds=20)
    d = decide(t, Observation(sandbox=started(), command=CommandObs("c1", None)))
    assert d.status.phase == Phase.FAILED
    assert d.status.reason == "DeadlineExceeded"
    assert d.actions == (DeleteSandbox(name=plan.sandbox_name(UID, 1), reason="finished"),)


def test_running_wait_never_passes_the_deadline() -> None:
    t = task({**running_status(), "startTime": (NOW - dt.timedelta(seconds=19)).isoformat(),
              "runningTime": (NOW - dt.timedelta(hours=1)).isoformat()}, activeDeadlineSeconds=20)
    d = decide(t, Observation(sandbox=started(), command=CommandObs("c1", None)))
    assert d.requeue_after is not None and d.requeue_after <= 1.0


def test_log_tail_is_throttled() -> None:
    t = task(running_status(logTail="old"))
    recent = Observation(sandbox=started(), command=CommandObs("c1", None), log_tail="new",
                         last_log_write=NOW - dt.timedelta(seconds=2))
    assert decide(t, recent).status.log_tail == "old"
    due = Observation(sandbox=started(), command=CommandObs("c1", None), log_tail="new",
                      last_log_write=NOW - dt.timedelta(seconds=11))
    assert decide(t, due).status.log_tail == "new"


# ---------------------------------------------------------------------------- terminal


def finished(**sandbox: Any) -> dict[str, Any]:
    return {"phase": "Succeeded", "attempts": 1, "reason": "AgentSucceeded",
            "sandbox": {"id": "sb1", "name": plan.sandbox_name(UID, 1), **sandbox}}


def test_finished_with_sandbox_still_there_deletes_it() -> None:
    d = decide(task(finished()), Observation(sandbox=started()))
    assert d.actions == (DeleteSandbox(name=plan.sandbox_name(UID, 1), reason="finished"),)
    assert d.status.phase == Phase.SUCCEEDED


def test_finished_sandbox_gone_is_recorded_and_slot_released() -> None:
    d = decide(task(finished()), Observation())
    assert d.status.sandbox is not None and d.status.sandbox.deleted is True
    assert d.release_slot
    assert not plan.needs_supervision(task(d.status.dump()))


def test_kept_sandbox_deleted_when_retention_ends() -> None:
    kept = task(finished(retainUntil=(NOW - dt.timedelta(seconds=1)).isoformat()))
    assert decide(kept, Observation(sandbox=started(state="stopped"))).actions == (
        DeleteSandbox(name=plan.sandbox_name(UID, 1), reason="retention-expired"),)
    waiting = task(finished(retainUntil=(NOW + dt.timedelta(seconds=50)).isoformat()))
    d = decide(waiting, Observation(sandbox=started(state="stopped")))
    assert d.actions == ()
    assert d.requeue_after == 50


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
@pytest.mark.parametrize("obs", [Observation(), Observation(sandbox=started()),
                                 Observation(sandbox=started(), command=CommandObs("c1", 0))])
def test_terminal_phase_is_never_left(phase: str, obs: Observation) -> None:
    d = decide(task({**finished(), "phase": phase}), obs)
    assert d.status.phase == Phase(phase)
    assert not any(isinstance(a, CreateSandbox | StartAgent) for a in d.actions)


def test_fail_helper_for_missing_secret() -> None:
    d = plan.fail(task(provisioning()), reason="SecretNotFound", message="Secret ns/x not found", now=NOW,
                  config=CONFIG)
    assert d.status.phase == Phase.FAILED
    assert cond(d, "Failed") == ("True", "SecretNotFound")


def test_condition_transition_time_kept_when_status_unchanged() -> None:
    first = decide(task(provisioning()), Observation(sandbox=started()))
    ready = first.status.condition("SandboxReady")
    assert ready is not None and ready.status == ConditionStatus.TRUE
    later = plan.decide(task(first.status.dump()), Observation(sandbox=started(), command=CommandObs("c1", None)),
                        now=NOW + dt.timedelta(minutes=5), config=CONFIG)
    again = later.status.condition("SandboxReady")
    assert again is not None and again.last_transition_time == ready.last_transition_time


def test_ttl_deletes_the_finished_task_after_cleanup() -> None:
    done = {**finished(deleted=True), "completionTime": (NOW - dt.timedelta(seconds=4)).isoformat()}
    waiting = decide(task(done, ttlSecondsAfterFinished=5), Observation())
    assert waiting.actions == ()
    assert waiting.requeue_after == pytest.approx(1.0)
    assert plan.needs_supervision(task(done, ttlSecondsAfterFinished=5))
    expired = decide(task(done, ttlSecondsAfterFinished=3), Observation())
    assert expired.actions == (plan.DeleteTask(uid=UID),)
    assert not plan.needs_supervision(task(done))


def test_default_ttl_from_settings_applies() -> None:
    done = {**finished(deleted=True), "completionTime": (NOW - dt.timedelta(seconds=60)).isoformat()}
    config = plan.PlanConfig(**{**CONFIG.__dict__, "default_ttl_seconds": 30})
    assert plan.decide(task(done), Observation(), now=NOW, config=config).actions == (plan.DeleteTask(uid=UID),)


# ------------------------------------------------------------------ fencing (intents)


def intent(action: str, holder: str, age: float, attempt: int = 1) -> dict[str, Any]:
    return {"action": action, "attempt": attempt, "holder": holder,
            "since": (NOW - dt.timedelta(seconds=age)).isoformat()}


def test_another_replicas_fresh_intent_is_respected() -> None:
    t = task({**provisioning(), "intent": intent("CreateSandbox", "other", age=10)})
    d = decide(t, Observation())
    assert d.actions == ()
    assert d.requeue_after == pytest.approx(CONFIG.claim_seconds - 10)


def test_a_stale_intent_of_another_replica_is_taken_over() -> None:
    t = task({**provisioning(), "intent": intent("CreateSandbox", "other", age=CONFIG.claim_seconds + 1)})
    d = decide(t, Observation())
    assert d.actions == plan.launch(plan.sandbox_name(UID, 1), 1, "agenttask-1")
    assert d.status.intent is not None and d.status.intent.holder == CONFIG.identity
    assert d.status.intent.since == NOW  # a new write: it is what fences the other replica out


def test_start_agent_records_its_intent_and_the_running_command_clears_it() -> None:
    d = decide(task(provisioning()), Observation(sandbox=started(), session_exists=False))
    assert d.status.intent is not None and (d.status.intent.action, d.status.intent.attempt) == ("StartAgent", 1)
    running = decide(task(d.status.dump()), Observation(sandbox=started(), command=CommandObs("c1", None)))
    assert running.status.intent is None


def test_start_agent_waits_for_a_peer_that_is_starting_it() -> None:
    t = task({**provisioning(), "intent": intent("StartAgent", "other", age=1)})
    d = decide(t, Observation(sandbox=started(), session_exists=True))
    assert d.actions == ()


def test_a_peers_create_intent_also_fences_the_start_it_goes_on_to() -> None:
    """A replica that recorded CreateSandbox creates the sandbox and starts the agent in one step;
    a peer that sees the sandbox already there (no agent yet) must not start a second agent."""
    t = task({**provisioning(), "intent": intent("CreateSandbox", "other", age=1)})
    d = decide(t, Observation(sandbox=started(), session_exists=False))
    assert d.actions == ()
    assert d.requeue_after == pytest.approx(CONFIG.claim_seconds - 1)


def test_admission_creates_the_sandbox_and_starts_the_agent_in_one_step() -> None:
    d = decide(task(), Observation(admission=Admission(admitted=True)))
    create, start = d.actions
    assert create == CreateSandbox(name=plan.sandbox_name(UID, 1), attempt=1)
    assert start == StartAgent(sandbox_id="", session_id="agenttask-1", attempt=1)  # "" : the one just created


# ------------------------------------------------------------ provisioning timeout


def test_pending_since_is_recorded_when_first_seen_and_kept() -> None:
    d = decide(task(provisioning()), Observation(sandbox=started(state="pulling_snapshot")))
    assert d.status.sandbox is not None and d.status.sandbox.pending_since == NOW
    later = plan.decide(task(d.status.dump()), Observation(sandbox=started(state="building_snapshot")),
                        now=NOW + dt.timedelta(minutes=5), config=CONFIG)
    assert later.status.sandbox is not None and later.status.sandbox.pending_since == NOW
    assert later.actions == ()


def test_a_sandbox_stuck_pending_past_the_timeout_is_a_lost_attempt() -> None:
    since = NOW - dt.timedelta(seconds=CONFIG.provisioning_timeout_seconds + 1)
    t = task({**provisioning(), "sandbox": {"id": "sb1", "name": plan.sandbox_name(UID, 1), "state": "starting",
                                           "pendingSince": since.isoformat()}})
    d = decide(t, Observation(sandbox=started(state="starting")))
    assert d.status.reason == "SandboxLost" and d.status.attempts == 2
    assert "provisioning timeout" in (d.status.message or "")


# ------------------------------------------------------------ waiting, failure classes


def test_wait_keeps_the_phase_and_names_the_cause() -> None:
    d = plan.wait(task(running_status()), reason="DaytonaAuthFailed", message="HTTP 401; waits", now=NOW,
                  config=CONFIG)
    assert d.status.phase == Phase.RUNNING and d.actions == ()
    assert d.status.reason == "DaytonaAuthFailed"
    assert cond(d, "Reconciling") == ("True", "DaytonaAuthFailed")
    assert cond(d, "AgentRunning") == ("True", "AgentStarted")
    resumed = decide(task(d.status.dump()), Observation(sandbox=started(), command=CommandObs("c1", None)))
    assert resumed.status.reason == "AgentStarted"  # the next step that gets through says so


def test_wait_never_touches_a_finished_task() -> None:
    done = task(finished())
    assert plan.wait(done, reason="DaytonaAuthFailed", message="x", now=NOW, config=CONFIG).status.reason == \
        "AgentSucceeded"


@pytest.mark.parametrize(("klass", "reason"), [("ModelAuthFailed", "ModelAuthFailed"),
                                               ("GitPushFailed", "GitPushFailed"),
                                               (None, "AgentFailed"), ("SomethingNew", "AgentFailed")])
def test_the_runners_failure_class_is_the_reason(klass: str | None, reason: str) -> None:
    d = decide(task(running_status()), Observation(sandbox=started(), command=CommandObs("c1", 4),
                                                   result=Result(outcome="Failed", failure_class=klass)))
    assert d.status.phase == Phase.FAILED and d.status.reason == reason
    assert cond(d, "Stalled") == ("True", reason)


# ------------------------------------------------------------ cancel, suspend, resume


@pytest.mark.parametrize("status", [None, {"phase": "Queued"}, "provisioning", "running"])
def test_cancel_ends_the_task_failed_cancelled_and_deletes_its_sandbox(status: Any) -> None:
    raw = provisioning() if status == "provisioning" else running_status() if status == "running" else status
    d = decide(task(raw, cancel=True), Observation(sandbox=started()))
    assert d.status.phase == Phase.FAILED and d.status.reason == "Cancelled"
    assert cond(d, "Stalled") == ("True", "Cancelled")
    if status in ("provisioning", "running"):
        assert d.actions == (DeleteSandbox(name=plan.sandbox_name(UID, 1), reason="finished"),)


def test_suspending_a_running_task_stops_its_sandbox_frees_the_slot_and_pauses_the_deadline() -> None:
    d = decide(task(running_status(), suspend=True), Observation(sandbox=started(), command=CommandObs("c1", None)))
    assert d.status.phase == Phase.SUSPENDED and d.status.reason == "Suspended"
    assert d.actions == (plan.SuspendSandbox(name=plan.sandbox_name(UID, 1)),)
    assert d.release_slot and d.status.suspended_at == NOW
    assert cond(d, "Reconciling") == ("True", "Suspended")
    assert cond(d, "AgentRunning")[0] == "False"
    assert plan.deadline(task(d.status.dump(), activeDeadlineSeconds=60), CONFIG) is None  # clock paused


def test_a_finished_agent_is_collected_before_a_suspension() -> None:
    d = decide(task(running_status(), suspend=True), Observation(sandbox=started(), command=CommandObs("c1", 0)))
    assert d.status.phase == Phase.SUCCEEDED


def suspended(**extra: Any) -> dict[str, Any]:
    return derived({**running_status(), "phase": "Suspended", "reason": "Suspended",
                    "suspendedAt": (NOW - dt.timedelta(minutes=10)).isoformat(), **extra})


def test_a_suspended_task_waits_with_its_sandbox_stopped() -> None:
    d = decide(task(suspended(), suspend=True), Observation(sandbox=started(state="stopped")))
    assert d.actions == () and d.status.phase == Phase.SUSPENDED
    again = decide(task(suspended(), suspend=True), Observation(sandbox=started(state="started")))
    assert again.actions == (plan.SuspendSandbox(name=plan.sandbox_name(UID, 1)),)  # the stop did not happen


def test_resume_waits_for_a_slot_then_starts_the_same_sandbox() -> None:
    full = decide(task(suspended()), Observation(sandbox=started(state="stopped"),
                                                 admission=Admission(admitted=False, position=2, limit_message="full")))
    assert full.status.phase == Phase.SUSPENDED and full.actions == () and "resuming" in (full.status.message or "")
    d = decide(task(suspended()), Observation(sandbox=started(state="stopped"), admission=Admission(admitted=True)))
    assert d.status.phase == Phase.PROVISIONING and d.status.reason == "Resuming"
    assert d.actions == (plan.ResumeSandbox(name=plan.sandbox_name(UID, 1)),)
    assert d.status.resumes == 1 and d.status.suspended_seconds == 600 and d.status.suspended_at is None
    limit = plan.deadline(task(d.status.dump(), activeDeadlineSeconds=3600), CONFIG)
    assert limit is not None and limit == d.status.start_time + dt.timedelta(seconds=3600 + 600)


def test_a_resumed_task_starts_its_agent_in_a_new_session() -> None:
    resumed = {**running_status(), "phase": "Provisioning", "reason": "Resuming", "resumes": 1}
    resumed.pop("agent")
    stopped = decide(task(resumed), Observation(sandbox=started(state="stopped")))
    assert stopped.actions == (plan.ResumeSandbox(name=plan.sandbox_name(UID, 1)),)  # not a lost attempt
    d = decide(task(resumed), Observation(sandbox=started(), session_exists=False))
    assert d.actions == (StartAgent(sandbox_id="sb1", session_id="agenttask-1-r1", attempt=1),)
    assert d.status.attempts == 1


def test_usage_is_recorded_per_attempt_and_summed() -> None:
    from controller.api import AgentReport, TokenUsage

    created = NOW - dt.timedelta(seconds=100)
    lost_box = SandboxObs(id="sb1", name=plan.sandbox_name(UID, 1), state="error", created_at=created, cpu=2,
                          memory=4, disk=10)
    lost = decide(task(running_status()), Observation(sandbox=lost_box))
    assert lost.status.usage is not None and lost.status.usage.attempts[0].sandbox_seconds == 100
    assert lost.status.usage.attempts[0].cpu == 2
    second = {**lost.status.dump(), "phase": "Running", "reason": "AgentStarted",
              "agent": {"sessionId": "agenttask-2", "commandId": "c2"}}
    box2 = SandboxObs(id="sb2", name=plan.sandbox_name(UID, 2), state="started", created_at=NOW - dt.timedelta(
        seconds=40), cpu=2, memory=4, disk=10)
    report = AgentReport(num_turns=5, cost_usd=0.25, usage=TokenUsage(input_tokens=1000, output_tokens=50,
                                                                     cache_read_input_tokens=7))
    done = decide(task(second), Observation(sandbox=box2, command=CommandObs("c2", 0),
                                            result=Result(outcome="ChangesPushed", agent=report)))
    u = done.status.usage
    assert u is not None and [a.attempt for a in u.attempts] == [1, 2]
    assert u.sandbox_seconds == 140 and u.cost_usd == 0.25 and u.turns == 5
    assert (u.tokens.input_tokens, u.tokens.output_tokens, u.tokens.cache_read_input_tokens) == (1000, 50, 7)


def test_the_agents_own_exit_code_and_error_are_shown() -> None:
    d = decide(task(running_status()), Observation(sandbox=started(), command=CommandObs("c1", 65), result=Result(
        outcome="Failed", failure_class="AgentFailed", agent_exit_code=3, error="the agent exited with code 3")))
    assert d.status.agent is not None and d.status.agent.exit_code == 3
    assert d.status.reason == "AgentFailed" and "code 3" in (d.status.message or "")


def test_an_agent_stopped_by_the_runner_at_the_deadline_is_deadline_exceeded() -> None:
    d = decide(task(running_status(), activeDeadlineSeconds=600), Observation(
        sandbox=started(), command=CommandObs("c1", 66),
        result=Result(outcome="Failed", failure_class="AgentTimedOut")))
    assert d.status.reason == "DeadlineExceeded" and "600s" in (d.status.message or "")
