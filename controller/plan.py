"""The reconcile decision: `decide(task, observation, now=..., config=...) -> Decision`.

Pure: no I/O, no kopf, no SDK. The supervisor (`supervisor.py`) observes the world
(Daytona sandbox of the current attempt, the agent command in its session, the admission
queue), calls `decide`, writes the returned status if it changed, and then performs the
returned actions, in that order. Writing first is what makes every step crash-safe:

- a terminal phase is persisted before the sandbox is deleted, so a crash in between can never
  be mistaken for a lost sandbox;
- a sandbox is created under a deterministic name per attempt and its name is recorded
  (`status.sandbox.name`) before the create call; once it has been *observed* (`status.sandbox.id`)
  the plan never creates another one for that attempt;
- the agent runs in a deterministic session per attempt, so starting it is adopt-or-create;
- creating a sandbox and starting the agent are fenced: the status written before them records
  the intent (`status.intent`: action, attempt, this replica, time). That write is guarded by the
  resourceVersion the decision was computed from, so when two replicas are briefly both active
  only one of them acts; the other sees the intent and waits until it is acted on or expires
  (`claim_seconds`). An admitted attempt is launched in one step (`launch`: create, then start
  the agent in the sandbox the create returned), so one CreateSandbox intent covers both, and any
  fresh intent of another replica for the same attempt fences this one out. Known limit: a start
  that takes longer than `claim_seconds` (a very slow clone) can be taken over while it is still
  running; a session look-up right before the agent command is started (done when the step took
  over half of `claim_seconds`) narrows, but does not close, that window.
- a recorded sandbox must be missing `missing_confirmations` looks in a row before its attempt
  is lost, and one still pending after `provisioning_timeout_seconds` is lost too.

Conditions are not set here: `conditions.compute` derives them from the status built here.

What this module deliberately does not do: talk to anything, know about kopf, or decide how
long HTTP retries wait (that is `retry.py`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from . import conditions, usage
from .api import (
    AgentStatus,
    AgentTask,
    AgentTaskStatus,
    Intent,
    Phase,
    Reason,
    Result,
    SandboxStatus,
    Usage,
)
from .conditions import PENDING_STATES, READY_STATES

# a runner failure class (result.json `failureClass`) becomes the task's reason as it is
# (controller/runner/errors.py FailureClass; docs/runner.md has the table)
RUNNER_FAILURE_REASONS = frozenset({
    "BadContext", "AgentFailed", "AgentTimedOut", "LimitReached", "ModelAuthFailed", "ModelUnavailable",
    "GitHubFailed", "RunnerBug", "GitFailed", "GitPushFailed",
})


# ------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class SandboxObs:
    id: str
    name: str
    state: str
    error_reason: str | None = None
    created_at: dt.datetime | None = None
    cpu: int | None = None
    memory: int | None = None
    disk: int | None = None

    def status(self, **extra: object) -> SandboxStatus:
        return SandboxStatus.model_validate({"id": self.id, "name": self.name, "state": self.state,
                                             "created_at": self.created_at, "cpu": self.cpu,
                                             "memory": self.memory, "disk": self.disk, **extra})


@dataclass(frozen=True)
class CommandObs:
    id: str
    exit_code: int | None


@dataclass(frozen=True)
class Admission:
    admitted: bool
    position: int | None = None
    queued: int | None = None
    limit_message: str = ""
    reason: str = "QuotaExceeded"
    """Why it waits: QuotaExceeded (a concurrency limit) or BudgetExceeded (an AgentTaskQuota window)."""
    retry_after: float | None = None
    """When to look again (a budget window frees up then); None: the queue's own recheck."""


@dataclass(frozen=True)
class Observation:
    """What the supervisor saw just now. `sandbox`/`command` are for the current attempt."""

    sandbox: SandboxObs | None = None
    command: CommandObs | None = None
    session_exists: bool = False
    result: Result | None = None
    log_tail: str | None = None
    last_log_write: dt.datetime | None = None
    admission: Admission | None = None
    deleting: bool = False
    agent_started: dt.datetime | None = None
    """When this operator started `command` (known only for a command it started itself)."""
    misses: int = 0
    """Consecutive observations (this one included) in which the recorded sandbox was missing."""


