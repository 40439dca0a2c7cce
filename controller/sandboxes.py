"""The one adapter over the official `daytona` SDK (`AsyncDaytona`).

Every Daytona call of the operator goes through `Sandboxes`, which
- names and labels sandboxes (DESIGN.md §1) and creates them idempotently (look up, then
  create; a 409 on create means a concurrent create won, so adopt it);
- translates SDK errors by who is at fault (`failures.classify`, one table): 404 on a lookup ->
  `None`/"already gone"; transient -> `errors.Retryable` (with any Retry-After the server sent);
  operator-wide -> `errors.OperatorWide`; the sandbox gone under an action -> `AttemptLost`;
  the task's own fault -> `TaskFault`; anything else -> `Fatal`;
- retries idempotent calls in place with the one retry policy (`retry.py`);
- lists and deletes many sandboxes without an `AsyncSandbox` each (`list_metadata`,
  `delete_by_id`, through the SDK's generated REST client: `daytona_rest.py`);
- reports every outcome to `health.Health` (operator-wide causes, outage detection), counts every
  request by operation and outcome, and times sandbox creation (metrics.py).

It does not decide anything: the plan says what to do, this module only does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from daytona import (
    AsyncDaytona,
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    DaytonaConfig,
    DaytonaError,
    FileUpload,
    ListSandboxesQuery,
    Resources,
    SessionExecuteRequest,
)
from daytona.common.errors import DaytonaConnectionError, DaytonaTimeoutError

from . import failures, logs, metrics, retry
from .daytona_rest import ListedSandbox, list_page, parse_time, rest, sandbox_api
from .daytona_rest import delete as rest_delete
from .errors import AttemptLost, Fatal, OperatorError, OperatorWide, Retryable, TaskFault
from .failures import Kind
from .health import Health
from .plan import CommandObs, SandboxObs

T = TypeVar("T")
log = logging.getLogger(__name__)

LABEL_UID = "agenttask.io/task-uid"
LABEL_NAMESPACE = "agenttask.io/namespace"
LABEL_NAME = "agenttask.io/name"
LABEL_INSTANCE = "agenttask.io/instance"
LABEL_ATTEMPT = "agenttask.io/attempt"
LABEL_ISSUE = "agenttask.io/issue"
LABEL_REQUESTED_BY = "agenttask.io/requested-by"
LABEL_INSTALLATION = "agenttask.io/installation-id"


@dataclass(frozen=True)
class SandboxSpec:
    """Everything needed to create one sandbox (built by the supervisor from the task)."""

    name: str
    labels: Mapping[str, str]
    env: Mapping[str, str]
    snapshot: str | None
    image: str | None
    cpu: int | None
    memory: int | None
    disk: int | None
    auto_stop_minutes: int
    auto_delete_minutes: int
    ttl_minutes: int | None
    network_block_all: bool
    network_allow_list: tuple[str, ...]


def _error_fields(exc: BaseException) -> tuple[int | None, str, str | None, str | None]:
    """(status, message, code, source) of an SDK error; message redacted and clipped."""
    status = getattr(exc, "status_code", None)
    message = logs.redact(str(getattr(exc, "message", None) or exc or type(exc).__name__))[:300]
    return status, message, getattr(exc, "code", None), getattr(exc, "source", None)


def translate(operation: str, exc: BaseException, *, now: float | None = None) -> OperatorError:
    """The operator's error for an SDK error (see `failures.classify`; no secret material)."""
    status, message, code, source = _error_fields(exc)
    timeout = isinstance(exc, DaytonaTimeoutError | TimeoutError)
    transport = isinstance(exc, DaytonaConnectionError | OSError | aiohttp.ClientError) and status is None
    verdict = failures.classify(operation, status=status, message=message, timeout=timeout or transport,
                                code=code, source=source)
    text = f"daytona {operation} failed" + (f" (HTTP {status})" if status else "") + f": {message}"
    headers = getattr(exc, "headers", None)
    asked = retry.retry_after_seconds(headers, now=time.time() if now is None else now)
    if verdict.kind == Kind.TRANSIENT:
        return Retryable(text, retry_after=asked, status=status, code=code)
    if verdict.kind == Kind.OPERATOR_WIDE:
        assert verdict.cause is not None
        return OperatorWide(text, cause=verdict.cause, status=status, retry_after=asked)
    if verdict.kind == Kind.ATTEMPT_LOST:
        return AttemptLost(text, status=status)
    if verdict.kind == Kind.TASK:
        return TaskFault(text, reason=verdict.reason or "SandboxRejected", status=status)
    return _Outcome(text, kind=verdict.kind, status=status)


