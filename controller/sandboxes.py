"""The one adapter over the official `daytona` SDK (`AsyncDaytona`).

Every Daytona call of the operator goes through `Sandboxes`, which
- names and labels sandboxes (DESIGN.md §1) and creates them idempotently (look up, then
  create; a 409 on create means a concurrent create won, so adopt it);
- translates SDK errors: 404 -> `None`/"already gone", 429/5xx/timeouts/connection errors ->
  `errors.Retryable` (with the server's Retry-After), other 4xx -> `errors.Fatal`;
- counts every request by operation and outcome, and times sandbox creation (metrics.py).

It does not decide anything: the plan says what to do, this module only does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from daytona import (
    AsyncDaytona,
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    FileUpload,
    ListSandboxesQuery,
    Resources,
    SessionExecuteRequest,
)
from daytona.common.errors import (
    DaytonaAuthenticationError,
    DaytonaBadRequestError,
    DaytonaConflictError,
    DaytonaConnectionError,
    DaytonaForbiddenError,
    DaytonaRateLimitError,
    DaytonaTimeoutError,
    DaytonaValidationError,
)

from . import logs, metrics
from .errors import Fatal, Retryable
from .plan import CommandObs, SandboxObs

T = TypeVar("T")

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


def _retry_after(exc: DaytonaError) -> float | None:
    value = (getattr(exc, "headers", None) or {}).get("retry-after") or (
        getattr(exc, "headers", None) or {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def translate(operation: str, exc: BaseException) -> Exception:
    """The operator's error for an SDK error (message built without secret material)."""
    status = getattr(exc, "status_code", None)
    detail = logs.redact(str(getattr(exc, "message", None) or exc))[:300]
    text = f"daytona {operation} failed" + (f" (HTTP {status})" if status else "") + f": {detail}"
    if isinstance(exc, DaytonaRateLimitError) or status == 429:
        return Retryable(text, retry_after=_retry_after(exc) if isinstance(exc, DaytonaError) else None,
                         status=429)
    if isinstance(exc, DaytonaConnectionError | DaytonaTimeoutError | TimeoutError | OSError):
        return Retryable(text, status=status)
    if status is not None and status >= 500:
        return Retryable(text, status=status)
    if isinstance(exc, DaytonaAuthenticationError | DaytonaForbiddenError):
        return Fatal(text, reason="SandboxError", status=status)
    if isinstance(exc, DaytonaBadRequestError | DaytonaValidationError) or (status and 400 <= status < 500):
        return Fatal(text, reason="SandboxError", status=status)
    if isinstance(exc, DaytonaError) and status is None:
        # SDK-side errors without a status (e.g. "entered error state") are not worth retrying blindly
        return Retryable(text)
    return Retryable(text, status=status)


# operations that must not be repeated blindly: the supervisor re-observes and adopts instead
NOT_RETRIED = frozenset({"create", "session_create", "session_exec", "git_clone", "logs_follow"})