@dataclass(frozen=True)
class PlanConfig:
    default_deadline_seconds: int
    default_keep_for_seconds: int
    poll_interval_seconds: float
    max_poll_interval_seconds: float
    log_tail_interval_seconds: float
    queue_recheck_seconds: float = 30.0
    queue_recheck_max_seconds: float = 300.0
    default_ttl_seconds: int | None = None
    identity: str = "operator"
    """This replica's name in `status.intent` (side effects are fenced by it)."""
    claim_seconds: float = 120.0
    """How long another replica's recorded intent is respected before this one takes over."""
    missing_confirmations: int = 2
    """Observations in a row that must find a recorded sandbox missing before its attempt is lost."""
    missing_recheck_seconds: float = 2.0
    provisioning_timeout_seconds: float = 1800.0
    """A sandbox still pending (creating, starting, building, ...) after this long is a lost attempt."""
    safety_margin_minutes: int = 30


# ----------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class CreateSandbox:
    name: str
    attempt: int


@dataclass(frozen=True)
class StartAgent:
    sandbox_id: str
    session_id: str
    attempt: int


@dataclass(frozen=True)
class DeleteSandbox:
    name: str
    reason: str


@dataclass(frozen=True)
class KeepSandbox:
    """Stop (not delete) a sandbox kept for debugging; Daytona deletes it `delete_after_minutes`
    after the stop if the operator is gone by then."""

    name: str
    delete_after_minutes: int


@dataclass(frozen=True)
class SuspendSandbox:
    """Stop the sandbox of a suspended task and keep it: Daytona's auto-delete and TTL are
    switched off while the task is suspended (the checkout and the agent's conversation live on
    the sandbox's disk)."""

    name: str


@dataclass(frozen=True)
class ResumeSandbox:
    """Start the stopped sandbox of a resumed task again, with its safety net restored."""

    name: str


@dataclass(frozen=True)
class DeleteTask:
    """Delete the finished AgentTask itself (ttlSecondsAfterFinished)."""

    uid: str


Action = CreateSandbox | StartAgent | DeleteSandbox | KeepSandbox | SuspendSandbox | ResumeSandbox | DeleteTask


@dataclass(frozen=True)
class Decision:
    status: AgentTaskStatus
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None
    release_slot: bool = False
    """The task no longer needs its admission slot (finished and its sandbox is gone or kept, or
    deleted by this decision's actions: the supervisor releases only after they succeeded)."""
    notes: tuple[str, ...] = field(default=())


# ------------------------------------------------------------------------------ naming


def sandbox_name(uid: str, attempt: int) -> str:
    """Deterministic Daytona sandbox name of an attempt: creating it twice adopts the first (409)."""
    return f"at-{uid}-{attempt}"


def session_id(attempt: int, resumes: int = 0) -> str:
    """The Daytona session of an attempt's agent run; a resumed run gets a session of its own (a
    stopped sandbox keeps its files, not its sessions)."""
    return f"agenttask-{attempt}" if resumes == 0 else f"agenttask-{attempt}-r{resumes}"


# ------------------------------------------------------------------------------ status


