"""`kubectl agenttask logs [-f]`: the agent's output, from Daytona or from the status tail.

Two sources, chosen by `--source` (default `auto`: Daytona when DAYTONA_API_KEY is set):
- `daytona`: the runner's session command output streamed with the official SDK
  (`process.get_session_command_logs_async`, which replays from the start and ends when the
  command exits), exactly what the operator itself follows. After a suspend/resume the task runs
  a new command in a new session; the follower moves on to it. Output passes through the
  operator's pattern redaction (token shapes); the values of the task's Secrets are masked only
  by the operator, i.e. in the status tail: a user with the Daytona key can read the sandbox
  anyway. When the sandbox is gone (a finished task) it prints the status tail instead.
- `status`: `status.logTail` (the redacted tail the operator writes, at most every
  `logTailIntervalSeconds`), followed with a watch of the task: only kubectl permissions
  (get + watch agenttasks) are needed. Each update prints what is new since the previous tail
  (`new_output`); when more than a whole tail was written between two updates, a marker says
  that output was skipped.

With `-f` both end when the task finishes, and the exit code is the task's outcome (see cli).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from .. import logs
from ..api import AgentTask, Phase
from .client import Client, Gone, NotFound, PluginError

SKIPPED = "\n[... output skipped: more than the status tail was written between two updates ...]\n"
_MIN_OVERLAP = 64
_RECONNECT_SECONDS = 2.0

Write = Callable[[str], None]


def new_output(previous: str, current: str) -> str:
    """What `current` (a bounded tail of the output) adds to `previous` (the tail printed before).

    The tails are windows over one growing text: the new one starts somewhere inside the old one
    (or right after it). The longest suffix of `previous` that is a prefix of `current` is the
    overlap; short coincidental overlaps (under 64 characters, unless the whole previous tail is
    shorter) do not count, and then the whole current tail follows a SKIPPED marker.
    """
    if not current or current == previous:
        return ""
    if not previous:
        return current
    if current.startswith(previous):
        return current[len(previous):]
    shortest = min(_MIN_OVERLAP, len(previous), len(current))
    for size in range(min(len(previous), len(current)), shortest - 1, -1):
        if size and current.startswith(previous[-size:]):
            return current[size:]
    return SKIPPED + current


def outcome(obj: dict[str, Any]) -> Phase | None:
    """The terminal phase of the task, or None while it runs."""
    phase = (obj.get("status") or {}).get("phase")
    return Phase(phase) if phase in (Phase.SUCCEEDED.value, Phase.FAILED.value) else None


class StatusTailFollower:
    """Prints status.logTail and, with follow, what each watched update adds."""

    def __init__(self, client: Client, name: str, write: Write):
        self._client, self._name, self._write = client, name, write
        self._printed = ""

    def show(self, obj: dict[str, Any]) -> None:
        tail = str((obj.get("status") or {}).get("logTail") or "")
        self._write(new_output(self._printed, tail))
        self._printed = tail

    async def run(self, obj: dict[str, Any], *, follow: bool) -> Phase | None:
        self.show(obj)
        if not follow:
            return outcome(obj)
        while outcome(obj) is None:
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            try:
                async for kind, event in self._client.watch(self._name, resource_version=version):
                    if kind == "DELETED":
                        raise PluginError(f"{self._name} was deleted while its logs were followed")
                    if kind == "BOOKMARK":
                        version = str((event.get("metadata") or {}).get("resourceVersion") or version)
                        continue
                    obj = event
                    self.show(obj)
                    if outcome(obj) is not None:
                        return outcome(obj)
            except Gone:
                pass
            # the server ended the watch (timeout) or the version expired: read again and re-watch
            obj = await self._client.get(self._name)
            self.show(obj)
        return outcome(obj)


class DaytonaFollower:
    """Streams the agent command's output from Daytona with the official SDK."""

    def __init__(self, client: Client, name: str, write: Write, *, api_url: str | None, api_key: str,
                 target: str | None, warn: Write | None = None):
        self._client, self._name, self._write = client, name, write
        self._warn = warn or (lambda _text: None)
        self._config = (api_url, api_key, target)
        self._stream_error: str | None = None  # why the last attempt to stream failed (redacted)
        logs.register_secret(api_key)

    async def run(self, obj: dict[str, Any], *, follow: bool) -> Phase | None:
        from daytona import AsyncDaytona, DaytonaConfig

        api_url, api_key, target = self._config
        daytona = AsyncDaytona(DaytonaConfig(api_url=api_url, api_key=api_key, target=target))
        try:
            return await self._run(daytona, obj, follow=follow)
        finally:
            with contextlib.suppress(Exception):
                await daytona.close()  # type: ignore[no-untyped-call]

    async def _run(self, daytona: Any, obj: dict[str, Any], *, follow: bool) -> Phase | None:
        finished: set[str] = set()  # commands whose stream ended (the command exited)
        printed: dict[str, int] = {}  # characters printed per command (a re-stream replays them)
        while True:
            task = AgentTask.from_body(obj)
            agent, box = task.status.agent, task.status.sandbox
            command = agent.command_id if agent else None
            streamable = task.status.phase not in (Phase.SUSPENDED, Phase.SUCCEEDED, Phase.FAILED) or not follow
            if (command and agent and agent.session_id and box and not box.deleted and command not in finished
                    and streamable):
                sandbox = await self._sandbox(daytona, box.name or box.id)
                if sandbox is not None:
                    if await self._stream(sandbox, agent.session_id, command, printed, follow=follow):
                        finished.add(command)
                    if not follow:
                        return outcome(obj)
                    obj = await self._client.get(self._name)
                    if command not in finished:
                        await asyncio.sleep(_RECONNECT_SECONDS)
                    continue
                if follow:  # not found although the task names it: look again shortly (it may be gone)
                    await asyncio.sleep(_RECONNECT_SECONDS)
                    obj = await self._client.get(self._name)
                    continue
            if not any(printed.values()) and (outcome(obj) is not None or not follow):
                # nothing to stream from Daytona (not started yet without -f, or the sandbox is gone)
                self._warn_tail_only(obj)
                return await StatusTailFollower(self._client, self._name, self._write).run(obj, follow=follow)
            if outcome(obj) is not None:
                return outcome(obj)
            obj = await self._next(obj)

    def _warn_tail_only(self, obj: dict[str, Any]) -> None:
        """Say so when only the status tail will be shown of an agent that ran: it is the last few
        KiB of the output, not all of it (and why Daytona could not be read, if it failed)."""
        agent = (obj.get("status") or {}).get("agent") or {}
        if not agent.get("commandId"):
            return
        why = f"streaming from Daytona failed: {self._stream_error}" if self._stream_error else \
            "its sandbox is gone"
        self._warn(f"warning: {why}; showing status.logTail, only the end of the agent's output\n")

    async def _sandbox(self, daytona: Any, ref: str | None) -> Any:
        from daytona import DaytonaError, DaytonaNotFoundError

        if not ref:
            return None
        try:
            return await daytona.get(ref)
        except DaytonaNotFoundError:
            return None
        except DaytonaError as exc:
            if getattr(exc, "status_code", None) == 404 or "not found" in str(exc).lower():
                return None
            raise PluginError(f"Daytona: {logs.redact(str(exc))}") from exc

    async def _stream(self, sandbox: Any, session_id: str, command_id: str, printed: dict[str, int], *,
                      follow: bool) -> bool:
        """Print the command's output not printed yet; True when the stream ended with the command."""
        from daytona import DaytonaError

        skip = printed.setdefault(command_id, 0)

        def emit(chunk: str) -> None:
            nonlocal skip
            if skip >= len(chunk):
                skip -= len(chunk)
                return
            chunk, skip = chunk[skip:], 0
            printed[command_id] += len(chunk)
            self._write(logs.redact(chunk))

        try:
            if follow:
                await sandbox.process.get_session_command_logs_async(session_id, command_id, emit, emit)
                # a stream can also end early (a closed connection); only an exit code means "all of it"
                command = await sandbox.process.get_session_command(session_id, command_id)
                return getattr(command, "exit_code", None) is not None
            else:
                response = await sandbox.process.get_session_command_logs(session_id, command_id)
                emit(str(getattr(response, "output", None) or ""))
        except DaytonaError as exc:
            if not follow:
                raise PluginError(f"Daytona: {logs.redact(str(exc))}") from exc
            self._stream_error = logs.redact(str(exc))[:300]
            return False  # interrupted (e.g. the sandbox was stopped by a suspension): the caller looks again
        except (OSError, ValueError, RuntimeError) as exc:  # the SDK raises plain errors on odd websocket closes
            if not follow:
                raise
            self._stream_error = logs.redact(f"{type(exc).__name__}: {exc}")[:300]
            return False
        return True

    async def _next(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The task after its next change (a watch event, or a fresh read when the watch ends)."""
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        try:
            async for kind, event in self._client.watch(self._name, resource_version=version):
                if kind == "DELETED":
                    raise PluginError(f"{self._name} was deleted while its logs were followed")
                if kind in ("ADDED", "MODIFIED"):
                    return event
        except Gone:
            pass
        await asyncio.sleep(_RECONNECT_SECONDS)
        try:
            return await self._client.get(self._name)
        except NotFound as exc:
            raise PluginError(f"{self._name} was deleted while its logs were followed") from exc


def daytona_credentials(env: dict[str, str] | None = None) -> tuple[str | None, str, str | None] | None:
    """(api_url, api_key, target) from the environment, as the Daytona SDK reads it; None without a key."""
    env = dict(os.environ) if env is None else env
    key = env.get("DAYTONA_API_KEY")
    if not key:
        return None
    return env.get("DAYTONA_API_URL") or None, key, env.get("DAYTONA_TARGET") or None