class Sandboxes:
    """Daytona operations used by the operator, with error translation and metrics."""

    def __init__(self, client: AsyncDaytona, *, request_timeout: float = 30.0, retries: int = 3):
        self._client = client
        self._timeout = request_timeout
        self._retries = retries

    @classmethod
    def connect(cls, *, api_url: str | None, api_key: str | None, target: str | None = None,
                request_timeout: float = 30.0, retries: int = 3) -> Sandboxes:
        logs.register_secret(api_key)
        config = DaytonaConfig(api_url=api_url, api_key=api_key, target=target)
        return cls(AsyncDaytona(config), request_timeout=request_timeout, retries=retries)

    async def close(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]

    async def _call(self, operation: str, make: Callable[[], Awaitable[T]], *,
                    missing_ok: bool = False) -> T | None:
        """One Daytona operation. Idempotent operations are retried here on transient errors
        (exponential backoff with jitter, Retry-After honoured) so that a multi-step action does
        not restart from scratch on every hiccup; the rest surface `Retryable` at once and the
        supervisor re-observes before trying again (adopt-or-create)."""
        attempts = 1 if operation in NOT_RETRIED else self._retries + 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                result = await make()
            except DaytonaNotFoundError:
                metrics.DAYTONA_REQUESTS.labels(operation, "not_found").inc()
                if missing_ok:
                    return None
                raise Fatal(f"daytona {operation}: not found", status=404) from None
            except (DaytonaError, TimeoutError, OSError) as exc:
                translated = translate(operation, exc)
                if isinstance(translated, Retryable):
                    metrics.DAYTONA_REQUESTS.labels(operation, "retryable").inc()
                    if attempt < attempts:
                        delay = random.uniform(0.5, 1.0) * min(8.0, 0.2 * 2 ** attempt)
                        await asyncio.sleep(max(delay, min(translated.retry_after or 0.0, 30.0)))
                        continue
                else:
                    metrics.DAYTONA_REQUESTS.labels(operation, "error").inc()
                raise translated from None
            metrics.DAYTONA_REQUESTS.labels(operation, "ok").inc()
            metrics.DAYTONA_LATENCY.labels(operation).observe(time.monotonic() - started)
            return result
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- sandboxes

    async def find(self, name: str) -> Any | None:
        """The sandbox called `name`, or None."""
        return await self._call("get", lambda: self._client.get(name, request_timeout=self._timeout),
                                missing_ok=True)

    @staticmethod
    def observe(sandbox: Any) -> SandboxObs:
        state = getattr(sandbox.state, "value", sandbox.state)
        return SandboxObs(id=sandbox.id, name=sandbox.name, state=str(state or "unknown"),
                          error_reason=getattr(sandbox, "error_reason", None))

    async def ensure(self, spec: SandboxSpec) -> Any:
        """Find the sandbox by its deterministic name or create it (never a second one)."""
        existing = await self.find(spec.name)
        if existing is not None:
            return existing
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
            created = await self._call("create", lambda: self._client.create(params, timeout=self._timeout * 4))
        except (Fatal, Retryable) as exc:
            if exc.status == 409 or isinstance(exc.__cause__, DaytonaConflictError):
                adopted = await self.find(spec.name)
                if adopted is not None:
                    return adopted
            raise
        metrics.SANDBOX_CREATE_SECONDS.observe(time.monotonic() - started)
        return created

    async def delete_if_exists(self, name_or_sandbox: str | Any) -> bool:
        """Delete a sandbox; True if it was there. 404 counts as success."""
        sandbox = await self.find(name_or_sandbox) if isinstance(name_or_sandbox, str) else name_or_sandbox
        if sandbox is None or self.observe(sandbox).state in ("destroying", "destroyed"):
            return False
        await self._call("delete", lambda: self._client.delete(sandbox, timeout=self._timeout), missing_ok=True)
        return True

    async def stop_if_exists(self, name: str) -> bool:
        sandbox = await self.find(name)
        if sandbox is None:
            return False
        await self._call("stop", lambda: self._client.stop(sandbox, timeout=self._timeout), missing_ok=True)
        return True

    async def list_labelled(self, labels: Mapping[str, str]) -> AsyncIterator[Any]:
        """Every sandbox carrying all `labels` (follows the cursor through all pages)."""
        query = ListSandboxesQuery(labels=dict(labels), limit=200)
        try:
            async for sandbox in self._client.list(query, request_timeout=self._timeout):
                yield sandbox
        except (DaytonaError, TimeoutError, OSError) as exc:
            metrics.DAYTONA_REQUESTS.labels("list", "error").inc()
            raise translate("list", exc) from None
        metrics.DAYTONA_REQUESTS.labels("list", "ok").inc()

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
            try:
                await self._call("session_create", lambda: sandbox.process.create_session(
                    session_id, request_timeout=self._timeout))
            except Fatal as exc:
                if exc.status != 409:
                    raise
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
        """A small JSON file from the sandbox, or None when absent/invalid."""
        try:
            data = await self._call("download", lambda: sandbox.fs.download_file(path), missing_ok=True)
        except Fatal:
            return None
        if not data or len(data) > limit:
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