class _Builder:
    """Accumulates a new status from the old one (pydantic models are frozen); the conditions
    are derived from the result by `conditions.compute` when it is built."""

    def __init__(self, task: AgentTask, now: dt.datetime, config: PlanConfig):
        self.task = task
        self.now = now
        self.config = config
        self.gen = task.metadata.generation
        self.fields = task.status.model_dump()
        self.fields["observed_generation"] = self.gen

    def phase(self, phase: Phase, reason: str, message: str) -> None:
        self.fields.update(phase=phase, reason=reason, message=message)

    def set(self, **values: object) -> None:
        self.fields.update(values)

    def build(self) -> AgentTaskStatus:
        status = AgentTaskStatus.model_validate(self.fields)
        derived = conditions.compute(status, now=self.now, generation=self.gen)
        return status.model_copy(update={"conditions": derived})

    def claim(self, action: str, attempt: int) -> float | None:
        """Fence a side effect: None when this replica may perform `action` now (its intent is
        recorded in the status, which the supervisor writes resourceVersion-guarded before it
        acts, so of two replicas deciding from the same version only one write succeeds), or the
        seconds until another replica's fresh intent for the same action expires."""
        intent = self.task.status.intent
        me = self.config.identity
        # any fresh intent of another replica for this attempt fences this one out: a create is
        # followed by the start in the same step, so a recorded CreateSandbox covers the start too
        if intent is not None and intent.attempt == attempt and intent.holder != me:
            age = (self.now - intent.since).total_seconds()
            if age < self.config.claim_seconds:
                return max(self.config.claim_seconds - age, 0.5)
        self.set(intent=Intent(action=action, attempt=attempt, holder=me, since=self.now))
        return None


# ------------------------------------------------------------------------------ decide


def deadline(task: AgentTask, config: PlanConfig) -> dt.datetime | None:
    """When the task's deadline passes: admission + activeDeadlineSeconds + time spent suspended
    (None before admission and while suspended: the clock is paused)."""
    start = task.status.start_time
    if start is None or task.status.phase == Phase.SUSPENDED:
        return None
    seconds = task.spec.active_deadline_seconds or config.default_deadline_seconds
    return start + dt.timedelta(seconds=seconds + task.status.suspended_seconds)


def remaining_minutes(task: AgentTask, config: PlanConfig, *, now: dt.datetime) -> int:
    """Whole minutes until the deadline (at least 1); for a resumed task's Daytona safety net."""
    limit = deadline(task, config)
    if limit is None:
        return math.ceil((task.spec.active_deadline_seconds or config.default_deadline_seconds) / 60)
    return max(1, math.ceil((limit - now).total_seconds() / 60))


def ttl_seconds(task: AgentTask, config: PlanConfig | None) -> int | None:
    if task.spec.ttl_seconds_after_finished is not None:
        return task.spec.ttl_seconds_after_finished
    return config.default_ttl_seconds if config is not None else None


def needs_supervision(task: AgentTask, config: PlanConfig | None = None) -> bool:
    """Whether a supervisor must run: unfinished, finished with a sandbox still to clean up,
    or finished with a TTL still to enforce."""
    phase = task.status.phase
    if phase is None or not phase.terminal:
        return True
    sandbox = task.status.sandbox
    if sandbox is not None and sandbox.name is not None and not sandbox.deleted:
        return True
    return ttl_seconds(task, config) is not None


def decide(task: AgentTask, obs: Observation, *, now: dt.datetime, config: PlanConfig) -> Decision:
    """The next status and the actions that move the task towards it."""
    b = _Builder(task, now, config)
    phase = task.status.phase

    if phase is not None and phase.terminal:
        return _finished(task, obs, b, config)

    if task.spec.cancel:
        return _fail(task, b, Reason.CANCELLED, "cancelled: spec.cancel is true", keep=False)

    if phase == Phase.SUSPENDED:
        return _suspended(task, obs, b, config)

    limit = deadline(task, config)
    if limit is not None and now >= limit:
        seconds = task.spec.active_deadline_seconds or config.default_deadline_seconds
        return _fail(task, b, Reason.DEADLINE_EXCEEDED,
                     f"the task ran longer than its deadline of {seconds}s", keep=False)

    if phase in (None, Phase.PENDING, Phase.QUEUED):
        return _admit(task, obs, b, config)

    if task.spec.suspend and not (obs.command is not None and obs.command.exit_code is not None):
        return _suspend(task, b, config)  # (an agent that already finished is finished first)

    return _progress(task, obs, b, config, limit)