def _size(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class _Outcome(Fatal):
    """A verdict that is an answer, not an error, for some callers (missing, done, name taken);
    it escapes as a plain `Fatal` when the caller did not expect it."""

    def __init__(self, message: str, *, kind: Kind, status: int | None):
        super().__init__(message, reason="SandboxError", status=status)
        self.kind = kind


# Pooled connections to Daytona beside the log streams (see `Sandboxes.connect`)
REQUEST_CONNECTIONS = 100

# operations that must not be repeated blindly: the supervisor re-observes and adopts instead
NOT_RETRIED = frozenset({"create", "session_create", "session_exec", "git_clone", "logs_follow"})


class Sandboxes:
    """Daytona operations used by the operator, with error translation, retries and metrics."""

    def __init__(self, client: AsyncDaytona, *, request_timeout: float = 30.0,
                 policy: retry.RetryPolicy | None = None, health: Health | None = None):
        self._client = client
        self._timeout = request_timeout
        self._policy = policy or retry.RetryPolicy()
        self.health = health or Health()

    @classmethod
    def connect(cls, *, api_url: str | None, api_key: str | None, target: str | None = None,
                request_timeout: float = 30.0, policy: retry.RetryPolicy | None = None,
                health: Health | None = None, streams: int = 0) -> Sandboxes:
        """`streams`: how many log streams may be open at once (one per running agent). Each holds
        one of the SDK's pooled connections for as long as its agent runs, so the pool is that many
        plus `REQUEST_CONNECTIONS` for every other call: with the SDK's default of 250, the 251st
        running agent's stream, and then every create and get, waited for a connection that only
        an agent's exit would free."""
        logs.register_secret(api_key)
        config = DaytonaConfig(api_url=api_url, api_key=api_key, target=target,
                               connection_pool_maxsize=max(streams, 0) + REQUEST_CONNECTIONS)
        return cls(AsyncDaytona(config), request_timeout=request_timeout, policy=policy, health=health)

    async def close(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]

    async def _once(self, operation: str, make: Callable[[], Awaitable[T]]) -> T:
        started = time.monotonic()
        try:
            result = await make()
        except (DaytonaError, TimeoutError, OSError, aiohttp.ClientError) as exc:
            error = translate(operation, exc)
            self._report(operation, error)
            raise error from exc
        metrics.DAYTONA_REQUESTS.labels(operation, "ok").inc()
        metrics.DAYTONA_LATENCY.labels(operation).observe(time.monotonic() - started)
        self.health.daytona_ok(operation=operation)
        return result

    def _report(self, operation: str, error: OperatorError) -> None:
        if isinstance(error, Retryable):
            outcome = "retryable"
            self.health.daytona_transient(str(error))
        elif isinstance(error, OperatorWide):
            outcome = "operator_wide"
            self.health.operator_wide(error.cause, str(error))
        elif isinstance(error, AttemptLost):
            outcome = "attempt_lost"
        elif isinstance(error, _Outcome) and error.kind == Kind.MISSING:
            outcome = "not_found"
        elif isinstance(error, _Outcome) and error.kind in (Kind.DONE, Kind.NAME_TAKEN):
            outcome = "conflict"
        else:
            outcome = "error"
        metrics.DAYTONA_REQUESTS.labels(operation, outcome).inc()

    async def _call(self, operation: str, make: Callable[[], Awaitable[T]], *,
                    missing_ok: bool = False, done_ok: bool = False) -> T | None:
        """One Daytona operation. Idempotent operations are retried in place on transient errors
        (`retry.retry_call`: backoff with full jitter, Retry-After honoured, given up at once when
        the server asks for longer than the policy waits in place) so that a multi-step action
        does not restart from scratch on every hiccup; the others surface `Retryable` at once and
        the supervisor re-observes before trying again (adopt-or-create). `missing_ok`: a 404
        answers None; `done_ok`: "already in the wanted state" answers None."""
        policy = self._policy if operation not in NOT_RETRIED else dataclasses.replace(self._policy, attempts=1)
        try:
            return await retry.retry_call(lambda: self._once(operation, make), policy=policy)
        except _Outcome as exc:
            if (missing_ok and exc.kind == Kind.MISSING) or (done_ok and exc.kind == Kind.DONE):
                return None
            raise

    # ----------------------------------------------------------------- sandboxes

    async def find(self, name: str) -> Any | None:
        """The sandbox called `name`, or None."""
        return await self._call("get", lambda: self._client.get(name, request_timeout=self._timeout),
                                missing_ok=True)

    @staticmethod
    def observe(sandbox: Any) -> SandboxObs:
        state = getattr(sandbox.state, "value", sandbox.state)
        return SandboxObs(id=sandbox.id, name=sandbox.name, state=str(state or "unknown"),
                          error_reason=getattr(sandbox, "error_reason", None),
                          created_at=parse_time(getattr(sandbox, "created_at", None)),
                          cpu=_size(getattr(sandbox, "cpu", None)), memory=_size(getattr(sandbox, "memory", None)),
                          disk=_size(getattr(sandbox, "disk", None)))

    async def ensure(self, spec: SandboxSpec) -> tuple[Any, bool]:
        """The sandbox called `spec.name`, created unless it exists (never a second one), and
        whether this call created it. Daytona refuses a second sandbox of a name with 409, so
        the create itself is the look-up: a taken name is adopted (a crashed step's create, or
        a peer's)."""
        base: dict[str, Any] = {
            "name": spec.name,
            "labels": dict(spec.labels),
            "env_vars": dict(spec.env),
            "auto_stop_interval": spec.auto_stop_minutes,
            "auto_delete_interval": spec.auto_delete_minutes,
            "network_block_all": spec.network_block_all or None,
            "network_allow_list": ",".join(spec.network_allow_list) or None,
            "language": "python",
        }
        if spec.ttl_minutes is not None:
            base["ttl_minutes"] = spec.ttl_minutes
        params: CreateSandboxFromSnapshotParams | CreateSandboxFromImageParams
        if spec.image:
            resources = Resources(cpu=spec.cpu, memory=spec.memory, disk=spec.disk) if (
                spec.cpu or spec.memory or spec.disk) else None
            params = CreateSandboxFromImageParams(image=spec.image, resources=resources, **base)
        else:
            params = CreateSandboxFromSnapshotParams(snapshot=spec.snapshot, **base)
        started = time.monotonic()
        try:
            created = await self._call("create", lambda: self._client.create(params, timeout=self._create_timeout))
        except _Outcome as exc:
            if exc.kind != Kind.NAME_TAKEN:
                raise
            adopted = await self.find(spec.name)  # an earlier or a concurrent create of the name
            if adopted is None:
                raise Retryable(f"sandbox {spec.name} was taken but is not visible yet") from exc
            return adopted, False
        metrics.SANDBOX_CREATE_SECONDS.observe(time.monotonic() - started)
        return created, True

    @property
    def _create_timeout(self) -> float:
        return self._timeout * 4

    async def delete_if_exists(self, name_or_sandbox: str | Any) -> bool:
        """Delete a sandbox; True if this call asked Daytona to delete it. 404 counts as success;
        a sandbox already being destroyed is left to Daytona."""
        sandbox = await self.find(name_or_sandbox) if isinstance(name_or_sandbox, str) else name_or_sandbox
        if sandbox is None or self.observe(sandbox).state in ("destroying", "destroyed"):
            return False
        await self._call("delete", lambda: self._client.delete(sandbox, timeout=self._timeout), missing_ok=True)
        return True

    async def delete_by_id(self, sandbox_id: str, *, state: str | None = None) -> bool:
        """Delete the sandbox with id `sandbox_id` (one REST call, no `AsyncSandbox` needed: what
        `list_metadata` found); True if this call asked Daytona to delete it. `state` is what the
        listing said of it: a sandbox already destroying or destroyed is left to Daytona and no
        request is made. 404 is success (already gone: False). Retried in place like every
        idempotent call. Does not look the sandbox up first, nor wait for it to be destroyed."""
        if state in ("destroying", "destroyed"):
            return False
        api = sandbox_api(self._client)
        answer = await self._call("delete", lambda: rest(rest_delete(api, sandbox_id, timeout=self._rest_timeout)),
                                  missing_ok=True)
        return answer is not None  # None: 404

    @property
    def _rest_timeout(self) -> float | None:
        """`_request_timeout` of a generated-client call: a positive float, or None (no timeout)."""
        return float(self._timeout) if self._timeout > 0 else None

    async def keep(self, name: str, *, delete_after_minutes: int) -> bool:
        """Stop a sandbox kept for debugging, and let Daytona delete it `delete_after_minutes`
        after the stop if the operator is gone by then (its auto-delete counts from the stop).
        False if the sandbox is gone. Stopping a sandbox that is already stopped is done."""
        sandbox = await self.find(name)
        if sandbox is None:
            return False
        await self._call("set_auto_delete", lambda: sandbox.set_auto_delete_interval(
            delete_after_minutes, request_timeout=self._timeout), missing_ok=True)
        if self.observe(sandbox).state != "stopped":
            await self._call("stop", lambda: self._client.stop(sandbox, timeout=self._timeout),
                             missing_ok=True, done_ok=True)
        return True

    async def suspend(self, name: str) -> bool:
        """Stop a suspended task's sandbox and keep it: Daytona's auto-delete (counted from the stop)
        and TTL are switched off while it is suspended. False if the sandbox is gone."""
        sandbox = await self.find(name)
        if sandbox is None:
            return False
        await self._call("set_auto_delete", lambda: sandbox.set_auto_delete_interval(
            -1, request_timeout=self._timeout), missing_ok=True)
        await self._best_effort("ttl", lambda: sandbox.set_ttl(0, request_timeout=self._timeout))
        if self.observe(sandbox).state not in ("stopped", "archived"):
            await self._call("stop", lambda: self._client.stop(sandbox, timeout=self._timeout),
                             missing_ok=True, done_ok=True)
        return True

    async def resume(self, name: str, *, auto_delete_minutes: int, ttl_minutes: int) -> bool:
        """Start a suspended task's sandbox again with its safety net restored. False if gone."""
        sandbox = await self.find(name)
        if sandbox is None:
            return False
        await self._call("set_auto_delete", lambda: sandbox.set_auto_delete_interval(
            auto_delete_minutes, request_timeout=self._timeout), missing_ok=True)
        await self._best_effort("ttl", lambda: sandbox.set_ttl(ttl_minutes, request_timeout=self._timeout))
        if self.observe(sandbox).state not in ("started", "starting"):
            await self._call("start", lambda: self._client.start(sandbox, timeout=self._create_timeout),
                             missing_ok=True, done_ok=True)
        return True

    async def _best_effort(self, operation: str, make: Callable[[], Awaitable[Any]]) -> None:
        """A call only some Daytona deployments serve (TTL: not in the open-source API): a refusal
        is logged, not raised; transient and operator-wide errors still are."""
        try:
            await self._call(operation, make, missing_ok=True)
        except Fatal as exc:
            log.info("daytona %s not applied: %s", operation, exc)

    async def list_labelled(self, labels: Mapping[str, str]) -> AsyncIterator[Any]:
        """Every sandbox carrying all `labels`, as `AsyncSandbox` objects (follows the cursor through
        all pages). Any error ends the iteration with that error: a caller never mistakes a
        partial list for a full one. For a task's few sandboxes; listings of many use
        `list_metadata` (an `AsyncSandbox` per item is heavy)."""
        query = ListSandboxesQuery(labels=dict(labels), limit=200)
        try:
            async for sandbox in self._client.list(query, request_timeout=self._timeout):
                yield sandbox
        except (DaytonaError, TimeoutError, OSError, aiohttp.ClientError) as exc:
            error = translate("list", exc)
            self._report("list", error)
            raise error from exc
        metrics.DAYTONA_REQUESTS.labels("list", "ok").inc()
        self.health.daytona_ok(operation="list")

    async def list_metadata(self, labels: Mapping[str, str], *, page_size: int = 200) -> AsyncIterator[ListedSandbox]:
        """Every sandbox carrying all `labels`, as metadata only (`ListedSandbox`), following the
        cursor through all pages of `page_size` (Daytona's maximum is 200).

        Each page is one `list` request (`daytona_rest.list_page`), counted and reported to
        `health` like every call and retried in place on transient errors (the cursor names the
        page, so a retried page is the same page); the next page is asked for as soon as a page's
        cursor is known, while the caller reads that page. An error that outlasts the retries, on
        any page, ends the iteration with that error: a caller never mistakes a partial list for a
        full one. Does not build an `AsyncSandbox` or an SDK model per item (`list_labelled`
        does), hold more than two pages at a time, or list Daytona's unclaimed warm-pool sandboxes."""
        api = sandbox_api(self._client)
        query = json.dumps(dict(labels), sort_keys=True)
        ahead: asyncio.Future[tuple[list[ListedSandbox], str | None] | None] | None = asyncio.ensure_future(
            self._call("list", self._page_of(api, query, None, page_size)))
        try:
            while ahead is not None:
                page = await ahead
                assert page is not None
                boxes, cursor = page
                ahead = asyncio.ensure_future(self._call("list", self._page_of(api, query, cursor, page_size))
                                              ) if cursor else None
                for box in boxes:
                    yield box
        finally:
            if ahead is not None:  # the caller stopped early: drop the page asked for, and its error
                ahead.cancel()
                ahead.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _page_of(self, api: Any, labels: str, cursor: str | None, limit: int
                 ) -> Callable[[], Awaitable[tuple[list[ListedSandbox], str | None]]]:
        """A fresh request for one page at each call (`retry_call` makes it again on a retry)."""
        return lambda: rest(list_page(api, labels=labels, cursor=cursor, limit=limit, timeout=self._rest_timeout))

    # ------------------------------------------------------------------ commands

    async def command(self, sandbox: Any, session_id: str) -> tuple[bool, CommandObs | None]:
        """(session exists, the first command in it) — the agent's command of an attempt."""
        session = await self._call("session_get", lambda: sandbox.process.get_session(
            session_id, request_timeout=self._timeout), missing_ok=True)
        if session is None:
            return False, None
        commands = list(getattr(session, "commands", None) or [])
        if not commands:
            return True, None
        first = commands[0]
        return True, CommandObs(id=first.id, exit_code=first.exit_code)

    async def upload(self, sandbox: Any, files: Mapping[str, bytes]) -> None:
        uploads = [FileUpload(source=data, destination=path) for path, data in files.items()]
        await self._call("upload", lambda: sandbox.fs.upload_files(uploads, timeout=int(self._timeout * 4)))

    async def exec(self, sandbox: Any, command: str, *, timeout: int = 60) -> tuple[int, str]:
        response = await self._call("exec", lambda: sandbox.process.exec(command, timeout=timeout))
        assert response is not None
        return int(response.exit_code or 0), str(response.result or "")

    async def clone(self, sandbox: Any, *, url: str, path: str, branch: str | None,
                    username: str | None, password: str | None) -> None:
        await self._call("git_clone", lambda: sandbox.git.clone(
            url, path, branch=branch, username=username, password=password,
            request_timeout=self._timeout * 20))

    async def start_command(self, sandbox: Any, session_id: str, command: str, *,
                            session: tuple[bool, CommandObs | None] | None = None) -> str:
        """Run `command` asynchronously in a fresh or existing session; adopt one already started.
        `session` is what `command()` returned if the caller just looked (saves the look-up)."""
        exists, running = session if session is not None else await self.command(sandbox, session_id)
        if running is not None:
            return running.id
        if not exists:
            await self._call("session_create", lambda: sandbox.process.create_session(
                session_id, request_timeout=self._timeout), done_ok=True)
        response = await self._call("session_exec", lambda: sandbox.process.execute_session_command(
            session_id, SessionExecuteRequest(command=command, run_async=True), timeout=int(self._timeout)))
        assert response is not None
        return str(response.cmd_id)

    async def follow_logs(self, sandbox: Any, session_id: str, command_id: str,
                          on_output: Callable[[str], None]) -> None:
        """Stream the command's output (replayed from the start) until it exits."""
        await self._call("logs_follow", lambda: sandbox.process.get_session_command_logs_async(
            session_id, command_id, on_output, on_output))

    async def logs(self, sandbox: Any, session_id: str, command_id: str) -> str:
        response = await self._call("logs", lambda: sandbox.process.get_session_command_logs(
            session_id, command_id), missing_ok=True)
        if response is None:
            return ""
        return str(getattr(response, "output", None) or "")

    async def download_json(self, sandbox: Any, path: str, *, limit: int = 256 * 1024) -> dict[str, Any] | None:
        """A small JSON file from the sandbox, or None when absent, larger than `limit` or not a
        JSON object. Streamed: at most `limit` + one chunk is ever held in memory."""

        async def read() -> bytes | None:
            chunks: list[bytes] = []
            size = 0
            async for chunk in await sandbox.fs.download_file_stream(path, timeout=int(self._timeout)):
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
            return b"".join(chunks)

        data = await self._call("download", read, missing_ok=True)
        if not data:
            return None
        with contextlib.suppress(ValueError):
            parsed = json.loads(data)
            if isinstance(parsed, dict):
                return parsed
        return None

    # ---------------------------------------------------------------- warm pools

    async def warm_pools(self) -> list[Any]:
        pools = await self._call("warm_pool_list", lambda: self._client.warm_pool.list())
        return list(pools or [])

    async def ensure_warm_pool(self, snapshot: str, size: int) -> None:
        """Create or resize the pool of `snapshot` (idempotent); size 0 deletes it."""
        existing = next((p for p in await self.warm_pools() if p.snapshot == snapshot), None)
        if existing is None:
            if size > 0:
                await self._call("warm_pool_create", lambda: self._client.warm_pool.create(snapshot, size))
        elif size == 0:
            await self._call("warm_pool_delete", lambda: self._client.warm_pool.delete(existing.id), missing_ok=True)
        elif int(existing.pool) != size:
            await self._call("warm_pool_update", lambda: self._client.warm_pool.update(existing.id, size))

    async def warm_pool_ready(self, snapshot: str) -> int:
        """Ready sandboxes in the pool of `snapshot` (0 when there is no pool)."""
        pool = next((p for p in await self.warm_pools() if p.snapshot == snapshot), None)
        return int(pool.current_size) if pool is not None else 0
