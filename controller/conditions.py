"""Status conditions, one pure function per condition type, derived from the rest of the status.

The plan decides phase, reason, message, sandbox, agent and times; `compute()` then derives
every condition from that status and the previous conditions, stamping `observedGeneration`
and keeping `lastTransitionTime` while a condition's status does not change. Deriving (rather
than setting conditions along the decision's code paths) keeps them consistent with the phase
by construction: a Succeeded task is always `Ready=True`, a Failed one always `Stalled=True`.

Conventions (what kstatus, Flux, Argo CD and `kubectl wait` read):
- `Ready`: True on Succeeded, False otherwise (with the phase's reason).
- `Reconciling`: True while the task is unfinished (Pending, Queued, Provisioning, Running,
  Suspended), False once it finished.
- `Stalled`: True on Failed (with the failure reason); absent otherwise.
plus the detailed `Admitted`, `SandboxReady`, `AgentRunning`, `Complete` and `Failed`.

Each function returns the condition's (status, reason, message), or None for "not shown"
(absent, or removed when it no longer applies, e.g. `Stalled` after a re-run).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from .api import AgentTaskStatus, Condition, ConditionStatus, ConditionType, Phase, Reason

Value = tuple[ConditionStatus, str, str]
T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN

# Daytona sandbox states, grouped by what they mean for a task.
PENDING_STATES = frozenset(
    {"creating", "starting", "restoring", "pending_build", "building_snapshot", "pulling_snapshot",
     "resizing", "unknown", "snapshotting", "forking", "resuming"}
)
READY_STATES = frozenset({"started"})
# anything else (stopped, archived, error, build_failed, destroying, destroyed, ...) means the
# agent cannot be running there any more.

_UNFINISHED = (Phase.PENDING, Phase.QUEUED, Phase.PROVISIONING, Phase.RUNNING, Phase.SUSPENDED)


def _why(s: AgentTaskStatus, default: str) -> tuple[str, str]:
    return s.reason or default, s.message or default


def admitted(s: AgentTaskStatus, previous: Condition | None) -> Value | None:
    if s.phase is None:
        return None
    if s.start_time is not None:
        return T, Reason.ADMITTED, "a sandbox slot was granted"
    if s.phase == Phase.QUEUED:
        return F, *_why(s, Reason.QUOTA_EXCEEDED)
    if s.reason == Reason.SUSPENDED:
        return F, Reason.SUSPENDED, "spec.suspend is true"
    if s.phase == Phase.FAILED:  # failed before it was ever admitted (e.g. cancelled)
        return F, *_why(s, Reason.CREATED)
    return U, Reason.CREATED, "waiting for admission"


def sandbox_ready(s: AgentTaskStatus, previous: Condition | None) -> Value | None:
    box = s.sandbox
    if box is None or box.name is None:
        return (F, *_why(s, Reason.SANDBOX_ERROR)) if previous is not None else None
    if box.deleted:
        return F, Reason.SANDBOX_DELETED, f"sandbox {box.name} was deleted"
    state = box.state or "creating"
    if state in READY_STATES and s.phase not in (Phase.SUSPENDED,):
        where = f"{box.name} ({box.id})" if box.id else box.name
        return T, Reason.SANDBOX_CREATED, f"sandbox {where} is started"
    if box.retain_until is not None:
        return F, Reason.SANDBOX_KEPT, f"sandbox {box.name} is {state}, kept until {box.retain_until.isoformat()}"
    if s.phase is not None and not s.phase.terminal and s.reason not in (None, *_PROGRESS_REASONS):
        return F, *_why(s, Reason.PROVISIONING)  # lost attempt, operator-wide wait, suspension
    if state in PENDING_STATES:
        return F, Reason.PROVISIONING, f"sandbox {box.name} is {state}"
    return F, Reason.SANDBOX_LOST, f"sandbox {box.name} is {state}"


# reasons that only say "making progress" (the sandbox condition then speaks for itself)
_PROGRESS_REASONS = (Reason.PROVISIONING, Reason.AGENT_STARTED, Reason.ADMITTED, Reason.CREATED,
                     Reason.SANDBOX_CREATED)


def agent_running(s: AgentTaskStatus, previous: Condition | None) -> Value | None:
    agent = s.agent
    if agent is not None and agent.command_id:
        if agent.exit_code is not None:
            return F, Reason.AGENT_EXITED, f"the agent exited with code {agent.exit_code}"
        if s.phase == Phase.RUNNING:
            return T, Reason.AGENT_STARTED, f"command {agent.command_id} in session {agent.session_id}"
    if previous is None:
        return None
    if previous.status == T or s.phase != Phase.RUNNING:
        return F, *_why(s, Reason.AGENT_EXITED)
    return previous.status, previous.reason or "", previous.message or ""


def complete(s: AgentTaskStatus, previous: Condition | None) -> Value | None:
    return (T, *_why(s, Reason.AGENT_SUCCEEDED)) if s.phase == Phase.SUCCEEDED else None


def failed(s: AgentTaskStatus, previous: Condition | None) -> Value | None:
    return (T, *_why(s, Reason.AGENT_FAILED)) if s.phase == Phase.FAILED else None


def ready(s: AgentTaskStatus, previous: Condition | None) -> Value | None:
    if s.phase is None:
        return None
    if s.phase == Phase.SUCCEEDED:
        return T, *_why(s, Reason.AGENT_SUCCEEDED)
    return F, *_why(s, s.phase.value)


def reconciling(s: AgentTaskStatus, previous: Condition | None) -> Value | None:
    if s.phase is None:
        return None
    if s.phase in _UNFINISHED:
        return T, *_why(s, s.phase.value)
    return F, s.reason or s.phase.value, f"the task is {s.phase.value}"


def stalled(s: AgentTaskStatus, previous: Condition | None) -> Value | None:
    return (T, *_why(s, Reason.AGENT_FAILED)) if s.phase == Phase.FAILED else None


RULES: dict[ConditionType, Callable[[AgentTaskStatus, Condition | None], Value | None]] = {
    ConditionType.READY: ready,
    ConditionType.RECONCILING: reconciling,
    ConditionType.STALLED: stalled,
    ConditionType.ADMITTED: admitted,
    ConditionType.SANDBOX_READY: sandbox_ready,
    ConditionType.AGENT_RUNNING: agent_running,
    ConditionType.COMPLETE: complete,
    ConditionType.FAILED: failed,
}


def compute(status: AgentTaskStatus, *, now: dt.datetime, generation: int) -> tuple[Condition, ...]:
    """Every condition of `status` (its own `conditions` are the previous ones), in a fixed order."""
    previous = {c.type: c for c in status.conditions}
    result: list[Condition] = []
    for type_, rule in RULES.items():
        old = previous.get(type_)
        value = rule(status, old)
        if value is None:
            continue
        state, reason, message = value
        since = old.last_transition_time if old is not None and old.status == state else now
        result.append(Condition(type=type_, status=state, reason=str(reason), message=message[:1024],
                                last_transition_time=since, observed_generation=generation))
    known = set(RULES)
    result.extend(c for c in status.conditions if c.type not in known)  # foreign conditions are kept
    return tuple(result)