def _suspend(task: AgentTask, b: _Builder, config: PlanConfig) -> Decision:
    """spec.suspend became true on a provisioning or running task: stop its sandbox (kept), free
    its slot, pause its deadline."""
    name = sandbox_name(task.metadata.uid, max(task.status.attempts, 1))
    b.phase(Phase.SUSPENDED, Reason.SUSPENDED, f"spec.suspend is true: sandbox {name} is stopped and kept, the "
            "deadline is paused")
    b.set(suspended_at=b.now, intent=None, running_time=None)
    return Decision(status=b.build(), actions=(SuspendSandbox(name=name),), release_slot=True,
                    requeue_after=config.poll_interval_seconds)


def _suspended(task: AgentTask, obs: Observation, b: _Builder, config: PlanConfig) -> Decision:
    name = sandbox_name(task.metadata.uid, max(task.status.attempts, 1))
    box = obs.sandbox
    if box is not None:
        b.set(sandbox=box.status())
    if task.spec.suspend:
        if box is not None and box.state not in ("stopped", "archived", "archiving", "stopping"):
            # the stop did not happen yet (or was interrupted): do it (again)
            return Decision(status=b.build(), actions=(SuspendSandbox(name=name),), release_slot=True,
                            requeue_after=config.poll_interval_seconds)
        return Decision(status=b.build(), release_slot=True, requeue_after=config.queue_recheck_max_seconds)
    admission = obs.admission
    if admission is None or not admission.admitted:
        position = admission.position if admission else None
        message = admission.limit_message if admission else "waiting for admission"
        b.phase(Phase.SUSPENDED, Reason.QUOTA_EXCEEDED, f"resuming: {message}")
        b.set(queue_position=position)
        return Decision(status=b.build(), requeue_after=queue_recheck(position, config))
    since = task.status.suspended_at or b.now
    b.phase(Phase.PROVISIONING, Reason.RESUMING, f"resuming sandbox {name}")
    b.set(suspended_at=None, queue_position=None, agent=None, resumes=task.status.resumes + 1,
          suspended_seconds=task.status.suspended_seconds + max((b.now - since).total_seconds(), 0.0))
    actions: tuple[Action, ...] = (ResumeSandbox(name=name),) if box is not None else ()
    return Decision(status=b.build(), actions=actions, requeue_after=0)


def _admit(task: AgentTask, obs: Observation, b: _Builder, config: PlanConfig) -> Decision:
    if task.spec.suspend:
        b.phase(Phase.PENDING, Reason.SUSPENDED, "spec.suspend is true; the task waits before admission")
        b.set(queue_position=None)
        return Decision(status=b.build())
    admission = obs.admission
    if admission is None or not admission.admitted:
        position = admission.position if admission else None
        message = admission.limit_message if admission else "waiting for admission"
        b.phase(Phase.QUEUED, admission.reason if admission else Reason.QUOTA_EXCEEDED, message)
        b.set(queue_position=position)
        wait = admission.retry_after if admission and admission.retry_after is not None else None
        return Decision(status=b.build(), requeue_after=wait if wait is not None else queue_recheck(position, config))
    # admitted: one write says so and records the intent to create the first sandbox
    attempt = 1
    name = sandbox_name(task.metadata.uid, attempt)
    b.phase(Phase.PROVISIONING, Reason.PROVISIONING, f"creating sandbox {name}")
    b.set(queue_position=None, start_time=b.now, attempts=attempt,
          sandbox=SandboxStatus(name=name, state="creating"))
    wait = b.claim("CreateSandbox", attempt)
    if wait is not None:
        return Decision(status=b.build(), requeue_after=wait)
    return Decision(status=b.build(), actions=launch(name, attempt, session_id(attempt)), requeue_after=0)


