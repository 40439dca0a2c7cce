"""The per-task supervisor loop: observe -> plan -> write status -> act -> wait.

Run by the kopf daemon in `handlers.py` for every AgentTask that needs supervision. All
state lives in the resource status and in Daytona; a restarted supervisor (operator restart,
failover) picks up from there. Status is written only when it changed, as a merge patch that
replaces the whole status and is guarded by the resourceVersion it was computed from.

Transient trouble (Daytona 429/5xx/timeouts, apiserver hiccups) is retried here with
exponential backoff and full jitter, honouring Retry-After, without counting against
`backoffLimit`; that is reserved for lost attempts, which the plan decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import context, logs, metrics, plan
from .admission import AdmissionQueue, Waiting
from .api import AgentTask, AgentTaskStatus, Phase, Result
from .errors import Fatal, Retryable
from .kube import Conflict, Kube
from .logtail import LogFollower
from .sandboxes import Sandboxes
from .settings import Settings
from .statuspatch import merge_patch

EventPoster = Callable[[Mapping[str, Any], str, str, str], None]
# Called after a status with a new phase was written: (task before, new status, the object as
# written). Optional (the GitHub progress notifier); it must not raise.
TransitionHook = Callable[[AgentTask, AgentTaskStatus, Mapping[str, Any]], Awaitable[None]]


@dataclass
class Runtime:
    """Dependencies shared by all supervisors of one operator process."""

    settings: Settings
    kube: Kube
    sandboxes: Sandboxes
    queue: AdmissionQueue
    runner: bytes
    post_event: EventPoster
    config: plan.PlanConfig = field(init=False)
    pools: PoolClaims = field(default_factory=lambda: PoolClaims())
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    on_transition: TransitionHook | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.config = plan.PlanConfig(
            default_deadline_seconds=s.default_active_deadline_seconds,
            default_keep_for_seconds=s.default_keep_for_seconds,
            poll_interval_seconds=s.poll_interval_seconds,
            max_poll_interval_seconds=s.max_poll_interval_seconds,
            log_tail_interval_seconds=s.log_tail_interval_seconds,
            default_ttl_seconds=s.default_ttl_seconds_after_finished,
        )


class PoolClaims:
    """Counts creates in flight that expect a warm-pool sandbox, so concurrent supervisors do
    not all count the same ready sandbox as theirs (hit/miss metrics stay truthful)."""

    def __init__(self) -> None:
        self._inflight: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def claim(self, sandboxes: Sandboxes, snapshot: str) -> bool:
        async with self._lock:
            ready = await sandboxes.warm_pool_ready(snapshot)
            if ready - self._inflight.get(snapshot, 0) <= 0:
                return False
            self._inflight[snapshot] = self._inflight.get(snapshot, 0) + 1
            return True

    def release(self, snapshot: str) -> None:
        self._inflight[snapshot] = max(0, self._inflight.get(snapshot, 0) - 1)


class Backoff:
    """Exponential backoff with full jitter; the server's Retry-After is a lower bound."""

    def __init__(self, base: float, cap: float):
        self.base, self.cap, self.failures = base, cap, 0

    def next(self, retry_after: float | None = None) -> float:
        self.failures += 1
        delay = random.uniform(self.base / 2, min(self.cap, self.base * 2 ** (self.failures - 1)))
        return max(delay, retry_after or 0.0)

    def reset(self) -> None:
        self.failures = 0


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def parse_result(raw: Mapping[str, Any] | None) -> Result | None:
    """The runner's result.json as a status Result (strings capped and redacted)."""
    if not raw:
        return None

    def text(key: str, limit: int = 2048) -> str | None:
        value = raw.get(key)
        return logs.redact(str(value))[:limit] if value not in (None, "") else None

    files = raw.get("changedFiles")
    changed = tuple(logs.redact(str(f))[:512] for f in files[:200]) if isinstance(files, list) else None
    return Result(outcome=text("outcome", 64), branch=text("branch", 255), commit=text("commit", 64),
                  pull_request_url=text("pullRequestUrl"), summary=text("summary", 4096), changed_files=changed)


