"""The per-task supervisor loop: observe -> plan -> write status -> act -> wait.

Run by the kopf daemon in `handlers.py` for every AgentTask that needs supervision. All
state lives in the resource status and in Daytona; a restarted supervisor (operator restart,
failover) picks up from there. Status is written only when it changed, as a merge patch that
replaces the whole status and is guarded by the resourceVersion it was computed from.

What each kind of error does here (the kinds are in `errors.py`):
- `Retryable`: wait (backoff from `retry.py`, at least the server's Retry-After), re-observe.
- `OperatorWide`: the task waits with its reason/conditions naming the cause (`plan.wait`),
  the operator is degraded (`health.py`); nothing fails; the task resumes when it clears.
- `AttemptLost`: re-observe soon; the plan counts a confirmed loss against `backoffLimit`.
- `TaskFault`: the task fails with the fault's reason.
- `Fatal` and unexpected exceptions: logged, `lastError` recorded, backoff; never a failure.
Every error path writes with the freshest copy of the task (the write of the same step may
have succeeded before the error), and a conflict there never escapes the loop.

Not here: what to do (`plan.py`), how to talk to Daytona/Kubernetes (`sandboxes.py`,
`kube.py`), the task's environment and secrets (`taskenv.py`), result parsing (`results.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from . import context, logs, metrics, plan, taskenv
from .admission import Waiting
from .api import AgentTask, AgentTaskStatus, Phase, Reason
from .conditions import READY_STATES
from .errors import AttemptLost, Cause, Fatal, OperatorError, OperatorWide, Retryable, TaskFault
from .kube import Conflict
from .logtail import LogFollower
from .results import parse_result
from .retry import Backoff, RetryPolicy
from .runtime import Runtime
from .statuspatch import merge_patch

Logger = logging.Logger | logging.LoggerAdapter[Any]
_ERROR_WRITE_SECONDS = 30.0  # lastError is rewritten at most this often
_FINAL_STREAM_SECONDS = 5.0  # how long an exited command's log stream may take to deliver its end
_CLONE_ATTEMPTS = 4  # transport failures to the repository in a row before it counts as unreachable
_REPOSITORY_TRANSPORT = "GIT_TRANSPORT_FAILED"  # the toolbox daemon's code: the remote could not be reached
_WAIT_REASONS = frozenset({Reason.DAYTONA_AUTH_FAILED, Reason.DAYTONA_FORBIDDEN, Reason.DAYTONA_QUOTA_EXCEEDED,
                           Reason.DAYTONA_UNAVAILABLE, Reason.KUBERNETES_FORBIDDEN})


_LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]*")


def _rv(body: Any) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class Supervisor:
    """Supervises one AgentTask until it needs no more supervision or is stopped."""

    def __init__(self, rt: Runtime, *, body: Any, logger: Logger,
                 on_step: Callable[[], None] | None = None, finalizer: str | None = None):
        self.rt = rt
        self.on_step = on_step
        self.finalizer = finalizer  # kopf's; the first write waits for it (see `_await_finalizer`)
        self.wake = asyncio.Event()  # set when the spec changed (suspend, cancel, deadline): look now
        self.advanced = asyncio.Event()  # set when a newer body of the task was seen
        self.live = body
        self.current: dict[str, Any] = dict(body)
        self.logger = logger
        meta = body["metadata"]
        self.key = (meta["namespace"], meta["name"])
        self.follower: LogFollower | None = None
        s = rt.settings
        self.backoff = Backoff(RetryPolicy(base=s.retry_base_seconds, cap=s.retry_max_seconds))
        self.last_log_write: dt.datetime | None = None
        self.last_error_write: dt.datetime | None = None
        self.path = "unknown"  # how the sandbox was created, for time-to-running by path
        self.secrets_registered = False
        self.misses = 0  # consecutive observations that found the recorded sandbox missing
        self.clone_failures = 0  # consecutive transient clone failures
        self.uploaded_token: str | None = None  # the repository token in the sandbox's token file
        self.token_checked: dt.datetime | None = None
        # what this step's observation fetched, so its actions do not fetch it again
        self.seen: Any | None = None  # the SDK sandbox of the current attempt
        self.seen_session: tuple[str, bool, plan.CommandObs | None] | None = None  # (session, exists, command)
        self.created = False  # this step's create made the sandbox in `seen` (nothing else is in it yet)
        self.agent_started: tuple[str, dt.datetime] | None = None  # (command id, when) of the command started here
        self.started_now = False  # this step started the agent (its outcome is written in the same step)
        self.running: Any | None = None  # the SDK sandbox the agent was last seen running in
        self.running_obs: plan.SandboxObs | None = None  # what Daytona said of it then
        self.observed_at: float | None = None  # (monotonic) when that was
        self.event: tuple[str, str, str] | None = None  # this step's phase-change event, posted at its end

    # --------------------------------------------------------------- main loop

    async def run(self, stopped: Any) -> None:
        try:
            await self._await_finalizer(stopped)
            while not stopped.is_set():
                wait = await self.step()
                if self.on_step is not None:
                    self.on_step()
                if wait is None:
                    return
                await self._sleep(stopped, wait)
        finally:
            if self.follower is not None:
                await self.follower.stop()

    def nudge(self, body: Any) -> None:
        """The spec changed (suspend, cancel, a new deadline): look now, at this body or newer.
        The event that carries the change can reach us before kopf has updated the daemon's live
        body; a step on the older body would decide on the old spec (e.g. sleep as suspended)."""
        self.saw(body)
        self.wake.set()

    def saw(self, body: Any) -> None:
        """A watch event of the task (every one, from `handlers.spec_changed`): keep the newest."""
        if _rv(body) > _rv(self.current):
            self.current = {k: body[k] for k in body}
            self.advanced.set()

    def _finalized(self) -> bool:
        newest = self.live if _rv(self.live) > _rv(self.current) else self.current
        return self.finalizer in ((newest.get("metadata") or {}).get("finalizers") or ())

    async def _await_finalizer(self, stopped: Any, timeout: float = 5.0) -> None:
        """kopf adds its finalizer in the same cycle that starts this daemon: a first write
        computed from the body before it would be refused (409) and cost a re-read. So the first
        step waits (at most `timeout`) for the watch event that carries the finalizer."""
        if self.finalizer is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._finalized() and not stopped.is_set():
            left = deadline - loop.time()
            if left <= 0:
                return
            self.advanced.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.advanced.wait(), min(left, 0.5))

    def _latest(self) -> AgentTask:
        if _rv(self.live) > _rv(self.current):
            self.current = dict(self.live)
        return AgentTask.from_body(self.current)

    async def step(self) -> float | None:
        """One reconcile; returns seconds to wait before the next one, or None when done."""
        try:
            return await self._step()
        finally:
            self._post_event()

    async def _started(self, decision: plan.Decision) -> plan.Decision:
        """The agent was started in this step: write what that means now (Running, the sandbox's
        id, the command), trusting what the create and the start returned instead of looking
        again; the log stream's end wakes the next step."""
        if self.seen is None or self.agent_started is None:
            return decision
        task = AgentTask.from_body(self.current)
        sid = (self.seen_session or ("",))[0]
        command = plan.CommandObs(id=self.agent_started[0], exit_code=None)
        obs = plan.Observation(sandbox=self.rt.sandboxes.observe(self.seen), command=command, session_exists=True,
                               agent_started=self.agent_started[1], last_log_write=self.last_log_write)
        after = plan.decide(task, obs, now=self.rt.clock(), config=self.rt.config)
        if after.actions or after.status.phase != Phase.RUNNING:  # (not what a start leads to: look again)
            return decision
        await self.write(task, after.status)
        self._seen_running(self.seen, obs.sandbox)
        self._follow(self.seen, sid, command.id)
        return after

    def _seen_running(self, sandbox: Any | None, obs: plan.SandboxObs | None) -> None:
        self.running, self.running_obs = sandbox, obs
        self.observed_at = time.monotonic() if sandbox is not None else None

    def _known(self, name: str) -> str | None:
        """What this supervisor already knows of the agent in sandbox `name`, from following it:

        - "trusted": its log stream is open and healthy and Daytona was asked less than
          `stream_recheck_seconds` ago: that answer still holds (the stream ends at the exit);
        - "sandbox": the stream is open, or ended with the command: the sandbox the agent was seen
          running in is the one to ask about the command (one session look-up, no sandbox get: a
          sandbox that stopped or went away fails that look-up, and the next look gets it afresh);
        - None: nothing; the sandbox is looked up.
        """
        follower = self.follower
        if (self.running is None or self.running.name != name or self.running_obs is None or follower is None
                or not (follower.streaming or follower.exited.is_set())):
            return None
        fresh = (self.observed_at is not None
                 and time.monotonic() - self.observed_at < self.rt.settings.stream_recheck_seconds)
        return "trusted" if fresh and follower.streaming and not follower.exited.is_set() else "sandbox"

    def _tail(self, follower: LogFollower) -> str | None:
        """The log tail for the observation; taking it is what answers the stream's new output."""
        follower.changed.clear()
        return follower.tail() or None

    async def _step(self) -> float | None:
        self.wake.clear()  # this step reads the newest body: a nudge from before it is handled here
        task = self._latest()
        if task.metadata.deletion_timestamp is not None:
            return None
        self.seen = self.seen_session = None
        self.created = self.started_now = False
        try:
            await self._register_secrets(task)
            obs = await self.observe(task)
            decision = plan.decide(task, obs, now=self.rt.clock(), config=self.rt.config)
            if decision.release_slot:  # before the write: it can end supervision (see `handlers.supervise`)
                self.rt.queue.release(self.key)
            await self.write(task, decision.status)
            for action in decision.actions:
                await self.act(action, task)
            if self.started_now:
                decision = await self._started(decision)
            elif obs.command is not None and obs.command.exit_code is None:
                await self._refresh_token(task)
            self.backoff.reset()
        except Conflict:
            return await self._reread()
        except Retryable as exc:
            return await self._transient(exc)
        except OperatorWide as exc:
            return await self._operator_wide(exc)
        except AttemptLost as exc:
            self._seen_running(None, None)  # look the sandbox up again next time
            metrics.RECONCILE_ERRORS.labels("attempt_lost").inc()
            self.logger.warning("the sandbox went away during an action, looking again: %s", logs.redact(str(exc)))
            await self._confirm_created()
            return self.rt.config.missing_recheck_seconds
        except TaskFault as exc:
            return await self._task_fault(exc)
        except Fatal as exc:
            self._seen_running(None, None)
            metrics.RECONCILE_ERRORS.labels("fatal").inc()
            delay = self.backoff.next()
            self.logger.error("request refused, retrying in %.1fs: %s", delay, logs.redact(str(exc)))
            await self._record_error(str(exc))
            return delay
        except (KeyError, ValueError, TypeError, AttributeError, RuntimeError, AssertionError) as exc:
            # a bug or an unexpected response shape: keep supervising with backoff, never crash-loop
            self._seen_running(None, None)
            metrics.RECONCILE_ERRORS.labels("unexpected").inc()
            delay = self.backoff.next()
            self.logger.exception("unexpected error, retrying in %.1fs: %s", delay, logs.redact(repr(exc)))
            return delay
        task = AgentTask.from_body(self.current)
        if any(isinstance(a, plan.DeleteTask) for a in decision.actions):
            return None
        if not plan.needs_supervision(task, self.rt.config) and not decision.actions:
            return None
        wait = decision.requeue_after if decision.requeue_after is not None else self.rt.settings.poll_interval_seconds
        return self._streaming_wait(task, wait)

    def _streaming_wait(self, task: AgentTask, wait: float) -> float:
        """While the agent's log stream is open, its end wakes the supervisor the moment the
        command exits, its failure at once, and new output when the log tail may be written (all
        in `_sleep`), so Daytona is asked again only every `stream_recheck_seconds`, not at the
        plan's polls; never past the task's deadline."""
        follower = self.follower
        if (task.status.phase != Phase.RUNNING or follower is None or not follower.streaming
                or follower.exited.is_set() or self.observed_at is None):
            return wait
        s = self.rt.settings
        longer = max(self.observed_at + s.stream_recheck_seconds - time.monotonic(), 0.0)
        if task.spec.repository.credentials_secret_ref is not None:  # the repository token is renewed on time
            checked = self.token_checked or self.rt.clock()
            longer = min(longer, max((checked - self.rt.clock()).total_seconds() + s.token_refresh_seconds, 0.0))
        limit = plan.deadline(task, self.rt.config)
        if limit is not None:
            longer = min(longer, max((limit - self.rt.clock()).total_seconds(), 0.0))
        return longer

    # ------------------------------------------------------------ error paths

    async def _reread(self) -> float | None:
        fresh = await self.rt.kube.get_task(*self.key)
        if fresh is None:
            return None
        self.current = fresh
        return 0

    async def _transient(self, exc: Retryable) -> float:
        self._seen_running(None, None)
        metrics.RECONCILE_ERRORS.labels("retryable").inc()
        delay = self.backoff.next(exc.retry_after)
        self.logger.warning("transient error, retrying in %.1fs: %s", delay, logs.redact(str(exc)))
        if Cause.DAYTONA_UNAVAILABLE in self.rt.health.active():  # a long outage: say so on the task
            await self._wait(reason=Cause.DAYTONA_UNAVAILABLE,
                             message=f"the operator cannot reach Daytona; the task waits: {exc}")
        else:
            await self._record_error(str(exc))
        return delay

    async def _confirm_created(self) -> None:
        """This step created the sandbox and lost it before the agent ran: record its id, so the
        next looks that miss it count a lost attempt (an unconfirmed sandbox is just created again)."""
        if not self.created or self.seen is None:
            return
        task = self._latest()
        box = self.rt.sandboxes.observe(self.seen)
        if task.status.sandbox is None or task.status.sandbox.name != box.name or task.status.sandbox.id:
            return
        await self._guarded_write(task, task.status.model_copy(update={"sandbox": box.status()}))

    async def _operator_wide(self, exc: OperatorWide) -> float:
        self._seen_running(None, None)
        metrics.RECONCILE_ERRORS.labels("operator_wide").inc()
        delay = min(self.backoff.next(exc.retry_after), self.rt.settings.retry_max_seconds)
        self.logger.warning("operator-wide problem (%s), the task waits %.1fs: %s", exc.cause, delay,
                            logs.redact(str(exc)))
        await self._wait(reason=exc.cause, message=f"{exc}; the task waits until this is fixed")
        return delay

    async def _task_fault(self, exc: TaskFault) -> float:
        metrics.RECONCILE_ERRORS.labels("task_fault").inc()
        self.logger.error("task failed: %s", logs.redact(str(exc)))
        task = self._latest()
        decision = plan.fail(task, reason=exc.reason, message=logs.redact(str(exc)), now=self.rt.clock(),
                             config=self.rt.config)
        await self._guarded_write(task, decision.status)
        return 0

    async def _wait(self, *, reason: str, message: str) -> None:
        task = self._latest()
        decision = plan.wait(task, reason=reason, message=logs.redact(message)[:1024], now=self.rt.clock(),
                             config=self.rt.config)
        await self._guarded_write(task, decision.status)

    async def _record_error(self, message: str) -> None:
        now = self.rt.clock()
        if self.last_error_write is not None and (now - self.last_error_write).total_seconds() < _ERROR_WRITE_SECONDS:
            return
        self.last_error_write = now
        task = self._latest()
        status = task.status.model_copy(update={"last_error": logs.redact(message)[:1024]})
        await self._guarded_write(task, status)

    async def _guarded_write(self, task: AgentTask, status: AgentTaskStatus) -> None:
        """A write on an error path: its own failure is logged, never raised (the loop goes on)."""
        try:
            await self.write(task, status)
        except Conflict:
            with contextlib.suppress(OperatorError):
                await self._reread()
        except OperatorError as exc:
            self.logger.warning("could not record the error on the task: %s", logs.redact(str(exc)))

    # ------------------------------------------------------------------- sleep

    async def _sleep(self, stopped: Any, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.wake.is_set():
            self.wake.clear()
            return
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stopped.wait()),
                                            asyncio.ensure_future(self.wake.wait())]
        follower = self.follower
        if follower is not None and not follower.exited.is_set():
            waits.append(asyncio.ensure_future(follower.exited.wait()))
            if follower.streaming:
                waits.append(asyncio.ensure_future(follower.interrupted.wait()))
                waits.append(asyncio.ensure_future(self._tail_due(follower)))
        task = AgentTask.from_body(self.current)
        phase = task.status.phase
        resuming = phase == Phase.SUSPENDED and not task.spec.suspend  # waits for a slot like a queued task
        if phase in (Phase.QUEUED, None, Phase.PENDING) or resuming:
            waits.append(asyncio.ensure_future(self.rt.queue.wait_for_turn(self.key, seconds)))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(*waits, return_exceptions=True)

    async def _tail_due(self, follower: LogFollower) -> None:
        """Returns when the agent printed something new and the log tail may be written again."""
        await follower.changed.wait()
        if self.last_log_write is not None:
            due = self.last_log_write + dt.timedelta(seconds=self.rt.settings.log_tail_interval_seconds)
            await asyncio.sleep(max((due - self.rt.clock()).total_seconds(), 0.0))

    # ------------------------------------------------------------------ observe

    async def _register_secrets(self, task: AgentTask) -> None:
        """Before any of an adopted agent's output is read, know every secret it may print."""
        if self.secrets_registered:
            return
        phase = task.status.phase
        if phase not in (None, Phase.PENDING, Phase.QUEUED):
            await taskenv.register(self.rt.kube, task)
        self.secrets_registered = True

    async def observe(self, task: AgentTask) -> plan.Observation:
        status = task.status
        phase = status.phase
        rt = self.rt
        if phase in (None, Phase.PENDING, Phase.QUEUED):
            if task.spec.suspend:
                return plan.Observation()
            admission = self._request_slot(task)  # the queue logs each grant, in admission order
            return plan.Observation(admission=admission)
        attempt = max(status.attempts, 1)
        if phase == Phase.SUSPENDED:
            sandbox = self.seen = await rt.sandboxes.find(plan.sandbox_name(task.metadata.uid, attempt))
            resume: plan.Admission | None = None
            if not task.spec.suspend:  # resuming needs a slot again
                resume = self._request_slot(task)
            return plan.Observation(sandbox=rt.sandboxes.observe(sandbox) if sandbox is not None else None,
                                    admission=resume)
        if phase.terminal:
            # by id when known: Daytona's soft delete renames a deleted sandbox at once
            # (DESTROYED_<name>_<ms>), so the name answers 404 while it is still being destroyed
            # and still counts; the slot is held until the id answers 404 too
            box = status.sandbox
            ref = (box.id or box.name) if box is not None and box.name else None
            sandbox = self.seen = await rt.sandboxes.find(ref) if ref else None
            return plan.Observation(sandbox=rt.sandboxes.observe(sandbox) if sandbox is not None else None)
        name = plan.sandbox_name(task.metadata.uid, attempt)
        sid = plan.session_id(attempt, status.resumes)
        follower = self.follower
        known = self._known(name)
        if known == "trusted":
            assert follower is not None and self.running_obs is not None
            started = self.agent_started
            return plan.Observation(sandbox=self.running_obs, command=plan.CommandObs(follower.command_id, None),
                                    session_exists=True, log_tail=self._tail(follower),
                                    last_log_write=self.last_log_write,
                                    agent_started=started[1] if started and started[0] == follower.command_id else None)
        reused = known == "sandbox"
        if reused:
            # the command's exit code (its stream ended) or whether it still runs (a recheck) comes
            # from the sandbox it was seen running in; a look-up would only repeat what the stream
            # said (if the session is gone, the sandbox is looked up)
            sandbox = self.seen = self.running
        else:
            sandbox = self.seen = await rt.sandboxes.find(name)
        if sandbox is None:
            self.misses += 1
            return plan.Observation(misses=self.misses)
        self.misses = 0
        sandbox_obs = rt.sandboxes.observe(sandbox)
        if sandbox_obs.state not in READY_STATES:
            return plan.Observation(sandbox=sandbox_obs)
        exists, command = await rt.sandboxes.command(sandbox, sid)
        if reused and not exists:  # not what an exited command leaves: look at the sandbox itself
            self._seen_running(None, None)
            return await self.observe(task)
        self.seen_session = (sid, exists, command)
        result = None
        log_tail: str | None = None
        if command is not None:
            follower = self._follow(sandbox, sid, command.id)
            self._seen_running(sandbox if command.exit_code is None else None, sandbox_obs)
            if command.exit_code is not None:
                await self._final_logs(follower, sandbox, sid, command.id)
                result = parse_result(await rt.sandboxes.download_json(sandbox, context.result_path(rt.settings)))
            log_tail = self._tail(follower)
        started = self.agent_started
        return plan.Observation(sandbox=sandbox_obs, command=command, session_exists=exists, result=result,
                                log_tail=log_tail, last_log_write=self.last_log_write,
                                agent_started=started[1] if started and command and command.id == started[0] else None)

    def _request_slot(self, task: AgentTask) -> plan.Admission:
        """Ask for a sandbox slot: first the AgentTaskQuota windows of the task's namespace (a task
        over its budget does not even queue, so it holds up nobody), then the FCFS queue with its
        global, per-namespace and quota-group limits."""
        rt = self.rt
        requester = task.spec.audit.requested_by or ""
        block = rt.quotas.budget(namespace=task.metadata.namespace, requester=requester, now=rt.clock())
        if block is not None:
            rt.queue.release(self.key)  # leave the queue while over budget
            return plan.Admission(admitted=False, limit_message=block.message, reason=block.reason,
                                  retry_after=block.retry_after)
        created = task.metadata.creation_timestamp or rt.clock()
        return rt.queue.request(Waiting(key=self.key, created=created, uid=task.metadata.uid, requester=requester))

    async def _final_logs(self, follower: LogFollower, sandbox: Any, sid: str, cid: str) -> None:
        """The command exited: its stream ends by itself; only if it does not (a broken stream)
        is the whole output fetched once."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follower.exited.wait(), _FINAL_STREAM_SECONDS)
        await follower.stop()
        if not follower.exited.is_set():
            final = await self.rt.sandboxes.logs(sandbox, sid, cid)
            if final:
                follower.replace(final)

    def _follow(self, sandbox: Any, sid: str, cid: str) -> LogFollower:
        if self.follower is None or self.follower.command_id != cid:
            if self.follower is not None:
                self.follower.cancel()
            self.follower = LogFollower(self.rt.sandboxes, sandbox, sid, cid,
                                        limit=self.rt.settings.log_tail_bytes, logger=self.logger)
        self.follower.ensure_running()
        return self.follower

    # --------------------------------------------------------------------- act

    async def act(self, action: plan.Action, task: AgentTask) -> None:
        rt = self.rt
        if isinstance(action, plan.CreateSandbox):
            await self._create(task, action)
        elif isinstance(action, plan.StartAgent):
            if action.sandbox_id or self._ready(plan.sandbox_name(task.metadata.uid, action.attempt)):
                await self._start_agent(task, action)
        elif isinstance(action, plan.DeleteSandbox):
            if self.follower is not None:
                await self.follower.stop()
            if await rt.sandboxes.delete_if_exists(self._seen(action.name) or action.name):
                self.logger.info("sandbox %s deleted (%s)", action.name, action.reason)
        elif isinstance(action, plan.DeleteTask):
            meta = task.metadata
            if await rt.kube.delete_task(meta.namespace, meta.name, uid=action.uid):
                self.logger.info("deleted: ttlSecondsAfterFinished has passed")
        elif isinstance(action, plan.SuspendSandbox):
            self._seen_running(None, None)
            if self.follower is not None:
                await self.follower.stop()
            if await rt.sandboxes.suspend(action.name):
                self.logger.info("sandbox %s stopped: the task is suspended", action.name)
        elif isinstance(action, plan.ResumeSandbox):
            ttl = plan.remaining_minutes(task, rt.config, now=rt.clock())
            if await rt.sandboxes.resume(action.name, auto_delete_minutes=rt.settings.safety_margin_minutes,
                                         ttl_minutes=ttl + rt.settings.safety_margin_minutes):
                self.logger.info("sandbox %s started again: the task resumes", action.name)
        elif isinstance(action, plan.KeepSandbox):
            if self.follower is not None:
                await self.follower.stop()
            if await rt.sandboxes.keep(action.name, delete_after_minutes=action.delete_after_minutes):
                self.logger.info("sandbox %s stopped and kept for debugging (Daytona deletes it %d min after "
                                 "the stop if it is still there)", action.name, action.delete_after_minutes)

    async def _create(self, task: AgentTask, action: plan.CreateSandbox) -> None:
        rt = self.rt
        spec = context.sandbox_spec(task, name=action.name, attempt=action.attempt, settings=rt.settings)
        self.path = "cold"
        claimed = None
        if spec.snapshot and spec.snapshot in rt.settings.warm_pools:
            claimed = await rt.pools.claim(rt.sandboxes, spec.snapshot)
            self.path = "warm-pool" if claimed else "cold"
            metrics.WARM_POOL.labels("hit" if claimed else "miss").inc()
        try:
            sandbox, created = await rt.sandboxes.ensure(spec)  # (Daytona serves a warm one from the pool)
        finally:
            if claimed:
                rt.pools.release(spec.snapshot or "")
        self.seen, self.created = sandbox, created
        self.logger.info("sandbox %s ready", action.name, extra={"sandbox_id": sandbox.id, "attempt": action.attempt})

    def _seen(self, name: str) -> Any | None:
        """The sandbox called `name` if this step's observation (or create) fetched it."""
        return self.seen if self.seen is not None and self.seen.name == name else None

    def _ready(self, name: str) -> bool:
        """Whether this step's create returned `name` ready to run commands (else the next step
        looks at it and starts the agent when it is)."""
        sandbox = self._seen(name)
        return sandbox is not None and self.rt.sandboxes.observe(sandbox).state in READY_STATES

    async def _start_agent(self, task: AgentTask, action: plan.StartAgent) -> None:
        rt = self.rt
        name = plan.sandbox_name(task.metadata.uid, action.attempt)
        sandbox = self._seen(name) or await rt.sandboxes.find(name)
        if sandbox is None:
            raise AttemptLost(f"sandbox {name} is gone")
        seen = self.seen_session
        fresh = self.created  # created by this step: no session, no checkout in it yet
        if fresh:
            session: tuple[bool, plan.CommandObs | None] = (False, None)
        elif seen is not None and seen[0] == action.session_id:
            session = seen[1:]
        else:
            session = await rt.sandboxes.command(sandbox, action.session_id)
        command = session[1]
        if command is None:
            secrets = await taskenv.resolve(rt.kube, task, rt.settings)
            limit = plan.deadline(task, rt.config)
            seconds = task.spec.active_deadline_seconds or rt.settings.default_active_deadline_seconds
            cap = rt.quotas.cost_cap(namespace=task.metadata.namespace, requester=task.spec.audit.requested_by or "")
            files = context.context_files(task, attempt=action.attempt, settings=rt.settings, runner=rt.runner,
                                          env=secrets.env, git_token=secrets.git_token,
                                          mcp_config=secrets.mcp_config,
                                          deadline=context.runner_deadline(limit, deadline_seconds=seconds),
                                          max_cost_usd=cap)
            self.uploaded_token = secrets.git_token
            began = rt.clock()
            await rt.sandboxes.upload(sandbox, files)
            await self._clone(task, sandbox, fresh=fresh)
            if not fresh or (rt.clock() - began).total_seconds() >= rt.config.claim_seconds / 2:
                # the intent may have expired meanwhile: adopt an agent a peer started
                session = await rt.sandboxes.command(sandbox, action.session_id)
        command_id = await rt.sandboxes.start_command(sandbox, action.session_id, context.runner_command(rt.settings),
                                                      session=session)
        if session[1] is None:  # started now (not adopted): status.runningTime is this moment, not the next look
            self.agent_started = (command_id, rt.clock())
            self.seen_session = (action.session_id, True, None)
            self.started_now = True
        self.logger.info("agent started", extra={"sandbox_id": sandbox.id, "attempt": action.attempt,
                                                 "command_id": command_id})

    async def _refresh_token(self, task: AgentTask) -> None:
        """While the agent runs: every `token_refresh_seconds`, renew the repository token where the
        operator mints it (GitHub App installation tokens live an hour) and, when the Secret holds a
        new value, upload it into the sandbox's token file, which the runner reads at every git
        push and GitHub call. A failure here is logged and retried next time; it fails nothing."""
        rt = self.rt
        now = rt.clock()
        if task.spec.repository.credentials_secret_ref is None or self.seen is None:
            return
        if self.token_checked is not None and (now - self.token_checked).total_seconds() < \
                rt.settings.token_refresh_seconds:
            return
        self.token_checked = now
        try:
            if rt.refresh_credentials is not None:
                await rt.refresh_credentials(task)
            token = await taskenv.repository_token(rt.kube, task)
            if token is None or token == self.uploaded_token:
                return
            await rt.sandboxes.upload(self.seen, {context.token_path(rt.settings): token.encode()})
            self.uploaded_token = token
            self.logger.info("repository token refreshed in the sandbox")
        except OperatorError as exc:
            self.logger.warning("could not refresh the repository token: %s", logs.redact(str(exc)))

    async def _clone(self, task: AgentTask, sandbox: Any, *, fresh: bool) -> None:
        rt = self.rt
        repo = rt.settings.repo_dir
        if not fresh:  # a sandbox of an earlier step: an interrupted start may have cloned already
            code, _ = await rt.sandboxes.exec(sandbox, f"test -d {repo}/.git")
            if code == 0:
                return
        password = await taskenv.repository_token(rt.kube, task)
        try:
            await rt.sandboxes.clone(sandbox, url=task.spec.repository.url, path=repo,
                                     branch=task.spec.repository.base_branch,
                                     username=taskenv.GIT_USERNAME if password is not None else None,
                                     password=password)
        except Retryable as exc:
            # the network between the sandbox and the repository: a few tries, then it is the task's
            # repository that cannot be reached (a typo'd host never starts to resolve). Daytona's
            # own transient answers to the clone request (429, 5xx) say nothing about the repository
            # and are only retried; a clone that timed out counts unless Daytona itself is down.
            timed_out = exc.status is None and Cause.DAYTONA_UNAVAILABLE not in rt.health.active()
            if exc.code != _REPOSITORY_TRANSPORT and not timed_out:
                raise
            self.clone_failures += 1
            if self.clone_failures >= _CLONE_ATTEMPTS:
                raise TaskFault(f"the repository could not be cloned after {self.clone_failures} tries: {exc}",
                                reason=Reason.REPOSITORY_UNREACHABLE) from exc
            raise
        self.clone_failures = 0

    # ------------------------------------------------------------------- status

    async def write(self, task: AgentTask, status: AgentTaskStatus) -> None:
        old = task.status.dump()
        new = logs.redact_obj(status.dump())
        patch = merge_patch(old, new)
        if not patch:
            return
        meta = task.metadata
        try:
            body = await self.rt.kube.patch_status(meta.namespace, meta.name, resource_version=meta.resource_version,
                                                   status=patch)
        except Conflict:
            metrics.STATUS_WRITES.labels("conflict").inc()
            raise
        metrics.STATUS_WRITES.labels("ok").inc()
        if body is None:
            raise Conflict("the AgentTask is gone")
        self.current = body
        if "logTail" in patch:
            self.last_log_write = self.rt.clock()
        self._on_transition(task, status)
        if self.rt.on_transition is not None and status.phase != task.status.phase:
            await self.rt.on_transition(task, status, body)

    def _on_transition(self, task: AgentTask, status: AgentTaskStatus) -> None:
        before, after = task.status.phase, status.phase
        waiting = status.reason in _WAIT_REASONS and status.reason != task.status.reason
        lost = status.reason == Reason.SANDBOX_LOST and status.attempts != task.status.attempts  # (in any phase)
        if after is None or (before == after and not waiting and not lost):
            return
        warning = after == Phase.FAILED or status.reason == Reason.SANDBOX_LOST or waiting
        event = ("Warning" if warning else "Normal", status.reason or after.value,
                 logs.redact(status.message or after.value))
        if self.event is None or self.event[0] != "Warning" or warning:  # a warning is never hidden
            self.event = event
        if lost:
            metrics.ATTEMPTS_LOST.inc()
        if before == after:
            return
        self.logger.info("phase %s -> %s: %s", before, after.value, status.message)
        if after.terminal:
            metrics.TASKS_FINISHED.labels(after.value, status.reason or "").inc()
            self._count_usage(task, status)
            if status.start_time and status.completion_time:
                metrics.TASK_DURATION.labels(after.value).observe(
                    (status.completion_time - status.start_time).total_seconds())
        if task.status.running_time is None and status.running_time and task.metadata.creation_timestamp:
            metrics.TIME_TO_RUNNING.labels(self.path).observe(
                (status.running_time - task.metadata.creation_timestamp).total_seconds())

    def _post_event(self) -> None:
        """One event per step, for the phase it ended in: a step that provisions and starts the
        agent says "AgentStarted", not also "Provisioning" a moment before (a warning on the way
        is posted instead of a normal event after it)."""
        event, self.event = self.event, None
        if event is not None:
            self.rt.post_event(self.current, *event)

    @staticmethod
    def _count_usage(task: AgentTask, status: AgentTaskStatus) -> None:
        used = status.usage
        if used is None:
            return
        labels = (task.metadata.namespace, requester_label(task.spec.audit.requested_by))
        for kind, count in (("input", used.tokens.input_tokens), ("output", used.tokens.output_tokens),
                            ("cache_read", used.tokens.cache_read_input_tokens),
                            ("cache_creation", used.tokens.cache_creation_input_tokens)):
            if count:
                metrics.AGENT_TOKENS.labels(*labels, kind).inc(count)
        # always touched: an agent that reports no cost (a scripted one) adds 0, so the series (and
        # the dashboard's cost panel) exists for every namespace that ran a task
        metrics.AGENT_COST.labels(*labels).inc(used.cost_usd or 0.0)
        if used.sandbox_seconds:
            metrics.SANDBOX_SECONDS.labels(*labels).inc(used.sandbox_seconds)


def requester_label(requested_by: str | None) -> str:
    """`spec.audit.requestedBy` as a metric label: a login-shaped value, or "" (never free text)."""
    if not requested_by:
        return ""
    value = logs.redact(requested_by)[:64]
    return value if _LOGIN.fullmatch(value) else "other"