def launch(name: str, attempt: int, session: str) -> tuple[Action, ...]:
    """Create the attempt's sandbox and start the agent in it, in one step: the start uses the
    sandbox the create returned (`StartAgent.sandbox_id` empty: "the one just created"), and the
    supervisor skips it when the create did not return a sandbox ready to run commands."""
    return (CreateSandbox(name=name, attempt=attempt), StartAgent(sandbox_id="", session_id=session, attempt=attempt))


def queue_recheck(position: int | None, config: PlanConfig) -> float:
    """When a queued task looks at its place again (a freed slot wakes it at once when it is its
    turn). Every look rewrites the position, so the interval grows with the position: the shown
    position stays about as fresh relative to its size, and a long queue costs the apiserver
    O(log N) writes per recheck round instead of O(N) (1000 queued tasks: ~4 writes/s, not 33)."""
    scale = max(1.0, (position or 1) / 10)
    return min(config.queue_recheck_seconds * scale, max(config.queue_recheck_max_seconds,
                                                          config.queue_recheck_seconds))


def _progress(task: AgentTask, obs: Observation, b: _Builder, config: PlanConfig,
              limit: dt.datetime | None) -> Decision:
    attempt = max(task.status.attempts, 1)
    name = sandbox_name(task.metadata.uid, attempt)
    recorded = task.status.sandbox
    confirmed = recorded is not None and recorded.name == name and recorded.id is not None
    sandbox = obs.sandbox

    if sandbox is None:
        if confirmed:
            if obs.misses < config.missing_confirmations:
                # one 404 proves little (an eventually consistent read): look again shortly
                return Decision(status=b.build(), requeue_after=config.missing_recheck_seconds)
            assert recorded is not None
            b.set(sandbox=recorded.model_copy(update={"state": "destroyed", "deleted": True, "pending_since": None}))
            return _lost(task, b, config, name, f"the sandbox disappeared ({obs.misses} looks in a row)")
        b.phase(Phase.PROVISIONING, Reason.PROVISIONING, f"creating sandbox {name}")
        b.set(sandbox=SandboxStatus(name=name, state="creating"), attempts=attempt)
        wait = b.claim("CreateSandbox", attempt)
        if wait is not None:
            return Decision(status=b.build(), requeue_after=wait)
        return Decision(status=b.build(), actions=launch(name, attempt, session_id(attempt, task.status.resumes)),
                        requeue_after=0)

    if sandbox.state in PENDING_STATES:
        same = recorded is not None and recorded.name == sandbox.name and recorded.pending_since is not None
        since = recorded.pending_since if same and recorded is not None else b.now
        b.set(sandbox=sandbox.status(pending_since=since))
        assert since is not None
        waited = (b.now - since).total_seconds()
        if waited >= config.provisioning_timeout_seconds:
            return _lost(task, b, config, name, f"it stayed {sandbox.state} for {waited:.0f}s "
                         f"(provisioning timeout {config.provisioning_timeout_seconds:.0f}s)")
        b.phase(Phase.PROVISIONING, Reason.PROVISIONING, f"sandbox {name} is {sandbox.state}")
        return Decision(status=b.build(), requeue_after=config.poll_interval_seconds / 2)
    b.set(sandbox=sandbox.status())
    sid = session_id(attempt, task.status.resumes)
    resuming = task.status.resumes > 0 and (task.status.agent is None or task.status.agent.session_id != sid)
    if resuming and sandbox.state in ("stopped", "archived"):
        # resumed, but the start did not happen yet (or was interrupted): start it (again)
        b.phase(Phase.PROVISIONING, Reason.RESUMING, f"resuming sandbox {name}")
        return Decision(status=b.build(), actions=(ResumeSandbox(name=name),),
                        requeue_after=config.poll_interval_seconds)
    if sandbox.state not in READY_STATES:
        detail = f"sandbox is {sandbox.state}" + (f": {sandbox.error_reason}" if sandbox.error_reason else "")
        return _lost(task, b, config, name, detail)

    command = obs.command
    if command is None:
        agent = task.status.agent
        if agent is not None and agent.command_id and agent.session_id == sid:
            return _lost(task, b, config, name, "the agent command disappeared from its session")
        b.phase(Phase.PROVISIONING, Reason.PROVISIONING, "uploading the task context and starting the agent")
        wait = b.claim("StartAgent", attempt)
        if wait is not None:
            return Decision(status=b.build(), requeue_after=wait)
        return Decision(status=b.build(),
                        actions=(StartAgent(sandbox_id=sandbox.id, session_id=sid, attempt=attempt),),
                        requeue_after=0)

    b.set(agent=AgentStatus(session_id=sid, command_id=command.id, exit_code=command.exit_code), intent=None)
    if obs.log_tail is not None and obs.log_tail != task.status.log_tail:
        due = (obs.last_log_write is None or command.exit_code is not None
               or (b.now - obs.last_log_write).total_seconds() >= config.log_tail_interval_seconds)
        if due:
            b.set(log_tail=obs.log_tail)

    if command.exit_code is None:
        started = task.status.running_time or obs.agent_started or b.now
        if task.status.phase != Phase.RUNNING or task.status.reason != Reason.AGENT_STARTED:
            b.phase(Phase.RUNNING, Reason.AGENT_STARTED, f"the agent is running in sandbox {name}")
            b.set(running_time=started)
        elapsed = (b.now - started).total_seconds()
        wait = min(config.max_poll_interval_seconds, max(config.poll_interval_seconds, elapsed / 20))
        if limit is not None:
            wait = min(wait, max((limit - b.now).total_seconds(), 0.0))
        return Decision(status=b.build(), requeue_after=wait)

    if task.status.running_time is None and obs.agent_started is not None:
        b.set(running_time=obs.agent_started)  # it ran (and finished) before it was seen running
    return _exited(task, obs, b, command.exit_code)