class Supervisor:
    """Supervises one AgentTask until it needs no more supervision or is stopped."""

    def __init__(self, rt: Runtime, *, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]):
        self.rt = rt
        self.live = body
        self.current: dict[str, Any] = dict(body)
        self.logger = logger
        meta = body["metadata"]
        self.key = (meta["namespace"], meta["name"])
        self.follower: LogFollower | None = None
        self.backoff = Backoff(rt.settings.retry_base_seconds, rt.settings.retry_max_seconds)
        self.last_log_write: dt.datetime | None = None
        self.last_error_write: dt.datetime | None = None
        self.path = "unknown"  # how the sandbox was created, for time-to-running by path
        # what this step's observation fetched, so its actions do not fetch it again
        self.seen: Any | None = None  # the SDK sandbox of the current attempt
        self.seen_session: tuple[str, bool, plan.CommandObs | None] | None = None  # (session, exists, command)
        self.agent_started: tuple[str, dt.datetime] | None = None  # (command id, when) of the command started here

    # --------------------------------------------------------------- main loop

    async def run(self, stopped: Any) -> None:
        try:
            while not stopped.is_set():
                wait = await self.step()
                if wait is None:
                    return
                await self._sleep(stopped, wait)
        finally:
            if self.follower is not None:
                await self.follower.stop()

    def _latest(self) -> AgentTask:
        if _rv(self.live) > _rv(self.current):
            self.current = dict(self.live)
        return AgentTask.from_body(self.current)

    async def step(self) -> float | None:
        """One reconcile; returns seconds to wait before the next one, or None when done."""
        task = self._latest()
        if task.metadata.deletion_timestamp is not None:
            return None
        self.seen = self.seen_session = None
        try:
            obs = await self.observe(task)
            decision = plan.decide(task, obs, now=self.rt.clock(), config=self.rt.config)
            await self.write(task, decision.status, log_tail_changed=obs.log_tail is not None)
            for action in decision.actions:
                await self.act(action, task)
            self.backoff.reset()
        except Conflict:
            fresh = await self.rt.kube.get_task(*self.key)
            if fresh is None:
                return None
            self.current = fresh
            return 0
        except Retryable as exc:
            metrics.RECONCILE_ERRORS.labels("retryable").inc()
            delay = self.backoff.next(exc.retry_after)
            self.logger.warning("transient error, retrying in %.1fs: %s", delay, logs.redact(str(exc)))
            await self._record_error(task, str(exc))
            return delay
        except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
            # a bug or an unexpected response shape: keep supervising with backoff, never crash-loop
            metrics.RECONCILE_ERRORS.labels("unexpected").inc()
            delay = self.backoff.next()
            self.logger.exception("unexpected error, retrying in %.1fs: %s", delay, logs.redact(repr(exc)))
            return delay
        except Fatal as exc:
            metrics.RECONCILE_ERRORS.labels("fatal").inc()
            self.logger.error("task failed: %s", logs.redact(str(exc)))
            decision = plan.fail(task, reason=exc.reason, message=logs.redact(str(exc)),
                                 now=self.rt.clock(), config=self.rt.config)
            await self.write(task, decision.status, log_tail_changed=False)
            return 0
        if decision.release_slot:
            self.rt.queue.release(self.key)
        task = AgentTask.from_body(self.current)
        if any(isinstance(a, plan.DeleteTask) for a in decision.actions):
            return None
        if not plan.needs_supervision(task, self.rt.config) and not decision.actions:
            return None
        return decision.requeue_after if decision.requeue_after is not None else self.rt.settings.poll_interval_seconds

    async def _sleep(self, stopped: Any, seconds: float) -> None:
        if seconds <= 0:
            return
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stopped.wait())]
        if self.follower is not None and not self.follower.exited.is_set():
            waits.append(asyncio.ensure_future(self.follower.exited.wait()))
        phase = AgentTask.from_body(self.current).status.phase
        if phase in (Phase.QUEUED, None, Phase.PENDING):
            waits.append(asyncio.ensure_future(self.rt.queue.wait_for_turn(self.key, seconds)))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(*waits, return_exceptions=True)

    # ------------------------------------------------------------------ observe

    async def observe(self, task: AgentTask) -> plan.Observation:
        status = task.status
        phase = status.phase
        rt = self.rt
        if phase in (None, Phase.PENDING, Phase.QUEUED):
            if task.spec.suspend or phase is None:
                return plan.Observation()
            created = task.metadata.creation_timestamp or rt.clock()
            admission = rt.queue.request(Waiting(key=self.key, created=created, uid=task.metadata.uid))
            return plan.Observation(admission=admission)
        attempt = max(status.attempts, 1)
        if phase.terminal:
            name = status.sandbox.name if status.sandbox and status.sandbox.name else None
            sandbox = self.seen = await rt.sandboxes.find(name) if name else None
            return plan.Observation(sandbox=rt.sandboxes.observe(sandbox) if sandbox is not None else None)
        name = plan.sandbox_name(task.metadata.uid, attempt)
        sandbox = self.seen = await rt.sandboxes.find(name)
        if sandbox is None:
            return plan.Observation()
        sandbox_obs = rt.sandboxes.observe(sandbox)
        if sandbox_obs.state not in plan.READY_STATES:
            return plan.Observation(sandbox=sandbox_obs)
        sid = plan.session_id(attempt)
        exists, command = await rt.sandboxes.command(sandbox, sid)
        self.seen_session = (sid, exists, command)
        result: Result | None = None
        log_tail: str | None = None
        if command is not None:
            follower = self._follow(sandbox, sid, command.id)
            if command.exit_code is not None:
                await follower.stop()
                final = await rt.sandboxes.logs(sandbox, sid, command.id)
                if final:
                    follower.replace(final)
                result = parse_result(await rt.sandboxes.download_json(sandbox, context.result_path(rt.settings)))
            log_tail = follower.tail() or None
        started = self.agent_started
        return plan.Observation(sandbox=sandbox_obs, command=command, session_exists=exists, result=result,
                                log_tail=log_tail, last_log_write=self.last_log_write,
                                agent_started=started[1] if started and command and command.id == started[0] else None)

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
            spec = context.sandbox_spec(task, name=action.name, attempt=action.attempt, settings=rt.settings)
            self.path = "cold"
            claimed = None
            if spec.snapshot and spec.snapshot in rt.settings.warm_pools:
                claimed = await rt.pools.claim(rt.sandboxes, spec.snapshot)
                self.path = "warm-pool" if claimed else "cold"
                metrics.WARM_POOL.labels("hit" if claimed else "miss").inc()
            try:
                sandbox = await rt.sandboxes.ensure(spec)
            finally:
                if claimed:
                    rt.pools.release(spec.snapshot or "")
            self.logger.info("sandbox %s ready", action.name, extra={"sandbox_id": sandbox.id,
                                                                     "attempt": action.attempt})
        elif isinstance(action, plan.StartAgent):
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
        elif isinstance(action, plan.StopSandbox):
            if self.follower is not None:
                await self.follower.stop()
            await rt.sandboxes.stop_if_exists(action.name)
            self.logger.info("sandbox %s stopped and kept for debugging", action.name)

    async def _sandbox_env(self, task: AgentTask) -> dict[str, str]:
        ns = task.metadata.namespace
        env = context.base_env(self.rt.settings)
        for var in task.spec.agent.env:
            if var.value_from is not None:
                ref = var.value_from.secret_key_ref
                value = await self.rt.kube.read_secret_key(ns, ref.name, ref.key, optional=ref.optional)
                if value is not None:
                    env[var.name] = value
            elif var.value is not None:
                env[var.name] = var.value
        creds = task.spec.repository.credentials_secret_ref
        if creds is not None:
            token = await self.rt.kube.read_secret_key(ns, creds.name, creds.key)
            if token is not None:
                env["AGENTTASK_GIT_TOKEN"] = token
        return env

    def _seen(self, name: str) -> Any | None:
        """The sandbox called `name` if this step's observation fetched it."""
        return self.seen if self.seen is not None and self.seen.name == name else None

    async def _start_agent(self, task: AgentTask, action: plan.StartAgent) -> None:
        rt = self.rt
        name = plan.sandbox_name(task.metadata.uid, action.attempt)
        sandbox = self._seen(name) or await rt.sandboxes.find(name)
        if sandbox is None:
            return  # lost in between: the next observation handles it
        seen = self.seen_session
        if seen is not None and seen[0] == action.session_id:
            session: tuple[bool, plan.CommandObs | None] = seen[1:]
        else:
            session = await rt.sandboxes.command(sandbox, action.session_id)
        command = session[1]
        if command is None:
            env = await self._sandbox_env(task)
            files = context.context_files(task, attempt=action.attempt, settings=rt.settings, runner=rt.runner,
                                          env=env)
            await rt.sandboxes.upload(sandbox, files)
            await self._clone(task, sandbox)
        command_id = await rt.sandboxes.start_command(sandbox, action.session_id, context.runner_command(rt.settings),
                                                      session=session)
        if command is None:  # started now (not adopted): status.runningTime is this moment, not the next look
            self.agent_started = (command_id, rt.clock())
        self.logger.info("agent started", extra={"sandbox_id": sandbox.id, "attempt": action.attempt,
                                                 "command_id": command_id})

    async def _clone(self, task: AgentTask, sandbox: Any) -> None:
        rt = self.rt
        repo = rt.settings.repo_dir
        code, _ = await rt.sandboxes.exec(sandbox, f"test -d {repo}/.git")
        if code == 0:
            return
        username = password = None
        creds = task.spec.repository.credentials_secret_ref
        if creds is not None:
            password = await rt.kube.read_secret_key(task.metadata.namespace, creds.name, creds.key)
            username = "x-access-token"
        await rt.sandboxes.clone(sandbox, url=task.spec.repository.url, path=repo,
                                 branch=task.spec.repository.base_branch, username=username, password=password)

    # ------------------------------------------------------------------- status

    async def write(self, task: AgentTask, status: AgentTaskStatus, *, log_tail_changed: bool) -> None:
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
        now = self.rt.clock()
        if "logTail" in patch:
            self.last_log_write = now
        self._on_transition(task, status)
        if self.rt.on_transition is not None and status.phase != task.status.phase:
            await self.rt.on_transition(task, status, body)

    async def _record_error(self, task: AgentTask, message: str) -> None:
        now = self.rt.clock()
        if self.last_error_write is not None and (now - self.last_error_write).total_seconds() < 30:
            return
        self.last_error_write = now
        status = task.status.model_copy(update={"last_error": logs.redact(message)[:1024]})
        with contextlib.suppress(Retryable, Fatal):
            await self.write(task, status, log_tail_changed=False)

    def _on_transition(self, task: AgentTask, status: AgentTaskStatus) -> None:
        before, after = task.status.phase, status.phase
        if before == after or after is None:
            return
        warning = after == Phase.FAILED or status.reason == "SandboxLost"
        self.rt.post_event(self.current, "Warning" if warning else "Normal", status.reason or after.value,
                           logs.redact(status.message or after.value))
        self.logger.info("phase %s -> %s: %s", before, after.value, status.message)
        if after.terminal:
            metrics.TASKS_FINISHED.labels(after.value, status.reason or "").inc()
            if status.start_time and status.completion_time:
                metrics.TASK_DURATION.labels(after.value).observe(
                    (status.completion_time - status.start_time).total_seconds())
        if task.status.running_time is None and status.running_time and task.metadata.creation_timestamp:
            metrics.TIME_TO_RUNNING.labels(self.path).observe(
                (status.running_time - task.metadata.creation_timestamp).total_seconds())
        if status.reason == "SandboxLost":
            metrics.ATTEMPTS_LOST.inc()