def _exited(task: AgentTask, obs: Observation, b: _Builder, exit_code: int) -> Decision:
    result = obs.result
    if result is not None:
        b.set(result=result)
        if result.agent_exit_code is not None:  # the agent's own code, not the runner's
            b.set(agent=AgentStatus(session_id=task.status.agent.session_id if task.status.agent else None,
                                    command_id=obs.command.id if obs.command else None,
                                    exit_code=result.agent_exit_code))
    _end_attempt(task, b, result)
    if exit_code != 0:
        klass = result.failure_class if result is not None else None
        reason = klass if klass in RUNNER_FAILURE_REASONS else Reason.AGENT_FAILED
        code = result.agent_exit_code if result is not None and result.agent_exit_code is not None else exit_code
        message = f"the agent exited with code {code}"
        if klass == "AgentTimedOut":  # the runner stops the agent just before the task's deadline
            seconds = task.spec.active_deadline_seconds or b.config.default_deadline_seconds
            reason, message = Reason.DEADLINE_EXCEEDED, (f"the agent was stopped at the task's deadline of "
                                                         f"{seconds}s (by the runner, to report in time)")
        if result is not None and result.error and result.error != message:  # the runner may say the same
            message = f"{message}: {result.error}"
        return _fail(task, b, reason, message[:1024], keep=task.spec.sandbox.keep_on_failure)
    outcome = result.outcome if result is not None else None
    reason = Reason.NO_CHANGES if outcome == "NoChanges" else Reason.AGENT_SUCCEEDED
    summary = {
        "NoChanges": "the agent made no changes; its answer was reported",
        "PullRequestOpened": f"pull request opened: {result.pull_request_url if result else ''}",
        "ChangesPushed": f"branch {result.branch if result else ''} pushed",
    }.get(outcome or "", "the agent finished successfully")
    b.phase(Phase.SUCCEEDED, reason, summary)
    b.set(completion_time=b.now, intent=None)
    return _cleanup(task, b, keep=False)


def _end_attempt(task: AgentTask, b: _Builder, result: Result | None) -> None:
    """Record the current attempt's usage (once: a later call for the same attempt keeps it)."""
    attempt = max(task.status.attempts, 1)
    current = b.fields.get("usage")
    previous = Usage.model_validate(current) if isinstance(current, dict) else current
    if previous is not None and any(a.attempt == attempt for a in previous.attempts):
        return
    raw = b.fields.get("sandbox")
    sandbox = SandboxStatus.model_validate(raw) if isinstance(raw, dict) else raw
    if sandbox is None and result is None:
        return
    entry = usage.attempt_usage(attempt=attempt, sandbox=sandbox, result=result, now=b.now,
                                suspended_seconds=task.status.suspended_seconds)
    b.set(usage=usage.record(previous, entry))


def _fail(task: AgentTask, b: _Builder, reason: str, message: str, *, keep: bool) -> Decision:
    if task.status.start_time is not None:
        _end_attempt(task, b, None)
    b.phase(Phase.FAILED, reason, message)
    b.set(completion_time=b.now, intent=None, queue_position=None)
    return _cleanup(task, b, keep=keep)


_KEPT_STATES = frozenset({"stopping", "stopped", "archiving", "archived", "destroying", "destroyed"})


def _keep_minutes(seconds: float, config: PlanConfig) -> int:
    """Daytona's auto-delete for a kept sandbox: its retention plus the safety margin."""
    return math.ceil(seconds / 60) + config.safety_margin_minutes


def _cleanup(task: AgentTask, b: _Builder, *, keep: bool) -> Decision:
    current = b.fields.get("sandbox")
    sandbox = SandboxStatus.model_validate(current) if isinstance(current, dict) else current
    if sandbox is None or sandbox.name is None:
        return Decision(status=b.build(), release_slot=True)
    if keep:
        seconds = task.spec.sandbox.keep_for_seconds
        keep_for = seconds if seconds is not None else b.config.default_keep_for_seconds
        retain = b.now + dt.timedelta(seconds=keep_for)
        b.set(sandbox=sandbox.model_copy(update={"retain_until": retain, "pending_since": None}))
        return Decision(status=b.build(), release_slot=True,
                        actions=(KeepSandbox(name=sandbox.name,
                                             delete_after_minutes=_keep_minutes(keep_for, b.config)),),
                        requeue_after=max((retain - b.now).total_seconds(), 0.0))
    # the slot is held until the sandbox is seen gone: Daytona deletes asynchronously (destroying),
    # and a slot freed at the delete request let the next sandbox exist beside this one
    return Decision(status=b.build(), actions=(DeleteSandbox(name=sandbox.name, reason="finished"),),
                    requeue_after=destroy_recheck(task, b.now, b.config))


def destroy_recheck(task: AgentTask, now: dt.datetime, config: PlanConfig) -> float:
    """When to look whether a deleted sandbox is gone: soon at first (its slot is held until
    then, and Daytona usually destroys a sandbox within a second or two), then less often, up
    to the poll interval: a quarter of the time since the task finished, at least 0.25 s."""
    done = task.status.completion_time or now
    return min(config.poll_interval_seconds, max(0.25, (now - done).total_seconds() / 4))


def _finished(task: AgentTask, obs: Observation, b: _Builder, config: PlanConfig) -> Decision:
    """Terminal phase: only cleanup remains (delete the sandbox, or keep it until retention ends)."""
    sandbox = task.status.sandbox
    if sandbox is None or sandbox.name is None or sandbox.deleted:
        return _expire(task, b, config)
    if obs.sandbox is None:
        b.set(sandbox=sandbox.model_copy(update={"deleted": True, "state": "destroyed"}))
        return Decision(status=b.build(), release_slot=True)
    if sandbox.retain_until is not None:
        b.set(sandbox=sandbox.model_copy(update={"state": obs.sandbox.state}))
        left = (sandbox.retain_until - b.now).total_seconds()
        if left > 0 and obs.sandbox.state not in _KEPT_STATES:
            # the stop did not happen (Daytona answered 409 mid-transition, the operator restarted
            # in between): keep asking until the sandbox is seen stopping or stopped
            return Decision(status=b.build(), release_slot=True,
                            actions=(KeepSandbox(name=sandbox.name,
                                                 delete_after_minutes=_keep_minutes(left, config)),),
                            requeue_after=min(config.poll_interval_seconds, left))
        if left > 0:
            return Decision(status=b.build(), release_slot=True, requeue_after=left)
        return Decision(status=b.build(), release_slot=True,
                        actions=(DeleteSandbox(name=sandbox.name, reason="retention-expired"),),
                        requeue_after=0)
    deleting = obs.sandbox.state in ("destroying", "destroyed")
    return Decision(status=b.build(), actions=(DeleteSandbox(name=sandbox.name, reason="finished"),),
                    requeue_after=destroy_recheck(task, b.now, config) if deleting else 0)


def _expire(task: AgentTask, b: _Builder, config: PlanConfig) -> Decision:
    """Finished and cleaned up: delete the task itself once its TTL has passed."""
    ttl = ttl_seconds(task, config)
    done = task.status.completion_time
    if ttl is None or done is None:
        return Decision(status=b.build(), release_slot=True)
    left = (done + dt.timedelta(seconds=ttl) - b.now).total_seconds()
    if left > 0:
        return Decision(status=b.build(), release_slot=True, requeue_after=left)
    return Decision(status=b.build(), release_slot=True, actions=(DeleteTask(uid=task.metadata.uid),))


def _lost(task: AgentTask, b: _Builder, config: PlanConfig, name: str, detail: str) -> Decision:
    attempts = max(task.status.attempts, 1)
    limit = task.spec.backoff_limit
    _end_attempt(task, b, None)
    if attempts > limit:
        message = (f"attempt {attempts} lost its sandbox {name} ({detail}); backoffLimit {limit} "
                   "is exhausted")
        return _fail(task, b, Reason.BACKOFF_LIMIT_EXCEEDED, message, keep=False)
    nxt = attempts + 1
    new_name = sandbox_name(task.metadata.uid, nxt)
    message = f"attempt {attempts} lost its sandbox {name} ({detail}); starting attempt {nxt} of {limit + 1}"
    b.phase(Phase.PROVISIONING, Reason.SANDBOX_LOST, message)
    b.set(attempts=nxt, agent=None, running_time=None,
          sandbox=SandboxStatus(name=new_name, state="creating"))
    b.claim("CreateSandbox", nxt)  # a new attempt: no other replica can hold an intent for it yet
    # the old sandbox may still exist in a broken state: delete it; then create the next one
    return Decision(status=b.build(),
                    actions=(DeleteSandbox(name=name, reason="lost"), *launch(new_name, nxt, session_id(nxt))),
                    requeue_after=0)


def fail(task: AgentTask, *, reason: str, message: str, now: dt.datetime, config: PlanConfig) -> Decision:
    """A task that cannot proceed because of its own fault, seen outside the plan (a missing
    Secret, resources above the per-sandbox maximum, an unreachable repository, ...)."""
    b = _Builder(task, now, config)
    if task.status.phase is not None and task.status.phase.terminal:
        return Decision(status=b.build())
    return _fail(task, b, reason, message, keep=False)


def wait(task: AgentTask, *, reason: str, message: str, now: dt.datetime, config: PlanConfig) -> Decision:
    """The task cannot make progress for a reason that is not its own (Daytona rejects the
    operator's key, the organisation is out of quota, Daytona is unreachable): its phase stays,
    `reason`/`message` (and so its conditions) say what it waits for. Nothing else changes and
    nothing is done; the next step that gets through writes the task's own reason back."""
    b = _Builder(task, now, config)
    phase = task.status.phase
    if phase is not None and phase.terminal:
        return Decision(status=b.build())
    b.phase(phase or Phase.PENDING, reason, message)
    return Decision(status=b.build())
